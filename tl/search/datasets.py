"""One space searched on several datasets: ``DATASETS = [...]`` in the space file, or ``--dataset``
given more than once.

Each dataset gets its own experiment, ``<storage>/<name>/<dataset>``, with its own carve, split
audit, choice and test: it is exactly the search one ``--dataset`` would run. Every dataset's labels
are checked before the first search starts, so a bad second dataset costs seconds, not a search.
At the end the recipes are laid side by side (``tl.core.across``: a recipe's test figure and its
rank by val on each dataset, and its mean rank); nothing picks one model across datasets.
``--resume`` continues the datasets not finished, in order.
"""
from __future__ import annotations

import argparse
import copy
from pathlib import Path
from typing import Callable

from tl.core.across import across_lines, folder_label, recipes_by_dataset
from tl.core.errors import TLError
from tl.core.results import SEARCH_FILE, load_experiments, split_stages
from tl.search.console import PREFIX
from tl.search.experiment import check_storage, default_name
from tl.search.space import load_space


def datasets_to_search(args: argparse.Namespace) -> list[str]:
    """The datasets named by ``--dataset`` (each time given), else the space file's DATASETS, else
    its DATASET: a list of one for an ordinary search."""
    if args.dataset:
        return list(args.dataset)
    space = load_space(args.space)
    return list(space.datasets) or [space.dataset]


def dataset_labels(datasets: list[str]) -> list[str]:
    """A folder name per dataset: the file or folder's name without suffix (``chest_xray``,
    ``pneumoniamnist``, ``Data_Entry_2017``), numbered when two would collide."""
    labels: list[str] = []
    for dataset in datasets:
        stem = Path(dataset.rstrip("/")).name
        base = folder_label(stem.removesuffix(".npz").removesuffix(".csv").removesuffix(".tsv"))
        label, n = base, 2
        while label in labels:
            label, n = f"{base}-{n}", n + 1
        labels.append(label)
    return labels


def _one(args: argparse.Namespace, dataset: str, parent: str, label: str) -> argparse.Namespace:
    one = copy.copy(args)
    one.dataset, one.storage, one.name = dataset, parent, label
    # --resume continues what was started; a dataset not reached before the stop starts now.
    one.resume = bool(args.resume) and ("://" in parent or (Path(parent) / label / SEARCH_FILE).is_file())
    return one


def run_on_datasets(args: argparse.Namespace, argv: list[str], datasets: list[str], *,
                    check: Callable[[argparse.Namespace], None],
                    run: Callable[..., int]) -> int:
    """Search each dataset in turn under one parent folder; print the recipes across them.

    Args:
        check: checks one dataset's inputs without Ray (``tl.search.cli``'s labels and metric check).
        run: runs one dataset's search (``tl.search.cli.run_search``).
    Returns:
        0, or the first non-zero exit status of a dataset's search (later datasets are not run).
    """
    name = args.name or default_name(args.space)
    storage = check_storage(args.storage)
    parent = f"{storage}/{name}"
    if not args.resume and "://" not in parent and Path(parent).exists():
        raise TLError(f"experiment {parent} exists; pass --resume to continue it or choose another --name")
    labels = dataset_labels(datasets)
    runs = [_one(args, d, parent, label) for d, label in zip(datasets, labels)]
    for one in runs:  # every dataset's labels before any search: a bad one costs seconds
        check(one)
    print(f"{PREFIX} {len(datasets)} datasets, one experiment each under {parent}: {', '.join(labels)}")
    for i, (one, label) in enumerate(zip(runs, labels), 1):
        print(f"{PREFIX} dataset {i}/{len(runs)}: {label} ({one.dataset})")
        status = run(one, argv, resume_name=name)
        if status != 0:
            return status
    if "://" in parent:
        print(f"{PREFIX} copy {parent} down and run analysis.summarize on its experiments for the recipes across datasets")
        return 0
    print_across(Path(parent), labels)
    return 0


def print_across(parent: Path, labels: list[str]) -> None:
    """Print the recipe x dataset table of the experiments under ``parent``, and how to get the report."""
    experiments = {}
    for label in labels:
        search, _ = split_stages(load_experiments([parent / label]))
        experiments[label] = search
    try:
        table = recipes_by_dataset(experiments)
    except TLError as exc:
        print(f"{PREFIX} no table across datasets: {exc}")
        return
    print()
    for line in across_lines(table, labels):
        print(line if line.startswith("  ") else f"{PREFIX} {line}")
    folders = " ".join(str(parent / label) for label in labels)
    print(f"{PREFIX} report: python -m analysis.summarize {folders} --out {parent / 'summary'}")

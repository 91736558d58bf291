"""Which recipe works across datasets: experiments grouped by dataset, and a recipe x dataset table.

A dataset is its test split and its classes: two experiments are on the same dataset when their
``tl_search.json`` records the same test-split fingerprint and class names (else the same name).
Every choice stays within a dataset: each keeps its own recommended model, and the table below
only lays the datasets' answers side by side. MedMNIST+ (Doerrich et al., 2024) compares models
over datasets by their mean rank; so does this, with each recipe's rank on a dataset taken from
the figure the search chooses by (its best validation metric), never from test. A recipe a dataset
did not run is missing there, not ranked last, and its mean rank is over the datasets that ran it.

The cells show test figures as the report does: the headline metric of the dataset's task (mean
AUC for multilabel findings, accuracy otherwise) of the recipe's best tested trial by val, with a
percentile bootstrap interval over the test images. Pure Python, numpy and pandas.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from tl.core.choice import rank_trials
from tl.core.columns import split_metric, tested_rows
from tl.core.errors import TLError
from tl.core.finalists import ensemble_figures
from tl.core.results.files import dataset_record, positive_index, read_search_meta
from tl.core.results.load import Experiment
from tl.core.results.rows import rank_column, trial_table
from tl.core.stats import N_RESAMPLES, SEED

RECIPE_COLUMNS = ("backbone", "weights", "freeze")  # what "a recipe" is unless --group-by says otherwise
MEAN_RANK, N_DATASETS = "mean_rank", "datasets_ranked"


def folder_label(text: str) -> str:
    """A dataset's label as a folder name: anything but letters, digits, ``.``, ``_`` and ``-`` becomes ``_``."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "dataset"


def dataset_label(meta: dict) -> tuple[str, tuple]:
    """(the dataset's name, the key that tells datasets apart: test fingerprint and classes)."""
    record = dataset_record(meta)
    name = str(record.get("name") or "unknown")
    fingerprint = str(record.get("test_fingerprint") or "")
    classes = tuple(str(c) for c in record.get("class_names") or ())
    return name, (fingerprint, classes) if fingerprint else (name, classes)


def group_by_dataset(paths: Sequence[Path]) -> dict[str, list[Path]]:
    """The experiment folders by dataset, in the order given; a label per dataset (its name, with the
    fingerprint's first characters when two different datasets share a name)."""
    keyed: dict[tuple, list[Path]] = {}
    names: dict[tuple, str] = {}
    for path in paths:
        meta, _ = read_search_meta(Path(path))
        name, key = dataset_label(meta)
        keyed.setdefault(key, []).append(Path(path))
        names[key] = name
    labels: dict[str, list[Path]] = {}
    for key, group in keyed.items():
        label = names[key]
        if sum(n == label for n in names.values()) > 1:
            label = f"{label}-{str(key[0])[:6] or len(labels)}"
        labels[label] = group
    return labels


def headline_metric(task: str) -> str:
    """The test figure a dataset's cells show: mean AUC over findings for multilabel, else accuracy."""
    return "auc" if task == "multilabel" else "acc"


def _best_tested_per_recipe(exp: Experiment, recipe: Sequence[str]) -> pd.DataFrame:
    """One row per recipe: its best tested trial by the rule of choice, with the val rank column."""
    metric, mode = str(exp.meta["metric"]), str(exp.meta["mode"])
    column = rank_column(metric)
    table = tested_rows(trial_table(exp))
    missing = [c for c in recipe if c not in table.columns]
    if missing:
        raise TLError(f"recipe column(s) {', '.join(missing)} not in the trials; available: "
                      f"{', '.join(map(str, table.columns))}")
    rows = []
    for _, group in table.groupby(list(recipe), dropna=False, sort=True):
        ranked = rank_trials(group, column, mode)
        if len(ranked) and not pd.isna(ranked.iloc[0][column]):
            rows.append(ranked.iloc[0])
    return pd.DataFrame(rows).reset_index(drop=True) if rows else pd.DataFrame(columns=[*recipe, "trial", column])


def dataset_cells(label: str, exp: Experiment, recipe: Sequence[str], *, n_resamples: int = N_RESAMPLES,
                  seed: int = SEED) -> pd.DataFrame:
    """One dataset's column of the table: per recipe, the test headline figure of its best tested trial
    by val with its interval, and the recipe's rank on this dataset by that val figure (1 = best,
    ties averaged)."""
    metric, mode = str(exp.meta["metric"]), str(exp.meta["mode"])
    column = rank_column(metric)
    task = str(dataset_record(exp.meta).get("task") or "")
    name = split_metric("test", headline_metric(task))
    best = _best_tested_per_recipe(exp, recipe)
    out = best[list(recipe)].copy()
    figures = [ensemble_figures(exp.predictions[t], n_resamples=n_resamples, seed=seed,
                                positive=positive_index(exp.meta)) if t in exp.predictions else {}
               for t in best["trial"]]
    out[f"{label}:{name}"] = [f.get(name, np.nan) for f in figures]
    out[f"{label}:low"] = [f.get(f"{name}_low", np.nan) for f in figures]
    out[f"{label}:high"] = [f.get(f"{name}_high", np.nan) for f in figures]
    out[f"{label}:{metric}"] = best[column].to_numpy(dtype=float)
    out[f"{label}:rank"] = best[column].rank(method="average", ascending=(mode == "min")).to_numpy()
    out[f"{label}:trial"] = best["trial"].to_numpy()
    return out


def recipes_by_dataset(experiments: dict[str, Experiment], recipe: Sequence[str] = RECIPE_COLUMNS, *,
                       n_resamples: int = N_RESAMPLES, seed: int = SEED) -> pd.DataFrame:
    """The recipe x dataset table: recipe columns, then per dataset its figure, interval, val figure,
    rank and trial, then the mean rank over the datasets that ran the recipe; best mean rank first.

    Args:
        experiments: the search stage of each dataset's experiments (one ``Experiment`` per dataset),
            by dataset label.
        recipe: the columns that make a recipe (default backbone, weights, freeze).
    """
    table: pd.DataFrame | None = None
    for label, exp in experiments.items():
        cells = dataset_cells(label, exp, recipe, n_resamples=n_resamples, seed=seed)
        keyed = cells.astype({c: str for c in recipe})
        table = keyed if table is None else table.merge(keyed, on=list(recipe), how="outer")
    if table is None or not len(table):
        raise TLError("no dataset has a tested trial: nothing to compare across datasets")
    ranks = table[[f"{label}:rank" for label in experiments]]
    table[MEAN_RANK] = ranks.mean(axis=1, skipna=True)
    table[N_DATASETS] = ranks.notna().sum(axis=1)
    return table.sort_values([MEAN_RANK, *recipe], kind="stable").reset_index(drop=True)


def figure_column(table: pd.DataFrame, label: str) -> str | None:
    """The column of ``label``'s test figure in a ``recipes_by_dataset`` table (``<label>:test_<metric>``)."""
    return next((c for c in table.columns if c.startswith(f"{label}:test_")), None)


def recipe_cell(row: pd.Series, label: str, figure: str | None) -> str:
    """One recipe on one dataset as text: ``0.816 [0.785, 0.846] (rank 1)``, or ``-`` where it did not
    run or was not tested there."""
    if figure is None or pd.isna(row[figure]):
        return "-"
    return f"{row[figure]:.3f} [{row[f'{label}:low']:.3f}, {row[f'{label}:high']:.3f}] (rank {row[f'{label}:rank']:g})"


def across_lines(table: pd.DataFrame, labels: Sequence[str], recipe: Sequence[str] = RECIPE_COLUMNS) -> list[str]:
    """The table as console lines: one per recipe, its cell on each dataset and its mean rank."""
    lines = [f"recipes across {len(labels)} datasets (rank on each by its val figure; cells: test figure "
             "[95% CI] of the recipe's best tested trial by val; - : not run or not tested there):"]
    figures = {label: figure_column(table, label) for label in labels}
    for _, row in table.iterrows():
        cells = "; ".join(f"{label} {recipe_cell(row, label, figures[label])}" for label in labels)
        lines.append(f"  {', '.join(str(row[c]) for c in recipe)}: {cells} | mean rank {row[MEAN_RANK]:.2f} "
                     f"over {int(row[N_DATASETS])}")
    return lines

"""Figures per subgroup of the test images (sex, view, age band, ...), beside the overall figure.

The search writes each test image's subgroups once (``tl.data.subgroups``) into the experiment folder
as ``SUBGROUPS_FILE``, rows in the test split's order, and records their sources and the test split's
fingerprint in ``tl_search.json`` (``subgroups``). ``subgroup_table`` scores any test predictions of
that split per subgroup: images, positives, the task's figures with percentile bootstrap intervals
(``tl.core.stats``), the overall figure, and a flag.

A subgroup is flagged when, for one of the task's figures, its whole interval lies below the overall
figure (above it for MAE, where lower is better). A subgroup of fewer than ``MIN_IMAGES`` images or
``MIN_POSITIVES`` positives is listed with its figures but never flagged: its interval is too wide
to say anything. Figures by task: binary acc, AUC, sensitivity and specificity (of the positive
class); multiclass acc and AUC; multilabel the mean AUC over findings (positives: images with any
finding); ordinal qwk, MAE, acc and AUC. Positives: binary, images of the positive class;
multilabel, images with at least one positive finding; multiclass and ordinal, the images of the
subgroup's rarest class among those in the test split. Reading them is for the report: subgroups
never steer the search. Pure numpy and pandas.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np
import pandas as pd

from tl.core.columns import TEST_ACC, TEST_AUC, split_metric
from tl.core.errors import TLError
from tl.core.metrics import label_accuracy, split_metrics, task_auc
from tl.core.results.files import SUBGROUPS_FILE, Predictions, read_search_meta
from tl.core.stats import N_RESAMPLES, SEED, bootstrap_interval

IMAGE_COLUMN = "test_image"  # the subgroups file's first column: each test image's recorded name
UNKNOWN = "unknown"  # a blank cell, an absent header field, a path the regex does not match
MIN_IMAGES, MIN_POSITIVES = 30, 5  # smaller subgroups are listed, never flagged
META_KEY = "subgroups"  # tl_search.json: columns, their sources, the test fingerprint
TEST_SENSITIVITY, TEST_SPECIFICITY = split_metric("test", "sensitivity"), split_metric("test", "specificity")
TEST_QWK, TEST_MAE = split_metric("test", "qwk"), split_metric("test", "mae")
FIGURES = {"binary": (TEST_ACC, TEST_AUC, TEST_SENSITIVITY, TEST_SPECIFICITY), "multiclass": (TEST_ACC, TEST_AUC),
           "multilabel": (TEST_AUC,), "ordinal": (TEST_QWK, TEST_MAE, TEST_ACC, TEST_AUC)}
LOWER_IS_BETTER = (TEST_MAE,)


class Subgroups(NamedTuple):
    """The recommended model's figures per subgroup, and what the report says about them."""

    frame: pd.DataFrame  # subgroup_table's; empty when there is none
    notes: list[str]  # why there is none, or what to read with it
    sources: dict  # per column: where its values came from and how they were banded


def task_of(pred: Predictions, task: str | None) -> str:
    """The task of ``pred``: ``task`` when known, else from the shapes (multi-hot labels: multilabel)."""
    if task in FIGURES:
        return task
    return "multilabel" if pred.multilabel else ("binary" if pred.probs.shape[1] == 2 else "multiclass")


def _statistic(name: str, task: str, positive: int) -> Callable[[np.ndarray, np.ndarray], float]:
    """(probs, labels) -> the figure, as ``tl.core.finalists.ensemble_figures`` computes it."""
    if name == TEST_ACC:
        return label_accuracy
    if name == TEST_AUC:
        return lambda p, y: task_auc(p, y, positive)
    return lambda p, y: split_metrics(p, y, "test", task, positive)[name]


def positives(labels: np.ndarray, task: str, positive: int = 1, classes: np.ndarray | None = None) -> int:
    """The positives of a subgroup (rules: module docstring); ``classes``: those in the whole test split."""
    labels = np.asarray(labels)
    if task == "multilabel":
        return int((labels == 1).any(axis=1).sum())
    if task == "binary":
        return int((labels == positive).sum())
    classes = np.unique(labels) if classes is None else classes
    return int(min((labels == c).sum() for c in classes)) if len(classes) else 0


def _worse(name: str, low: float, high: float, overall: float) -> bool:
    if np.isnan(overall) or np.isnan(low) or np.isnan(high):
        return False
    return low > overall if name in LOWER_IS_BETTER else high < overall


def subgroup_table(pred: Predictions, values: pd.DataFrame, *, task: str | None = None, positive: int = 1,
                   order: dict | None = None, n_resamples: int = N_RESAMPLES, seed: int = SEED) -> pd.DataFrame:
    """Per subgroup of each column of ``values`` (rows aligned with ``pred``): images, positives, the
    task's figures with bootstrap intervals and the overall figure, and the flag.

    Args:
        values: one column per subgroup column, one row per test image (strings).
        order: per column, the subgroups in reading order (age bands); default: most images first,
            ``unknown`` last.

    Returns:
        Columns ``column``, ``subgroup``, ``images``, ``positives``, per figure ``F``, ``F_low``,
        ``F_high``, ``F_overall``; ``worse_than_overall`` (the figures whose interval lies wholly
        below the overall figure), ``flagged`` and ``note``.

    Raises:
        TLError: ``values`` has another number of rows than ``pred``.
    """
    n = len(pred.labels)
    if len(values) != n:
        raise TLError(f"the subgroups list {len(values)} test images, the predictions {n}: not one test split")
    task = task_of(pred, task)
    figures = FIGURES[task]
    kw = {"n_resamples": n_resamples, "seed": seed}
    stats = {name: _statistic(name, task, positive) for name in figures}
    overall = {name: float(stat(pred.probs, pred.labels)) for name, stat in stats.items()}
    classes = np.unique(pred.labels) if not pred.multilabel else None
    rows = []
    for column in values.columns:
        cells = values[column].astype(str).to_numpy()
        for subgroup in _ordered(cells, (order or {}).get(column)):
            idx = np.flatnonzero(cells == subgroup)
            probs, labels = pred.probs[idx], pred.labels[idx]
            row = {"column": column, "subgroup": subgroup, "images": len(idx),
                   "positives": positives(labels, task, positive, classes)}
            worse = []
            for name, stat in stats.items():
                ci = bootstrap_interval(lambda i, stat=stat: float(stat(probs[i], labels[i])), len(idx), **kw)
                row.update({name: ci.value, f"{name}_low": ci.low, f"{name}_high": ci.high,
                            f"{name}_overall": overall[name]})
                if _worse(name, ci.low, ci.high, overall[name]):
                    worse.append(name)
            small = row["images"] < MIN_IMAGES or row["positives"] < MIN_POSITIVES
            row["worse_than_overall"] = ", ".join(worse)
            row["flagged"] = bool(worse) and not small
            row["note"] = (f"under {MIN_IMAGES} images or {MIN_POSITIVES} positives: listed, not flagged"
                           if small else "")
            rows.append(row)
    return pd.DataFrame(rows)


def _ordered(cells: np.ndarray, order: list | None) -> list[str]:
    present, counts = np.unique(cells, return_counts=True)
    by_count = [str(v) for _, v in sorted(zip(-counts, present))]
    if order:
        known = [str(v) for v in order if str(v) in set(by_count)]
        return known + [v for v in by_count if v not in known]
    return [v for v in by_count if v != UNKNOWN] + [v for v in by_count if v == UNKNOWN]


# --- the subgroups file --------------------------------------------------------------------------

def write_test_subgroups(experiment: Path, frame: pd.DataFrame) -> Path:
    """Write ``SUBGROUPS_FILE`` (``IMAGE_COLUMN`` and one column per subgroup column) into the folder."""
    path = Path(experiment) / SUBGROUPS_FILE
    frame.to_csv(path, index=False)
    return path


def read_test_subgroups(experiment: Path) -> tuple[pd.DataFrame, dict] | None:
    """The folder's subgroups file (every cell a string) and its ``tl_search.json`` record; None when
    the search was run without subgroups.

    Raises:
        TLError: the file is unreadable or lacks ``IMAGE_COLUMN``.
    """
    path = Path(experiment) / SUBGROUPS_FILE
    if not path.is_file():
        return None
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, ValueError) as exc:
        raise TLError(f"{path}: unreadable ({exc})") from None
    if IMAGE_COLUMN not in frame.columns:
        raise TLError(f"{path}: no {IMAGE_COLUMN!r} column")
    record = read_search_meta(Path(experiment))[0].get(META_KEY)
    return frame, record if isinstance(record, dict) else {}


def recommended_subgroups(folders: list[Path], test: Predictions, *, task: str | None = None, positive: int = 1,
                          n_resamples: int = N_RESAMPLES, seed: int = SEED) -> Subgroups | None:
    """``subgroup_table`` of ``test`` (the recommended model's test predictions) with the subgroups file
    of the first folder that has one; None when none has (the search ran without subgroups)."""
    for folder in folders:
        found = read_test_subgroups(folder)
        if found is None:
            continue
        frame, record = found
        sources = record.get("sources") or {}
        fingerprint = str(record.get("test_fingerprint") or "")
        if fingerprint and test.fingerprint and fingerprint != test.fingerprint:
            return Subgroups(pd.DataFrame(), [f"{folder.name}/{SUBGROUPS_FILE} is of another test split (fingerprint "
                                              f"{fingerprint}, the predictions' {test.fingerprint}): not scored"], sources)
        if len(frame) != len(test.labels):
            return Subgroups(pd.DataFrame(), [f"{folder.name}/{SUBGROUPS_FILE} lists {len(frame)} test images, the "
                                              f"predictions {len(test.labels)}: not scored"], sources)
        order = {c: s.get("order") for c, s in sources.items() if isinstance(s, dict)}
        table = subgroup_table(test, frame.drop(columns=IMAGE_COLUMN), task=task, positive=positive, order=order,
                               n_resamples=n_resamples, seed=seed)
        return Subgroups(table, [], sources)
    return None

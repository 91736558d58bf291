"""Result columns and what they mean, in one place: the names a trial reports each epoch
(``train_*``, ``val_*``, ``test_*``), the one test that says a trial was tested, the headline
figures every summary leads with, and the metric a search is chosen by when none is named.

A trial reports ``test_*`` once, after its last epoch, from its best-by-val weights; a trial ASHA
stopped, or one a time budget cut short, never does. So "tested" is "reported ``test_acc``".
"""
from __future__ import annotations

import math
from typing import Mapping

SPLIT_NAMES = ("train", "val", "test")
TESTED_COLUMN = "test_acc"  # present (not NaN) exactly when the trial was tested
BINARY_ONLY = ("sensitivity", "specificity")  # of the positive class: reported by two-class tasks only
HEADLINE = ("acc", "auc", *BINARY_ONLY)  # the figures a summary line shows, in order
# What a search is chosen by when the space file names no METRIC (and what an old folder without a
# tl_search.json is read as).
DEFAULT_METRIC = "val_acc"
DEFAULT_MODE = "max"


def split_metric(split: str, name: str) -> str:
    """The reported column of metric ``name`` on ``split``: ``split_metric("test", "auc")`` is ``test_auc``."""
    if split not in SPLIT_NAMES:
        raise ValueError(f"split must be one of {SPLIT_NAMES}, got {split!r}")
    return f"{split}_{name}"


def metric_name(column: str) -> str:
    """The metric of a split's column, :func:`split_metric` undone: ``metric_name("val_auc")`` is ``auc``
    (a column without a split prefix comes back as it is)."""
    split, sep, name = column.partition("_")
    return name if sep and split in SPLIT_NAMES else column


HEADLINE_TEST_METRICS = tuple(split_metric("test", name) for name in HEADLINE)
BINARY_TEST_METRICS = tuple(split_metric("test", name) for name in BINARY_ONLY)
# The test figures other rules are written over (seed means, diagnostics, the accuracy per second).
TEST_ACC, TEST_AUC = split_metric("test", "acc"), split_metric("test", "auc")


def is_tested(row: Mapping | None) -> bool:
    """True when a reported row (a dict, a pandas Series) holds a test figure."""
    if row is None:
        return False
    value = row.get(TESTED_COLUMN)
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def tested_mask(table):
    """Boolean Series over a trial table (pandas): True where the row was tested (all False without
    a ``test_acc`` column: no trial reported one)."""
    if TESTED_COLUMN not in table.columns:
        import pandas as pd

        return pd.Series(False, index=table.index)
    return table[TESTED_COLUMN].notna()


def tested_rows(table):
    """The rows of a trial table (pandas) that were tested, index reset."""
    return table[tested_mask(table)].reset_index(drop=True)

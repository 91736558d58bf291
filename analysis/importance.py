"""Hyperparameter importance from a study rebuilt out of the finished trials.

Completed trials enter an in-memory Optuna study (``optuna.trial.create_trial`` +
``study.add_trial``) with their FINAL metric; ASHA-stopped trials are left out because their
final value reflects a smaller budget, not their hyperparameters. The evaluator is PED-ANOVA
(Optuna >= 3.6; the default since Optuna 5), which keeps conditional parameters such as
``freeze_fraction`` that only some trials have. Optuna's fANOVA silently drops a parameter that
is missing from any trial, so it is used only on an older Optuna (and needs scikit-learn); without
either, our own one-way eta-squared, labelled as such. The choice never depends on whether
scikit-learn happens to be installed.
"""

from __future__ import annotations

import importlib.util
import warnings
from typing import Any, NamedTuple, Sequence

import numpy as np
import pandas as pd

MIN_TRIALS = 3
MIN_VARYING_PARAMS = 2
# Integer parameters with at most this many distinct values are treated as choices
# (batch size 32/64/128), not as a range.
MAX_INT_CHOICES = 8
ETA_SQUARED_BINS = 4  # quantile bins for numeric parameters in the fallback


class Importance(NamedTuple):
    """Parameter importances (normalized to sum 1) and how they were obtained."""

    frame: pd.DataFrame  # columns: param, importance; most important first; empty if skipped
    method: str  # evaluator name and what its numbers mean
    n_trials: int
    note: str  # why it was skipped, or empty


def _distribution(values: pd.Series) -> Any:
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    numeric = pd.to_numeric(values, errors="coerce")
    is_bool = values.map(lambda v: isinstance(v, (bool, np.bool_))).any()
    if numeric.notna().all() and not is_bool:
        lo, hi = float(numeric.min()), float(numeric.max())
        integers = values.map(lambda v: not isinstance(v, float)).all()
        if integers and (numeric == numeric.round()).all():
            if numeric.nunique() <= MAX_INT_CHOICES:
                return CategoricalDistribution(sorted(int(v) for v in numeric.unique()))
            return IntDistribution(int(lo), int(hi))
        # Ranges spanning a decade or more (lr, weight decay) were searched on a log scale.
        return FloatDistribution(lo, hi, log=lo > 0 and hi / lo >= 10)
    return CategoricalDistribution(sorted(values.astype(str).unique()))


def _python_value(value: Any, dist: Any) -> Any:
    from optuna.distributions import CategoricalDistribution, IntDistribution

    if isinstance(dist, CategoricalDistribution):
        return int(value) if isinstance(dist.choices[0], int) else str(value)
    return int(value) if isinstance(dist, IntDistribution) else float(value)


def varying_params(trials: pd.DataFrame, config_columns: Sequence[str]) -> list[str]:
    """Return the config columns with more than one distinct value among ``trials``.

    Conditional parameters (``freeze_fraction`` only for partial freezing, ``patch_size`` only
    for ViTs) are missing in some trials; only the trials that have them count.
    """
    return [c for c in config_columns if c in trials.columns
            and trials[c].dropna().astype(str).nunique() > 1]


FANOVA = ("fANOVA (Optuna): share of the variance of the final metric that a random forest "
          "over the parameters attributes to each one")
PED_ANOVA = ("PED-ANOVA (Optuna): how differently each parameter is distributed among the best "
             "10 % of trials than among all of them; noisy with few trials")
ETA_SQUARED = ("one-way eta-squared (own, not Optuna): share of the metric's variance explained "
               "by each parameter alone (numeric ones in quartiles); ignores interactions")


def _pick_evaluator() -> tuple[Any, str]:
    import optuna.importance as oi

    if hasattr(oi, "PedAnovaImportanceEvaluator"):
        return oi.PedAnovaImportanceEvaluator(), PED_ANOVA
    if importlib.util.find_spec("sklearn") is not None:
        return oi.FanovaImportanceEvaluator(seed=0), FANOVA
    return None, ETA_SQUARED


def eta_squared_importances(trials: pd.DataFrame, params: Sequence[str],
                            value: str) -> pd.DataFrame:
    """Return each parameter's one-way eta-squared: between-group share of the variance of
    ``value``, numeric parameters cut into quantile bins; normalized to sum 1.

    A crude, honest fallback: it ignores interactions and is noisy with few trials.
    """
    y = trials[value].to_numpy(dtype=float)
    total = float(((y - y.mean()) ** 2).sum())
    scores = {}
    for p in params:
        column = trials[p]
        numeric = pd.to_numeric(column, errors="coerce")
        if numeric.notna().all() and numeric.nunique() > ETA_SQUARED_BINS:
            groups = pd.qcut(numeric.rank(method="first"), ETA_SQUARED_BINS, labels=False)
        else:
            groups = column.astype(str)
        means = trials.groupby(groups.to_numpy())[value].transform("mean").to_numpy(dtype=float)
        scores[p] = float(((means - y.mean()) ** 2).sum()) / total if total > 0 else 0.0
    frame = pd.DataFrame({"param": list(scores), "importance": list(scores.values())})
    if frame["importance"].sum() > 0:
        frame["importance"] /= frame["importance"].sum()
    return frame.sort_values("importance", ascending=False, kind="mergesort").reset_index(drop=True)


def param_importances(trials: pd.DataFrame, config_columns: Sequence[str], value: str,
                      mode: str) -> Importance:
    """Return hyperparameter importances for the final ``value`` of completed trials.

    Args:
        trials: one row per trial with ``status``, the config columns and ``value``.
        config_columns: candidate parameters.
        value: column holding each trial's final metric.
        mode: ``max`` or ``min``.

    Returns:
        An :class:`Importance`; its frame is empty and ``note`` says why when there are fewer
        than :data:`MIN_TRIALS` completed trials or fewer than :data:`MIN_VARYING_PARAMS`
        varying parameters.
    """
    done = trials[(trials["status"] == "COMPLETED") & trials[value].notna()].reset_index(drop=True)
    params = varying_params(done, config_columns)
    empty = pd.DataFrame(columns=["param", "importance"])
    if len(done) < MIN_TRIALS:
        return Importance(empty, "", len(done), f"skipped: {len(done)} completed trial(s) with "
                          f"{value}, need at least {MIN_TRIALS}")
    if len(params) < MIN_VARYING_PARAMS:
        return Importance(empty, "", len(done), f"skipped: {len(params)} hyperparameter(s) vary "
                          f"among completed trials, need at least {MIN_VARYING_PARAMS}")
    evaluator, method = _pick_evaluator()
    if evaluator is None:
        return Importance(eta_squared_importances(done, params, value), method, len(done), "")
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize" if mode == "max" else "minimize")
    dists = {p: _distribution(done[p].dropna()) for p in params}
    for _, row in done.iterrows():
        present = {p: d for p, d in dists.items() if pd.notna(row[p])}  # conditional params
        study.add_trial(optuna.trial.create_trial(
            params={p: _python_value(row[p], d) for p, d in present.items()},
            distributions=present, value=float(row[value])))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # small-sample warnings; the report states n
        scores = optuna.importance.get_param_importances(study, evaluator=evaluator)
    frame = pd.DataFrame({"param": list(scores), "importance": [float(v) for v in scores.values()]})
    return Importance(frame, method, len(done), "")

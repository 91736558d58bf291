"""Compute everything the report shows from experiment folders; draws and writes nothing."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np
import pandas as pd

from analysis.audit import SplitAudit, read_split_audits
from analysis.calibration import Calibration, chosen_calibration, ensemble_row
from analysis.classification import RocCurve, confusion_matrix, finding_table, roc_curves
from analysis.comparisons import chosen_model, paired_comparisons
from analysis.diagnostics import diagnose_trials
from analysis.errors import AnalysisError
from analysis.finalists import Finalists, build_finalists, split_stages
from analysis.importance import Importance, param_importances
from analysis.load import Experiment, load_experiments, positive_index
from analysis.stats import N_RESAMPLES, SEED
from analysis.tables import (
    GROUP_COLUMNS, best_per_group, check_group_by, final_column, group_members, rank_column,
    rank_trials,
    seed_repeats, trial_table,
)


class Summary(NamedTuple):
    """All computed tables and figure data of one or more experiments."""

    experiment: Experiment
    metric: str
    mode: str
    rank_column: str  # Table 1 column that ranks trials: best value of the metric over epochs
    group_by: list[str]
    table: pd.DataFrame  # Table 1, best trial first, with the diagnostic verdict
    groups: pd.DataFrame  # Table 2: best trial per group
    comparisons: pd.DataFrame
    chosen: pd.DataFrame  # the best-by-val trial with test predictions, its test acc/AUC with CIs
    seeds: pd.DataFrame  # mean/std of test acc over repeated seeds (may be empty)
    diagnostics: pd.DataFrame
    importance: Importance
    top: list[str]  # trial keys of the top-K trials by the metric
    roc: dict[str, list[RocCurve]]  # of the top-K trials with saved predictions
    confusion: dict[str, np.ndarray]
    class_names: list[str]
    group_trials: dict[str, list[str]]
    notes: list[str]
    audits: list[SplitAudit]  # split audit per experiment that recorded one
    finalists: Finalists | None = None  # the finalist stage over seeds, when the search ran one
    calibration: Calibration | None = None  # the chosen trial's, fitted on val
    ensemble: pd.DataFrame | None = None  # mean probability of the top-k trials, with intervals
    task: str = ""  # the dataset's task (tl.tasks), "" for experiments from before it was recorded
    findings: pd.DataFrame | None = None  # multilabel: the chosen model's per-finding test AUC


def _class_names(exp: Experiment) -> list[str]:
    names = exp.meta.get("dataset", {}).get("class_names")
    if isinstance(names, list) and names:
        return [str(n) for n in names]
    sizes = {p.probs.shape[1] for p in exp.predictions.values()}
    return [str(i) for i in range(max(sizes))] if sizes else []


def build_summary(paths: Sequence[Path], *, group_by: Sequence[str] | None = None, top: int = 5,
                  n_resamples: int = N_RESAMPLES, seed: int = SEED, ensemble: int = 3,
                  target_sensitivity: float = 0.95) -> Summary:
    """Read ``paths`` and compute every table, diagnosis and figure input.

    Args:
        paths: experiment folders (several are merged into one comparison).
        group_by: columns of Table 1 that define the groups of Table 2; None: those of
            backbone, freeze, weights that the trials have (else status).
        top: how many best trials get curves, ROC and confusion matrices.
        n_resamples, seed: of the paired bootstrap.
        ensemble: the top-k ensemble's k (below 2: no ensemble row).
        target_sensitivity: the val sensitivity the binary threshold must reach.

    Raises:
        AnalysisError: unusable folders, no reported epoch, the metric missing from every
            result, an unknown group-by column or ``top`` < 1.
    """
    if top < 1:
        raise AnalysisError(f"--top must be at least 1, got {top}")
    exp, finalist_exp = split_stages(load_experiments(paths))  # Table 1 ranks search trials only
    metric, mode = str(exp.meta["metric"]), str(exp.meta["mode"])
    if metric not in exp.frame.columns:
        raise AnalysisError(f"the search metric {metric!r} is in no result row; reported "
                            f"columns: {', '.join(map(str, exp.frame.columns))}")
    column = rank_column(metric)
    table = rank_trials(trial_table(exp), column, mode)
    if group_by is None:
        group_by = [c for c in GROUP_COLUMNS if c in table.columns] or ["status"]
    group_by = check_group_by(table, group_by)
    diagnostics = diagnose_trials(exp, table)
    table.insert(table.columns.get_loc("error"), "verdict",
                 table["trial"].map(dict(zip(diagnostics["trial"], diagnostics["verdict"]))))
    ranked = table.dropna(subset=[column])
    top_trials = list(ranked["trial"].head(top))
    with_predictions = [t for t in ranked["trial"] if t in exp.predictions][:top]
    class_names = _class_names(exp)
    dataset = exp.meta.get("dataset") if isinstance(exp.meta.get("dataset"), dict) else {}
    task = str(dataset.get("task") or "")
    positive = positive_index(exp.meta)
    chosen = chosen_model(table, exp.predictions, column, mode, n_resamples=n_resamples, seed=seed,
                          positive=positive)
    calibration, findings = None, None
    if len(chosen):
        key = str(chosen["trial"].iloc[0])
        trial_dir = Path(exp.trials.loc[exp.trials["trial"] == key, "trial_dir"].iloc[0])
        calibration = chosen_calibration(key, trial_dir, exp.predictions[key], trial_dir.parent,
                                         target_sensitivity, n_resamples=n_resamples, seed=seed, positive=positive)
        if exp.predictions[key].multilabel:
            findings = finding_table(exp.predictions[key], class_names)
    final = final_column(metric)  # importance: each trial's final metric
    full = exp.trials.merge(table[["trial", final]], on="trial")
    return Summary(
        experiment=exp, metric=metric, mode=mode, rank_column=column, group_by=group_by,
        table=table, groups=best_per_group(table, group_by, column, mode),
        comparisons=paired_comparisons(table, exp.predictions, column, mode,
                                       n_resamples=n_resamples, seed=seed),
        chosen=chosen,
        seeds=seed_repeats(table, exp.config_columns, exp.trials),
        diagnostics=diagnostics,
        importance=param_importances(full, exp.config_columns, final, mode),
        top=top_trials,
        # multilabel: one curve per finding, for the chosen (top) trial only
        roc={t: roc_curves(exp.predictions[t], class_names, positive)
             for t in (with_predictions[:1] if task == "multilabel" else with_predictions)},
        confusion={t: confusion_matrix(exp.predictions[t]) for t in with_predictions
                   if not exp.predictions[t].multilabel},
        class_names=class_names, group_trials=group_members(table, group_by),
        notes=list(exp.notes), calibration=calibration,
        ensemble=ensemble_row(table, exp.predictions, column, mode, ensemble, n_resamples=n_resamples, seed=seed,
                              positive=positive),
        audits=read_split_audits(paths), task=task, findings=findings,
        finalists=build_finalists(finalist_exp, n_resamples=n_resamples, seed=seed)
        if finalist_exp is not None else None,
    )

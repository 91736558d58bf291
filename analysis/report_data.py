"""Compute everything the report shows from experiment folders; draws and writes nothing."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np
import pandas as pd

from analysis.classification import RocCurve, confusion_matrix, roc_curves
from analysis.comparisons import paired_comparisons
from analysis.diagnostics import diagnose_trials
from analysis.errors import AnalysisError
from analysis.importance import Importance, param_importances
from analysis.recommended import Recommended, build_recommended, top_k_row, warnings_for
from analysis.shift_section import Shift, build_shift
from analysis.tables import GROUP_COLUMNS, best_per_group, check_group_by, group_members, seed_repeats
from tl.core.calibration import TARGET_SENSITIVITY
from tl.core.choice import rank_trials
from tl.core.finalists import Finalists, build_finalists
from tl.core.results import (
    Experiment, dataset_record, final_column, load_experiments, positive_index, rank_column, split_stages, trial_table,
)
from tl.core.results.split_audit import SplitAudit, read_split_audits
from tl.core.stats import N_RESAMPLES, SEED
from tl.core.subgroups import Subgroups, recommended_subgroups


class ReportData(NamedTuple):
    """All computed tables and figure data of one or more experiments."""

    experiment: Experiment  # the search's trials (a finalist stage's are in ``finalists``)
    metric: str
    mode: str
    rank_column: str  # Table 1 column that ranks trials: best value of the metric over epochs
    group_by: list[str]
    table: pd.DataFrame  # Table 1, best trial first, with the diagnostic verdict
    groups: pd.DataFrame  # Table 2: best trial per group
    comparisons: pd.DataFrame
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
    recommended: Recommended | None  # the model tl.export ships (None: nothing was tested)
    finalists: Finalists | None = None  # the finalist stage over seeds, when the search ran one
    top_k: pd.DataFrame | None = None  # the top-k search trials as an ensemble (tl.export --ensemble K)
    task: str = ""  # the dataset's task (tl.core.tasks), "" for experiments from before it was recorded
    warnings: list[str] = []  # what the first screen warns about (leaks, shift, close call, seed spread)
    paths: list[Path] = []  # the experiment folders, as given
    shift: Shift | None = None  # why test differs from val, for the recommended model (shift.csv)
    subgroups: Subgroups | None = None  # the recommended model per test subgroup (None: searched without them)


def _class_names(exp: Experiment) -> list[str]:
    names = dataset_record(exp.meta).get("class_names")
    if isinstance(names, list) and names:
        return [str(n) for n in names]
    sizes = {p.probs.shape[1] for p in exp.predictions.values()}
    return [str(i) for i in range(max(sizes))] if sizes else []


def build_report_data(paths: Sequence[Path], *, group_by: Sequence[str] | None = None, top: int = 5,
                      n_resamples: int = N_RESAMPLES, seed: int = SEED, ensemble: int = 3,
                      target_sensitivity: float = TARGET_SENSITIVITY) -> ReportData:
    """Read ``paths`` and compute every table, diagnosis and figure input.

    Args:
        paths: experiment folders (several are merged into one comparison).
        group_by: columns of Table 1 that define the groups of Table 2; None: those of
            backbone, freeze, weights that the trials have (else status).
        top: how many best trials get curves, ROC and confusion matrices.
        n_resamples, seed: of the bootstrap.
        ensemble: the top-k ensemble row's k (below 2: no such row).
        target_sensitivity: the val sensitivity the binary threshold must reach.

    Raises:
        TLError: unusable folders, no reported epoch, the metric missing from every
            result, an unknown group-by column or ``top`` < 1.
    """
    if top < 1:
        raise AnalysisError(f"--top must be at least 1, got {top}")
    loaded = load_experiments(paths)
    exp, finalist_exp = split_stages(loaded)  # Table 1 ranks search trials only
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
    task = str(dataset_record(exp.meta).get("task") or "")
    positive = positive_index(exp.meta)
    kw = {"n_resamples": n_resamples, "seed": seed}
    final = final_column(metric)  # importance: each trial's final metric
    full = exp.trials.merge(table[["trial", final]], on="trial")
    audits = read_split_audits(paths)
    recommended = build_recommended(loaded, Path(paths[0]), target_sensitivity=target_sensitivity, **kw)
    finalists = build_finalists(finalist_exp, **kw) if finalist_exp is not None else None
    return ReportData(
        experiment=exp, metric=metric, mode=mode, rank_column=column, group_by=group_by,
        table=table, groups=best_per_group(table, group_by, column, mode),
        comparisons=paired_comparisons(table, exp.predictions, column, mode, **kw),
        seeds=seed_repeats(table, exp.config_columns, exp.trials),
        diagnostics=diagnostics,
        importance=param_importances(full, exp.config_columns, final, mode),
        top=top_trials,
        # multilabel: one curve per finding, for the top trial only
        roc={t: roc_curves(exp.predictions[t], class_names, positive)
             for t in (with_predictions[:1] if task == "multilabel" else with_predictions)},
        confusion={t: confusion_matrix(exp.predictions[t]) for t in with_predictions
                   if not exp.predictions[t].multilabel},
        class_names=class_names, group_trials=group_members(table, group_by),
        notes=list(exp.notes), audits=audits, recommended=recommended, finalists=finalists,
        top_k=top_k_row(loaded, ensemble, **kw), task=task, warnings=warnings_for(recommended, audits, finalists),
        paths=[Path(p) for p in paths],
        shift=build_shift(recommended, Path(paths[0]), class_names, positive),
        subgroups=recommended_subgroups([Path(p) for p in paths], recommended.test, task=task or None,
                                        positive=positive, **kw) if recommended is not None else None,
    )

"""Figures of the report. Drawing only: every input is already computed elsewhere.

Uses ``matplotlib.figure.Figure`` directly (Agg canvas, no pyplot state), so nothing needs a
display and no figure leaks between calls.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from analysis.classification import RocCurve  # noqa: E402
from analysis.importance import Importance  # noqa: E402
from tl.core.calibration import Reliability  # noqa: E402
from tl.core.columns import TEST_ACC  # noqa: E402

MAX_GROUP_PANELS = 24
STATUS_COLORS = {"COMPLETED": "tab:green", "STOPPED": "tab:orange", "ERROR": "tab:red",
                 "RUNNING": "tab:blue", "PENDING": "tab:gray", "STOPPED/RUNNING": "tab:purple"}
STATUS_MARKERS = {"COMPLETED": "o", "STOPPED": "v", "RUNNING": ">", "PENDING": ".",
                  "STOPPED/RUNNING": "d"}
DPI = 100


def _color(i: int) -> str:
    return f"C{i % 10}"


def _short(label: object, width: int = 32) -> str:
    # Long labels (merged experiments' paths) would squeeze the axes to nothing.
    text = str(label)
    return text if len(text) <= width else "..." + text[-(width - 3):]


def plot_curves(frame: pd.DataFrame, trials: Sequence[str], labels: Mapping[str, str],
                title: str) -> Figure:
    """Draw loss (left) and accuracy (right) per epoch: train dashed, val solid, color per trial."""
    fig = Figure(figsize=(11, 4.2), dpi=DPI, layout="constrained")
    ax_loss, ax_acc = fig.subplots(1, 2)
    for i, trial in enumerate(trials):
        curve = frame[frame["trial"] == trial].sort_values("epoch")
        for ax, kind in ((ax_loss, "loss"), (ax_acc, "acc")):
            for split, style in (("train", "--"), ("val", "-")):
                if f"{split}_{kind}" in curve.columns:
                    legend = (kind, split) == ("loss", "val")  # one legend entry per trial
                    ax.plot(curve["epoch"], curve[f"{split}_{kind}"], style, color=_color(i),
                            marker="o", markersize=3,
                            label=_short(labels.get(trial, trial), 48) if legend else None)
    ax_loss.set(xlabel="epoch", ylabel="loss", title="loss (train --, val -)")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="accuracy (train --, val -)")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if trials:
        fig.legend(loc="outside right upper", fontsize=7)
    fig.suptitle(title)
    return fig


def plot_group_curves(frame: pd.DataFrame, groups: Mapping[str, Sequence[str]]) -> Figure:
    """Draw a small panel per group (at most MAX_GROUP_PANELS): val acc solid, train acc dashed."""
    names = list(groups)[:MAX_GROUP_PANELS]
    cols = min(3, max(1, len(names)))
    rows = max(1, math.ceil(len(names) / cols))
    fig = Figure(figsize=(4.2 * cols, 3.0 * rows), dpi=DPI, layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    for ax, name in zip(axes, names):
        for i, trial in enumerate(groups[name]):
            curve = frame[frame["trial"] == trial].sort_values("epoch")
            if "val_acc" in curve.columns:
                ax.plot(curve["epoch"], curve["val_acc"], "-", color=_color(i), linewidth=1,
                        marker="o", markersize=2)
            if "train_acc" in curve.columns:
                ax.plot(curve["epoch"], curve["train_acc"], "--", color=_color(i), linewidth=0.8)
        ax.set_title(_short(name, 120).replace(", ", "\n") if len(name) > 45 else name, fontsize=7)
        ax.set(xlabel="epoch", ylabel="accuracy")
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    for ax in axes[len(names):]:
        ax.set_visible(False)
    cut = len(groups) > MAX_GROUP_PANELS
    suffix = f" (first {MAX_GROUP_PANELS} of {len(groups)})" if cut else ""
    fig.suptitle(f"accuracy per group: val solid, train dashed{suffix}")
    return fig


def plot_accuracy_vs_time(table: pd.DataFrame, val_column: str,
                          test_column: str = TEST_ACC) -> Figure:
    """Draw each trial's ``val_column`` (marker shape = status) and, where it has one, its
    ``test_column`` (x) against its wall time; one color per backbone."""
    fig = Figure(figsize=(7.5, 4.5), dpi=DPI, layout="constrained")
    ax = fig.subplots()
    data = table.dropna(subset=[val_column, "wall_time_s"])
    keys = (data["backbone"].astype(str) if "backbone" in data.columns
            else pd.Series("all", index=data.index))
    for i, (name, part) in enumerate(data.groupby(keys, sort=True)):
        ax.scatter([], [], color=_color(i), label=name)
        for status, rows in part.groupby("status"):
            ax.scatter(rows["wall_time_s"], rows[val_column], color=_color(i), s=40,
                       marker=STATUS_MARKERS.get(status, "o"))
        if test_column in part.columns:
            ax.scatter(part["wall_time_s"], part[test_column], color=_color(i), marker="x", s=40)
    for status in dict.fromkeys(data["status"]):
        ax.scatter([], [], color="gray", marker=STATUS_MARKERS.get(status, "o"),
                   label=f"{val_column}, {status}")
    ax.scatter([], [], color="gray", marker="x", label=test_column)
    ax.set(xlabel="wall time of the trial (s)", ylabel="accuracy",
           title=f"{val_column} and {test_column} vs training time")
    ax.grid(alpha=0.3)
    if len(data):
        fig.legend(fontsize=8, loc="outside right upper")
    return fig


def plot_epochs_run(table: pd.DataFrame) -> Figure:
    """Draw a bar per trial: epochs run under ASHA, colored by status; planned epochs as a tick."""
    data = table.sort_values("epochs_run", kind="mergesort")
    fig = Figure(figsize=(7, max(2.5, 0.28 * len(data) + 1)), dpi=DPI, layout="constrained")
    ax = fig.subplots()
    y = np.arange(len(data))
    ax.barh(y, data["epochs_run"], color=[STATUS_COLORS.get(s, "gray") for s in data["status"]])
    handles = [Patch(color=STATUS_COLORS.get(s, "gray"), label=s)
               for s in dict.fromkeys(data["status"])]
    if "epochs" in data.columns:
        handles.append(ax.scatter(pd.to_numeric(data["epochs"], errors="coerce"), y, marker="|",
                                  s=120, color="black", label="planned"))
    fig.legend(handles=handles, fontsize=8, loc="outside right upper")
    ax.set_yticks(y, [_short(t) for t in data["trial"]], fontsize=7)
    ax.set(xlabel="epochs run", title="epochs each trial ran (color = status)")
    ax.grid(alpha=0.3, axis="x")
    return fig


def plot_epochs_run_counts(counts: pd.DataFrame) -> Figure:
    """Draw stacked bars: number of trials per epochs run (index), one color per status (column)."""
    fig = Figure(figsize=(7, 4), dpi=DPI, layout="constrained")
    ax = fig.subplots()
    bottom = np.zeros(len(counts))
    for status in counts.columns:
        ax.bar(counts.index, counts[status], bottom=bottom, label=status,
               color=STATUS_COLORS.get(status, "gray"))
        bottom += counts[status].to_numpy()
    ax.set(xlabel="epochs run", ylabel="trials", title="epochs the trials ran (color = status)")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)
    return fig


def plot_importance(importance: Importance) -> Figure:
    """Draw the normalized importances as horizontal bars, most important on top."""
    data = importance.frame.iloc[::-1]
    fig = Figure(figsize=(7, max(2.5, 0.4 * len(data) + 1)), dpi=DPI, layout="constrained")
    ax = fig.subplots()
    ax.barh(data["param"].astype(str), data["importance"], color="tab:blue")
    ax.set(xlabel="importance (normalized)",
           title=f"hyperparameter importance: {importance.method.split(':')[0]}, "
                 f"{importance.n_trials} trials")
    ax.grid(alpha=0.3, axis="x")
    return fig


def plot_roc(curves: Mapping[str, Sequence[RocCurve]]) -> Figure:
    """Draw ROC curves, one color per trial (line style per class when several)."""
    fig = Figure(figsize=(6, 5), dpi=DPI, layout="constrained")
    ax = fig.subplots()
    styles = ["-", "--", ":", "-."]
    for i, (trial, trial_curves) in enumerate(curves.items()):
        for j, curve in enumerate(trial_curves):
            name = _short(trial)
            if len(trial_curves) > 1:
                name += f" class {curve.label}"
            # one trial (a multilabel set's findings): a colour per class instead
            ax.plot(curve.fpr, curve.tpr, styles[j % 4], color=_color(j if len(curves) == 1 else i),
                    label=f"{name} (AUC {curve.auc:.3f})")
    ax.plot([0, 1], [0, 1], ":", color="gray", linewidth=1)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC on the test split",
           xlim=(0, 1), ylim=(0, 1.01))
    ax.grid(alpha=0.3)
    if curves:
        ax.legend(fontsize=7, loc="lower right")
    return fig


def plot_confusion(matrices: Mapping[str, np.ndarray], class_names: Sequence[str]) -> Figure:
    """Draw a confusion-matrix panel per trial (rows true class, columns predicted), with counts."""
    n = max(1, len(matrices))
    fig = Figure(figsize=(3.6 * n, 3.6), dpi=DPI, layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, n, squeeze=False)).ravel()
    for ax, (trial, matrix) in zip(axes, matrices.items()):
        ax.imshow(matrix, cmap="Blues")
        ticks = np.arange(matrix.shape[0])
        names = (list(class_names) if len(class_names) == matrix.shape[0]
                 else [str(t) for t in ticks])
        ax.set_xticks(ticks, names, rotation=45, ha="right", fontsize=7)
        ax.set_yticks(ticks, names, fontsize=7)
        limit = (matrix.min() + matrix.max()) / 2 if matrix.size else 0  # imshow's color midpoint
        for (r, c), count in np.ndenumerate(matrix):
            ax.text(c, r, str(count), ha="center", va="center", fontsize=8,
                    color="white" if count > limit else "black")
        ax.set(xlabel="predicted", ylabel="true", title=_short(trial))
    return fig


def plot_duplicate_pairs(audits: Sequence) -> Figure:
    """Thumbnails of the closest cross-split pairs each audit kept: one row per pair, side by side."""
    rows = [(a.experiment, a.pairs, i) for a in audits for i in range(len(a.pairs.get("thumb_a", [])))]
    fig = Figure(figsize=(4.4, 2.2 * max(1, len(rows))), dpi=DPI)
    for r, (experiment, pairs, i) in enumerate(rows):
        split_a, split_b = str(pairs["pair"][i]).split("|")
        kind = "exact" if bool(pairs["exact"][i]) else f"{int(pairs['distance'][i])} bits"
        for c, (split, key) in enumerate(((split_a, "a"), (split_b, "b"))):
            ax = fig.add_subplot(max(1, len(rows)), 2, 2 * r + c + 1)
            ax.imshow(pairs[f"thumb_{key}"][i], cmap="gray", vmin=0, vmax=255)
            name = str(pairs[f"name_{key}"][i]) if f"name_{key}" in pairs else ""
            ax.set_title(f"{split} ({kind})\n{_short(name, 34)}".strip(), fontsize=7)
            ax.set_axis_off()
    return fig


def plot_reliability(before: Reliability, after: Reliability) -> Figure:
    """Accuracy against mean confidence per bin, raw and temperature-scaled; the diagonal is perfect."""
    fig = Figure(figsize=(9, 4), dpi=DPI)
    for k, (rel, name) in enumerate(((before, "raw"), (after, "temperature-scaled"))):
        ax = fig.add_subplot(1, 2, k + 1)
        centers = (rel.edges[:-1] + rel.edges[1:]) / 2
        width = np.diff(rel.edges)
        filled = rel.count > 0
        share = rel.count[filled] / rel.count.sum()
        ax.bar(centers[filled], rel.accuracy[filled], width=width[filled] * np.maximum(share, 0.15) ** 0.5,
               color="tab:blue", alpha=0.6, edgecolor="tab:blue", label="accuracy")
        ax.plot(centers[filled], rel.confidence[filled], "_", color="tab:red", ms=12, mew=2, label="mean confidence")
        ax.plot([0, 1], [0, 1], "k--", lw=0.8)
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence (top class)", ylabel="accuracy", title=name)
        ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return fig

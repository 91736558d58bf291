"""The report's "Subgroups" section: the recommended model's test figures per subgroup (computed by
``tl.core.subgroups``, carried in ``ReportData.subgroups``), the rule that flags one, and where each
column's values came from. Nothing when the search was run without ``--subgroup-columns``.

``subgroups_parts`` gives the section's title, paragraphs and tables; ``analysis.report`` makes them a
``Section`` (this module imports nothing of it, so the two stay out of an import circle)."""

from __future__ import annotations

import pandas as pd

from analysis.formatting import format_frame, format_value
from analysis.report_data import ReportData
from tl.core.stats import CI_LEVEL
from tl.core.subgroups import FIGURES, LOWER_IS_BETTER, MIN_IMAGES, MIN_POSITIVES, Subgroups

TITLE = "Subgroups of the test split"
POSITIVES = {"binary": "positives: images of the positive class.",
             "multilabel": "positives: images with at least one finding; the figure is the mean AUC over findings.",
             "multiclass": "positives: the images of the subgroup's rarest class.",
             "ordinal": "positives: the images of the subgroup's rarest grade."}


def _short(name: str) -> str:
    return name.replace("test_", "").replace("auc", "AUC").replace("mae", "MAE").replace("qwk", "QWK")


def subgroups_table(frame: pd.DataFrame) -> pd.DataFrame:
    """The subgroup frame as text: each figure with its interval in one cell, the overall figure beside it."""
    figures = [f for f in dict.fromkeys(f for fs in FIGURES.values() for f in fs) if f in frame.columns]
    level = f"{int(CI_LEVEL * 100)}% CI"
    out = frame[["column", "subgroup", "images", "positives"]].astype({"images": int, "positives": int}).astype(str)
    for f in figures:
        out[f"{_short(f)} [{level}]"] = [
            f"{format_value(f, v)} [{format_value(f, lo)}, {format_value(f, hi)}]"
            for v, lo, hi in zip(frame[f], frame[f"{f}_low"], frame[f"{f}_high"])]
        out[f"{_short(f)} overall"] = [format_value(f, v) for v in frame[f"{f}_overall"]]
    out["flagged"] = ["yes: " + ", ".join(_short(w) for w in str(worse).split(", ")) if flag else ""
                      for flag, worse in zip(frame["flagged"], frame["worse_than_overall"])]
    out["note"] = frame["note"].fillna("")
    return format_frame(out)


def _sources_text(sub: Subgroups) -> str:
    parts = []
    for column, how in sub.sources.items():
        if not isinstance(how, dict):
            continue
        text = f"{column}: {how.get('source', '?')}"
        if how.get("bands") == "age":
            text += " in age bands (years) 0-17, 18-39, 40-59, 60-79, 80+"
        elif how.get("bands") == "quartiles":
            text += " in quartile bands of the whole table's values"
        parts.append(text)
    return "Columns: " + "; ".join(parts) + "." if parts else ""


def _flagged_text(frame: pd.DataFrame) -> str:
    rows = frame[frame["flagged"]]
    if not len(rows):
        return "No subgroup is flagged."
    items = []
    for _, r in rows.iterrows():
        worse = str(r["worse_than_overall"]).split(", ")
        figures = "; ".join(f"{_short(f)} {r[f]:.3f} [{r[f + '_low']:.3f}, {r[f + '_high']:.3f}] vs {r[f + '_overall']:.3f} "
                            "overall" for f in worse)
        items.append(f"{r['column']} = {r['subgroup']} ({int(r['images'])} images: {figures})")
    return "Flagged: " + "; ".join(items) + "."


def subgroups_parts(data: ReportData) -> tuple[str, list[str], list[tuple[str, pd.DataFrame]]] | None:
    """The section's (title, paragraphs, (caption, text table) pairs), or None when the search recorded
    no subgroups (the report then shows nothing)."""
    sub = data.subgroups
    if sub is None:
        return None
    if not len(sub.frame):
        return TITLE, list(sub.notes) or ["No subgroup could be scored."], []
    lower = ", ".join(_short(f) for f in LOWER_IS_BETTER)
    paragraphs = [
        f"The recommended model's test predictions per subgroup, each figure with its {int(CI_LEVEL * 100)}% "
        "percentile bootstrap interval over the subgroup's images. A subgroup is flagged when the whole interval "
        f"of one of its figures lies below the overall figure (above it for {lower}); one of under {MIN_IMAGES} "
        f"images or {MIN_POSITIVES} positives is listed, never flagged. Each column's subgroups add up to the test "
        "split. Subgroups are read after the search: they never steered it.",
        POSITIVES.get(data.task, ""),
        _flagged_text(sub.frame), _sources_text(sub), *sub.notes]
    return TITLE, [p for p in paragraphs if p], [("", subgroups_table(sub.frame))]

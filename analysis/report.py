"""The report as sections of text, tables and figures, rendered to Markdown or one HTML page.

The HTML page is self-contained: inline CSS, PNGs embedded as base64 data URIs, no scripts,
so it reads offline and can be mailed as one file. Its renderer (``Section``, ``html_table``,
``section_id``, ``render_html``) lives in ``tl.core.html_report``, shared with ``tl.evaluate``'s page;
the names stay importable from here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import pandas as pd

from analysis.diagnostics import precedence_text, thresholds_frame
from analysis.formatting import format_frame, format_value, markdown_table
from analysis.report_data import ReportData
from analysis.subgroups_section import subgroups_parts
from analysis.shift_section import shift_section_parts
from tl.core.choice import rule_text
from tl.core.columns import HEADLINE_TEST_METRICS, TEST_ACC, TEST_AUC
from tl.core.headline import ORDINAL_TEST_METRICS
from tl.core.html_report import Section, html_table, render_html as _render_html, section_id  # noqa: F401
from tl.core.finalists import finalist_lines
from tl.core.recommend import FINALIST_ENSEMBLE
from tl.core.results import dataset_record
from tl.core.stats import CI_LEVEL
from tl.core.uncertain import space_policy

FIGURES = {
    "curves_top": "Loss and accuracy per epoch of the top trials (train dashed, val solid)",
    "curves_groups": "Accuracy per epoch of every trial, one panel per group",
    "accuracy_vs_time": "Final validation metric (shape = status) and test accuracy (x) "
                        "against wall time",
    "epochs_run": "Epochs each trial ran before ASHA stopped it (or it finished)",
    "importance": "Hyperparameter importance",
    "roc": "ROC curves on the test split of the best trials",
    "confusion": "Confusion matrices on the test split of the best trials",
    "duplicate_pairs": "Closest cross-split image pairs the split audit found (left: first split)",
    "reliability": "Reliability of the recommended model on the test split, before and after temperature "
                   "scaling (fitted on val); bar width grows with the images in the bin",
    "gradcam": "Grad-CAM of the recommended model on test images (true/false positives and negatives), "
               "drawn by tl.export",
}
TOP_COLUMNS = ["trial", "experiment", "backbone", "freeze", "weights", "lr", "batch_size",
               "epochs_run", "status", "best_val_acc", TEST_ACC, TEST_AUC, "wall_time_s",
               "verdict"]


def top_table(data: ReportData) -> pd.DataFrame:
    """Return the top-K rows of Table 1 with the columns worth a glance, as text."""
    columns = [c for c in TOP_COLUMNS if c in data.table.columns]
    columns.insert(columns.index("best_val_acc"), data.rank_column)
    rows = data.table[data.table["trial"].isin(data.top)]
    return format_frame(rows[list(dict.fromkeys(columns))])


def comparisons_table(comparisons: pd.DataFrame) -> pd.DataFrame:
    """Return the comparisons as text, the difference and its CI in one cell."""
    frame = comparisons.copy()
    frame["diff"] = [
        "" if pd.isna(d) else f"{format_value('diff', d)} [{format_value('diff', lo)}, "
        f"{format_value('diff', hi)}]"
        for d, lo, hi in zip(frame["diff"], frame["ci_low"], frame["ci_high"])
    ]
    return format_frame(frame.drop(columns=["ci_low", "ci_high"]))


def figures_table(figures: pd.DataFrame) -> pd.DataFrame:
    """Return a model's figures row as text: each test statistic with its interval in one cell."""
    frame = figures.copy()
    level = f"{int(CI_LEVEL * 100)}% CI"
    renamed = {}
    for stat in (*HEADLINE_TEST_METRICS, *ORDINAL_TEST_METRICS):
        if stat in frame:
            frame[stat] = [f"{format_value(stat, v)} [{format_value(stat, lo)}, {format_value(stat, hi)}]"
                           for v, lo, hi in zip(frame[stat], frame[f"{stat}_low"], frame[f"{stat}_high"])]
            frame = frame.drop(columns=[f"{stat}_low", f"{stat}_high"])
            renamed[stat.replace("test_", "test ").replace("auc", "AUC")] = f"{stat.replace('test_', 'test ').replace('auc', 'AUC')} [{level}]"
    # The model's description is the section's first line; the table keeps its members and figures.
    text = format_frame(frame.drop(columns=[c for c in ("kind", "model") if c in frame]))
    return text.rename(columns=renamed)


def calibration_table(figures: pd.DataFrame) -> pd.DataFrame:
    """Return the calibration figures as text, each value with its interval where it has one."""
    cells = [f"{v:.4g}" if pd.isna(lo) else
             f"{v:.3f} [{lo:.3f}, {hi:.3f}]" for v, lo, hi in zip(figures["value"], figures["low"], figures["high"])]
    level = f"{int(CI_LEVEL * 100)}% CI"
    return pd.DataFrame({"statistic": figures["statistic"], f"value [{level}]": cells, "on": figures["on"]})


def recommended_section(data: ReportData) -> Section:
    """The first screen: the model tl.export ships, its expected test figures, the runner-up, the
    warnings that matter and the commands that use it."""
    title = "Recommended model"
    rec = data.recommended
    if rec is None:
        return Section(title, ["No trial ran all its epochs and saved test predictions: there is no model to "
                               "recommend. Give trials more epochs, or ASHA a longer grace period."], [], [])
    r = rec.recommendation
    why = ("The finalist stage's winner: the recipe with the best mean val figure over its seeds, re-trained "
           f"with {len(r.trials)} seeds; the model averages their probabilities."
           if r.kind == FINALIST_ENSEMBLE else
           "The search's top tested trial by the rule of choice (validation only).")
    paragraphs = [rec.lines[0].removeprefix("recommended model: ") + ".", why,
                  *[line.strip() for line in rec.lines[1:]]]
    paragraphs += [f"Warning: {w}" for w in data.warnings]
    paragraphs.append(f"Use it: python -m tl.export {data.paths[0]} --out BUNDLE (writes this model, calibrated on "
                      "val), then python -m tl.predict BUNDLE IMAGES... --out predictions.csv.")
    tables = [("", figures_table(rec.figures))]
    if rec.findings is not None:
        left_out = [f for f, n in zip(rec.findings["finding"], rec.findings["note"]) if n]
        no_finding = rec.figures["acc_no_finding"].iloc[0]
        paragraphs.append(
            "Multilabel: test AUC is the mean AUC over findings"
            + (f"; left out of the mean (no positive or no negative in test): {', '.join(left_out)}" if left_out else "")
            + ". test acc is MedMNIST's ACC (every finding at 0.5). It is close to what predicting \"no finding\" "
            f"everywhere gets ({no_finding:.3f} here, column acc no finding), so read the AUCs, not ACC.")
        tables.append(("Per-finding test AUC of the recommended model", format_frame(rec.findings)))
    return Section(title, paragraphs, tables, [])


def _calibration_section(data: ReportData) -> Section:
    """Calibration, operating point and Grad-CAM of the recommended model (the same one tl.export ships)."""
    title = "Calibration, operating point and Grad-CAM of the recommended model"
    rec = data.recommended
    if rec is None:
        return Section(title, ["No recommended model."], [], [])
    paragraphs, tables, figures = [], [], []
    if rec.calibration is None:
        paragraphs.append(rec.calibration_note)
    else:
        paragraphs.append(
            "The temperature and the threshold are fitted on the model's val predictions only (a seed ensemble: "
            "their mean), then measured on test: the same numbers tl.export writes into the bundle. ECE is the "
            "image-weighted mean gap between confidence and accuracy over 15 equal-width confidence bins.")
        tables.append(("", calibration_table(rec.calibration.figures)))
        figures.append("reliability")
    if rec.gradcam is not None:
        figures.append("gradcam")
    else:
        paragraphs.append(rec.gradcam_note)
    if data.top_k is not None and len(data.top_k):
        tables.append((f"For comparison: the top {data.top_k['trials'].iloc[0].count(',') + 1} search trials as "
                       "one ensemble (mean probability; tl.export --ensemble K)", figures_table(data.top_k)))
    return Section(title, paragraphs, tables, figures)


def _finalists_section(data: ReportData) -> Section:
    """The finalist stage: protocol, the printed lines of tl.search, per-recipe and ensemble tables."""
    fin = data.finalists
    tables = [("Per recipe, winner first (val and test over the seeds that ran all their epochs)",
               format_frame(fin.recipes.drop(columns="trials")))]
    if len(fin.ensemble):
        tables.append(("The winner's seed ensemble (mean of its seeds' test probabilities)",
                       format_frame(fin.ensemble)))
    lines = [line.strip() for line in finalist_lines(fin)]
    return Section("Finalists", [fin.protocol, *lines, *[f"Note: {n}" for n in fin.notes]], tables, [])


def _overview(data: ReportData) -> Section:
    exp = data.experiment
    meta = exp.meta
    dataset = dataset_record(meta)
    counts = exp.trials["status"].value_counts()
    sizes = dataset.get("split_sizes")
    sizes = (", ".join(f"{s} {int(n):,}" for s, n in sizes.items()) if isinstance(sizes, dict) else "unknown")
    paragraphs = [
        "Experiments: " + ", ".join(
            f"{name} ({Path(trial_dir).parent})" for name, trial_dir in
            exp.trials.groupby("experiment", sort=False)["trial_dir"].first().items()) + ".",
        f"Dataset: {dataset.get('name', 'unknown')}, task {dataset.get('task', 'unknown')}, "
        f"classes {', '.join(data.class_names) or 'unknown'}; split sizes {sizes}"
        + (f", test split fingerprint {dataset['test_fingerprint']} (paired comparisons need equal ones)"
           if dataset.get("test_fingerprint") else "") + ".",
        f"{len(exp.trials)} trials: " + ", ".join(f"{n} {s}" for s, n in counts.items()) + ".",
        f"Rule of choice (the one tl.search prints its trial by): {rule_text(data.metric, data.mode)}. "
        "The trainable tests the best-by-val weights, so that is the model the test figures "
        "describe. Test metrics never rank or select anything.",
    ]
    repeat = repeatability_text(meta)
    if repeat:
        paragraphs.append(repeat)
    paragraphs += [f"Note: {n}" for n in data.notes]
    return Section("Overview", paragraphs, [], [])


def label_table(meta: dict) -> pd.DataFrame:
    """Per class (finding): positives per split with their share, and uncertain (-1) labels, from
    ``tl_search.json``'s ``label_counts``; the table's blank cells (read as 0) when a label table was read."""
    dataset = dataset_record(meta)
    counts = dataset.get("label_counts")
    if not isinstance(counts, dict) or not counts:
        return pd.DataFrame()
    table_counts = ((dataset.get("split") or {}).get("table") or {}).get("labels", {}).get("counts", {})
    rows = []
    for name in next(iter(counts.values())):
        row = {"class / finding": name}
        for split, per in counts.items():
            c = per.get(name, {})
            n = max(int(c.get("n", 0)), 1)
            row[split] = f"{int(c.get('positive', 0)):,} ({c.get('positive', 0) / n:.1%})"
        uncertain = sum(int(per.get(name, {}).get("uncertain", 0)) for per in counts.values())
        blank = table_counts.get(name, {}).get("blank") if isinstance(table_counts.get(name), dict) else None
        if uncertain or any("uncertain" in per.get(name, {}) for per in counts.values()):
            row["uncertain (-1)"] = f"{uncertain:,}"
        if blank is not None:
            row["blank (= 0)"] = f"{int(blank):,}"
        rows.append(row)
    return pd.DataFrame(rows)


def _data_section(data: ReportData) -> Section:
    """Where the data came from: a label table's source, columns and groups; labels per split."""
    dataset = dataset_record(data.experiment.meta)
    split = dataset.get("split") if isinstance(dataset.get("split"), dict) else {}
    paragraphs = []
    table = split.get("table") if split.get("source") == "label table" else None
    if table:
        labels = table.get("labels", {})
        paths = table.get("path_column", {})
        paragraphs.append(
            f"Label table {table.get('table')}: {table.get('rows_kept', '?'):,} images from "
            f"{table.get('rows_read', '?'):,} rows; image paths from column {paths.get('column')!r} "
            f"(resolved: {', '.join(f'{k} {v:,}' for k, v in paths.get('resolved', {}).items() if v)}); labels "
            f"from {', '.join(map(repr, labels.get('columns', [])))} ({labels.get('mode')})"
            + (f", {labels.get('no_finding')!r} meaning no finding" if labels.get("no_finding") else "")
            + (f"; {table['duplicates']['rows_merged']:,} duplicate rows merged"
               if (table.get("duplicates") or {}).get("rows_merged") else "") + ".")
        space = data.experiment.meta.get("space") or {}
        policy = space_policy(space.get("params") or {}, space.get("fixed") or {}, default=space.get("uncertain"))
        if policy:
            paragraphs.append("Uncertain (-1) findings: training " + (f"searched over {policy}" if isinstance(
                policy, list) else f"policy {policy}") + "; val and test leave them out of every metric.")
    groups = split.get("groups")
    if isinstance(groups, dict):
        paragraphs.append(f"Groups (patients) from {groups.get('source')}: " + ", ".join(
            f"{s} {g.get('n_groups', 0):,}" for s, g in (groups.get("splits") or {}).items()) + ".")
    dropped = split.get("dropped")
    if isinstance(dropped, dict):
        paragraphs.append("Removed before training: " + ", ".join(
            f"{dropped[s]:,} {s}" for s in ("val", "test") if dropped.get(s)) + f" images, {dropped.get('why')}; "
            "the split sizes and every val and test figure are without them.")
    decoding = split.get("decoding")
    if isinstance(decoding, dict) and decoding.get("n"):
        paragraphs.append("Decoded: " + ", ".join(f"{k} {v:,}" for k, v in (decoding.get("format") or {}).items())
                          + (f"; DICOM VOI {decoding['voi']}" if decoding.get("voi") else "")
                          + (f"; {decoding['inverted']:,} MONOCHROME1 inverted" if decoding.get("inverted") else "")
                          + (f"; {decoding['mapped_by_range']:,} mapped to 8 bits by range"
                             if decoding.get("mapped_by_range") else "") + ".")
    counts = label_table(data.experiment.meta)
    tables = [("Labels per split (positives and share)", format_frame(counts))] if len(counts) else []
    if not paragraphs and not tables:
        return Section("Data", ["No label counts recorded (the search predates them)."], [], [])
    return Section("Data", paragraphs, tables, [])


def repeatability_text(meta: dict) -> str:
    """Whether rerunning the search's command would repeat its trials and its choice, from its args."""
    args = meta.get("args") if isinstance(meta.get("args"), dict) else None
    if args is None:
        return ""
    if args.get("repeatable"):
        budget = args.get("time_budget_s")
        return ("Repeatability: trials ran one at a time (--repeatable), so ASHA and the sampler saw results in a "
                "fixed order, and the same command on the same data and software repeats these trials and this choice"
                + (f"; the time budget ({budget:g} s) ends the search by the clock, so a rerun may get more or fewer trials"
                   if budget else "") + ".")
    return ("Repeatability: trials ran concurrently, so ASHA's stops and the sampler's suggestions depended on which "
            "trial reported first; rerunning the same command can stop and choose different trials. "
            "tl.search --repeatable runs one trial at a time and repeats them.")


def _audit_section(data: ReportData) -> Section:
    title = "Split audit"
    if not data.audits:
        return Section(title, ["No split audit recorded (the search predates it)."], [], [])
    paragraphs = [
        "Before Ray started, the search compared the splits every trial saw: exact duplicates are "
        "images with identical decoded pixels in two splits; near duplicates (not exact) have "
        "perceptual hashes within the threshold, which survives re-encoding and slight resizing; "
        "groups in both counts patients (groups) found in two splits, unknown without a grouping. "
        "A duplicate or shared patient across train and val inflates val; across train and test, "
        "test.", *[f"{a.experiment}: {a.method}." for a in data.audits]]
    paragraphs += [f"{a.experiment}: {a.grouping}." for a in data.audits if a.grouping]
    paragraphs += [f"Warning ({a.experiment}): {a.warning}" for a in data.audits if a.warning]
    counts = pd.concat([a.counts for a in data.audits], ignore_index=True)
    if counts["experiment"].nunique() == 1:
        counts = counts.drop(columns="experiment")
    return Section(title, paragraphs, [("", format_frame(counts))], ["duplicate_pairs"])


def _comparisons_section(comparisons: pd.DataFrame, multilabel: bool = False) -> Section:
    title = "Paired comparisons on the test split"
    if comparisons.empty:
        return Section(title, ["Nothing to compare: needs two backbones, or both freeze modes or "
                               "both weight versions of one backbone."], [], [])
    if multilabel:
        return Section(title, [
            "Each side is its best trial by the validation metric among trials with saved test "
            "predictions. Multilabel: acc A and acc B hold each side's test mean AUC over findings, and "
            f"A - B is the mean-AUC difference with a paired bootstrap {int(CI_LEVEL * 100)}% CI (test "
            "images resampled, the same rows for both sides, seeded). McNemar does not apply: an image "
            "has several findings, not one right-or-wrong answer, so no p-value is given."],
            [("", comparisons_table(comparisons))], [])
    return Section(title, [
        "Each side is its best trial by the validation metric among trials with saved test "
        "predictions. A - B is the difference in test accuracy with a paired bootstrap "
        f"{int(CI_LEVEL * 100)}% CI (test images resampled, seeded); McNemar p is the exact "
        "binomial test on the images exactly one side got right."],
        [("", comparisons_table(comparisons))], [])


def report_sections(data: ReportData) -> list[Section]:
    """Return the sections of the report in reading order."""
    table1 = data.table.drop(columns=["error"] if not data.table["error"].astype(bool).any()
                                else [])
    diag_columns = [c for c in data.diagnostics.columns if c != "status"]
    seeds = ([("", format_frame(data.seeds))] if len(data.seeds) else [])
    importance = data.importance
    imp_text = (f"{importance.method}. Computed on {importance.n_trials} completed trials, "
                f"target = final {data.metric}; ASHA-stopped trials are left out (their final "
                "value reflects a smaller budget)." if not importance.note else importance.note)
    finalists = [_finalists_section(data)] if data.finalists is not None else []
    parts = subgroups_parts(data)
    subgroups = [Section(*parts, [])] if parts is not None else []
    return [
        recommended_section(data),
        _calibration_section(data),
        *subgroups,
        *finalists,
        _overview(data),
        _data_section(data),
        _audit_section(data),
        Section(f"Top {len(data.top)} trials", [], [("", top_table(data))], ["curves_top"]),
        Section("Table 1: every trial", [
            "best val loss epoch is k/N: the epoch of the lowest val loss out of N epochs run. "
            "acc / s is test acc (else best val acc) per second of wall time."],
            [("", format_frame(table1))], []),
        Section(f"Table 2: best trial per {' x '.join(data.group_by)}",
                [f"Best trial of each group by its best {data.metric} (validation only)."],
                [("", format_frame(data.groups))], ["curves_groups"]),
        _comparisons_section(data.comparisons, data.task == "multilabel"),
        Section("Repeated seeds", [] if seeds else
                ["No configuration was run with more than one seed."], seeds, []),
        Section(*shift_section_parts(data.shift)),
        Section("Overfitting diagnostics", [
            "train-val gap = final train acc - final val acc; val loss rise = (final - lowest val "
            "loss) / lowest; val acc std (last 3) = sample std of the last 3 val accuracies; "
            "val-test gap = best val acc - test acc; underfit below = the train-acc floor for "
            "this dataset (majority-class rate of the test labels + margin, at least the "
            "absolute floor).", precedence_text()],
                [("Thresholds", format_frame(thresholds_frame())),
                 ("Per trial", format_frame(data.diagnostics[diag_columns]))], []),
        Section("Hyperparameter importance", [imp_text],
                [("", format_frame(importance.frame))] if len(importance.frame) else [],
                ["importance"]),
        Section("Time and budget", [], [], ["accuracy_vs_time", "epochs_run"]),
        Section("Best trials on the test split",
                [f"Trials: {', '.join(data.roc) or 'none with saved test predictions'}."],
                [], ["roc", "confusion"]),
    ]


def render_markdown(sections: list[Section], image_files: Mapping[str, str], title: str) -> str:
    """Return the report as Markdown; figures link to ``image_files`` (name -> relative path)."""
    parts = [f"# {title}"]
    for section in sections:
        parts.append(f"## {section.title}")
        parts += section.paragraphs
        for caption, table in section.tables:
            parts += ([f"**{caption}**"] if caption else []) + [markdown_table(table)]
        parts += [f"![{FIGURES[f]}]({image_files[f]})" for f in section.figures if f in image_files]
    return "\n\n".join(parts) + "\n"


def render_html(sections: list[Section], images: Mapping[str, bytes], title: str) -> str:
    """Return the report as one self-contained HTML page (``images``: figure name -> PNG bytes), each
    figure captioned by ``FIGURES`` (the renderer: ``tl.core.html_report``)."""
    return _render_html(sections, images, title, FIGURES)

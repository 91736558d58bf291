"""Command line: summarize one or more experiment folders into tables, plots and a report.

    python -m analysis.summarize [EXPERIMENT_DIR ...] [--out DIR] [--group-by COLS] [--top K]

Experiments on several datasets (different test splits or classes) get one report each, in
``--out/<dataset>/``, and a top-level report with each dataset's recommended model and the recipe x
dataset table (``recipes_by_dataset.csv``); nothing ranks trials of two datasets together.

Writes summary.csv (tidy trial x epoch frame; summary.parquet too when pyarrow imports),
trials.csv, groups.csv, comparisons.csv, chosen.csv, diagnostics.csv (subgroups.csv after a search with
--subgroup-columns; finalists.csv,
finalist_trials.csv and finalist_ensemble.csv after a finalist stage), PNG figures, summary.md and a
self-contained report.html into --out, and prints the best tables.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
from pathlib import Path
from typing import Callable, Sequence

import pandas as pd

from analysis import plots
from analysis.datasets_report import TABLE_FILE, datasets_sections
from analysis.errors import AnalysisError
from analysis.formatting import format_frame
from analysis.report import (
    calibration_table, comparisons_table, figures_table, render_html, render_markdown, report_sections, top_table,
)
from analysis.report_data import ReportData, build_report_data
from analysis.subgroups_section import subgroups_parts
from analysis.tables import GROUP_COLUMNS, epochs_run_counts
from tl.core.across import RECIPE_COLUMNS, across_lines, folder_label, group_by_dataset, recipes_by_dataset
from tl.core.errors import TLError
from tl.core.finalists import finalist_lines
from tl.core.results import newest_experiment

DEFAULT_RESULTS = Path("results")
OUT_SUBDIR = "summary"
BAD_INPUT = 2  # exit status for bad input, the same as python -m tl.search
MAX_TRIAL_BARS = 60


def get_args_parser() -> argparse.ArgumentParser:
    """Return the parser of ``python -m analysis.summarize``."""
    parser = argparse.ArgumentParser(
        prog="python -m analysis.summarize",
        description="Summarize transfer-learning search results (only reads experiment folders).")
    parser.add_argument("experiments", nargs="*", type=Path, metavar="EXPERIMENT_DIR",
                        help="experiment folder(s); default: the newest under "
                             f"./{DEFAULT_RESULTS}. Several on one dataset merge into one comparison; on "
                             "several datasets, one report each and a recipe x dataset table.")
    group = parser.add_argument_group("output")
    group.add_argument("--out", type=Path, default=None,
                       help=f"output folder (default: <first experiment>/{OUT_SUBDIR}/)")
    group.add_argument("--group-by", default=None,
                       help="comma-separated Table 1 columns that define groups "
                            f"(default: {','.join(GROUP_COLUMNS)})")
    group.add_argument("--top", type=int, default=5,
                       help="number of best trials to plot and print (default: %(default)s)")
    group.add_argument("--ensemble", type=int, default=3, metavar="K",
                       help="a top-K search trials ensemble row beside the recommended model (default: %(default)s; 1: none)")
    group.add_argument("--target-sensitivity", type=float, default=0.95,
                       help="binary tasks: val sensitivity the operating threshold must reach "
                            "(default: %(default)s)")
    return parser


def draw_figures(data: ReportData) -> dict[str, bytes]:
    """Return every figure of the report as PNG bytes, keyed by figure name."""
    exp, table = data.experiment, data.table
    labels = {t: f"{t} {b}" for t, b in zip(table["trial"], table.get("backbone", table["trial"]))}
    figures = {
        "curves_top": plots.plot_curves(exp.frame, data.top, labels,
                                        f"top {len(data.top)} trials by best {data.metric}"),
        "curves_groups": plots.plot_group_curves(exp.frame, data.group_trials),
        "accuracy_vs_time": plots.plot_accuracy_vs_time(table, data.rank_column),
        # One bar per trial stays readable up to MAX_TRIAL_BARS trials; beyond, count them.
        "epochs_run": plots.plot_epochs_run(table) if len(table) <= MAX_TRIAL_BARS
        else plots.plot_epochs_run_counts(epochs_run_counts(table)),
    }
    if len(data.importance.frame):
        figures["importance"] = plots.plot_importance(data.importance)
    if any(len(a.pairs.get("thumb_a", [])) for a in data.audits):
        figures["duplicate_pairs"] = plots.plot_duplicate_pairs(data.audits)
    if data.roc:
        figures["roc"] = plots.plot_roc(data.roc)
    if data.confusion:
        figures["confusion"] = plots.plot_confusion(data.confusion, data.class_names)
    rec = data.recommended
    if rec is not None and rec.calibration is not None:
        figures["reliability"] = plots.plot_reliability(rec.calibration.before, rec.calibration.after)
    images = {}
    if rec is not None and rec.gradcam is not None:
        images["gradcam"] = rec.gradcam.read_bytes()  # drawn by tl.export, of this very model
    for name, fig in figures.items():
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png")
        images[name] = buffer.getvalue()
    return images


def _write_frames(data: ReportData, out: Path) -> list[Path]:
    frames = {"summary": data.experiment.frame, "trials": data.table,
              "groups": data.groups, "comparisons": data.comparisons,
              "diagnostics": data.diagnostics}
    if data.recommended is not None:  # the model tl.export ships, its test figures with intervals
        frames["chosen"] = data.recommended.figures
    if data.shift is not None:  # why its test figure differs from val: prevalence, image shift, calibration
        frames["shift"] = data.shift.diagnosis.frame
    if len(data.seeds):
        frames["seeds"] = data.seeds
    if data.finalists is not None:  # per recipe (winner first), per finalist trial, the ensemble
        frames.update(finalists=data.finalists.recipes, finalist_trials=data.finalists.runs,
                      finalist_ensemble=data.finalists.ensemble)
    if data.audits:
        frames["split_audit"] = pd.concat([a.counts for a in data.audits], ignore_index=True)
    if data.subgroups is not None and len(data.subgroups.frame):  # the recommended model per test subgroup
        frames["subgroups"] = data.subgroups.frame
    written = []
    for name, frame in frames.items():
        frame.to_csv(out / f"{name}.csv", index=False)
        written.append(out / f"{name}.csv")
    try:
        data.experiment.frame.to_parquet(out / "summary.parquet", index=False)
        written.append(out / "summary.parquet")
    except (ImportError, ValueError, TypeError) as exc:
        data.notes.append(f"summary.parquet not written ({type(exc).__name__}: {exc})")
    return written


def write_outputs(data: ReportData, out: Path) -> list[Path]:
    """Write CSVs (and parquet), PNGs, summary.md and report.html into ``out``; return the paths.

    Raises:
        AnalysisError: ``out`` cannot be created or written.
    """
    try:
        out.mkdir(parents=True, exist_ok=True)
        written = _write_frames(data, out)
        images = draw_figures(data)
        for name, png in images.items():
            (out / f"{name}.png").write_bytes(png)
            written.append(out / f"{name}.png")
        sections = report_sections(data)
        title = "Transfer-learning search: " + ", ".join(
            data.experiment.trials["experiment"].unique())
        (out / "summary.md").write_text(
            render_markdown(sections, {n: f"{n}.png" for n in images}, title), encoding="utf-8")
        (out / "report.html").write_text(render_html(sections, images, title), encoding="utf-8")
    except OSError as exc:
        raise AnalysisError(f"cannot write to {out}: {exc.strerror or exc}") from exc
    return written + [out / "summary.md", out / "report.html"]


def print_summary(data: ReportData, written: Sequence[Path]) -> None:
    """Print the top-K trials, the paired comparisons and the written paths."""
    with pd.option_context("display.width", 200, "display.max_columns", None,
                           "display.max_colwidth", 40):
        print(f"Top {len(data.top)} trials by best {data.metric} ({data.mode}):")
        print(top_table(data).to_string(index=False))
        rec = data.recommended
        if rec is not None:
            print()
            print("\n".join(rec.lines))
            for warning in data.warnings:
                print(f"warning: {warning}")
            print(figures_table(rec.figures).to_string(index=False))
            if data.top_k is not None and len(data.top_k):
                print(figures_table(data.top_k).to_string(index=False))
            if rec.findings is not None:
                print("\nPer-finding test AUC of the recommended model (a finding without a positive or a negative "
                      "in test is left out of the mean):")
                print(format_frame(rec.findings).to_string(index=False))
                print("MedMNIST's ACC (every finding at 0.5) is close to that of predicting \"no finding\" "
                      "everywhere (acc no finding): read the AUCs.")
            if rec.calibration is not None:
                print("\nCalibration (fitted on val, measured on test):")
                print(calibration_table(rec.calibration.figures).to_string(index=False))
            if data.shift is not None:  # why test differs from val (shift.csv)
                print(f"\nWhy test differs from val: {data.shift.diagnosis.sentence}")
                if data.shift.domain_note:
                    print(data.shift.domain_note)
            parts = subgroups_parts(data)  # the section the report shows, less its rule
            if parts is not None:
                title, paragraphs, tables = parts
                print(f"\n{title} (recommended model):")
                print("\n".join(paragraphs[1:] if tables else paragraphs))
                for _, table in tables:
                    print(table.to_string(index=False))
        if len(data.comparisons):
            print("\nPaired comparisons (test accuracy, A - B with 95% CI, McNemar exact p; multilabel: "
                  "mean AUC, no McNemar):")
            shown = comparisons_table(data.comparisons).drop(columns=["trial A", "trial B"])
            print(shown.to_string(index=False))
        print("\nBest per group:")
        print(format_frame(data.groups).to_string(index=False))
        if len(data.seeds):
            print("\nRepeated seeds (test accuracy mean and sample std):")
            print(format_frame(data.seeds).to_string(index=False))
    if data.finalists is not None:
        print(f"\n{data.finalists.protocol}")
        print("\n".join(finalist_lines(data.finalists)))
    for audit in data.audits:
        print(f"\nSplit audit of {audit.experiment} ({audit.method}):")
        print(format_frame(audit.counts.drop(columns="experiment")).to_string(index=False))
        if audit.warning:
            print(f"warning: {audit.warning}")
    importance = data.importance
    print(f"\nHyperparameter importance: {importance.note or importance.method}")
    if len(importance.frame):
        print("  " + ", ".join(f"{p} {v:.2f}" for p, v in importance.frame.itertuples(index=False)))
    print("\nWritten:")
    for path in written:
        print(f"  {path}")


def write_datasets_outputs(by_dataset: dict[str, list[Path]], out: Path, *, group_by: list[str] | None,
                           **report_kw) -> tuple[dict[str, ReportData], pd.DataFrame, list[str], list[Path]]:
    """Experiments on several datasets: each dataset's own full report in ``out/<dataset>/``, then
    ``recipes_by_dataset.csv``, ``summary.md`` and ``report.html`` over them in ``out``. Returns (report
    data per dataset, the recipe x dataset table, the recipe columns, the written paths)."""
    per_dataset = {label: build_report_data(paths, group_by=group_by, **report_kw)
                   for label, paths in by_dataset.items()}
    recipe = list(group_by) if group_by else [c for c in RECIPE_COLUMNS
                                               if all(c in d.table.columns for d in per_dataset.values())]
    if not recipe:
        raise AnalysisError("the datasets' trials share none of backbone, weights, freeze: pass --group-by")
    table = recipes_by_dataset({label: d.experiment for label, d in per_dataset.items()}, recipe,
                               **{k: v for k, v in report_kw.items() if k in ("n_resamples", "seed")})
    written: list[Path] = []
    for label, data in per_dataset.items():
        written += write_outputs(data, out / folder_label(label))
    sections = datasets_sections(per_dataset, table, recipe)
    title = f"Transfer-learning searches on {len(per_dataset)} datasets: " + ", ".join(per_dataset)
    try:
        table.to_csv(out / TABLE_FILE, index=False)
        (out / "summary.md").write_text(render_markdown(sections, {}, title), encoding="utf-8")
        (out / "report.html").write_text(render_html(sections, {}, title), encoding="utf-8")
    except OSError as exc:
        raise AnalysisError(f"cannot write to {out}: {exc.strerror or exc}") from exc
    return per_dataset, table, recipe, written + [out / TABLE_FILE, out / "summary.md", out / "report.html"]


def print_datasets(per_dataset: dict[str, ReportData], table: pd.DataFrame, recipe: list[str],
                   written: Sequence[Path]) -> None:
    """Print each dataset's recommended model and warnings, then the recipes across datasets."""
    for label, data in per_dataset.items():
        print(f"== {label} ({len(data.table)} trials, chosen by {data.metric}) ==")
        rec = data.recommended
        print("\n".join(rec.lines) if rec is not None else "no tested trial: no recommended model")
        for warning in data.warnings:
            print(f"warning: {warning}")
        print()
    print("\n".join(across_lines(table, list(per_dataset), recipe)))
    print("\nWritten:")
    for path in written:
        print(f"  {path}")


def _run(args: argparse.Namespace) -> tuple[list[str], Callable[[], None]]:
    """Read, compute and write; return (notes for stderr, what prints the summary)."""
    paths = list(args.experiments) or [newest_experiment(DEFAULT_RESULTS)]
    group_by = None
    if args.group_by is not None:
        group_by = [c.strip() for c in args.group_by.split(",") if c.strip()]
        if not group_by:
            raise AnalysisError("--group-by needs at least one column")
    if not 0 < args.target_sensitivity <= 1:
        raise AnalysisError(f"--target-sensitivity must be in (0, 1], got {args.target_sensitivity}")
    report_kw = {"top": args.top, "ensemble": args.ensemble, "target_sensitivity": args.target_sensitivity}
    out = args.out or Path(paths[0]) / OUT_SUBDIR
    by_dataset = group_by_dataset(paths)
    if len(by_dataset) > 1:  # one answer per dataset: nothing ranks trials of two datasets together
        per_dataset, table, recipe, written = write_datasets_outputs(by_dataset, out, group_by=group_by, **report_kw)
        notes = [f"{label}: {n}" for label, d in per_dataset.items() for n in d.notes]
        return notes, lambda: print_datasets(per_dataset, table, recipe, written)
    data = build_report_data(paths, group_by=group_by, **report_kw)
    written = write_outputs(data, out)
    return list(data.notes), lambda: print_summary(data, written)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status (2 with a one-line error for bad input, as tl.search)."""
    args = get_args_parser().parse_args(argv)
    try:
        notes, show = _run(args)
    except TLError as exc:  # AnalysisError is one, and so is the core's
        print(f"error: {exc}", file=sys.stderr)
        return BAD_INPUT
    except Exception as exc:  # a bug, not bad input: still one line; TL_DEBUG=1 shows the traceback
        if os.environ.get("TL_DEBUG"):
            raise
        where = exc.__traceback__
        while where is not None and where.tb_next is not None:
            where = where.tb_next
        at = f" at {Path(where.tb_frame.f_code.co_filename).name}:{where.tb_lineno}" if where else ""
        print(f"error: unexpected {type(exc).__name__}{at}: {str(exc).splitlines()[0] if str(exc) else ''} "
              "(a bug; rerun with TL_DEBUG=1 for the traceback and report it)", file=sys.stderr)
        return 1
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    show()
    return 0


if __name__ == "__main__":
    sys.exit(main())

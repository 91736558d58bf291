"""The report over experiments on several datasets: one answer per dataset, then the recipes side by side.

``analysis.summarize`` groups the experiments it reads by dataset (``tl.core.across``). With one
dataset the report is the single-dataset one. With several, every table that ranks, compares or
diagnoses trials is computed within a dataset (each dataset's own report, in a folder named after
it), and the top-level report holds only what may be laid side by side: each dataset's
recommended model, exactly as its own report gives it, and the recipe x dataset table with ranks.
Nothing here picks one model across datasets.
"""
from __future__ import annotations

from typing import Mapping

import pandas as pd

from analysis.formatting import format_frame
from analysis.report import Section, recommended_section
from analysis.report_data import ReportData
from tl.core.across import MEAN_RANK, N_DATASETS, figure_column, folder_label, recipe_cell
from tl.core.results import dataset_record

TABLE_FILE = "recipes_by_dataset.csv"


def datasets_overview(per_dataset: Mapping[str, ReportData]) -> pd.DataFrame:
    """One row per dataset: task, classes, test images, experiments, trials, the metric it is chosen by."""
    rows = []
    for label, data in per_dataset.items():
        record = dataset_record(data.experiment.meta)
        sizes = record.get("split_sizes") or {}
        rows.append({"dataset": label, "task": record.get("task", data.task or "unknown"),
                     "classes": len(data.class_names), "test images": sizes.get("test", float("nan")),
                     "experiments": ", ".join(p.name for p in data.paths), "trials": len(data.table),
                     "chosen by": f"{data.metric} ({data.mode})",
                     "report": f"{folder_label(label)}/report.html"})
    return pd.DataFrame(rows)


def recipes_table_text(table: pd.DataFrame, labels: list[str], recipe: list[str]) -> pd.DataFrame:
    """The recipe x dataset table for reading: per dataset one cell "figure [low, high] (rank r)"."""
    out = table[recipe].copy()
    for label in labels:
        figure = figure_column(table, label)
        short = figure.split(":", 1)[1].replace("test_", "test ") if figure else ""
        out[f"{label} {short}".strip()] = [recipe_cell(row, label, figure) for _, row in table.iterrows()]
    out["mean rank"] = [f"{v:.2f} over {int(n)}" for v, n in zip(table[MEAN_RANK], table[N_DATASETS])]
    return out


def datasets_sections(per_dataset: Mapping[str, ReportData], table: pd.DataFrame,
                      recipe: list[str]) -> list[Section]:
    """The top-level report's sections: the datasets, one recommended model each, the recipe table."""
    labels = list(per_dataset)
    overview = Section(
        f"{len(labels)} datasets, one answer each",
        ["These experiments are on different datasets (test splits and classes differ), so no trial is ranked, "
         "compared or diagnosed against a trial of another dataset, and no single model is picked across them. "
         "Each dataset's full report (every trial, comparisons, diagnostics, importance) is in its own folder, "
         "named in the table."],
        [("", format_frame(datasets_overview(per_dataset)))], [])
    answers = [recommended_section(data)._replace(title=f"Recommended model: {label}")
               for label, data in per_dataset.items()]
    across = Section(
        "Recipes across datasets",
        [f"Rows are recipes ({', '.join(recipe)}); a cell is the test figure of the recipe's best tested trial by "
         "val on that dataset, with its 95% bootstrap interval over the test images, and the recipe's rank on "
         "that dataset by its val figure (1 = best, ties averaged; test never ranks). The mean rank is over the "
         "datasets that ran and tested the recipe (MedMNIST+ compares models this way); '-' is a recipe a "
         f"dataset did not run or test, not a last place. {TABLE_FILE} holds the numbers."],
        [("", recipes_table_text(table, labels, recipe))], [])
    return [overview, *answers, across]

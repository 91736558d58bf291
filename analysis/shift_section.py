"""The report's answer to "why is test accuracy below val?" for the recommended model (Task E).

Prevalence per class, val accuracy re-weighted to test's prevalence, calibration-in-the-large and
per-class recall come from the model's saved val and test predictions (``tl.core.recommend``'s,
the ones the first section reports); the covariate-shift figure, a val-vs-test classifier on the
model's features, needs torch and the images, so ``tl.export`` computes it into
``EXP/explain/shift.json`` and it is shown only when it is of the recommended model's trials (as the
Grad-CAM grid). The numbers are ``tl.core.shift``'s; this module reads, lays out and words them.
Reads files only; draws nothing.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

import pandas as pd

from analysis.formatting import MISSING
from analysis.recommended import Recommended
from tl.core.errors import TLError
from tl.core.recommend import Recommendation, recommended_predictions
from tl.core.results.files import EXPLAIN_DIR, SHIFT_RECORD
from tl.core.shift import DomainShift, ShiftDiagnosis, shift_diagnosis
from tl.core.stats import CI_LEVEL

TITLE = "Why test differs from val: prevalence, image shift, calibration"


class Shift(NamedTuple):
    """The recommended model's shift diagnosis (``shift.csv`` is ``diagnosis.frame``)."""

    diagnosis: ShiftDiagnosis
    domain_note: str  # why the covariate-shift figure is missing or not shown ("" when shown)


def domain_for(experiment_dir: Path, rec: Recommendation, n_val: int, n_test: int) -> tuple[DomainShift | None, str]:
    """The val-vs-test classifier in ``EXP/explain/shift.json`` if ``tl.export`` computed it for the
    recommended model's trials on these val and test images; else None and the line that says why."""
    path = experiment_dir / EXPLAIN_DIR / SHIFT_RECORD
    export = f"run python -m tl.export {experiment_dir} --out BUNDLE for the covariate-shift figure"
    if not path.is_file():
        return None, f"No val-vs-test classifier yet: {export}."
    try:
        record = json.loads(path.read_text())
        found = DomainShift.from_record(record)
        drawn = tuple(str(t) for t in record.get("trials", []))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None, f"{EXPLAIN_DIR}/{SHIFT_RECORD} is unreadable: {export}."
    mine = tuple(t.rsplit("/", 1)[-1] for t in rec.trials)
    if drawn != mine:
        return None, (f"The val-vs-test classifier in {EXPLAIN_DIR}/ is of trial(s) {', '.join(drawn) or 'unknown'}, "
                      f"not of the recommended model ({', '.join(mine)}), so it is not shown: {export}.")
    if (found.n_val, found.n_test) != (n_val, n_test):
        return None, (f"The val-vs-test classifier in {EXPLAIN_DIR}/ saw {found.n_val} val and {found.n_test} test "
                      f"images, the saved predictions {n_val} and {n_test}: not the same split; {export}.")
    return found, ""


def build_shift(recommended: Recommended | None, experiment_dir: Path, class_names: list[str],
                positive: int | None) -> Shift | None:
    """The shift diagnosis of the recommended model; None when there is none or it saved no val predictions."""
    if recommended is None:
        return None
    rec = recommended.recommendation
    try:
        val, _ = recommended_predictions(rec)  # the same files build_recommended read; test is recommended.test
    except TLError:
        return None
    if val is None:
        return None
    test = recommended.test
    domain, note = domain_for(experiment_dir, rec, len(val.labels), len(test.labels))
    return Shift(shift_diagnosis(val, test, class_names, domain, positive), note)


def _cell(value, count=None, n=None) -> str:
    if pd.isna(value):
        return MISSING
    text = f"{value:.3f}"
    return f"{text} ({int(count)}/{int(n)})" if pd.notna(count) and pd.notna(n) else text


def shift_table(frame: pd.DataFrame) -> pd.DataFrame:
    """``shift.csv`` as text: each val and test figure with its count, the value with its interval."""
    level = f"{int(CI_LEVEL * 100)}% CI"
    value = [MISSING if pd.isna(v) else f"{v:.3f}" if pd.isna(lo) else f"{v:.3f} [{lo:.3f}, {hi:.3f}]"
             for v, lo, hi in zip(frame["value"], frame["low"], frame["high"])]
    return pd.DataFrame({
        "quantity": frame["quantity"], "class": frame["class"].replace("", MISSING),
        "val (count/n)": [_cell(*r) for r in zip(frame["val"], frame["val_count"], frame["val_n"])],
        "test (count/n)": [_cell(*r) for r in zip(frame["test"], frame["test_count"], frame["test_n"])],
        f"value [{level}]": value, "note": frame["note"],
    })


def shift_section_parts(shift: Shift | None) -> tuple[str, list[str], list, list[str]]:
    """(title, paragraphs, tables, figures) of the report's section (``analysis.report`` makes it a Section)."""
    if shift is None:
        return TITLE, ["No shift diagnosis: the recommended model saved no val predictions (or there is no "
                       "recommended model)."], [], []
    paragraphs = [shift.diagnosis.sentence]
    if shift.domain_note:
        paragraphs.append(shift.domain_note)
    paragraphs.append(
        "How to read it: prevalence is each class's share of the split; \"accuracy at test's prevalence\" weights "
        "every val image by p_test(class) / p_val(class), the accuracy val would show with test's mix of classes "
        "(balanced accuracy and AUC do not change under it). The val-vs-test classifier is a logistic regression "
        "on the model's penultimate features, cross-validated (folds by patient where patients are known), "
        "scored out of fold: AUC near 0.5 means the images look alike, near 1 that test images are another "
        "population. Mean predicted probability against prevalence is calibration-in-the-large. shift.csv "
        "holds the numbers.")
    return TITLE, paragraphs, [("", shift_table(shift.diagnosis.frame))], []


"""``python -m tl.evaluate BUNDLE DATASET --out DIR``: validate an exported model on labelled data from elsewhere.

DATASET is anything the search takes (an image folder, a ``.csv``/``.tsv`` label table with its
options, a MedMNIST ``.npz`` or name, DICOM files), read by ``tl.data`` as the search reads it: a
folder or a table is listed, then decoded at the bundle's decode size through the decode store (in
parallel, with progress, once per content and size), so a large folder streams from disk in chunks.
Every labelled image is evaluated (``--split all``: train, val and test of whatever the loader lists
or carves; an external set's images are all new) unless ``--split`` names one. Class names are
matched to the bundle's case-insensitively (``NORMAL`` is ``normal``); the data must hold exactly the
bundle's classes (multilabel: every finding of the bundle; others are ignored), else one error.

Scoring is ``tl.use.bundle``'s (the trial's preprocessing and inference; the bundle's temperature),
so the probabilities are those ``tl.predict`` writes for the same files. Into ``--out`` (a new
folder, written under a temporary name and renamed at the end, so a failed run leaves nothing):

- ``evaluation.csv``: one row: images and class counts, the task's headline figures with 95 %
  bootstrap intervals (``tl.core.finalists.ensemble_figures``; binary also sensitivity and specificity
  at the bundle's threshold), ECE and calibration-in-the-large, the covariate-shift AUC against the
  bundle's own val images with its interval, and the bundle's provenance;
- ``predictions.csv``: per image ``tl.predict``'s columns plus its split and label;
- ``shift.csv``: ``tl.core.shift``'s frame, the bundle's val images ("val") against these ("test");
- ``subgroups.csv`` with ``--subgroup-columns``/``--subgroup-path`` (``tl.core.subgroups``);
- ``report.html``: all of it on one page in the search report's style (``tl.core.html_report``).

The shift check: ``tl.export`` stored the first member's penultimate features of its val images
(``reference_features.npz``, with val's patients when the search knew them); the same features of up
to ``MAX_SHIFT_IMAGES`` evaluated images (a seeded sample) train ``tl.core.shift.domain_classifier``
to tell the two apart. Val's probabilities come from those features through the member's own
classifier layer, so the diagnosis needs nothing else. A bundle exported before the features existed
gets a note instead.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from tl.core.calibration import ECE_BINS, apply_temperature, expected_calibration_error, reliability
from tl.core.errors import TLError
from tl.core.finalists import ensemble_figures
from tl.core.headline import headline_parts, interval_text
from tl.core.html_report import Section, render_html
from tl.core.metrics import sensitivity_specificity
from tl.core.no_space import NO_SPACE, is_no_space
from tl.core.results.files import Predictions
from tl.core.shift import DomainShift, ShiftDiagnosis, class_counts, domain_classifier, mean_predicted, \
    shift_diagnosis
from tl.core.stats import CI_LEVEL, N_RESAMPLES, SEED, bootstrap_interval
from tl.core.subgroups import IMAGE_COLUMN, MIN_IMAGES, MIN_POSITIVES, subgroup_table
from tl.data import SPLITS, DatasetArrays, resolve_dataset_path
from tl.data.dataset import list_source
from tl.data.listing import build_arrays
from tl.data.store.progress import Progress
from tl.data.subgroups import plan_subgroups, subgroups_of_test
from tl.data.table_source import add_table_arguments, table_options_from_args
from tl.use.bundle import REFERENCE_FEATURES, Bundle, load_bundle

CHUNK = 512  # images scored per step: bounds memory on large sets (a store split is read chunk by chunk)
# Evaluated images whose features the val-vs-new classifier sees: the bundle's val side is a few hundred
# images, so more new ones barely narrow the interval and only slow the cross-validated fit.
MAX_SHIFT_IMAGES = 2000
EVALUATION_CSV, PREDICTIONS_CSV, SHIFT_CSV, SUBGROUPS_CSV, REPORT_HTML = (
    "evaluation.csv", "predictions.csv", "shift.csv", "subgroups.csv", "report.html")


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tl.evaluate", description=__doc__.splitlines()[0])
    p.add_argument("bundle", type=Path, help="bundle folder written by tl.export")
    p.add_argument("dataset", help="labelled data: ImageFolder root, .csv/.tsv label table (with --labels), "
                                   ".npz file or MedMNIST name")
    p.add_argument("--out", type=Path, required=True, help="folder to create for the evaluation (must not exist)")
    g = p.add_argument_group("data (as tl.search reads it)")
    g.add_argument("--split", choices=("all", *SPLITS), default="all",
                   help="which images: all (default: every labelled image), or one split of the loader")
    g.add_argument("--data-dir", default=os.environ.get("TL_DATA_DIR"), help="where named datasets live (env TL_DATA_DIR)")
    g.add_argument("--offline", action="store_true", help="never download a named MedMNIST dataset")
    g.add_argument("--skip-bad-images", action="store_true", help="leave unreadable images out (counted) instead of failing")
    g.add_argument("--groups", metavar="REGEX", help="patient id: first capture group of REGEX in each file's path "
                                                     "(the shift check then folds by patient)")
    g.add_argument("--seed", type=int, default=0, help="seed of a carved split (matters only with --split)")
    add_table_arguments(p)
    g = p.add_argument_group("subgroups of the evaluated images")
    g.add_argument("--subgroup-columns", metavar="COL[,COL...]",
                   help="label-table columns (ages binned into bands) or DICOM header keywords (PatientSex, ...)")
    g.add_argument("--subgroup-path", metavar="REGEX",
                   help="subgroups from each image's path: each named group (?P<name>...) is a column")
    g = p.add_argument_group("running")
    g.add_argument("--batch-size", type=int, default=64)
    g.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    g.add_argument("--no-progress", action="store_true", help="no progress bar while scoring")
    return p


# --- the labelled images ----------------------------------------------------------------------------

@dataclass
class Labelled:
    """The evaluated images (per split, in the loader's order), their labels in the bundle's class order."""

    parts: list[tuple[str, object]]  # (split, uint8 images: an ndarray or the store's ChunkRows)
    labels: np.ndarray  # (N,) bundle class indices, or (N, K) findings in the bundle's order
    names: list[str]  # each image's recorded name (relative to the dataset root), or SPLIT[i]
    splits: list[str]  # each image's split
    groups: np.ndarray | None  # patient key per image, when the loader knows it
    skipped: int  # unreadable images left out (--skip-bad-images)
    matched: str  # how the data's class names were matched to the bundle's, in words

    @property
    def n(self) -> int:
        return len(self.labels)


def class_order(bundle_names: list[str], data_names: list[str], multilabel: bool, where: str) -> np.ndarray:
    """For each bundle class (finding), the index of the data's class of that name, case-insensitively.

    Raises:
        TLError: a bundle class the data lacks; a class of the data the bundle lacks (single-label: its
            images could not be scored); two data classes that differ only in case.
    """
    folded: dict[str, int] = {}
    for i, name in enumerate(data_names):
        key = str(name).casefold()
        if key in folded:
            raise TLError(f"{where}: classes {data_names[folded[key]]!r} and {name!r} differ only in case; "
                          "the bundle's classes are matched case-insensitively")
        folded[key] = i
    missing = [c for c in bundle_names if str(c).casefold() not in folded]
    wanted = {str(c).casefold() for c in bundle_names}
    extra = [c for c in data_names if str(c).casefold() not in wanted]
    kind = "findings" if multilabel else "classes"
    problems = []
    if missing:
        problems.append(f"the bundle's {kind} {', '.join(map(repr, missing))} not in the data")
    if extra and not multilabel:  # a multilabel bundle scores its own findings and ignores the others
        problems.append(f"the data's {kind} {', '.join(map(repr, extra))} not the bundle's")
    if problems:
        raise TLError(f"{where}: {'; '.join(problems)} (bundle: {', '.join(map(str, bundle_names))}; data: "
                      f"{', '.join(map(str, data_names))}; names are matched case-insensitively)")
    return np.array([folded[str(c).casefold()] for c in bundle_names])


def _match_text(bundle_names: list[str], data_names: list[str], order: np.ndarray) -> str:
    renamed = [f"{data_names[j]} as {b}" for b, j in zip(bundle_names, order) if data_names[j] != b]
    ignored = len(data_names) - len(order)
    return ("class names match the bundle's exactly" if not renamed else
            "class names matched case-insensitively: " + ", ".join(renamed)) + \
        (f"; {ignored} finding(s) of the data that the bundle lacks are ignored" if ignored > 0 else "")


def load_labelled(bundle: Bundle, args: argparse.Namespace) -> Labelled:
    """The dataset's labelled images at the bundle's decode size, labels mapped to its classes.

    The labels are checked against the bundle's classes from the listing, before anything is decoded.
    """
    table = table_options_from_args(args)
    path = resolve_dataset_path(args.dataset, args.data_dir, args.offline)
    found = list_source(path, args.groups, table)
    some = next(iter(found.labels.values()))
    multilabel = bundle.task == "multilabel"
    if multilabel != (np.ndim(some) == 2):
        raise TLError(f"{args.dataset}: the bundle is {bundle.task} ({', '.join(bundle.class_names)}) but the data has "
                      f"{'several findings' if np.ndim(some) == 2 else 'one class'} per image")
    order = class_order(bundle.class_names, list(found.class_names), multilabel, args.dataset)
    if isinstance(found, DatasetArrays):  # an .npz: its pixels are the file, at their own size (as tl.predict)
        arrays = found
    else:
        arrays = build_arrays(found, int(bundle.meta["decode_size"]), seed=args.seed, skip_bad=args.skip_bad_images)
    splits = [s for s in SPLITS if s in arrays.labels and len(arrays.labels[s])] if args.split == "all" else [args.split]
    if args.split != "all" and not len(arrays.labels.get(args.split, [])):
        raise TLError(f"{args.dataset}: no {args.split} images (its splits: "
                      f"{', '.join(f'{s} {len(arrays.labels[s])}' for s in SPLITS if s in arrays.labels)})")
    to_bundle = np.empty(len(found.class_names), dtype=np.int64)
    to_bundle[order] = np.arange(len(order))
    labels, names, where, groups = [], [], [], []
    for s in splits:
        y = np.asarray(arrays.labels[s])
        labels.append(y[:, order] if multilabel else to_bundle[y.astype(np.int64)])
        known = arrays.names.get(s) or []
        names += list(known) if len(known) == len(y) else [f"{args.dataset}:{s}[{i}]" for i in range(len(y))]
        where += [s] * len(y)
        groups.append(arrays.groups.get(s))
    skipped = sum(len(v) for s, v in arrays.split_record.get("skipped_bad_images", {}).items() if s in splits)
    return Labelled(parts=[(s, arrays.images[s]) for s in splits], labels=np.concatenate(labels), names=names,
                    splits=where, groups=None if any(g is None for g in groups) else np.concatenate(groups),
                    skipped=skipped, matched=_match_text(bundle.class_names, list(found.class_names), order))


# --- scoring ------------------------------------------------------------------------------------------

def score(bundle: Bundle, data: Labelled, batch_size: int, sample: np.ndarray, progress: bool
          ) -> tuple[np.ndarray, np.ndarray | None]:
    """(raw probabilities (N, C): the members' mean before temperature, the first member's penultimate
    features of the images at ``sample`` (sorted positions), or None for an empty sample)."""
    from tl.use.features import member_features

    raw = np.empty((data.n, len(bundle.class_names)), dtype=np.float64)
    features: list[np.ndarray] = []
    bar = Progress(data.n, "evaluate") if progress else None
    start = 0
    for split, images in data.parts:
        for i in range(0, len(images), CHUNK):
            x = bundle.check_channels(np.asarray(images[i:i + CHUNK]), f"{split} images")
            raw[start:start + len(x)] = bundle.predict_raw(x, batch_size)
            picked = sample[(sample >= start) & (sample < start + len(x))] - start
            if len(picked):
                features.append(member_features(bundle, x[picked], batch_size=batch_size))
            start += len(x)
            if bar is not None:
                bar.update(len(x))
    if bar is not None:
        bar.close()
    return raw, (np.concatenate(features) if features else None)


def calibrated(bundle: Bundle, raw: np.ndarray) -> np.ndarray:
    """What ``Bundle.predict`` returns from ``raw``: the val-fitted temperature, none for multilabel."""
    return raw if bundle.task == "multilabel" else apply_temperature(raw, float(bundle.meta.get("temperature", 1.0)))


# --- figures ------------------------------------------------------------------------------------------

def positive_index(bundle: Bundle) -> int:
    """The bundle's positive class (binary), else 1: what ``tl.core``'s figures take when it does not matter."""
    positive = bundle.meta.get("positive_index")
    return 1 if positive is None else int(positive)


def headline_figures(bundle: Bundle, pred: Predictions) -> dict:
    """The task's figures with bootstrap intervals, keys without ``test_`` (``acc``, ``acc_low``, ...);
    binary bundles with a threshold also ``sensitivity_at_threshold``/``specificity_at_threshold``."""
    positive = positive_index(bundle)
    figures = ensemble_figures(pred, positive=positive, task=bundle.task)
    out = {k.removeprefix("test_"): v for k, v in figures.items()}
    if bundle.task == "binary" and bundle.threshold is not None:
        for k, name in enumerate(("sensitivity_at_threshold", "specificity_at_threshold")):
            ci = bootstrap_interval(lambda i, k=k: sensitivity_specificity(
                pred.probs[i, positive], pred.labels[i], float(bundle.threshold), positive)[k], len(pred.labels))
            out.update({name: ci.value, f"{name}_low": ci.low, f"{name}_high": ci.high})
    return out


def calibration_figures(bundle: Bundle, pred: Predictions, raw: np.ndarray) -> dict:
    """ECE with its interval (after and before the bundle's temperature; single-label only), and per
    class the mean predicted probability against the observed share (calibration-in-the-large)."""
    out: dict = {}
    if bundle.task != "multilabel":
        ci = bootstrap_interval(lambda i: expected_calibration_error(pred.probs[i], pred.labels[i]), len(pred.labels))
        out.update(ece=ci.value, ece_low=ci.low, ece_high=ci.high,
                   ece_before_temperature=expected_calibration_error(raw, pred.labels))
    counts, n = class_counts(pred.labels, len(bundle.class_names))
    for c, p, k, m in zip(bundle.class_names, mean_predicted(pred.probs), counts, n):
        out.update({f"mean_p_{c}": float(p), f"observed_{c}": float(k / m) if m else float("nan")})
    return out


class Reference(NamedTuple):
    """The bundle's own val images, as ``reference_features.npz`` keeps them."""

    features: np.ndarray  # (N, D) the first member's penultimate features
    predictions: Predictions  # probabilities through that member's classifier layer, and the labels
    note: str  # how the probabilities were made, when the bundle has several members
    groups: np.ndarray | None  # each image's patient (bundles exported before it was saved: None)


def reference_predictions(bundle: Bundle, folder: Path) -> Reference | None:
    """The bundle's own val images from ``reference_features.npz``: features, probabilities through
    the first member's classifier layer, patients when known. None when the bundle has no such file."""
    import torch

    from tl.train.inference import to_probs
    from tl.train.models import get_backbone, get_classifier

    path = folder / REFERENCE_FEATURES
    if not path.is_file():
        return None
    try:
        with np.load(path) as z:
            features, labels, member = z["features"].astype(np.float32), np.asarray(z["labels"]), str(z["member"])
            groups = np.asarray(z["groups"]).astype(str) if "groups" in z.files else None
    except (OSError, ValueError, KeyError) as exc:
        raise TLError(f"{path}: unreadable reference features ({exc}); re-export the bundle") from None
    first = bundle.members[0]
    head = get_classifier(first.model, get_backbone(first.spec["backbone"]))
    with torch.no_grad():
        probs = to_probs(head(torch.from_numpy(features).to(bundle.device)), bundle.task).double().cpu().numpy()
    note = "" if len(bundle.members) == 1 else (
        f"val's probabilities are member {member}'s alone (the reference features are its), the evaluated images' "
        f"the ensemble's mean")
    return Reference(features, Predictions(probs, labels), note, groups)


@dataclass
class Shift:
    """The shift diagnosis against the bundle's val images, or why there is none."""

    diagnosis: ShiftDiagnosis | None = None
    domain: DomainShift | None = None
    n_reference: int = 0
    n_sampled: int = 0
    note: str = ""
    notes: list[str] = field(default_factory=list)


def shift_against_reference(bundle: Bundle, reference: Reference | None, features: np.ndarray | None,
                            groups: np.ndarray | None, new: Predictions) -> Shift:
    """``tl.core.shift``'s diagnosis with the bundle's val images as "val" and the evaluated ones as "test";
    the classifier's folds keep each patient on one side, on either side where the patients are known."""
    if reference is None:
        return Shift(note=f"no shift check: the bundle has no {REFERENCE_FEATURES} (exported before tl.export "
                          "wrote it); export the experiment again to add it")
    ref_features, val, note, ref_groups = reference
    if features is None or features.shape[1] != ref_features.shape[1]:
        return Shift(note="no shift check: the evaluated images' features do not match the reference's")
    domain = domain_classifier(ref_features, features, ref_groups, groups)
    positive = bundle.meta.get("positive_index") if bundle.task == "binary" else None
    diagnosis = shift_diagnosis(val, new, bundle.class_names, domain, positive)
    return Shift(diagnosis, domain, len(ref_features), len(features), "", [note] if note else [])


def subgroup_frame(plan, data: Labelled, pred: Predictions, bundle: Bundle, dataset: str) -> pd.DataFrame:
    """``tl.core.subgroups.subgroup_table`` of the evaluated images, per ``plan``'s columns."""
    # subgroups_of_test reads one split's recorded names: the evaluated images, as the split "test"
    values = subgroups_of_test(plan, DatasetArrays(dataset, {}, {"test": data.labels}, list(bundle.class_names),
                                                   names={"test": data.names}))
    order = {c: s.get("order") for c, s in plan.record.items() if isinstance(s, dict)}
    return subgroup_table(pred, values.drop(columns=IMAGE_COLUMN), task=bundle.task, positive=positive_index(bundle),
                          order=order)


# --- outputs ------------------------------------------------------------------------------------------

def prediction_rows(bundle: Bundle, data: Labelled, probs: np.ndarray) -> pd.DataFrame:
    """``tl.predict``'s columns (file, ``p_<class>``, label_at_threshold, label_argmax) plus split and label."""
    at, argmax = bundle.called_labels(probs)
    names = bundle.class_names
    if bundle.task == "multilabel":
        label = [";".join(n for n, v in zip(names, row) if v == 1) for row in data.labels]
    else:
        label = [names[int(i)] for i in data.labels]
    frame = pd.DataFrame({"file": data.names, "split": data.splits, "label": label})
    for c, column in zip(names, probs.T):
        frame[f"p_{c}"] = column
    frame["label_at_threshold"], frame["label_argmax"] = at, argmax
    return frame


def evaluation_row(bundle: Bundle, args: argparse.Namespace, data: Labelled, figures: dict, calibration: dict,
                   shift: Shift) -> dict:
    """``evaluation.csv``'s one row (columns: docs/guide/use-the-model.md)."""
    prov = bundle.meta.get("provenance", {})
    counts, _ = class_counts(data.labels, len(bundle.class_names))
    row = {"bundle": str(args.bundle), "bundle_trials": ";".join(map(str, prov.get("trials", []))),
           "bundle_dataset": prov.get("dataset", ""), "bundle_exported": prov.get("exported", ""),
           "dataset": args.dataset, "split": args.split, "task": bundle.task, "n": data.n,
           **{f"n_{c}": int(k) for c, k in zip(bundle.class_names, counts)}, "skipped_unreadable": data.skipped,
           **figures, "threshold": bundle.threshold, **calibration}
    domain = shift.domain
    row.update(shift_auc=domain.auc if domain else np.nan, shift_auc_low=domain.low if domain else np.nan,
               shift_auc_high=domain.high if domain else np.nan, shift_n_reference=shift.n_reference,
               shift_n_evaluated=shift.n_sampled, shift_note=shift.note)
    return row


def _text(frame: pd.DataFrame) -> pd.DataFrame:
    """Numbers as the report writes them: 3 decimals, counts whole, missing as ``-``."""
    def cell(v):
        if isinstance(v, (bool, np.bool_)):
            return "yes" if v else ""
        if isinstance(v, (int, np.integer)):
            return f"{int(v):,}"
        if isinstance(v, (float, np.floating)):
            return "-" if np.isnan(v) else (f"{int(v):,}" if float(v).is_integer() and abs(v) >= 2 else f"{v:.3f}")
        return "" if v is None else str(v)
    return frame.map(cell) if hasattr(frame, "map") else frame.applymap(cell)


def _figures_table(figures: dict) -> pd.DataFrame:
    names = [k for k in figures if f"{k}_low" in figures]
    return pd.DataFrame({"figure": [k.replace("_", " ") for k in names],
                         f"value [{CI_LEVEL:.0%} CI]": [interval_text(figures, k) for k in names]})


def report_sections(bundle: Bundle, args: argparse.Namespace, data: Labelled, headline: str, figures: dict,
                    calibration: dict, pred: Predictions, subgroups: pd.DataFrame | None, shift: Shift) -> list[Section]:
    """The page's sections: the figures, calibration, subgroups (when asked) and the shift diagnosis."""
    prov = bundle.meta.get("provenance", {})
    names = bundle.class_names
    counts, n = class_counts(data.labels, len(names))
    first = Section("External validation", [
        f"Bundle {args.bundle}: {bundle.task} model of trial(s) {', '.join(map(str, prov.get('trials', [])))}, trained "
        f"on {prov.get('dataset', 'unknown data')}, exported {prov.get('exported', '')}.",
        f"Evaluated on {args.dataset} ({args.split}: {data.n:,} labelled images"
        + (f"; {data.skipped} unreadable left out" if data.skipped else "") + f"); {data.matched}.",
        f"Expected on images like these: {headline}.",
        f"Intervals: percentile bootstrap over the images ({N_RESAMPLES:,} resamples). Probabilities carry the bundle's "
        "val-fitted temperature, as tl.predict writes them; sensitivity and specificity without 'at threshold' "
        "are at argmax" + (f", 'at threshold' at the bundle's {bundle.threshold:.3f}" if bundle.threshold else "") + "."],
        [("Figures", _figures_table(figures)),
         ("Images per class" if bundle.task != "multilabel" else "Positives per finding",
          _text(pd.DataFrame({"class": names, "images": counts, "of": n})))], [])
    rel = reliability(pred.probs, pred.labels) if bundle.task != "multilabel" else None
    paragraphs = []
    if "ece" in calibration:
        val_ece = prov.get("calibration", {}).get("val_ece_after")
        paragraphs.append(f"ECE ({ECE_BINS} bins) {interval_text(calibration, 'ece')} with the bundle's temperature, "
                          f"{calibration['ece_before_temperature']:.3f} without"
                          + (f"; on the bundle's own val images {val_ece:.3f}." if val_ece is not None else "."))
    paragraphs.append("Calibration-in-the-large: the mean predicted probability of each class against its share of "
                      "the images.")
    tables = [("Calibration-in-the-large", _text(pd.DataFrame({
        "class": names, "mean predicted": [calibration[f"mean_p_{c}"] for c in names],
        "observed": [calibration[f"observed_{c}"] for c in names]})))]
    if rel is not None:
        filled = rel.count > 0
        tables.append(("Reliability (top-label confidence bins)", _text(pd.DataFrame({
            "confidence": [f"{a:.2f}-{b:.2f}" for a, b in zip(rel.edges[:-1][filled], rel.edges[1:][filled])],
            "images": rel.count[filled], "mean confidence": rel.confidence[filled],
            "accuracy": rel.accuracy[filled]}))))
    sections = [first, Section("Calibration on the new data", paragraphs, tables, [])]
    if subgroups is not None:
        flagged = subgroups[subgroups["flagged"]] if len(subgroups) else subgroups
        sections.append(Section("Subgroups", [
            f"{len(flagged)} subgroup(s) flagged: a figure's whole interval below the overall figure (subgroups of "
            f"fewer than {MIN_IMAGES} images or {MIN_POSITIVES} positives are listed, never flagged)."], [("", _text(subgroups))], []))
    if shift.diagnosis is None:
        sections.append(Section("Shift against the bundle's validation data", [shift.note], [], []))
    else:
        sections.append(Section("Shift against the bundle's validation data", [
            f'Here "val" is the bundle\'s own validation images ({shift.n_reference:,}, whose features and labels '
            f'tl.export stored in {REFERENCE_FEATURES}) and "test" the images evaluated here (the classifier saw '
            f"{shift.n_sampled:,} of them).", shift.diagnosis.sentence, *shift.notes],
            [("", _text(shift.diagnosis.frame))], []))
    return sections


def check_out(out: Path) -> None:
    """Refuse an ``--out`` that exists, unless it is an empty folder."""
    if out.exists() and not (out.is_dir() and not any(out.iterdir())):
        raise TLError(f"--out {out} exists; tl.evaluate writes a new folder: remove it or name another")


def write_folder(out: Path, files: dict[str, str]) -> None:
    """Write ``files`` (name -> text) into a temporary folder beside ``out``, then rename it to ``out``.

    Raises:
        TLError: naming ``out`` when it cannot be written (disk full, no permission); nothing is left.
    """
    check_out(out)
    tmp = out.with_name(f".{out.name}.part{os.getpid()}")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp.mkdir()
        for name, text in files.items():
            (tmp / name).write_text(text, encoding="utf-8")
        os.replace(tmp, out)  # over an empty folder too
    except OSError as exc:
        where = exc.filename2 or exc.filename
        why = f"{exc.strerror}: {where}" if exc.strerror and where else str(exc)
        raise TLError(f"--out {out}: cannot write the evaluation ({why})") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    try:
        if args.batch_size < 1:
            raise TLError(f"--batch-size must be at least 1, got {args.batch_size}")
        check_out(args.out)
        bundle = load_bundle(args.bundle, args.device)
        table = table_options_from_args(args)
        plan = plan_subgroups(args.dataset, args.data_dir, offline=args.offline, table=table,
                              columns=args.subgroup_columns, pattern=args.subgroup_path)
        data = load_labelled(bundle, args)
        folder = args.bundle if args.bundle.is_dir() else args.bundle.parent
        reference = reference_predictions(bundle, folder)
        rng = np.random.default_rng(SEED)
        sample = (np.sort(rng.choice(data.n, min(data.n, MAX_SHIFT_IMAGES), replace=False)) if reference is not None
                  else np.zeros(0, dtype=np.int64))
        raw, features = score(bundle, data, args.batch_size, sample, not args.no_progress)
        pred = Predictions(calibrated(bundle, raw), data.labels)
        figures = headline_figures(bundle, pred)
        calibration = calibration_figures(bundle, pred, raw)
        parts, extra = headline_parts(bundle.task, {f"test_{k}": v for k, v in figures.items()}, pred,
                                      class_names=bundle.class_names, positive=positive_index(bundle))
        headline = ", ".join(parts) + "".join(f"; {line}" for line in extra)
        shift = shift_against_reference(bundle, reference, features,
                                         data.groups[sample] if data.groups is not None else None,
                                         Predictions(raw, data.labels))
        subgroups = subgroup_frame(plan, data, pred, bundle, args.dataset) if plan is not None else None
        files = {EVALUATION_CSV: pd.DataFrame([evaluation_row(bundle, args, data, figures, calibration, shift)])
                 .to_csv(index=False),
                 PREDICTIONS_CSV: prediction_rows(bundle, data, pred.probs).to_csv(index=False)}
        if shift.diagnosis is not None:
            files[SHIFT_CSV] = shift.diagnosis.frame.to_csv(index=False)
        if subgroups is not None:
            files[SUBGROUPS_CSV] = subgroups.to_csv(index=False)
        sections = report_sections(bundle, args, data, headline, figures, calibration, pred, subgroups, shift)
        files[REPORT_HTML] = render_html(sections, {}, f"External validation: {args.bundle.name} on {args.dataset}")
        write_folder(args.out, files)
    except TLError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a full disk while the decode store fills (write_folder says its own)
        if not is_no_space(exc):
            raise
        print(f"error: the disk is full ({NO_SPACE}) at {exc.filename or 'the decode store'}; no --out {args.out} "
              "was written: free space and run again", file=sys.stderr)
        return 2
    print(f"[tl.evaluate] {data.n:,} images of {args.dataset} ({args.split}): {headline}")
    if shift.domain is not None and not np.isnan(shift.domain.auc):
        print(f"[tl.evaluate] shift against the bundle's val images: AUC {shift.domain.auc:.2f} "
              f"[{shift.domain.low:.2f}, {shift.domain.high:.2f}] (0.5: alike)")
    else:
        print(f"[tl.evaluate] {shift.note or 'no shift check: too few images to fold'}")
    print(f"[tl.evaluate] {', '.join(files)} -> {args.out}")
    return 0

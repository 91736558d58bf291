"""Why test figures fall below val (Task E): label prevalence, covariate shift and calibration.

A model chosen on val can test worse for three reasons this module measures apart, for the
recommended model, between its val images and test:

- **prevalence**: test holds the classes in other proportions. Re-weighting each val image by
  ``p_test(c) / p_val(c)`` of its class gives the accuracy val would show at test's prevalence
  (``sum_c p_test(c) * recall_val(c)``); the difference to val's own accuracy is the part of the gap
  prevalence alone explains. Balanced accuracy (mean recall) and AUC do not move under this
  re-weighting, so only accuracy is re-weighted.
- **covariate shift**: test images look different. A logistic regression on the model's
  penultimate features is trained to tell val images from test images; its cross-validated
  (patient-grouped where groups are known) out-of-fold AUC says how different: near 0.5 they look
  alike, near 1 test images are another population. The interval is a bootstrap over patients
  (or images).
- **calibration and recall**: the mean predicted probability of each class on test against the
  observed prevalence (calibration-in-the-large), and each class's recall on val and test.

``shift_diagnosis`` lays these out as one frame (``shift.csv``) and ``task_e_sentence`` turns them
into the plain answer the report gives. Numpy, pandas and scikit-learn only: ``tl.export`` computes
the classifier (it has the features), ``analysis`` the rest (it has the saved predictions).
"""
from __future__ import annotations

import warnings
from typing import NamedTuple

import numpy as np
import pandas as pd

from tl.core.metrics import balanced_accuracy, known, label_accuracy
from tl.core.results.files import Predictions
from tl.core.stats import CI_LEVEL, N_RESAMPLES, SEED, bootstrap_interval

# Below these the figures are noise: 50 images give an accuracy a 95 % interval of about +-0.13,
# and a class with fewer than 5 images has no recall worth comparing.
MIN_IMAGES = 50
MIN_PER_CLASS = 5
DOMAIN_FOLDS = 5
# L2 strength of the val-vs-test classifier: features are standardized and outnumber the images
# (1,280 for Lite0 against ~1,000 images), so a weakly regularized fit would separate any two sets.
DOMAIN_C = 0.1
# How the report reads the classifier's AUC: below LOOK_ALIKE (or an interval reaching 0.5) the
# images look alike; from DIFFER on, test images are another population.
LOOK_ALIKE, DIFFER = 0.6, 0.75
# A val-test accuracy gap smaller than this is not worth explaining (a few images on a few hundred).
SMALL_GAP = 0.02
COLUMNS = ["quantity", "class", "val", "val_count", "val_n", "test", "test_count", "test_n",
           "value", "low", "high", "note"]


class DomainShift(NamedTuple):
    """The val-vs-test classifier: its out-of-fold AUC with a bootstrap interval, and how it was run."""

    auc: float
    low: float
    high: float
    level: float
    n_val: int
    n_test: int
    grouped: bool  # folds and bootstrap were over patients (groups) where known, else over images
    n_groups: int  # units the bootstrap resampled (patients, else images)
    folds: int

    def as_record(self) -> dict:
        """A JSON-able dict (``EXP/explain/shift.json`` holds it beside the trials it is of)."""
        return {k: (bool(v) if k == "grouped" else int(v) if isinstance(v, (int, np.integer)) else float(v))
                for k, v in self._asdict().items()}

    @classmethod
    def from_record(cls, record: dict) -> "DomainShift":
        return cls(**{k: record[k] for k in cls._fields})


class ShiftDiagnosis(NamedTuple):
    """Everything the report says about the val-test gap: the frame of ``shift.csv`` and its answer."""

    frame: pd.DataFrame  # COLUMNS, one row per quantity and class
    sentence: str  # the plain answer to Task E, with the numbers
    too_few: str  # why the data cannot tell ("" when it can)


# --- prevalence, re-weighting, calibration, recall --------------------------------------------------

def class_counts(labels: np.ndarray, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(count per class, images counted per class). Multilabel (N, K): positives per finding over
    its decided labels (an uncertain label counts nowhere); else every image counts for every class."""
    labels = np.asarray(labels)
    if labels.ndim == 2:
        decided = known(labels)
        return (labels == 1).sum(0).astype(int), decided.sum(0).astype(int)
    return np.bincount(labels.astype(int), minlength=n_classes)[:n_classes], np.full(n_classes, len(labels))


def prevalence_weights(val_labels: np.ndarray, test_labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Importance weight of each val image, ``p_test(c) / p_val(c)`` of its class (single-label only).

    A class test has and val lacks cannot be re-weighted into val: NaN weights then.
    """
    val_counts, val_n = class_counts(val_labels, n_classes)
    test_counts, test_n = class_counts(test_labels, n_classes)
    p_val, p_test = val_counts / val_n, test_counts / test_n
    if np.any((p_val == 0) & (p_test > 0)):
        return np.full(len(val_labels), np.nan)
    ratio = np.divide(p_test, p_val, out=np.zeros(n_classes), where=p_val > 0)
    return ratio[np.asarray(val_labels, dtype=int)]


def reweighted_accuracy(val_correct: np.ndarray, val_labels: np.ndarray, test_labels: np.ndarray,
                        n_classes: int) -> float:
    """Val accuracy at test's class prevalence: the prevalence-weighted mean of val's per-image
    correctness, i.e. ``sum_c p_test(c) * recall_val(c)`` (NaN when val lacks a class test has)."""
    weights = prevalence_weights(val_labels, test_labels, n_classes)
    if np.isnan(weights).any():
        return float("nan")
    return float(np.sum(weights * np.asarray(val_correct, dtype=float)) / np.sum(weights))


def mean_predicted(probs: np.ndarray) -> np.ndarray:
    """Calibration-in-the-large: the mean predicted probability of each class (or finding)."""
    return np.asarray(probs, dtype=np.float64).mean(0)


def class_recall(probs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(images of each class called that class, images of the class): argmax, or (multilabel)
    p >= 0.5 among a finding's positives."""
    probs, labels = np.asarray(probs), np.asarray(labels)
    k = probs.shape[1]
    if labels.ndim == 2:
        positive = labels == 1
        return ((probs >= 0.5) & positive).sum(0).astype(int), positive.sum(0).astype(int)
    called = probs.argmax(1)
    hits = np.array([int(np.sum((labels == c) & (called == c))) for c in range(k)])
    return hits, np.bincount(labels.astype(int), minlength=k)[:k]


def too_few_images(val_labels: np.ndarray, test_labels: np.ndarray, class_names: list[str]) -> str:
    """Why val and test are too small to say where a gap comes from ("" when they are not)."""
    for split, labels in (("val", val_labels), ("test", test_labels)):
        if len(labels) < MIN_IMAGES:
            return f"{split} has {len(labels)} images (fewer than {MIN_IMAGES})"
    if np.ndim(val_labels) == 1:
        for split, labels in (("val", val_labels), ("test", test_labels)):
            counts, _ = class_counts(labels, len(class_names))
            thin = [f"{n} {c}" for c, n in zip(class_names, counts) if n < MIN_PER_CLASS]
            if thin:
                return f"{split} has {', '.join(thin)} image(s) (fewer than {MIN_PER_CLASS} of a class)"
    return ""


# --- the val-vs-test classifier ---------------------------------------------------------------------

def weighted_auc(scores: np.ndarray, positive: np.ndarray, weights: np.ndarray) -> float:
    """ROC AUC with a multiplicity per row (ties count half); equals ``binary_auc`` at unit weights.

    The group bootstrap draws patients with replacement; a row's weight is how often its patient
    was drawn, so one sort serves every resample.
    """
    _, tie = np.unique(np.asarray(scores, float), return_inverse=True)
    return _tied_auc(tie, np.asarray(positive, bool), np.asarray(weights, float))


def _tied_auc(tie: np.ndarray, positive: np.ndarray, weights: np.ndarray) -> float:
    """``weighted_auc`` from each row's rank among the distinct scores (sorted once per bootstrap)."""
    w_pos, w_neg = weights[positive].sum(), weights[~positive].sum()
    if w_pos == 0 or w_neg == 0:
        return float("nan")
    neg = np.bincount(tie, weights * ~positive)
    pos = np.bincount(tie, weights * positive)
    below = np.cumsum(neg) - neg
    return float(np.sum(pos * (below + 0.5 * neg)) / (w_pos * w_neg))


def domain_folds(is_test: np.ndarray, groups: np.ndarray | None, folds: int, seed: int = SEED) -> np.ndarray:
    """Fold index of each image: stratified by domain, and with ``groups`` no group in two folds."""
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    is_test = np.asarray(is_test, dtype=int)
    out = np.empty(len(is_test), dtype=int)
    if groups is None:
        splits = StratifiedKFold(folds, shuffle=True, random_state=seed).split(np.zeros(len(is_test)), is_test)
    else:
        splits = StratifiedGroupKFold(folds, shuffle=True, random_state=seed).split(
            np.zeros(len(is_test)), is_test, groups)
    for k, (_, held) in enumerate(splits):
        out[held] = k
    return out


def out_of_fold_scores(features: np.ndarray, is_test: np.ndarray, fold: np.ndarray) -> np.ndarray:
    """P(test) of each image from a logistic regression (standardized features, C = DOMAIN_C)
    fitted on the other folds: every score is of an image the fit never saw."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    features = np.asarray(features, dtype=np.float64)
    scores = np.empty(len(features))
    for k in np.unique(fold):
        train, held = fold != k, fold == k
        model = make_pipeline(StandardScaler(), LogisticRegression(C=DOMAIN_C, max_iter=2000))
        with warnings.catch_warnings():  # a constant feature (a dead ReLU channel) is fine
            warnings.simplefilter("ignore", RuntimeWarning)
            model.fit(features[train], is_test[train])
            scores[held] = model.predict_proba(features[held])[:, 1]
    return scores


def domain_classifier(val_features: np.ndarray, test_features: np.ndarray, val_groups: np.ndarray | None = None,
                      test_groups: np.ndarray | None = None, *, folds: int = DOMAIN_FOLDS,
                      n_resamples: int = N_RESAMPLES, seed: int = SEED) -> DomainShift:
    """How well val images can be told from test images by their features (see the module doc).

    Args:
        val_features, test_features: (N, D) penultimate features of the two splits.
        val_groups, test_groups: patient keys per image, or None (each image its own unit). A key is
            read within its split (Kermany's test ids restart at 1, so ``person1`` in val and in
            test are two patients).

    Returns:
        The out-of-fold AUC and its bootstrap interval (over patients when grouped); NaN when
        either split has fewer than 2 units (patients or images) to fold.
    """
    x = np.concatenate([np.asarray(val_features), np.asarray(test_features)])
    is_test = np.r_[np.zeros(len(val_features), int), np.ones(len(test_features), int)]
    grouped = val_groups is not None or test_groups is not None
    keys = np.array([f"{split}:{g}" for split, n, found in (("val", len(val_features), val_groups),
                                                             ("test", len(test_features), test_groups))
                     for g in (found if found is not None else (f"<image>{i}" for i in range(n)))], dtype=object)
    units, unit_of = np.unique(keys, return_inverse=True)
    per_domain = [len(np.unique(unit_of[is_test == d])) for d in (0, 1)]
    k = min(folds, *per_domain)
    if k < 2:
        return DomainShift(np.nan, np.nan, np.nan, CI_LEVEL, len(val_features), len(test_features), grouped,
                           len(units), k)
    fold = domain_folds(is_test, unit_of if grouped else None, k, seed)
    scores = out_of_fold_scores(x, is_test, fold)
    _, tie = np.unique(scores, return_inverse=True)

    def auc_of(drawn: np.ndarray) -> float:
        return _tied_auc(tie, is_test == 1, np.bincount(drawn, minlength=len(units))[unit_of].astype(float))

    found = bootstrap_interval(auc_of, len(units), n_resamples=n_resamples, seed=seed)
    return DomainShift(found.value, found.low, found.high, found.level, len(val_features), len(test_features),
                       grouped, len(units), k)


# --- the diagnosis ----------------------------------------------------------------------------------

def _row(quantity: str, name: str = "", **values) -> dict:
    return {"quantity": quantity, "class": name, **values}


def shift_frame(val: Predictions, test: Predictions, class_names: list[str],
                domain: DomainShift | None) -> pd.DataFrame:
    """``shift.csv``: prevalence, mean predicted probability and recall per class on val and test;
    accuracy, accuracy at test's prevalence and balanced accuracy; the val-vs-test classifier."""
    k = val.probs.shape[1]
    names = [str(n) for n in class_names] if len(class_names) == k else [str(i) for i in range(k)]
    multilabel = val.multilabel
    rows = []
    (vc, vn), (tc, tn) = class_counts(val.labels, k), class_counts(test.labels, k)
    for c, name in enumerate(names):
        rows.append(_row("prevalence", name, val=vc[c] / vn[c] if vn[c] else np.nan, val_count=vc[c], val_n=vn[c],
                         test=tc[c] / tn[c] if tn[c] else np.nan, test_count=tc[c], test_n=tn[c],
                         note="positives per finding" if multilabel else ""))
    pv, pt = mean_predicted(val.probs), mean_predicted(test.probs)
    for c, name in enumerate(names):
        rows.append(_row("mean predicted probability", name, val=pv[c], test=pt[c],
                         note="calibration-in-the-large: compare with prevalence (raw saved probabilities)"))
    (vh, vr), (th, tr) = class_recall(val.probs, val.labels), class_recall(test.probs, test.labels)
    for c, name in enumerate(names):
        rows.append(_row("recall", name, val=vh[c] / vr[c] if vr[c] else np.nan, val_count=vh[c], val_n=vr[c],
                         test=th[c] / tr[c] if tr[c] else np.nan, test_count=th[c], test_n=tr[c],
                         note="p >= 0.5 among positives" if multilabel else "argmax"))
    val_acc, test_acc = label_accuracy(val.probs, val.labels), label_accuracy(test.probs, test.labels)
    half = gap_halfwidth(val_acc, len(val.labels), test_acc, len(test.labels))
    rows.append(_row("accuracy", val=val_acc, val_n=len(val.labels), test=test_acc, test_n=len(test.labels),
                     value=val_acc - test_acc, low=val_acc - test_acc - half, high=val_acc - test_acc + half,
                     note="value: val - test, with its interval from the two splits' sizes"
                          + (" (MedMNIST ACC)" if multilabel else "")))
    if multilabel:
        rows.append(_row("accuracy at test's prevalence", note="not computed: a multilabel image has several "
                         "findings, so a finding's prevalence gives no one weight per image"))
    else:
        at_test = reweighted_accuracy(val.correct, val.labels, test.labels, k)
        explained = val_acc - at_test
        rows.append(_row("accuracy at test's prevalence", val=at_test, val_n=len(val.labels), test=test_acc,
                         test_n=len(test.labels), value=explained,
                         note="val images weighted by p_test(c)/p_val(c); value: the part of the gap prevalence "
                              "explains (val - re-weighted val)"))
        rows.append(_row("balanced accuracy", val=balanced_accuracy(val.probs.argmax(1), val.labels),
                         test=balanced_accuracy(test.probs.argmax(1), test.labels),
                         note="mean recall: prevalence does not change it"))
    if domain is None:
        rows.append(_row("val-vs-test classifier AUC", note="not run: tl.export computes it from the model's features"))
    else:
        how = (f"{domain.folds}-fold CV grouped by patient, bootstrap over {domain.n_groups:,} patients (an image "
               "whose patient is unknown counts as one)" if domain.grouped
               else f"{domain.folds}-fold CV, bootstrap over {domain.n_groups:,} images")
        rows.append(_row("val-vs-test classifier AUC", val_n=domain.n_val, test_n=domain.n_test, value=domain.auc,
                         low=domain.low, high=domain.high,
                         note=f"logistic regression on penultimate features; {how}; 0.5: alike"))
    return pd.DataFrame(rows, columns=COLUMNS)


def gap_halfwidth(val_acc: float, n_val: int, test_acc: float, n_test: int, level: float = CI_LEVEL) -> float:
    """Half-width of the interval of val accuracy minus test accuracy, two independent splits (normal
    approximation): a gap inside it may be chance at these sizes."""
    from statistics import NormalDist

    z = NormalDist().inv_cdf(0.5 + level / 2)
    return float(z * np.sqrt(val_acc * (1 - val_acc) / max(n_val, 1) + test_acc * (1 - test_acc) / max(n_test, 1)))


def _pct(p: float) -> str:
    return f"{100 * p:.1f} %"


def _lookup(frame: pd.DataFrame, quantity: str) -> pd.DataFrame:
    return frame[frame["quantity"] == quantity].reset_index(drop=True)


def domain_text(domain: DomainShift) -> str:
    """What the val-vs-test classifier's AUC says, with its interval, in a clause."""
    how = "grouped by patient" if domain.grouped else "by image: no patient groups known"
    figure = f"AUC {domain.auc:.2f} [{domain.low:.2f}, {domain.high:.2f}] ({domain.folds}-fold CV {how})"
    if domain.high < 0.5:  # cross-validating a classifier with nothing to find scores below chance, a known bias
        verdict = "val and test images look alike to the model (below 0.5 is cross-validation noise, not a signal)"
    elif domain.auc < LOOK_ALIKE or domain.low <= 0.5:
        verdict = "val and test images look alike to the model"
    elif domain.auc < DIFFER:
        verdict = "test images differ somewhat from val ones"
    else:
        verdict = "test images differ from val ones (covariate shift)"
    return f"a classifier tells val from test images with {figure}: {verdict}"


def task_e_sentence(frame: pd.DataFrame, class_names: list[str], domain: DomainShift | None, too_few: str = "",
                    positive: int | None = None) -> str:
    """The plain answer to "why is test accuracy below val?" from ``shift_frame``'s numbers.

    Names the gap, the class whose prevalence moved most (binary: the positive class) with counts,
    how much of the gap prevalence explains, what the val-vs-test classifier says, and the class
    whose recall fell most. With ``too_few`` set it says the data cannot tell, and why.
    """
    acc = _lookup(frame, "accuracy").iloc[0]
    val_acc, test_acc = float(acc["val"]), float(acc["test"])
    gap = val_acc - test_acc
    if too_few:
        return (f"Test accuracy is {test_acc:.3f} against {val_acc:.3f} on val, but {too_few}: too few images to "
                "tell whether prevalence or the images themselves explain the difference.")
    chance = gap > SMALL_GAP and float(acc["low"]) <= 0
    if chance:
        parts = [f"Test accuracy is {gap:.3f} below val ({test_acc:.3f} vs {val_acc:.3f}), within chance at "
                 f"{int(acc['val_n'])} val and {int(acc['test_n'])} test images (the difference's "
                 f"{CI_LEVEL:.0%} interval [{float(acc['low']):.3f}, {float(acc['high']):.3f}] includes 0)."]
    elif gap > SMALL_GAP:
        parts = [f"Test accuracy is {gap:.3f} below val ({test_acc:.3f} vs {val_acc:.3f})."]
    else:
        parts = [f"Test accuracy is close to val's ({test_acc:.3f} vs {val_acc:.3f}): there is little gap to explain."]
    prev = _lookup(frame, "prevalence")
    moved = (prev["test"] - prev["val"]).abs()
    binary = positive is not None and len(prev) == 2 and prev["note"].iloc[0] == ""  # not multilabel
    pick = int(positive) if binary else int(moved.fillna(-1).idxmax())
    p = prev.iloc[pick]
    prevalence = (f"Test has {_pct(p['test'])} {p['class']} ({int(p['test_count'])}/{int(p['test_n'])}) vs "
                  f"{_pct(p['val'])} ({int(p['val_count'])}/{int(p['val_n'])}) in val")
    reweighted = _lookup(frame, "accuracy at test's prevalence").iloc[0]
    explained = float(reweighted["value"]) if pd.notna(reweighted["value"]) else np.nan
    if pd.isna(reweighted["val"]):
        parts.append(f"{prevalence}; {reweighted['note'] or 'val cannot be re-weighted to test (a class is missing)'}.")
    elif gap > SMALL_GAP:
        share = (f"about {explained:.3f} of the {gap:.3f} gap ({min(max(explained / gap, 0), 1):.0%})"
                 if explained > 0 else "none of the gap")
        parts.append(f"{prevalence}; at test's prevalence val accuracy would be {float(reweighted['val']):.3f}, "
                     f"so prevalence explains {share}.")
    else:
        parts.append(f"{prevalence}; at test's prevalence val accuracy would be {float(reweighted['val']):.3f}.")
    if domain is None or np.isnan(domain.auc):
        parts.append("The covariate-shift check (a val-vs-test classifier on the model's features) has not run.")
    else:
        clause = domain_text(domain)
        parts.append(clause[0].upper() + clause[1:] + ".")
    recall = _lookup(frame, "recall")
    drop = (recall["val"] - recall["test"]).fillna(-np.inf)
    if len(recall) and drop.max() > SMALL_GAP:
        r = recall.iloc[int(drop.idxmax())]
        mean = _lookup(frame, "mean predicted probability").iloc[int(drop.idxmax())]
        prev_r = prev.iloc[int(drop.idxmax())]
        parts.append(f"Recall falls most for {r['class']}: {float(r['val']):.2f} on val vs {float(r['test']):.2f} "
                     f"on test ({int(r['test_count'])}/{int(r['test_n'])}); on test the model gives {r['class']} "
                     f"{_pct(mean['test'])} on average against {_pct(prev_r['test'])} observed.")
    if chance:
        parts.append("At these sizes the gap itself may be chance; more val or test images would tell.")
    elif gap > SMALL_GAP:
        parts.append(_conclusion(gap, explained, domain))
    return " ".join(parts)


def _conclusion(gap: float, explained: float, domain: DomainShift | None) -> str:
    share = explained / gap if not np.isnan(explained) else np.nan
    shifted = domain is not None and not np.isnan(domain.auc) and domain.low > 0.5 and domain.auc >= LOOK_ALIKE
    if not np.isnan(share) and share >= 0.5:
        return "So most of the gap is the change in class prevalence, not the model."
    if shifted and domain.auc >= DIFFER:
        return ("So the gap is mostly the images themselves (test is another population than val), "
                "not prevalence: val overstates what to expect on test-like images.")
    if shifted:
        return ("So it is not prevalence: test images differ from val ones, measurably though not grossly, and the "
                "model reads them worse; val overstates what to expect on test-like images.")
    if domain is None or np.isnan(domain.auc):
        return "Prevalence does not explain most of it; run the covariate-shift check to see whether the images do."
    return ("Neither prevalence nor a detectable image shift explains it: val may be too like train "
            "(read the split audit) or too small.")


def shift_diagnosis(val: Predictions, test: Predictions, class_names: list[str], domain: DomainShift | None = None,
                    positive: int | None = None) -> ShiftDiagnosis:
    """The frame of ``shift.csv`` and the Task E sentence for one model's val and test predictions.

    Args:
        val, test: the model's saved predictions on its val images and on test.
        class_names: one per column of the probabilities.
        domain: the val-vs-test classifier (``tl.export`` writes it), or None if it has not run.
        positive: binary tasks: the positive class, the one the sentence names.
    """
    few = too_few_images(val.labels, test.labels, list(class_names))
    frame = shift_frame(val, test, list(class_names), domain)
    return ShiftDiagnosis(frame, task_e_sentence(frame, list(class_names), domain, few, positive), few)

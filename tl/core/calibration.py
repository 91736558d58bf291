"""Calibration and operating point, fitted on val only: temperature, ECE, a sensitivity threshold.

Pure numpy on saved probabilities, so ``tl.export`` (which writes them into a bundle) and
``analysis`` (which reports them) compute the same numbers from the same function. Trials save
softmax probabilities, not logits; ``log p`` is the logits up to a per-row constant, which
softmax ignores, so temperature scaling works on them unchanged.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from tl.core.metrics import sensitivity_specificity  # noqa: F401  (re-exported: one home, tl.core.metrics)

ECE_BINS = 15
TARGET_SENSITIVITY = 0.95
_LOG_T_RANGE = (-3.0, 3.0)  # temperatures from 0.05 to 20: wider is never a sane fit


def apply_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    """Return ``softmax(log(probs) / temperature)`` row-wise, in float64."""
    logits = np.log(np.clip(np.asarray(probs, dtype=np.float64), 1e-12, 1.0)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    out = np.exp(logits)
    return out / out.sum(axis=1, keepdims=True)


def _nll(probs: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    scaled = apply_temperature(probs, temperature)
    return float(-np.log(np.clip(scaled[np.arange(len(labels)), labels], 1e-12, 1.0)).mean())


def fit_temperature(probs: np.ndarray, labels: np.ndarray) -> float:
    """Return the temperature that minimises the negative log-likelihood of ``labels``.

    Golden-section search over log T in [-3, 3]: NLL is convex in 1/T, one dimension needs no
    optimiser library, and the result is deterministic.
    """
    labels = np.asarray(labels, dtype=np.int64)
    lo, hi = _LOG_T_RANGE
    ratio = (np.sqrt(5) - 1) / 2
    a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    fa, fb = _nll(probs, labels, np.exp(a)), _nll(probs, labels, np.exp(b))
    for _ in range(60):
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - ratio * (hi - lo)
            fa = _nll(probs, labels, np.exp(a))
        else:
            lo, a, fa = a, b, fb
            b = lo + ratio * (hi - lo)
            fb = _nll(probs, labels, np.exp(b))
    return float(np.exp((lo + hi) / 2))


class Reliability(NamedTuple):
    """Per confidence bin: mean confidence, accuracy and image count (empty bins have count 0)."""

    edges: np.ndarray  # (bins + 1,)
    confidence: np.ndarray  # (bins,) NaN where empty
    accuracy: np.ndarray
    count: np.ndarray


def reliability(probs: np.ndarray, labels: np.ndarray, n_bins: int = ECE_BINS) -> Reliability:
    """Bin the top-label confidence into ``n_bins`` equal-width bins; what the diagram draws."""
    probs = np.asarray(probs, dtype=np.float64)
    conf, correct = probs.max(axis=1), probs.argmax(axis=1) == np.asarray(labels)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, n_bins - 1)
    count = np.bincount(which, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(which, conf, n_bins) / count
        acc = np.bincount(which, correct.astype(float), n_bins) / count
    return Reliability(edges, mean_conf, acc, count)


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, n_bins: int = ECE_BINS) -> float:
    """ECE: the count-weighted mean |accuracy - confidence| over ``n_bins`` confidence bins."""
    rel = reliability(probs, labels, n_bins)
    filled = rel.count > 0
    gaps = np.abs(rel.accuracy[filled] - rel.confidence[filled])
    return float((gaps * rel.count[filled]).sum() / rel.count.sum())


def threshold_for_sensitivity(positive_probs: np.ndarray, labels: np.ndarray, target: float = TARGET_SENSITIVITY,
                              positive: int = 1) -> float:
    """Return the highest threshold whose sensitivity (``p >= t`` called positive) reaches ``target``.

    The highest such threshold keeps specificity as high as the target allows.

    Raises:
        ValueError: ``target`` outside (0, 1], or no positive case to fit on.
    """
    if not 0 < target <= 1:
        raise ValueError(f"target sensitivity must be in (0, 1], got {target}")
    pos = np.sort(np.asarray(positive_probs, dtype=np.float64)[np.asarray(labels) == positive])[::-1]
    if not len(pos):
        raise ValueError("no positive case in the split: cannot fit a sensitivity threshold")
    k = int(np.ceil(target * len(pos) - 1e-9))  # this many positives must score >= t
    return float(pos[max(k, 1) - 1])


class OperatingPoint(NamedTuple):
    """What a bundle carries: the val-fitted temperature and (binary tasks) threshold."""

    temperature: float
    threshold: float | None  # on the temperature-scaled positive-class probability
    target_sensitivity: float | None
    positive_class: int | None


def fit_operating_point(val_probs: np.ndarray, val_labels: np.ndarray,
                        target_sensitivity: float = TARGET_SENSITIVITY, positive: int = 1) -> OperatingPoint:
    """Fit the temperature on val, then (two classes) the threshold on val's scaled probabilities."""
    temperature = fit_temperature(val_probs, val_labels)
    if np.asarray(val_probs).shape[1] != 2:
        return OperatingPoint(temperature, None, None, None)
    scaled = apply_temperature(val_probs, temperature)[:, positive]
    return OperatingPoint(temperature, threshold_for_sensitivity(scaled, val_labels, target_sensitivity, positive),
                          target_sensitivity, positive)


# Why a multilabel bundle keeps temperature 1: one softmax temperature does not apply to K
# independent sigmoids, and a per-finding fit on 94 val images (chestxray14_1000) with a few
# positives per finding would fit noise.
MULTILABEL_CALIBRATION = ("temperature scaling skipped for a multilabel task: K independent sigmoids, "
                          "too few val positives per finding to fit K temperatures; threshold 0.5 per finding")


def calibration_figures(val_probs: np.ndarray, val_labels: np.ndarray, test_probs: np.ndarray,
                        test_labels: np.ndarray, target: float = TARGET_SENSITIVITY, task: str | None = None,
                        positive: int | None = 1) -> dict:
    """Temperature and threshold fitted on val; ECE and sensitivity/specificity measured on test.

    What a bundle's ``model.json`` records. Multilabel: no temperature (``MULTILABEL_CALIBRATION``
    says why); every finding at 0.5.
    """
    if task == "multilabel":
        k = np.asarray(val_labels).shape[1]
        return {"temperature": 1.0, "ece_bins": ECE_BINS, "threshold": None, "thresholds": [0.5] * k,
                "target_sensitivity": None, "calibration_note": MULTILABEL_CALIBRATION}
    point = fit_operating_point(val_probs, val_labels, target, 1 if positive is None else positive)
    after = apply_temperature(test_probs, point.temperature)
    val_after = apply_temperature(val_probs, point.temperature)
    out = {"temperature": point.temperature, "ece_bins": ECE_BINS,
           "test_ece_before": expected_calibration_error(test_probs, test_labels),
           "test_ece_after": expected_calibration_error(after, test_labels),
           "val_ece_before": expected_calibration_error(val_probs, val_labels),
           "val_ece_after": expected_calibration_error(val_after, val_labels),
           "threshold": point.threshold, "target_sensitivity": point.target_sensitivity}
    if point.threshold is not None:
        pos = point.positive_class
        vs = sensitivity_specificity(val_after[:, pos], val_labels, point.threshold, pos)
        ts = sensitivity_specificity(after[:, pos], test_labels, point.threshold, pos)
        out.update(val_sensitivity=vs[0], val_specificity=vs[1], test_sensitivity=ts[0], test_specificity=ts[1])
    return out

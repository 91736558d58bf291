"""Pixel values to uint8: a linear map over a stated range, never clipping. DICOM (its modality and
VOI ranges) and 16-bit or float PNG/TIFF (their value range) both end here."""
from __future__ import annotations

import numpy as np


def scale_to_uint8(values: np.ndarray, zero: float, full: float) -> np.ndarray:
    """Map ``zero`` -> 0 and ``full`` -> 255 linearly (either order may be the larger), rounded.

    The caller passes the range its values lie in, so nothing is clipped. An identity map of
    integers (0..255) is a plain cast, which keeps 8-bit sources bit-exact; a flat range gives 0.
    """
    if zero == 0 and full == 255 and values.dtype.kind in "ui":
        return values.astype(np.uint8)
    if full == zero:
        return np.zeros(values.shape, dtype=np.uint8)
    scaled = values.astype(np.float64)  # in place from here: a 1024x1024 image is 8 MB per copy
    scaled -= zero
    scaled *= 255.0 / (full - zero)
    return np.rint(scaled, out=scaled).astype(np.uint8)


def by_value_range(values: np.ndarray) -> tuple[np.ndarray, list[float]]:
    """uint8 from the range the values span (a PNG or TIFF says nothing about its meaningful range);
    NaN and inf (float TIFFs) become 0."""
    if values.dtype.kind == "f" and not np.isfinite(values).all():
        finite = np.isfinite(values)
        if not finite.any():
            return np.zeros(values.shape, dtype=np.uint8), [0.0, 0.0]
        values = np.where(finite, values, values[finite].min())
    lo, hi = float(values.min()), float(values.max())
    return scale_to_uint8(values, lo, hi), [lo, hi]


def high_bit(mode: str) -> bool:
    """PIL modes holding more than 8 bits per value (16-bit PNG/TIFF, 32-bit int and float TIFF)."""
    return mode.startswith("I;16") or mode in ("I", "F")

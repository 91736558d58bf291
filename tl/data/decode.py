"""Image files to uint8 pixels: one entry point per file picks a reader by file type (MONAI
``LoadImage``'s shape: pixels plus a record of what was applied), and ``decode_images`` turns a list
of paths into (N, 3, size, size) arrays.

Readers: DICOM (``tl.data.dicom``, through pydicom) for ``.dcm``/``.dicom`` and for files whose
name has no known image extension but carry ``DICM`` at byte 128 (DICOM files are often named by
their SOP Instance UID, ``1.2.840....123``, or have no suffix at all); PIL for the rest. Values of
more than 8 bits (DICOM, 16-bit PNG/TIFF) are mapped to 0..255 by their range, never clipped; then
every reader resizes the same way (PIL bilinear). Ordinary 8-bit files decode exactly as they
always have (``convert("RGB").resize``): exported bundles reproduce their trials' predictions.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from tl.core.errors import TLError
from tl.data.formats import is_dicom
from tl.data.pixels import by_value_range, high_bit

# Bump when any reader's output changes for some file: it is part of the decode store's key
# (tl.data.store), so a store written by an older decoder is never served. 2: DICOM and 16-bit by range.
DECODER_VERSION = 2
def _resized(pixels: np.ndarray, size: int, channels: int | None) -> np.ndarray:
    """(channels, size, size) from uint8 (H, W) or (H, W, 3), PIL bilinear as the 8-bit path;
    ``channels`` None: 1 for (H, W), else 3.

    Grey is resized once and repeated: PIL resizes each band alike, so this equals resizing its
    RGB copy, at a third of the work.
    """
    from PIL import Image

    if channels is None:
        channels = 1 if pixels.ndim == 2 else 3
    image = Image.fromarray(pixels)
    if pixels.ndim == 2:
        grey = np.asarray(image.resize((size, size), Image.BILINEAR))
        return np.repeat(grey[None], channels, axis=0)
    if channels == 1:
        image = image.convert("L")
    out = np.asarray(image.resize((size, size), Image.BILINEAR))
    return out[None] if out.ndim == 2 else out.transpose(2, 0, 1)


# PIL modes that hold one grey value per pixel (LA's alpha is dropped as convert("RGB") drops it).
_GREY_MODES = ("1", "L", "LA", "La", "I", "F")


def _decode_with_pil(path: Path, size: int, channels: int | None) -> tuple[np.ndarray, dict]:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            record = {"format": (im.format or path.suffix.lstrip(".")).lower(), "mode": im.mode, "range": None}
            if high_bit(im.mode):
                pixels, record["range"] = by_value_range(np.asarray(im))
                return _resized(pixels, size, channels), record
            if channels is None:
                channels = 1 if im.mode in _GREY_MODES else 3
            # The path every 8-bit file has always taken: keep it byte for byte.
            out = np.asarray(im.convert("RGB" if channels == 3 else "L").resize((size, size), Image.BILINEAR))
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise TLError(f"{path}: corrupt or truncated image ({exc})") from None
    return (out.transpose(2, 0, 1) if channels == 3 else out[None]), record


def decode_image(path: str | Path, size: int, channels: int | None = 3) -> tuple[np.ndarray, dict]:
    """One image file to uint8 (channels, size, size) and a record of how it was decoded.

    Args:
        path: a DICOM file (by suffix, or by its magic when the name has no image extension) or
            anything PIL reads.
        size: output height and width (PIL bilinear, after the mapping to 8 bits).
        channels: 3 (grey repeated) or 1 (colour converted to luminance, as PIL's ``L``); None: as
            the content is, 1 for a grey image (a grey PIL mode, a MONOCHROME DICOM, or colour whose
            channels came out equal, as NIH's and Kermany's RGB PNGs and JPEGs) and 3 for colour.
            Its pixels are exactly those of ``channels=3``, one of the equal channels kept for grey.

    Returns:
        (pixels, record). record: ``format`` ("dicom", "png", "jpeg", ...), ``range`` (the values
        mapped to 0 and 255; None for an 8-bit PIL file, whose values are kept); PIL files add
        ``mode``; DICOM files add what ``tl.data.dicom.read_dicom`` applied.

    Raises:
        TLError: naming the file, when it does not decode (corrupt, truncated, unknown format, or a
            DICOM the reader refuses: multi-frame, no pixel data, codec not installed).
    """
    if channels not in (1, 3, None):
        raise ValueError(f"channels must be 1, 3 or None, got {channels}")
    path = Path(path)
    if is_dicom(path):
        from tl.data.dicom import read_dicom  # pydicom only when a DICOM turns up

        pixels, record = read_dicom(path)
        out = _resized(pixels, size, channels)
    else:
        out, record = _decode_with_pil(path, size, channels)
    if channels is None and len(out) == 3 and (out[0] == out[1]).all() and (out[0] == out[2]).all():
        out = out[:1]
    return out, record


def decode_images(paths: list[Path], size: int, skip_bad: bool,
                  records: list | None = None) -> tuple[np.ndarray, list[int], list[str]]:
    """Decode ``paths`` with ``decode_image`` into uint8 (N, 3, size, size).

    Args:
        skip_bad: leave out files that do not decode (any reader's failure) and list them, instead
            of raising.
        records: when given, each kept file's decode record is appended to it, in output order.

    Returns:
        (images of the kept files, their indices into ``paths``, the skipped paths).

    Raises:
        TLError: the first file that does not decode, unless ``skip_bad``.
    """
    out = np.empty((len(paths), 3, size, size), dtype=np.uint8)
    kept, bad = [], []
    for i, p in enumerate(paths):
        try:
            pixels, record = decode_image(p, size)
        except TLError as exc:
            if not skip_bad:
                raise TLError(f"{exc}; pass --skip-bad-images to skip such files") from None
            bad.append(str(p))
            continue
        out[len(kept)] = pixels
        kept.append(i)
        if records is not None:
            records.append(record)
    return out[: len(kept)], kept, bad


def summarize_decode_records(records: list[dict]) -> dict:
    """Counts of the decoding choices over many files, for a JSON file beside the data.

    Returns:
        ``{"n", "format": {name: count}, "photometric": {...} (DICOM), "pil_mode": {...} (PIL
        files), "voi": {"none" | "lut" | "window LINEAR" ...: count} (DICOM), "inverted",
        "modality_lut", "mapped_by_range": counts}``.
    """
    def counts(values) -> dict[str, int]:
        return dict(sorted(Counter(str(v) for v in values).items()))

    dicom = [r for r in records if r.get("format") == "dicom"]
    voi = [("none" if r.get("voi") is None else r["voi"]["kind"] if r["voi"]["kind"] == "lut"
            else f"window {r['voi']['function']}") for r in dicom]
    return {"n": len(records),
            "format": counts(r.get("format") for r in records),
            "photometric": counts(r.get("photometric") for r in dicom),
            "pil_mode": counts(r["mode"] for r in records if "mode" in r),
            "voi": counts(voi),
            "inverted": sum(bool(r.get("inverted")) for r in records),
            "modality_lut": sum(r.get("modality_lut") is not None for r in dicom),
            "mapped_by_range": sum(r.get("range") is not None for r in records)}

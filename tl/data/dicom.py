"""One DICOM file to uint8 pixels, through pydicom's own pixel pipeline, and a record of what was applied.

The order is the standard's (PS3.3 C.11, PS3.4 N.2): stored values (``pixel_array``: BitsStored
masked, signed values sign-extended) -> modality LUT (RescaleSlope/Intercept or a Modality LUT
Sequence) -> VOI (a VOI LUT Sequence, else the first WindowCenter/Width with its VOILUTFunction)
-> the mapping of that output's range to 0..255 -> MONOCHROME1 inversion, last. Each step is
pydicom's function (``apply_modality_lut``, ``apply_voi_lut``); this module only chooses the range.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
from pydicom.multival import MultiValue
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut, get_decoder

from tl.core.errors import TLError
from tl.data.pixels import scale_to_uint8

GRAYSCALE = ("MONOCHROME1", "MONOCHROME2")
# Far outside any window, in window widths: LINEAR gives y_min/y_max there by definition, and
# SIGMOID's exp(-4 * 1000) is 0 (and its reciprocal inf) in float64, so it gives them exactly too.
_PROBE_WIDTHS = 1000.0


def _install_hint(uid) -> str:
    """``pip install ...`` for a compressed transfer syntax, from pydicom's own dependency table."""
    from pydicom.pixels.decoders.pylibjpeg import DECODER_DEPENDENCIES

    deps = DECODER_DEPENDENCIES.get(uid, ())
    names = [d.split(">")[0].split("=")[0] for d in deps]
    return f"pip install {' '.join(names)}" if names else "install a pydicom pixel-data handler (e.g. gdcm)"


def _check_decodable(ds, path: Path) -> None:
    """Refuse what this reader cannot turn into one picture, before any pixel is decoded."""
    if "PixelData" not in ds:
        if len(ds) == 0:  # what pydicom returns for a file cut short inside an element
            raise TLError(f"{path}: truncated or empty DICOM: no data element could be read")
        if "Rows" in ds:
            raise TLError(f"{path}: DICOM image without its Pixel Data (7FE0,0010): missing or truncated")
        raise TLError(f"{path}: DICOM without Pixel Data (7FE0,0010): not an image "
                      f"(SOP class {ds.get('SOPClassUID', 'unknown')})")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        raise TLError(f"{path}: multi-frame DICOM ({frames} frames): only single-frame images are read")
    uid = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    if uid is None:
        raise TLError(f"{path}: DICOM without a Transfer Syntax UID in its file meta: cannot decode its pixels")
    try:
        decoder = get_decoder(uid)
    except NotImplementedError:
        raise TLError(f"{path}: transfer syntax {uid.name} ({uid}) has no pixel-data decoder in pydicom") from None
    if not decoder.is_available:
        raise TLError(f"{path}: transfer syntax {uid.name} ({uid}) needs a pixel-data handler that is not "
                      f"installed: {_install_hint(uid)}")


def _stored_range(ds) -> tuple[int, int]:
    """The values BitsStored and PixelRepresentation allow (unsigned, or two's complement)."""
    bits = int(ds.BitsStored)
    if int(ds.get("PixelRepresentation", 0)) == 1:
        return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    return 0, 2 ** bits - 1


def _modality_output_range(ds) -> tuple[float, float]:
    """(min, max) the modality LUT can output over the stored range: a rescale is linear, so its
    two ends (either order, a slope may be negative); a LUT, every stored value through it."""
    lo, hi = _stored_range(ds)
    stored = np.arange(lo, hi + 1) if ds.get("ModalityLUTSequence") else np.array([lo, hi])
    out = apply_modality_lut(stored, ds)
    return float(out.min()), float(out.max())


def _window_output_range(ds) -> tuple[float, float]:
    """(value below the window, value above it) as pydicom's windowing produces them.

    Asked of pydicom itself rather than restated: its y_min/y_max follow the modality output, so
    with a negative slope y_max < y_min, and mapping y_min -> 0 and y_max -> 255 (not min -> 0) keeps
    "above the window" white, as PS3.3 C.11.2.1.2 says.
    """
    center = float(_first(ds.WindowCenter))
    width = abs(float(_first(ds.WindowWidth)))
    far = (width + 1.0) * _PROBE_WIDTHS
    with np.errstate(over="ignore"):
        below, above = apply_voi_lut(np.array([center - far, center + far]), ds, prefer_lut=False)
    return float(below), float(above)


def _first(value):
    """The first of a multi-valued element (DICOM allows alternative windows; pydicom uses index 0)."""
    return value[0] if isinstance(value, MultiValue) else value


def read_dicom(path: str | Path) -> tuple[np.ndarray, dict]:
    """Pixels of one single-frame DICOM as uint8, (H, W) for grayscale or (H, W, 3) RGB, and a record.

    Grayscale (MONOCHROME1/2): modality LUT, then VOI, then the mapping to 0..255, then MONOCHROME1
    inversion. The mapping is by range, never by clipping:

    - a VOI LUT Sequence: its output range, 0..2**n - 1 with n its LUT Descriptor's bits per entry;
    - a window (WindowCenter/Width, VOILUTFunction LINEAR, LINEAR_EXACT or SIGMOID): its output
      range, the values pydicom gives below and above the window;
    - neither: the range the modality output *can* span (BitsStored and PixelRepresentation through
      the rescale or LUT), not the range this image happens to span. Chosen so the same stored
      value gives the same grey in every file of a series (min-max per image would let one bright
      marker darken a whole image), and an 8-bit MONOCHROME2 file maps to itself. A file whose
      BitsStored overstates its content (12-bit values declared 16) therefore decodes dark;
      ``range`` in the record shows it.

    Colour (RGB, YBR_FULL, YBR_FULL_422, YBR_ICT/RCT, PALETTE COLOR): pydicom's RGB (YBR converted,
    palette looked up), mapped from 0..2**BitsStored - 1 (palette: its entries' bits) to 0..255.
    Presentation LUT Shape is not applied: for MONOCHROME1 it restates the inversion done here.

    Raises:
        TLError: naming the file, for a file pydicom cannot read, a multi-frame or non-image DICOM,
            a compressed transfer syntax whose handler is not installed (with the package to
            install), or pixel data that does not decode.

    Returns:
        (pixels, record): record keys ``format`` ("dicom"), ``transfer_syntax``, ``photometric``,
        ``bits_stored``, ``signed``, ``modality_lut`` (None, {"slope", "intercept"} or {"lut": bits}),
        ``voi`` (None, {"kind": "window", "center", "width", "function"} or {"kind": "lut", "bits"}),
        ``inverted``, ``range`` ([value mapped to 0, value mapped to 255]).
    """
    path = Path(path)
    # pydicom on a user's file: malformed files fail in many ways (InvalidDicomError without the
    # preamble, EOFError or struct.error when truncated, ValueError for short pixel data,
    # RuntimeError when every plugin fails, AttributeError for a missing Rows...). All are bad
    # input, not bugs here, so each becomes one TLError naming the file.
    try:
        ds = pydicom.dcmread(path)
    except Exception as exc:  # noqa: BLE001 -- see above
        raise TLError(f"{path}: not a readable DICOM file ({type(exc).__name__}: {exc})") from None
    _check_decodable(ds, path)
    photometric = str(ds.get("PhotometricInterpretation", "")).strip().upper()
    bits = int(ds.get("BitsStored", ds.get("BitsAllocated", 8)))
    record = {"format": "dicom", "transfer_syntax": ds.file_meta.TransferSyntaxUID.name,
              "photometric": photometric, "bits_stored": bits,
              "signed": int(ds.get("PixelRepresentation", 0)) == 1,
              "modality_lut": None, "voi": None, "inverted": False, "range": None}
    try:
        stored = ds.pixel_array  # YBR -> RGB for colour only; BitsStored masked, signed sign-extended
        if photometric in GRAYSCALE:
            pixels = _grayscale(ds, stored, record)
        elif photometric == "PALETTE COLOR":
            entry_bits = int(ds.RedPaletteColorLookupTableDescriptor[2])
            record["range"] = [0, 2 ** entry_bits - 1]
            pixels = scale_to_uint8(apply_color_lut(stored, ds), *record["range"])
        else:
            record["range"] = [0, 2 ** bits - 1]
            pixels = scale_to_uint8(stored, *record["range"])
    except Exception as exc:  # noqa: BLE001 -- see the comment above dcmread
        raise TLError(f"{path}: DICOM pixel data does not decode ({type(exc).__name__}: {exc})") from None
    if pixels.ndim == 3 and pixels.shape[-1] != 3:
        raise TLError(f"{path}: DICOM with {pixels.shape[-1]} samples per pixel ({photometric}): expected 1 or 3")
    return pixels, record


def _grayscale(ds, stored: np.ndarray, record: dict) -> np.ndarray:
    """Modality LUT -> VOI -> 0..255 by range -> MONOCHROME1 inversion; fills ``record``."""
    if ds.get("ModalityLUTSequence"):
        record["modality_lut"] = {"lut": int(ds.ModalityLUTSequence[0].LUTDescriptor[2])}
    elif "RescaleSlope" in ds and "RescaleIntercept" in ds:
        record["modality_lut"] = {"slope": float(ds.RescaleSlope), "intercept": float(ds.RescaleIntercept)}
    values = apply_modality_lut(stored, ds)
    voi_lut = ds.get("VOILUTSequence")
    if voi_lut and voi_lut[0].get("LUTDescriptor") is not None and voi_lut[0].get("LUTData") is not None:
        entry_bits = int(voi_lut[0].LUTDescriptor[2])
        if values.dtype.kind == "f":  # a LUT is indexed by integers; an identity rescale made floats
            values = np.rint(values).astype(np.int64)
        values = apply_voi_lut(values, ds, prefer_lut=True)
        record["voi"] = {"kind": "lut", "bits": entry_bits}
        zero, full = 0.0, float(2 ** entry_bits - 1)
    elif ds.get("WindowCenter") is not None and ds.get("WindowWidth") is not None:
        function = str(ds.get("VOILUTFunction", "LINEAR")).strip().upper() or "LINEAR"
        record["voi"] = {"kind": "window", "center": float(_first(ds.WindowCenter)),
                         "width": float(_first(ds.WindowWidth)), "function": function}
        zero, full = _window_output_range(ds)
        values = apply_voi_lut(values, ds, prefer_lut=False)
    else:
        zero, full = _modality_output_range(ds)
    record["range"] = [zero, full]
    pixels = scale_to_uint8(values, zero, full)
    if record["photometric"] == "MONOCHROME1":  # last: the windows and LUTs above are in stored-value order
        pixels = 255 - pixels
        record["inverted"] = True
    return pixels


def write_dicom(path: Path, stored: np.ndarray, bits_stored: int, signed: bool = False,
                photometric: str = "MONOCHROME2", **elements) -> Path:
    """Write one single-frame Secondary Capture image, native little endian, with the DICM preamble:
    what the tests and benchmarks build their DICOMs with (MONOCHROME1, windows, 12 and 16 bits).

    ``stored`` (H, W) or (H, W, 3) holds the raw bit patterns to write (as unsigned integers of the
    allocated size), so a caller can put garbage above BitsStored or leave negative values without
    sign extension. ``elements`` are set on the dataset as they are (``WindowCenter=40``, ...).
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
    ds.Modality = "CR"
    ds.Rows, ds.Columns = stored.shape[:2]
    ds.SamplesPerPixel = 1 if stored.ndim == 2 else 3
    if stored.ndim == 3:
        ds.PlanarConfiguration = 0
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = 8 if bits_stored <= 8 else 16
    ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits_stored, bits_stored - 1, int(signed)
    ds.PixelData = stored.astype("<u1" if ds.BitsAllocated == 8 else "<u2").tobytes()
    for key, value in elements.items():
        setattr(ds, key, value)
    ds.save_as(path, enforce_file_format=True)
    return path

"""DICOM and high-bit-depth images decode anywhere an image can appear (tl.data.decode, tl.data.dicom).

Expected pixels come from the DICOM standard's formulas (PS3.3 C.11.1.1.2 rescale, C.11.2.1.2
windows, C.11.2.1.1 VOI LUT) written here in numpy, or from an independent decoder for the real
SIIM files: never from the code under test or from pydicom's ``apply_*`` functions.
"""
from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, generate_uid

from tl.core.errors import TLError
from tl.data import load_image_folder
from tl.data.dicom import write_dicom
from tl.data.decode import decode_image, decode_images, summarize_decode_records
from tl.data.formats import is_image_file
from tl.use.predict import expand_inputs, write_csv

SIIM = "siim_acr_small/dicom-images"  # 3 of the 11 SIIM-ACR files (tests/fixtures)


# --- inputs: real pixels, and DICOM files written around them ---------------------------------------

@pytest.fixture(scope="module")
def grey(small_data_dir: Path) -> np.ndarray:
    """A real chest X-ray (chest_xray, 64 px in tests/fixtures) as uint8 (H, W), stretched to span 0..255."""
    path = sorted((small_data_dir / "chest_xray" / "train" / "NORMAL").iterdir())[0]
    g = np.asarray(Image.open(path).convert("L")).astype(np.float64)
    return np.rint((g - g.min()) / (g.max() - g.min()) * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def siim_files(small_data_dir: Path) -> list[Path]:
    files = sorted((small_data_dir / SIIM).glob("*.dcm"))
    assert len(files) == 3, f"expected the 3 SIIM-ACR DICOMs under {small_data_dir / SIIM}, found {len(files)}"
    return files


def _lut_item(descriptor: list[int], data: np.ndarray) -> Dataset:
    item = Dataset()
    item.add_new(0x00283002, "US", descriptor)  # LUT Descriptor
    item.add_new(0x00283006, "US", [int(v) for v in data])  # LUT Data
    return item


# --- the standard's formulas, in numpy (output range 0..255) --------------------------------------

def linear(x: np.ndarray, c: float, w: float) -> np.ndarray:
    """PS3.3 C.11.2.1.2.1, VOI LUT Function LINEAR."""
    x = x.astype(np.float64)
    y = ((x - (c - 0.5)) / (w - 1) + 0.5) * 255
    y[x <= c - 0.5 - (w - 1) / 2] = 0
    y[x > c - 0.5 + (w - 1) / 2] = 255
    return y


def linear_exact(x: np.ndarray, c: float, w: float) -> np.ndarray:
    """PS3.3 C.11.2.1.3.2, LINEAR_EXACT."""
    x = x.astype(np.float64)
    y = ((x - c) / w + 0.5) * 255
    y[x <= c - w / 2] = 0
    y[x > c + w / 2] = 255
    return y


def sigmoid(x: np.ndarray, c: float, w: float) -> np.ndarray:
    """PS3.3 C.11.2.1.3.1, SIGMOID."""
    return 255 / (1 + np.exp(-4 * (x.astype(np.float64) - c) / w))


def by_range(y: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return (y.astype(np.float64) - lo) / (hi - lo) * 255


def _compare(decoded: np.ndarray, expected: np.ndarray, name: str) -> None:
    """Equal up to rounding: a value that lands on .5 may round either way after float error."""
    want = np.rint(expected).astype(np.int64)
    diff = np.abs(decoded.astype(np.int64) - want)
    assert decoded.shape == want.shape, f"{name}: shape {decoded.shape}, expected {want.shape}"
    assert diff.max() <= 1, f"{name}: max |decoded - standard| = {diff.max()} grey levels (mean {diff.mean():.3f})"
    assert (diff == 0).mean() >= 0.99, f"{name}: only {(diff == 0).mean():.4f} of pixels exact"
    assert want.max() - want.min() >= 100, f"{name}: the case is too flat to test anything ({want.min()}..{want.max()})"


# --- (a) the real SIIM-ACR files against an independent JPEG decode -------------------------------

def test_siim_dicoms_decode_to_the_pixels_of_their_jpeg_frames(siim_files: list[Path]):
    from libjpeg import decode as libjpeg_decode
    from pydicom.encaps import generate_frames

    worst_pil, worst_libjpeg, differing = 0, 0, []
    for path in siim_files:
        pixels, record = decode_image(path, 1024, channels=1)  # native size: no resampling
        frame = next(generate_frames(pydicom.dcmread(path).PixelData, number_of_frames=1))
        by_pil = np.asarray(Image.open(io.BytesIO(frame))).astype(np.int64)
        by_libjpeg = libjpeg_decode(frame).astype(np.int64)
        d_pil = np.abs(pixels[0].astype(np.int64) - by_pil)
        worst_pil = max(worst_pil, int(d_pil.max()))
        worst_libjpeg = max(worst_libjpeg, int(np.abs(pixels[0] - by_libjpeg).max()))
        differing.append(float((d_pil > 0).mean()))
        assert record["photometric"] == "MONOCHROME2" and record["bits_stored"] == 8 and not record["inverted"], record
        assert record["range"] == [0, 255] and record["voi"] is None, f"8-bit, no window: kept as stored, {record}"
    print(f"\nSIIM x{len(siim_files)}: max |tl - PIL(JPEG frame)| = {worst_pil}, max |tl - libjpeg| = {worst_libjpeg}, "
          f"share of pixels differing from PIL: max {max(differing):.4f}")
    assert worst_pil <= 2, f"tl vs PIL's decode of the same JPEG frame: {worst_pil} grey levels"
    assert worst_libjpeg <= 2, f"tl vs libjpeg's decode of the same JPEG frame: {worst_libjpeg} grey levels"


def test_siim_dicoms_resize_like_any_image(siim_files: list[Path]):
    """At 128 px the DICOM path resizes its pixels exactly as PIL resizes the same picture."""
    path = siim_files[0]
    full, _ = decode_image(path, 1024)
    small, _ = decode_image(path, 128)
    reference = np.asarray(Image.fromarray(full[0]).convert("RGB").resize((128, 128), Image.BILINEAR))
    assert np.array_equal(small, reference.transpose(2, 0, 1)), "grey resized once and repeated == RGB resize"


# --- (b) files written here, checked against the standard's formulas -----------------------------

def _case(name: str, grey: np.ndarray) -> tuple[np.ndarray, int, bool, str, dict, np.ndarray]:
    """(stored bit patterns, BitsStored, signed, photometric, extra elements, expected 0..255 floats)."""
    v12 = (grey.astype(np.int64) * 4095) // 255  # 0..4095
    v16 = grey.astype(np.int64) * 257  # 0..65535
    if name == "monochrome1_linear_window":
        stored = 4095 - v12  # a MONOCHROME1 detector: low values are white
        # Off-centre, so that inverting the stored values before the window would show another picture
        return (stored, 12, False, "MONOCHROME1", {"WindowCenter": 1500, "WindowWidth": 2000},
                255 - linear(stored, 1500, 2000))
    if name == "linear_exact_12_bit_garbage_above_bits_stored":
        garbage = (np.arange(v12.size).reshape(v12.shape) % 16) << 12  # overlay-like bits 12..15
        return (v12 | garbage, 12, False, "MONOCHROME2",
                {"WindowCenter": 1800, "WindowWidth": 2500, "VOILUTFunction": "LINEAR_EXACT"},
                linear_exact(v12, 1800, 2500))
    if name == "sigmoid_12_bit":
        return (v12, 12, False, "MONOCHROME2", {"WindowCenter": 2000, "WindowWidth": 1500, "VOILUTFunction": "SIGMOID"},
                sigmoid(v12, 2000, 1500))
    if name == "rescale_negative_slope_16_bit_no_window":
        stored = grey.astype(np.int64) * 150 + 5000  # 5000..43250: part of the 16 bits, as real files are
        slope, intercept = -0.5, 100.0
        y = slope * stored + intercept  # PS3.3 C.11.1.1.2
        # No window: the range the modality output can span over 16 stored bits, not this image's
        return (stored, 16, False, "MONOCHROME2", {"RescaleSlope": slope, "RescaleIntercept": intercept},
                by_range(y, slope * 65535 + intercept, intercept))
    if name == "rescale_negative_intercept_16_bit_then_window":
        y = 2.0 * v16 - 1024  # the window is in modality units: it must come after the rescale
        return (v16, 16, False, "MONOCHROME2",
                {"RescaleSlope": 2, "RescaleIntercept": -1024, "WindowCenter": 60000, "WindowWidth": 80000},
                linear(y, 60000, 80000))
    if name == "rescale_negative_slope_then_window":
        stored = 4095 - v12
        y = -1.0 * stored + 4095  # == v12: above the window must still be white
        return (stored, 12, False, "MONOCHROME2",
                {"RescaleSlope": -1, "RescaleIntercept": 4095, "WindowCenter": 2048, "WindowWidth": 2048},
                linear(y, 2048, 2048))
    if name == "signed_12_bit_no_window":
        values = v12 - 2048  # -2048..2047, written as 12-bit two's complement without sign extension
        return (values & 0x0FFF, 12, True, "MONOCHROME2", {}, by_range(values, -2048, 2047))
    if name == "signed_12_bit_window":
        values = v12 - 2048
        return (values & 0x0FFF, 12, True, "MONOCHROME2", {"WindowCenter": -200, "WindowWidth": 2500},
                linear(values, -200, 2500))
    if name == "voi_lut_sequence":
        lut = np.rint(4095 * np.linspace(0, 1, 3000) ** 0.5).astype(np.int64)  # gamma, 12-bit entries
        first = 500  # inputs below map to lut[0], above 3499 to lut[-1] (C.11.2.1.1)
        y = lut[np.clip(v12 - first, 0, len(lut) - 1)]
        return (v12, 12, False, "MONOCHROME2", {"VOILUTSequence": [_lut_item([len(lut), first, 12], lut)]},
                by_range(y, 0, 4095))
    if name == "modality_lut_sequence":
        lut = np.rint(65535 * np.log1p(np.arange(4096)) / np.log1p(4095)).astype(np.int64)
        y = lut[v12]
        return (v12, 12, False, "MONOCHROME2", {"ModalityLUTSequence": [_lut_item([4096, 0, 16], lut)]},
                by_range(y, lut.min(), lut.max()))
    raise KeyError(name)


CASES = ["monochrome1_linear_window", "linear_exact_12_bit_garbage_above_bits_stored", "sigmoid_12_bit",
         "rescale_negative_slope_16_bit_no_window", "rescale_negative_intercept_16_bit_then_window",
         "rescale_negative_slope_then_window", "signed_12_bit_no_window", "signed_12_bit_window",
         "voi_lut_sequence", "modality_lut_sequence"]


@pytest.mark.parametrize("name", CASES)
def test_written_dicom_decodes_as_the_standard_says(name: str, grey: np.ndarray, tmp_path: Path):
    stored, bits, signed, photometric, elements, expected = _case(name, grey)
    path = write_dicom(tmp_path / f"{name}.dcm", stored, bits, signed, photometric, **elements)
    pixels, record = decode_image(path, grey.shape[0], channels=1)
    _compare(pixels[0], expected, name)
    assert record["inverted"] == (photometric == "MONOCHROME1"), record
    assert record["signed"] == signed and record["bits_stored"] == bits, record
    if "WindowCenter" in elements and "VOILUTSequence" not in elements:
        assert record["voi"] == {"kind": "window", "center": float(elements["WindowCenter"]),
                                 "width": float(elements["WindowWidth"]),
                                 "function": elements.get("VOILUTFunction", "LINEAR")}, record
    if "RescaleSlope" in elements:
        assert record["modality_lut"] == {"slope": float(elements["RescaleSlope"]),
                                          "intercept": float(elements["RescaleIntercept"])}, record


# --- (c) MONOCHROME1 is inverted exactly once ------------------------------------------------------

def test_monochrome1_and_its_monochrome2_twin_decode_to_the_same_picture(grey: np.ndarray, tmp_path: Path):
    v12 = (grey.astype(np.int64) * 4095) // 255
    mono2 = write_dicom(tmp_path / "mono2.dcm", v12, 12, photometric="MONOCHROME2")
    mono1 = write_dicom(tmp_path / "mono1.dcm", 4095 - v12, 12, photometric="MONOCHROME1")
    for size in (grey.shape[0], 64):
        (a, rec2), (b, rec1) = decode_image(mono2, size), decode_image(mono1, size)
        diff = np.abs(a.astype(int) - b.astype(int))
        assert diff.max() == 0, f"{size} px: MONOCHROME1 vs its MONOCHROME2 twin differ by up to {diff.max()}"
    assert rec1["inverted"] and not rec2["inverted"], (rec1, rec2)
    native, _ = decode_image(mono1, grey.shape[0], channels=1)
    _compare(native[0], by_range(v12, 0, 4095), "MONOCHROME1 shown as its twin")
    shown_raw = np.rint(by_range(4095 - v12, 0, 4095))  # what no inversion (or two) would give
    assert np.abs(native[0] - shown_raw).mean() > 50, "inverted once, not shown raw"


# --- colour ------------------------------------------------------------------------------------

def test_colour_dicom_becomes_rgb(small_data_dir: Path, tmp_path: Path):
    from pydicom.pixels import convert_color_space  # builds the YBR input; the expectation is the RGB tile

    tile = sorted((small_data_dir / "kather2016_small" / "01_TUMOR").iterdir())[0]
    rgb = np.asarray(Image.open(tile).convert("RGB"))
    size = rgb.shape[0]
    pixels, record = decode_image(write_dicom(tmp_path / "rgb.dcm", rgb, 8, photometric="RGB"), size)
    assert np.array_equal(pixels, rgb.transpose(2, 0, 1)), "8-bit RGB DICOM kept as stored"
    ybr = convert_color_space(rgb, "RGB", "YBR_FULL")
    pixels, record = decode_image(write_dicom(tmp_path / "ybr.dcm", ybr, 8, photometric="YBR_FULL"), size)
    err = np.abs(pixels.astype(int) - rgb.transpose(2, 0, 1)).max()
    assert err <= 2, f"YBR_FULL back to RGB within rounding: {err} levels"
    assert record["photometric"] == "YBR_FULL" and record["voi"] is None, record


def test_palette_colour_dicom_is_looked_up(grey: np.ndarray, tmp_path: Path):
    ramp = np.arange(256)
    luts = {"Red": ramp * 257, "Green": (255 - ramp) * 257, "Blue": np.full(256, 128 * 257)}  # 16-bit entries
    elements = {}
    for colour, lut in luts.items():
        elements[f"{colour}PaletteColorLookupTableDescriptor"] = [256, 0, 16]
        elements[f"{colour}PaletteColorLookupTableData"] = lut.astype("<u2").tobytes()
    path = write_dicom(tmp_path / "palette.dcm", grey, 8, photometric="PALETTE COLOR", **elements)
    pixels, record = decode_image(path, grey.shape[0])
    expected = np.stack([by_range(luts[c][grey], 0, 65535) for c in ("Red", "Green", "Blue")])
    _compare(pixels, expected, "palette")


# --- (d) refusals: one TLError naming the file; skip_bad skips them ------------------------------

def _multi_frame(path: Path, grey: np.ndarray) -> Path:
    two = np.concatenate([grey, grey])
    write_dicom(path, two, 8)
    ds = pydicom.dcmread(path)
    ds.Rows, ds.NumberOfFrames = grey.shape[0], 2
    ds.save_as(path, enforce_file_format=True)
    return path


def _no_pixels(path: Path, grey: np.ndarray) -> Path:
    """A structured report: a DICOM file with no image in it."""
    from pydicom.uid import BasicTextSRStorage

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = BasicTextSRStorage
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
    ds.Modality = "SR"
    ds.save_as(path, enforce_file_format=True)
    return path


def _jpeg2000(path: Path, grey: np.ndarray) -> Path:
    v12 = (grey.astype(np.int64) * 4095) // 255
    write_dicom(path, v12, 12)
    ds = pydicom.dcmread(path)
    ds.compress(JPEG2000Lossless)
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.fixture
def no_jpeg2000_handler(monkeypatch: pytest.MonkeyPatch):
    """pydicom as it is without pylibjpeg-openjpeg (and Pillow's JPEG 2000): no plugin available."""
    from pydicom.pixels import get_decoder

    decoder = get_decoder(JPEG2000Lossless)
    monkeypatch.setattr(decoder, "_available", {})
    monkeypatch.setattr(decoder, "_unavailable", {"pylibjpeg": ("pylibjpeg>=2.0", "pylibjpeg-openjpeg>=2.0")})


def test_jpeg2000_decodes_losslessly_when_its_handler_is_installed(grey: np.ndarray, tmp_path: Path):
    path = _jpeg2000(tmp_path / "j2k.dcm", grey)
    pixels, record = decode_image(path, grey.shape[0], channels=1)
    v12 = (grey.astype(np.int64) * 4095) // 255
    _compare(pixels[0], by_range(v12, 0, 4095), "JPEG 2000 lossless, 12-bit")
    assert "2000" in record["transfer_syntax"], record


@pytest.mark.parametrize("kind, words", [
    ("multi_frame", ["multi-frame", "2 frames"]),
    ("no_pixel_data", ["without Pixel Data", "not an image"]),
    ("missing_codec", ["JPEG 2000", "pip install", "pylibjpeg-openjpeg"]),
    ("png_named_dcm", ["not a readable DICOM"]),
    ("truncated", ["truncated"]),
])
def test_undecodable_dicoms_are_refused_naming_the_file(kind: str, words: list[str], grey: np.ndarray,
                                                       siim_files: list[Path], tmp_path: Path,
                                                       request: pytest.FixtureRequest):
    path = tmp_path / f"{kind}.dcm"
    if kind == "multi_frame":
        _multi_frame(path, grey)
    elif kind == "no_pixel_data":
        _no_pixels(path, grey)
    elif kind == "missing_codec":
        _jpeg2000(path, grey)
        request.getfixturevalue("no_jpeg2000_handler")
    elif kind == "png_named_dcm":
        Image.fromarray(grey).save(path, format="PNG")
    else:
        whole = siim_files[0].read_bytes()
        path.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(TLError) as info:
        decode_image(path, 32)
    message = str(info.value)
    assert str(path) in message and "\n" not in message, message
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"


def test_decode_images_skips_every_failed_dicom_and_reports_it(grey: np.ndarray, siim_files: list[Path],
                                                              tmp_path: Path, no_jpeg2000_handler):
    bad = [_multi_frame(tmp_path / "multi.dcm", grey), _no_pixels(tmp_path / "sr.dcm", grey),
           _jpeg2000(tmp_path / "j2k.dcm", grey)]
    paths = [siim_files[0], *bad, siim_files[1]]
    records: list = []
    images, kept, skipped = decode_images(paths, 32, skip_bad=True, records=records)
    assert kept == [0, 4] and skipped == [str(p) for p in bad], (kept, skipped)
    assert images.shape == (2, 3, 32, 32) and len(records) == 2, (images.shape, len(records))
    with pytest.raises(TLError, match="multi-frame.*--skip-bad-images"):
        decode_images(paths, 32, skip_bad=False)


# --- (e) DICOM files without a .dcm suffix -----------------------------------------------------

def test_extensionless_dicom_is_detected_and_decoded(siim_files: list[Path], tmp_path: Path):
    uid_named = tmp_path / siim_files[0].stem  # the SIIM ImageId: "1.2.276...878027", suffix ".878027"
    bare = tmp_path / "IM0001"
    text = tmp_path / "README"
    shutil.copyfile(siim_files[0], uid_named)
    shutil.copyfile(siim_files[0], bare)
    text.write_text("not an image\n" * 20)
    reference, _ = decode_image(siim_files[0], 64)
    for path in (uid_named, bare):
        assert is_image_file(path), f"{path.name}: DICM magic at byte 128"
        pixels, record = decode_image(path, 64)
        assert record["format"] == "dicom" and np.array_equal(pixels, reference), path.name
    assert not is_image_file(text) and not is_image_file(tmp_path / "missing"), "no magic, no extension"
    listed = [Path(p).name for p, _ in expand_inputs([str(tmp_path)])]
    assert listed == sorted([uid_named.name, bare.name]), f"tl.predict lists the DICOMs only: {listed}"


def test_image_folder_of_extensionless_siim_dicoms_loads(data_dir: Path, tmp_path: Path):
    """SIIM ships ImageIds (file stems) and a label table: class folders of stem-named files. All 11 files:
    carving val and test per class needs more than the 3 in tests/fixtures."""
    siim_files = sorted((data_dir / "siim_acr_11" / "dicom-images").glob("*.dcm"))
    rows = (data_dir / "siim_acr_11" / "train-rle.csv").read_text().splitlines()[1:]
    label = {r.split(",")[0]: ("pneumothorax" if r.split(",")[1].strip() != "-1" else "none") for r in rows}
    for path in siim_files:
        (tmp_path / label[path.stem]).mkdir(exist_ok=True)
        shutil.copyfile(path, tmp_path / label[path.stem] / path.stem)
    arrays = load_image_folder(tmp_path, 32, val_fraction=0.1, test_fraction=0.15, seed=0)
    total = sum(len(arrays.labels[s]) for s in ("train", "val", "test"))
    assert total == 11 and arrays.class_names == ["none", "pneumothorax"], (total, arrays.class_names)
    assert int(sum((arrays.labels[s] == 1).sum() for s in ("train", "val", "test"))) == 5, "5 of 11 positive"
    first = arrays.names["train"][0]
    # MONOCHROME2: stored at one channel, the pixels decode_image repeats over three
    assert np.array_equal(arrays.images["train"][0], decode_image(tmp_path / first, 32)[0][:1]), first


# --- (f) 16-bit PNG and TIFF: by range, not clipped -------------------------------------------------

@pytest.mark.parametrize("kind", ["png_I;16", "tiff_I;16", "tiff_I;16B", "tiff_F"])
def test_high_bit_depth_files_map_by_their_range(kind: str, grey: np.ndarray, tmp_path: Path):
    values = 1000 + np.rint(grey.astype(np.float64) / 255 * 4000)  # spans 1000..5000
    fmt, mode = kind.split("_")
    array = {"I;16": values.astype(np.uint16), "I;16B": values.astype(">u2"), "F": values.astype(np.float32)}[mode]
    path = tmp_path / f"image.{fmt}"
    Image.fromarray(array).save(path)
    with Image.open(path) as im:
        assert im.mode == mode, f"PIL reads {kind} back as {im.mode}"
    pixels, record = decode_image(path, grey.shape[0], channels=1)
    _compare(pixels[0], by_range(values, 1000, 5000), kind)
    assert pixels.min() == 0 and pixels.max() == 255, (pixels.min(), pixels.max())
    assert (pixels == 255).mean() < 0.05, f"{(pixels == 255).mean():.3f} of pixels at 255: clipped, not mapped"
    assert record["range"] == [1000.0, 5000.0] and record["mode"] == mode, record


# --- (g) 8-bit files: exactly as before -----------------------------------------------------------

def _old_decode(path: Path, size: int) -> np.ndarray:
    """decode_images before DICOM: PIL convert("RGB"), bilinear resize, channels first."""
    with Image.open(path) as im:
        im.load()
        return np.asarray(im.convert("RGB").resize((size, size), Image.BILINEAR)).transpose(2, 0, 1)


def test_8_bit_png_jpeg_tiff_decode_exactly_as_before(small_data_dir: Path, grey: np.ndarray, tmp_path: Path):
    Image.fromarray(grey).save(tmp_path / "grey.png")
    Image.fromarray(grey).quantize(64).save(tmp_path / "palette.png")
    files = [sorted((small_data_dir / "chest_xray" / "test" / "PNEUMONIA").iterdir())[0],  # JPEG
             *sorted((small_data_dir / "nih_cxr14_small" / "images").iterdir())[:40],  # RGB and RGBA PNGs
             sorted((small_data_dir / "kather2016_small" / "02_STROMA").iterdir())[0],  # RGB TIFF
             tmp_path / "grey.png", tmp_path / "palette.png"]
    modes = set()
    for size in (28, 96, 224):
        images, kept, bad = decode_images(files, size, skip_bad=False)
        for i, path in enumerate(files):
            assert np.array_equal(images[i], _old_decode(path, size)), f"{path.name} at {size} px changed"
            modes.add(Image.open(path).mode)
    assert {"RGB", "RGBA", "L", "P"} <= modes, f"cover the usual 8-bit modes, saw {modes}"
    one, record = decode_image(files[0], 96, channels=1)
    with Image.open(files[0]) as im:
        assert np.array_equal(one[0], np.asarray(im.convert("L").resize((96, 96), Image.BILINEAR)))
    assert record == {"format": "jpeg", "mode": "RGB", "range": None}, record


# --- records -----------------------------------------------------------------------------------------

def test_decode_records_summarize_the_choices(grey: np.ndarray, siim_files: list[Path], tmp_path: Path):
    stored, bits, signed, photometric, elements, _ = _case("monochrome1_linear_window", grey)
    mono1 = write_dicom(tmp_path / "m1.dcm", stored, bits, signed, photometric, **elements)
    stored, bits, signed, photometric, elements, _ = _case("rescale_negative_slope_16_bit_no_window", grey)
    rescaled = write_dicom(tmp_path / "r.dcm", stored, bits, signed, photometric, **elements)
    Image.fromarray((grey.astype(np.uint16) * 100)).save(tmp_path / "deep.png")
    Image.fromarray(grey).save(tmp_path / "flat.png")
    records: list = []
    decode_images([*siim_files[:3], mono1, rescaled, tmp_path / "deep.png", tmp_path / "flat.png"], 16, False, records)
    summary = summarize_decode_records(records)
    assert summary == {"n": 7, "format": {"dicom": 5, "png": 2},
                       "photometric": {"MONOCHROME1": 1, "MONOCHROME2": 4}, "pil_mode": {"I;16": 1, "L": 1},
                       "voi": {"none": 4, "window LINEAR": 1}, "inverted": 1, "modality_lut": 1,
                       "mapped_by_range": 6}, summary
    assert json.loads(json.dumps(summary)) == summary and json.dumps(records), "JSON as it is"


# --- (h) tl.predict --out that cannot be written ------------------------------------------------------

def test_write_csv_refuses_an_unwritable_out_and_leaves_nothing(tmp_path: Path):
    (tmp_path / "a_file").write_text("x")
    (tmp_path / "a_folder").mkdir()
    rows = [{"file": "x.dcm", "p_neg": 0.3}]
    for out in (tmp_path / "a_file" / "p.csv", tmp_path / "a_file" / "deeper" / "p.csv", tmp_path / "a_folder"):
        before = sorted(p.name for p in tmp_path.rglob("*"))
        with pytest.raises(TLError) as info:
            write_csv(rows, out)
        assert str(out) in str(info.value) and "\n" not in str(info.value), str(info.value)
        assert sorted(p.name for p in tmp_path.rglob("*")) == before, f"{out}: something was left behind"
    write_csv(rows, tmp_path / "new" / "p.csv")
    assert (tmp_path / "new" / "p.csv").read_text().splitlines() == ["file,p_neg", "x.dcm,0.3"]


def test_write_csv_refuses_a_read_only_folder(tmp_path: Path):
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        # root writes into a mode-555 folder; no one may create files in sysfs (CI runs as root)
        with pytest.raises(TLError, match=r"Permission denied|Read-only file system|Operation not permitted"):
            write_csv([{"a": 1}], Path("/sys/tl-predictions.csv"))
        assert not Path("/sys/tl-predictions.csv").exists() and not Path("/sys/.tl-predictions.csv.part").exists()
        return
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        with pytest.raises(TLError, match="Permission denied"):
            write_csv([{"a": 1}], locked / "p.csv")
        assert not list(locked.iterdir())
    finally:
        locked.chmod(0o755)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small exported bundle: one 1-epoch convmodel trial on the synthetic region folder."""
    from bundle_builders import build_experiment, write_region_folder
    from tl.use.export import main as export_main

    root = tmp_path_factory.mktemp("dicom_bundle")
    data = write_region_folder(root / "data", n_per_class=40)
    build_experiment(root / "exp", data, [{"seed": 1, "lr": 3e-3, "epochs": 1}])
    assert export_main([str(root / "exp"), "--out", str(root / "bundle")]) == 0
    return root / "bundle"


def test_predict_scores_dicoms_and_an_unwritable_out_exits_2_with_one_line(bundle: Path, siim_files: list[Path],
                                                                          tmp_path: Path):
    from tl.use.predict import main as predict_main

    folder = tmp_path / "inputs"
    folder.mkdir()
    shutil.copyfile(siim_files[0], folder / siim_files[0].stem)  # extensionless, as SIIM names them
    shutil.copyfile(siim_files[1], folder / siim_files[1].name)
    good = tmp_path / "p.csv"
    assert predict_main([str(bundle), str(folder), "--out", str(good), "--no-progress"]) == 0
    import pandas as pd

    frame = pd.read_csv(good, keep_default_na=False)
    assert len(frame) == 2 and not frame["error"].any(), frame
    assert ((frame["p_neg"] + frame["p_pos"]) - 1).abs().max() < 1e-5, "a probability per DICOM"
    (tmp_path / "a_file").write_text("x")
    out = tmp_path / "a_file" / "p.csv"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    run = subprocess.run([sys.executable, "-m", "tl.predict", str(bundle), str(folder), "--out", str(out),
                          "--no-progress"], capture_output=True, text=True, env=env, timeout=300)
    err = [line for line in run.stderr.splitlines() if line.strip()]
    assert run.returncode == 2, f"exit {run.returncode}, stderr: {run.stderr[-2000:]}"
    assert len(err) == 1 and err[0].startswith("error: ") and str(out) in err[0], run.stderr
    assert "Traceback" not in run.stderr and not out.exists()

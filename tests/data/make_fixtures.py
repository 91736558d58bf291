"""Write the small real-data fixtures in tests/data from the full sets in ../shared/data.

The suite runs from a clone on these (``small_data_dir`` in tests/conftest.py); the full sets stay
outside the repository (``data_dir``). Every image is a real one, chosen by a fixed rule, so running
this again writes the same files (JPEGs: the same pixels for the same Pillow/libjpeg):

    python tests/data/make_fixtures.py [--src ../shared/data] [--out tests/data]

What is taken and from where is in tests/data/README.md; ``--check`` compares instead of writing.
"""
from __future__ import annotations

import argparse
import csv
import io
import os
import shutil
import sys
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
DEFAULT_SRC = HERE.parents[2] / "shared" / "data"

# PneumoniaMNIST: the first rows of each official split, ~80/10/10 like the official 4708/524/624,
# so a test that takes the first n rows of a split sees the same images here as in the full file.
PNEUMONIA_FIRST = {"train": 958, "val": 120, "test": 120}
# Train rows byte-identical to val rows 61 and 105 (two of the official split's 10 exact train/val
# pairs), appended to train so the split audit has real duplicates to find in the fixture too.
PNEUMONIA_TRAIN_TWINS = (1437, 1912)

# chest_xray: the first files of each folder in name order (the ones the tests used to copy from
# the full set), downscaled from 224 to 64 px and re-encoded as JPEG under their real names.
KERMANY_FIRST = {"train": 40, "test": 10}
KERMANY_SIZE, KERMANY_QUALITY = 64, 90

# NIH ChestX-ray14: every 40th row of Data_Entry_2017.csv, the first two RGBA images (rows 82 and
# 302) and, for the first six chosen rows whose patient has another image, that patient's next row.
NIH_EVERY, NIH_RGBA_ROWS, NIH_FOLLOW_UPS = 40, (82, 302), 6

# SIIM-ACR: the three smallest files (two negative, one pneumothorax), copied byte for byte.
SIIM_IDS = ("1.2.276.0.7230010.3.1.4.8323329.10001.1517875220.930580",
            "1.2.276.0.7230010.3.1.4.8323329.10003.1517875220.942420",
            "1.2.276.0.7230010.3.1.4.8323329.12743.1517875241.599591")

# Kather 2016: the first tile (name order) of two class folders, copied byte for byte.
KATHER_CLASSES = ("01_TUMOR", "02_STROMA")


def _savez_fixed(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """np.savez's layout (one .npy per key, stored) with a fixed timestamp, so the bytes repeat."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for key, value in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.ascontiguousarray(value), allow_pickle=False)
            zf.writestr(zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0)), buf.getvalue())


def write_pneumoniamnist(src: Path, out: Path) -> None:
    with np.load(src / "pneumoniamnist.npz") as npz:
        arrays = {}
        for split, n in PNEUMONIA_FIRST.items():
            rows = list(range(n)) + (list(PNEUMONIA_TRAIN_TWINS) if split == "train" else [])
            arrays[f"{split}_images"] = npz[f"{split}_images"][rows]
            arrays[f"{split}_labels"] = npz[f"{split}_labels"][rows]
    _savez_fixed(out / "pneumoniamnist.npz", arrays)


def write_chest_xray(src: Path, out: Path) -> None:
    for split, n in KERMANY_FIRST.items():
        for cls in ("NORMAL", "PNEUMONIA"):
            (out / "chest_xray" / split / cls).mkdir(parents=True)
            for path in sorted((src / "chest_xray" / split / cls).iterdir())[:n]:
                with Image.open(path) as im:
                    small = im.convert("RGB").resize((KERMANY_SIZE, KERMANY_SIZE), Image.Resampling.LANCZOS)
                small.save(out / "chest_xray" / split / cls / path.name, format="JPEG", quality=KERMANY_QUALITY)


def _nih_rows(rows: list[list[str]]) -> list[int]:
    chosen = set(range(0, len(rows), NIH_EVERY)) | set(NIH_RGBA_ROWS)
    follow_ups: set[int] = set()
    for i in sorted(chosen):
        nxt = next((j for j in range(i + 1, len(rows)) if rows[j][3] == rows[i][3]), None)
        if nxt is not None and len(follow_ups) < NIH_FOLLOW_UPS:
            follow_ups.add(nxt)
    return sorted(chosen | follow_ups)


def write_nih(src: Path, out: Path) -> None:
    root = src / "nih_cxr14_1000"
    lines = (root / "Data_Entry_2017.csv").read_text().splitlines()
    rows = list(csv.reader(lines[1:]))
    keep = _nih_rows(rows)
    (out / "nih_cxr14_small" / "images").mkdir(parents=True)
    for i in keep:
        shutil.copyfile(root / "images" / rows[i][0], out / "nih_cxr14_small" / "images" / rows[i][0])
    # The header and rows verbatim (line for line), in the release's order.
    (out / "nih_cxr14_small" / "Data_Entry_2017.csv").write_text("\n".join([lines[0]] + [lines[1 + i] for i in keep]) + "\n")


def write_siim(src: Path, out: Path) -> None:
    root = src / "siim_acr_11"
    (out / "siim_acr_small" / "dicom-images").mkdir(parents=True)
    for image_id in SIIM_IDS:
        shutil.copyfile(root / "dicom-images" / f"{image_id}.dcm", out / "siim_acr_small" / "dicom-images" / f"{image_id}.dcm")
    lines = (root / "train-rle.csv").read_text().splitlines()
    keep = [ln for ln in lines[1:] if ln.split(",")[0] in SIIM_IDS]
    assert len(keep) == len(SIIM_IDS), f"train-rle.csv lacks some of {SIIM_IDS}"
    (out / "siim_acr_small" / "train-rle.csv").write_text("\n".join([lines[0]] + keep) + "\n")


def write_kather(src: Path, out: Path) -> None:
    for cls in KATHER_CLASSES:
        (out / "kather2016_small" / cls).mkdir(parents=True)
        first = sorted((src / "kather2016_240" / cls).iterdir())[0]
        shutil.copyfile(first, out / "kather2016_small" / cls / first.name)


WRITERS = {"pneumoniamnist.npz": write_pneumoniamnist, "chest_xray": write_chest_xray,
           "nih_cxr14_small": write_nih, "siim_acr_small": write_siim, "kather2016_small": write_kather}


def write_all(src: Path, out: Path) -> list[Path]:
    """Write every fixture under ``out`` (replacing what is there); returns the files written."""
    for name, write in WRITERS.items():
        target = out / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
        write(src, out)
    return sorted(p for name in WRITERS for p in ([out / name] if (out / name).is_file() else (out / name).rglob("*"))
                  if p.is_file())


def _differences(a: Path, b: Path) -> list[str]:
    """Files that differ between two fixture trees: JPEGs by pixels (encoders differ by version), the rest by bytes."""
    def files(root: Path) -> set[str]:
        return {str(p.relative_to(root)) for name in WRITERS for p in
                ([root / name] if (root / name).is_file() else (root / name).rglob("*")) if p.is_file()}

    names_a, names_b = files(a), files(b)
    out = [f"only in {a}: {n}" for n in sorted(names_a - names_b)] + [f"only in {b}: {n}" for n in sorted(names_b - names_a)]
    for name in sorted(names_a & names_b):
        if name.endswith(".jpeg"):
            pa, pb = (np.asarray(Image.open(r / name), dtype=np.int16) for r in (a, b))
            if pa.shape != pb.shape or np.abs(pa - pb).max() > 3:
                out.append(f"pixels differ: {name}")
        elif (a / name).read_bytes() != (b / name).read_bytes():
            out.append(f"bytes differ: {name}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    env = os.environ.get("TL_DATA_DIR")
    parser.add_argument("--src", type=Path, default=Path(env) if env else DEFAULT_SRC,
                        help="the full data (default: $TL_DATA_DIR, else ../shared/data beside the checkout)")
    parser.add_argument("--out", type=Path, default=HERE, help="where the fixtures go (default: tests/data)")
    parser.add_argument("--check", action="store_true", help="write to a temp folder and compare with --out")
    args = parser.parse_args(argv)
    if not (args.src / "pneumoniamnist.npz").is_file():
        print(f"error: no pneumoniamnist.npz under {args.src}; pass --src or set TL_DATA_DIR", file=sys.stderr)
        return 2
    if args.check:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            write_all(args.src, Path(tmp))
            diffs = _differences(Path(tmp), args.out)
        print("\n".join(diffs) if diffs else f"{args.out}: as make_fixtures.py writes it")
        return 1 if diffs else 0
    written = write_all(args.src, args.out)
    total = sum(p.stat().st_size for p in written)
    print(f"wrote {len(written)} files, {total / 1e6:.2f} MB, under {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What does one image cost to decode and resize, by file format?

    python -m benchmarks.decode_formats [--size 128] [--repeats 5] [--json out.json]

ms per image for ``tl.data.decode.decode_image`` (read, decode, map to 8 bits, bilinear resize to
``--size``), one process, the median of ``--repeats`` timed passes after one warm-up pass:

- the 11 SIIM-ACR DICOMs (1024x1024, JPEG Baseline: pydicom and its JPEG handler);
- the same pixels as 8-bit PNG and as 16-bit PNG (values x257, mapped back by range), 1024x1024;
- the same pixels as 12-bit native DICOM with a window (pydicom without a codec: rescale + VOI);
- 50 chest_xray JPEGs (224x224).
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from benchmarks.common import device_description, write_json
from tl.data.decode import decode_image
from tl.data.dicom import write_dicom


def ms_per_image(files: list[Path], size: int, repeats: int) -> float:
    """Median over ``repeats`` passes of one pass's time per file, in ms (after a warm-up pass)."""
    for f in files:
        decode_image(f, size)
    passes = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for f in files:
            decode_image(f, size)
        passes.append((time.perf_counter() - t0) / len(files) * 1e3)
    return statistics.median(passes)


def _native_dicom(path: Path, v12: np.ndarray) -> Path:
    """A 12-bit MONOCHROME2 file, uncompressed, with a rescale and a window (as CR/DX files ship)."""
    return write_dicom(path, v12, 12, RescaleSlope=1, RescaleIntercept=0, WindowCenter=2048, WindowWidth=3000)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.decode_formats", description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", type=Path, default=Path(os.environ.get("TL_DATA_DIR", "../shared/data")))
    p.add_argument("--size", type=int, default=128, help="output size (px)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    dicoms = sorted((args.data_dir / "siim_acr_11" / "dicom-images").glob("*.dcm"))
    jpegs = sorted((args.data_dir / "chest_xray" / "train" / "NORMAL").glob("*.jpeg"))[:50]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        sets = {"SIIM DICOM, JPEG Baseline 8-bit, 1024 px": dicoms}
        png8, png16, native = [], [], []
        for i, f in enumerate(dicoms):
            grey = decode_image(f, 1024, channels=1)[0][0]  # the DICOM's own pixels, 1024x1024
            Image.fromarray(grey).save(png8_path := Path(tmp) / f"{i}_8.png")
            Image.fromarray(grey.astype(np.uint16) * 257).save(png16_path := Path(tmp) / f"{i}_16.png")
            png8.append(png8_path)
            png16.append(png16_path)
            native.append(_native_dicom(Path(tmp) / f"{i}_12.dcm", grey.astype(np.uint16) * 16))
        sets.update({"same pixels, 8-bit PNG, 1024 px": png8, "same pixels, 16-bit PNG, 1024 px": png16,
                     "same pixels, 12-bit native DICOM + window, 1024 px": native,
                     "chest_xray JPEG, 224 px": jpegs})
        for name, files in sets.items():
            ms = ms_per_image(files, args.size, args.repeats)
            mb = sum(f.stat().st_size for f in files) / len(files) / 1e6
            rows.append({"set": name, "files": len(files), "mb_per_file": round(mb, 3), "ms_per_image": round(ms, 2)})
    device = device_description(torch.device("cpu"))
    print(f"decode + resize to {args.size} px, one process, median of {args.repeats} passes ({device})")
    print(f"{'set':<52}{'files':>6}{'MB/file':>9}{'ms/image':>10}")
    for r in rows:
        print(f"{r['set']:<52}{r['files']:>6}{r['mb_per_file']:>9.3f}{r['ms_per_image']:>10.2f}")
    write_json({"benchmark": "decode_formats", "date": dt.date.today().isoformat(), "device": device,
                "size": args.size, "repeats": args.repeats, "rows": rows}, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

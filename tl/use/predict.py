"""``python -m tl.predict BUNDLE INPUT... --out predictions.csv``: score new images with a bundle.

Inputs are image files, folders (searched recursively) and MedMNIST ``.npz`` splits
(``file.npz:test``). One CSV row per image: each class's temperature-scaled probability, the label
at the bundle's threshold and the label at argmax. The CSV is written to a temporary name and
renamed at the end, so a failed run leaves no partial file.
"""
from __future__ import annotations

import argparse
import csv
import os
import sys
from pathlib import Path

import numpy as np

from tl.use.bundle import Bundle, load_bundle
from tl.data import IMAGE_EXTENSIONS, SPLITS, load_npz_splits
from tl.data.formats import is_image_file
from tl.core.errors import TLError
from tl.core.no_space import NO_SPACE, is_no_space

CHUNK = 512  # files decoded per step: bounds memory on large folders, and paces the progress bar


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tl.predict", description=__doc__.splitlines()[0])
    p.add_argument("bundle", type=Path, help="bundle folder written by tl.export")
    p.add_argument("inputs", nargs="+", help="image files, folders, or FILE.npz:SPLIT")
    p.add_argument("--out", type=Path, required=True, help="CSV to write")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--skip-bad-images", action="store_true",
                   help="list undecodable images in the CSV (error column) instead of failing")
    p.add_argument("--gradcam", type=Path, metavar="DIR", help="write a Grad-CAM overlay PNG per input into DIR")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def expand_inputs(inputs: list[str]) -> list[tuple[str, str | None]]:
    """(path, npz split or None) per input; folders become their image files, sorted, recursively."""
    out: list[tuple[str, str | None]] = []
    for item in inputs:
        path, _, split = item.rpartition(":") if item.endswith(tuple(f":{s}" for s in SPLITS)) else (item, "", "")
        p = Path(path)
        if split:
            if not p.is_file():
                raise TLError(f"{p}: no such .npz file")
            out.append((path, split))
        elif p.is_dir():
            files = sorted(f for f in p.rglob("*") if f.is_file() and is_image_file(f))
            if not files:
                raise TLError(f"{p}: no image files ({'/'.join(IMAGE_EXTENSIONS)}) under it")
            out += [(str(f), None) for f in files]
        elif p.is_file():
            if p.suffix == ".npz":
                raise TLError(f"{p}: name the split of an .npz, e.g. {p}:test")
            out.append((str(p), None))
        else:
            raise TLError(f"{p}: no such file or folder")
    return out


def _npz_images(path: str, split: str) -> np.ndarray:
    return load_npz_splits(Path(path)).images[split]  # tl.data's own reading: same layout as training


def _chunks(items: list, progress: bool):
    starts = range(0, len(items), CHUNK)
    if progress and len(items) > CHUNK:
        from tqdm import tqdm
        starts = tqdm(starts, desc="predict", unit=f"x{CHUNK} images")
    for i in starts:
        yield items[i:i + CHUNK]


def predict_rows(bundle: Bundle, inputs: list[str], batch_size: int = 64, skip_bad: bool = False,
                 gradcam: Path | None = None, progress: bool = True) -> list[dict]:
    """One dict per image: file, ``p_<class>`` (calibrated), label_at_threshold, label_argmax, error."""
    rows: list[dict] = []
    expanded = expand_inputs(inputs)
    npz = [(p, s) for p, s in expanded if s]
    files = [p for p, s in expanded if not s]
    jobs: list[tuple[list[str], np.ndarray, dict[int, str]]] = []
    for path, split in npz:
        images = bundle.check_channels(_npz_images(path, split), f"{path}:{split}")
        jobs.append(([f"{path}:{split}[{i}]" for i in range(len(images))], images, {}))
    for chunk in _chunks(files, progress):
        images, bad = bundle.decode_files(chunk, skip_bad)
        jobs.append((chunk, bundle.check_channels(images, chunk[0]) if len(images) else images, bad))
    for names, images, bad in jobs:
        good = [n for i, n in enumerate(names) if i not in bad]
        probs = bundle.predict(images, batch_size, progress=progress) if len(good) else np.zeros((0, 2))
        at, argmax = bundle.called_labels(probs) if len(good) else ([], [])
        if gradcam is not None and len(good):
            from tl.use.gradcam import save_overlays
            save_overlays(bundle, images, [_png_name(n) for n in good], gradcam, batch_size,
                          classes=probs.argmax(1))  # temperature keeps the order: no second forward pass
        k = 0
        for i, name in enumerate(names):
            row = {"file": name, **{f"p_{c}": "" for c in bundle.class_names},
                   "label_at_threshold": "", "label_argmax": "", "error": bad.get(i, "")}
            if i not in bad:
                row.update({f"p_{c}": float(v) for c, v in zip(bundle.class_names, probs[k])},
                           label_at_threshold=at[k], label_argmax=argmax[k])
                k += 1
            rows.append(row)
    return rows


def _png_name(name: str) -> str:
    """A flat, unique-enough file name for an input: its path with separators replaced."""
    stem = name.replace("\\", "/").lstrip("./")
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in stem)[-150:]


def write_csv(rows: list[dict], out: Path) -> None:
    """Write atomically: a temporary file in the same folder, renamed when complete.

    Raises:
        TLError: naming ``out`` when it cannot be written (its folder is a file, no permission, a
            folder in its place, disk full); nothing is left behind.
    """
    if not rows:
        raise TLError("no images in the inputs: nothing to predict")
    tmp = out.with_name(f".{out.name}.part")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp, out)
    except OSError as exc:
        where = exc.filename2 or exc.filename  # os.replace names the temporary file first
        why = f"{exc.strerror}: {where}" if exc.strerror and where else str(exc)
        raise TLError(f"--out {out}: cannot write the predictions ({why})") from None
    finally:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:  # its folder is a file or unreadable: then no temporary file was made either
            pass


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    try:
        if args.batch_size < 1:
            raise TLError(f"--batch-size must be at least 1, got {args.batch_size}")
        bundle = load_bundle(args.bundle, args.device)
        rows = predict_rows(bundle, args.inputs, args.batch_size, args.skip_bad_images, args.gradcam,
                            not args.no_progress and sys.stderr.isatty())
        write_csv(rows, args.out)
    except TLError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a full disk under --gradcam (write_csv says its own): the CSV is not written
        if not is_no_space(exc):
            raise
        print(f"error: the disk is full ({NO_SPACE}) writing {exc.filename or args.gradcam}; no --out {args.out} "
              "was written: free space and run again", file=sys.stderr)
        return 2
    bad = sum(1 for r in rows if r["error"])
    print(f"[tl.predict] {len(rows)} images -> {args.out}" + (f" ({bad} unreadable, see the error column)" if bad else "")
          + (f"; Grad-CAM overlays in {args.gradcam}" if args.gradcam else ""))
    return 0

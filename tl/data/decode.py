"""Image files to uint8 pixels: one function from paths to (N, C, H, W) arrays at one size."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from tl.core.errors import TLError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")


def decode_images(paths: list[Path], size: int, skip_bad: bool) -> tuple[np.ndarray, list[int], list[str]]:
    from PIL import Image, UnidentifiedImageError

    out = np.empty((len(paths), 3, size, size), dtype=np.uint8)
    kept, bad = [], []
    for i, p in enumerate(paths):
        try:
            with Image.open(p) as im:
                im.load()
                arr = np.asarray(im.convert("RGB").resize((size, size), Image.BILINEAR))
        except (UnidentifiedImageError, OSError, SyntaxError) as exc:
            if not skip_bad:
                raise TLError(f"{p}: corrupt or truncated image ({exc}); pass --skip-bad-images to skip such files") from None
            bad.append(str(p))
            continue
        out[len(kept)] = arr.transpose(2, 0, 1)
        kept.append(i)
    return out[: len(kept)], kept, bad



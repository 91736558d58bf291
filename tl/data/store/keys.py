"""The decode store's keys: what the decoded pixels depend on (``store_key``) and which rows a carve
takes (``carve_key``). The carve is never part of the store's key, so another seed decodes nothing."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from tl.data.arrays import SPLITS
from tl.data.decode import DECODER_VERSION
from tl.data.locate import relative_name

# What decode_image is asked for, and what each chunk holds besides pixels; part of the key. channels
# "content": 1 for grey content, 3 for colour. The audit's fingerprints (tl.data.fingerprints.image_fingerprints)
# are computed by the workers as they decode, so a search's driver never reads the pixels to audit them.
DECODE_OPTIONS = {"channels": "content", "resize": "PIL bilinear", "fingerprints": "dHash-256 (integer cells) + blake2b-16"}


def file_entries(paths: list[Path], root: Path) -> list[tuple[str, int, int]]:
    """(name relative to ``root``, size, mtime in ns) of each distinct file, sorted by name: the
    content part of the key, and the order of the store's rows."""
    entries, root = {}, os.path.normpath(str(root))
    for p in paths:
        name = relative_name(p, root)
        if name not in entries:
            try:
                st = os.stat(p)
                entries[name] = (name, st.st_size, st.st_mtime_ns)
            except OSError:  # missing: decode_chunk names it as unreadable
                entries[name] = (name, -1, -1)
    return sorted(entries.values())


def store_key(entries: list[tuple[str, int, int]], image_size: int, options: dict | None = None,
              version: int = DECODER_VERSION) -> str:
    """Hash of what the decoded pixels depend on: the files (``file_entries``), the image size, the
    decode options and the decoder's version. Not the carve: a carve is indices over the store."""
    h = hashlib.sha256(json.dumps({"version": version, "size": image_size, "options": options or DECODE_OPTIONS},
                                  sort_keys=True).encode())
    for name, size, mtime in entries:
        h.update(f"{name}\0{size}\0{mtime}\n".encode())
    return h.hexdigest()[:16]


def carve_key(rows: dict[str, np.ndarray]) -> str:
    """Hash of each split's rows (indices into the store, in split order)."""
    h = hashlib.sha256()
    for split in SPLITS:
        h.update(split.encode() + np.ascontiguousarray(rows[split], dtype=np.int64).tobytes())
    return h.hexdigest()[:16]

"""Decoding one chunk of the store: ``decode_chunk``, the one function every scheduler runs (a Ray
task, a Ray Data map, a pool process, this process), and its wrappers that say where it ran."""
from __future__ import annotations

import json
import os
import time

import numpy as np

from tl.core.errors import TLError
from tl.data.decode import decode_image


def decode_chunk(paths: list[str], image_size: int) -> dict:
    """Decode ``paths`` at ``image_size`` as their content is (grey: 1 channel, colour: 3).

    Returns:
        ``images`` uint8 (n, C, S, S): C is 3 if any image of the chunk is colour (grey ones
        repeated), else 1; a file that did not decode is zeros. ``hashes`` uint64 (n, 4) and
        ``digests`` uint8 (n, 16): the split audit's fingerprints of each image. ``ok`` bool (n,);
        ``records`` (JSON: each file's decode record, None where it failed); ``errors`` (JSON: the
        failure messages, None where it decoded); ``pid`` and ``seconds``.
    """
    from tl.data.fingerprints import image_fingerprints

    t0 = time.perf_counter()
    pixels, records, errors = [], [], []
    for p in paths:
        try:
            px, record = decode_image(p, image_size, channels=None)
        except TLError as exc:
            px, record = None, None
            errors.append(str(exc))
        else:
            errors.append(None)
        pixels.append(px)
        records.append(record)
    channels = 3 if any(px is not None and len(px) == 3 for px in pixels) else 1
    images = np.zeros((len(paths), channels, image_size, image_size), dtype=np.uint8)
    for i, px in enumerate(pixels):
        if px is not None:
            images[i] = px  # a 1-channel image broadcasts to 3
    hashes, digests = image_fingerprints(images)
    return {"images": images, "hashes": hashes, "digests": digests, "ok": np.array([e is None for e in errors], dtype=bool),
            "records": json.dumps(records, default=str), "errors": json.dumps(errors),
            "pid": os.getpid(), "seconds": time.perf_counter() - t0}


def ray_decode_chunk(paths: list[str], image_size: int) -> dict:
    """``decode_chunk`` in a Ray worker, with ``node``: the Ray node id that decoded it."""
    import ray

    out = decode_chunk(paths, image_size)
    out["node"] = ray.get_runtime_context().get_node_id()
    return out


def local_decode_chunk(paths: list[str], image_size: int) -> dict:
    """``decode_chunk`` in a local process, with ``node``: this machine's host name."""
    import socket

    out = decode_chunk(paths, image_size)
    out["node"] = socket.gethostname()
    return out

"""The pixels while Ray starts. A local Ray takes about 3 s to start (its GCS, raylet and agents),
most of it waiting on those processes, not on this one's CPU. A dataset the decode store already
holds (another --seed, another search on the same images) needs no Ray: it is opened, carved and
audited in a thread beside the start (2.5 s at 10^5 images, ``benchmarks.scale``). Anything to
decode waits for Ray, whose tasks decode the chunks: the thread then gives up (``only_stored``) and
the search loads after Ray is up, as it does with ``--address``."""
from __future__ import annotations

import threading
from concurrent.futures import Future
from typing import Callable, TypeVar

from tl.data.store.fill import DecodeNeeded, only_stored

T = TypeVar("T")


def load_beside_ray(load: Callable[[], T]) -> Future:
    """Run ``load`` in a daemon thread with decoding refused (``only_stored``). The future holds its
    result, None when it needed to decode, or its exception (a bad input, raised where the caller
    asks for the result). Daemon: an interrupted search does not wait for it at exit."""
    future: Future = Future()

    def run() -> None:
        try:
            with only_stored():
                future.set_result(load())
        except DecodeNeeded:
            future.set_result(None)
        except BaseException as exc:  # noqa: BLE001 -- handed to the caller's thread, raised there
            future.set_exception(exc)

    threading.Thread(target=run, name="tl-load-beside-ray", daemon=True).start()
    return future

"""Where a search lives (its name, storage root and, on local storage, its folder) and how it is
stopped: Ctrl-C or SIGTERM ask Tune for a graceful stop that ``--resume`` continues."""
from __future__ import annotations

import argparse
import datetime as dt
import os
import signal
from pathlib import Path

from tl.core.errors import TLError
from tl.core.results import SEARCH_FILE


def check_storage(storage: str) -> str:
    if "://" in storage:
        return storage
    path = Path(storage).expanduser().resolve()
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".tl_write_probe"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise TLError(f"--storage {storage} is not writable: {exc.strerror or exc}") from None
    return str(path)


class StopSignals:
    """Ctrl-C and SIGTERM ask Tune to stop gracefully (save the experiment state and return), and
    remember that they did, so the search can say how to ``--resume`` it; a second one stops at once.

    Tune's own SIGINT handler is turned off (``TUNE_DISABLE_SIGINT_HANDLER``) and Tune is asked
    through SIGUSR1, the other signal its graceful stop listens to: after such a stop its results
    cannot tell an interrupted trial from a finished one, but this flag can.
    """

    def __init__(self) -> None:
        import threading

        self.received = False
        if threading.current_thread() is threading.main_thread() and hasattr(signal, "SIGUSR1"):
            os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
            signal.signal(signal.SIGINT, self._handle)
            signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, *_) -> None:
        if self.received:
            raise KeyboardInterrupt
        self.received = True
        os.kill(os.getpid(), signal.SIGUSR1)


def default_name(space_file: str) -> str:
    """An experiment's name when ``--name`` gives none: the space file's stem and the time, to the second."""
    return f"{Path(space_file).stem}-{dt.datetime.now():%Y%m%d-%H%M%S}"


class Experiment:
    """Where this search lives: its name, the storage root and (local storage) its folder."""

    def __init__(self, args: argparse.Namespace):
        self.storage = check_storage(args.storage)
        self.name = args.name or default_name(args.space)
        self.folder = Path(self.storage) / self.name if "://" not in self.storage else None
        self.where = f"{self.storage}/{self.name}"
        if args.resume and self.folder is not None and not (self.folder / SEARCH_FILE).exists():
            raise TLError(f"--resume: no experiment {self.name!r} under {self.storage}")
        if not args.resume and self.folder is not None and self.folder.exists():
            raise TLError(f"experiment {self.folder} exists; pass --resume to continue it or choose another --name")

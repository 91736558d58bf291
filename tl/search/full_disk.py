"""A full disk during a search: stop at once, keep the experiment resumable, say so in one line.

Ray Tune treats "No space left on device" like any other trial failure and retries the trial
(``FailureConfig(max_failures)``), which on a full disk fails again, and its experiment-state sync
overwrites files in place, so a sync that runs out of space leaves them truncated and ``--resume``
then starts the whole search over. ``FullDiskStop`` changes both:

- It holds a reserve file (``RESERVE_BYTES``) on ``--storage`` while a Tuner runs, so there is room
  for Ray's last save once the disk is full.
- When a trial fails with ENOSPC (Ray's checkpoint upload, a write of ours) or Ray's own state sync
  does, it releases the reserve and asks Tune for its graceful stop (SIGUSR1, what Ctrl-C and
  ``tl.search.experiment.StopSignals`` use): the loop ends before the failed trial is started again,
  Tune writes the experiment state one last time, the running trials stay unfinished and the
  failed one pending, so ``--resume`` runs each of them once, from its last checkpoint.
- When the Tuner has ended it raises ``StorageFull``: one ``error:`` line, exit 2.

``TL_INJECT_ENOSPC_AT_EPOCH`` (``tl.train.trainable.save_checkpoint``) makes the checkpoint write
of that epoch fail with ENOSPC, for tests on machines that cannot mount a small filesystem.
"""
from __future__ import annotations

import atexit
import errno
import logging
import os
import shutil
import signal
from pathlib import Path

from ray import tune

from tl.core.errors import TLError
from tl.core.no_space import NO_SPACE, is_no_space
from tl.data.store.layout import human_bytes
from tl.search.disk import Estimate

MB = 1024 ** 2
# Room for Ray's last save after the disk filled up: it rewrites the experiment state and every
# trial's result files (about 75 KB a trial in chest14-8x10), in place, so it needs only what grew
# since its last good save, or what a failed save truncated: 8 MB covers a hundred trials' worth.
RESERVE_BYTES = 8 * MB
# The Ray loggers whose records a full disk explains: the state sync's failure (a traceback) and
# the graceful stop's "Stop signal received (e.g. via SIGINT/Ctrl+C)" notice.
_RAY_LOGGERS = ("ray.tune.execution.experiment_state", "ray.tune.tune")


def trial_ran_out_of_space(trial) -> bool:
    """Whether the trial's latest failure (the last ``Failure #`` entry of Ray's error.txt) was ENOSPC."""
    try:
        text = Path(trial.error_file).read_text(errors="replace")
    except (OSError, TypeError):
        return False
    return is_no_space(text.rsplit("Failure # ", 1)[-1])


class StorageFull(TLError):
    """The storage filled up: where, how much was free, what the search needs, how to go on."""

    def __init__(self, storage: str, free: int | None, needed: Estimate | None, what: str, saved: bool = True,
                 resume: str = "run the same command again with --resume"):
        self.storage, self.free, self.needed, self.what, self.saved = storage, free, needed, what, saved
        need = f", the search needs about {human_bytes(needed.needed)} ({needed.how})" if needed else ""
        free_text = f"{human_bytes(free)} free" if free is not None else "free space unknown"
        state = "" if saved else ("; Ray's experiment state could not be saved whole, so --resume may run "
                                  "unfinished trials again from their start")
        super().__init__(f"storage {storage} is full ({NO_SPACE} while {what}): {free_text}{need}{state}; "
                         f"free space, then {resume}")

    def with_resume(self, command: str) -> "StorageFull":
        """The same error, ending with the exact command that continues the search."""
        return StorageFull(self.storage, self.free, self.needed, self.what, self.saved, f"continue with: {command}")


class Reserve:
    """A file of ``size`` allocated bytes at ``path``: space held back for Ray's last save."""

    def __init__(self, path: Path, size: int = RESERVE_BYTES):
        self.path, self.size = path, size
        self._at_exit = False

    @property
    def held(self) -> bool:
        try:
            return self.path.stat().st_size >= self.size
        except OSError:
            return False

    def hold(self) -> None:
        """Allocate the file (real blocks: a sparse file would hold nothing); raises OSError ENOSPC
        when it does not fit, and then leaves no partial file."""
        if self.held:
            return
        if not self._at_exit:  # a run that ends before its Tuner does leaves no reserve behind
            atexit.register(self.release)
            self._at_exit = True
        try:
            with open(self.path, "wb") as f:
                try:
                    os.posix_fallocate(f.fileno(), 0, self.size)
                except (AttributeError, OSError) as exc:
                    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
                        raise
                    # No fallocate here (macOS, some network filesystems): random bytes, which a
                    # compressing filesystem cannot store in less.
                    for _ in range(self.size // MB):
                        f.write(os.urandom(MB))
        except OSError:
            self.release()
            raise

    def release(self) -> None:
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass


def _ask_tune_to_stop() -> bool:
    """Tune's graceful stop, as Ctrl-C asks for it: SIGUSR1, which ``tune.run`` handles while it runs
    (in the main thread only). Returns False, sending nothing, where no handler is installed: SIGUSR1's
    default action would end the process."""
    if not hasattr(signal, "SIGUSR1") or not callable(signal.getsignal(signal.SIGUSR1)):
        return False
    signal.raise_signal(signal.SIGUSR1)
    return True


class FullDiskStop(tune.Callback):
    """Stop the Tuner at the first ENOSPC, keep its state resumable, then raise ``StorageFull``.

    Args:
        storage: ``--storage`` (a path or a URI; a URI gets no reserve and no free-space figure).
        name: the experiment's name; the reserve is ``STORAGE/.tl_reserve-NAME``.
        needed: the search's estimate (``tl.search.disk.estimate``), for the error line.
        stop: asks Tune to stop (tests pass a stand-in); default SIGUSR1.
    """

    def __init__(self, storage: str, name: str, needed: Estimate | None, reserve_bytes: int = RESERVE_BYTES,
                 stop=_ask_tune_to_stop):
        self.storage, self.needed, self._stop = storage, needed, stop
        local = "://" not in storage
        self.reserve = Reserve(Path(storage) / f".tl_reserve-{name}", reserve_bytes) if local else None
        self.what: str | None = None  # what ran out of space; None while there is space
        self.free: int | None = None

    # -- the reserve ------------------------------------------------------------------------------
    def hold(self) -> None:
        """Take the reserve before anything of the experiment is written: a disk without room for
        it fails here, in seconds, with nothing written."""
        if self.reserve is None:
            return
        try:
            self.reserve.hold()
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise TLError(f"--storage {self.storage} is not writable: {exc.strerror or exc}") from None
            raise StorageFull(self.storage, self._free_now(), self.needed,
                              f"setting aside {human_bytes(self.reserve.size)} for the experiment state") from None

    def _free_now(self) -> int | None:
        try:
            return shutil.disk_usage(self.storage).free if self.reserve is not None else None
        except OSError:
            return None

    # -- Ray Tune hooks ---------------------------------------------------------------------------
    def setup(self, **info) -> None:
        self.what = None
        for name in _RAY_LOGGERS:
            logging.getLogger(name).addFilter(self)
        self.hold()  # a later Tuner (the finalists) takes it again

    def on_trial_recover(self, iteration: int, trials: list, trial, **info) -> None:
        self._check(trial)

    def on_trial_error(self, iteration: int, trials: list, trial, **info) -> None:
        self._check(trial)

    def on_experiment_end(self, trials: list, **info) -> None:
        """After Tune's last save: give the reserve back, and raise ``StorageFull`` if the disk filled."""
        for name in _RAY_LOGGERS:
            logging.getLogger(name).removeFilter(self)
        if self.reserve is not None:
            self.reserve.release()
        if self.what is not None:
            raise StorageFull(self.storage, self.free, self.needed, self.what, saved=_state_saved(trials))

    def _check(self, trial) -> None:
        if self.what is None and trial_ran_out_of_space(trial):
            self._full(f"trial {trial.trial_id} saved a checkpoint")

    def _full(self, what: str) -> None:
        """Record the full disk (free space before the reserve goes), free the reserve, stop Tune."""
        self.what, self.free = what, self._free_now()
        if self.reserve is not None:
            self.reserve.release()
        self._stop()

    # -- a logging filter on Ray's own records (a logger takes any object with ``filter``) ----------
    def filter(self, record: logging.LogRecord) -> bool:
        """Drop Ray's records that the error line explains: an ENOSPC in its state sync (which also
        stops the search, when no trial failed first) and the stop notice once the disk is full."""
        error = record.exc_info[1] if record.exc_info else None
        if error is not None and is_no_space(error):
            if self.what is None:
                self._full("Ray saved the experiment state")
            return False
        return not (self.what is not None and record.getMessage().startswith("Stop signal received"))


def _state_saved(trials: list) -> bool:
    """Whether Ray's last save reached the storage whole: every file that ``Tuner.restore`` reads back
    (the .json and .pkl of the driver's staging folder: experiment and searcher state, each trial's
    params and results) has its full size there. True when it cannot be told (no trials, remote
    storage). TensorBoard's event files are left out: Ray closes them after its last save."""
    storage = getattr(trials[0], "storage", None) if trials else None
    if storage is None or storage.storage_filesystem.type_name != "local":
        return True
    staging, stored = Path(storage.experiment_driver_staging_path), Path(storage.experiment_fs_path)
    for local in (p for p in staging.rglob("*") if p.suffix in (".json", ".pkl") and p.is_file()):
        try:
            if (stored / local.relative_to(staging)).stat().st_size != local.stat().st_size:
                return False
        except OSError:
            return False
    return True

"""A small filesystem that really fills up, for the full-disk tests: a size-limited tmpfs, mounted where
the machine allows it (root, a mount binary), else the test is skipped; its injected-ENOSPC twin runs
everywhere."""
from __future__ import annotations

import functools
import os
import shutil
import subprocess
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

MB = 1024 ** 2


@functools.cache
def can_mount() -> bool:
    """Whether this machine lets the tests mount a tmpfs (tried once, on a throwaway folder)."""
    probe = Path(tempfile.mkdtemp(prefix="tl-mount-probe-"))
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(probe)], capture_output=True,
                              timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    finally:
        if "done" in locals() and done.returncode == 0:
            subprocess.run(["umount", str(probe)], capture_output=True, timeout=30)
        probe.rmdir()
    return done.returncode == 0


@contextmanager
def small_tmpfs(path: Path, size: int) -> Iterator[Path]:
    """Mount a tmpfs of ``size`` bytes at ``path`` for the block; skip the test where mounting is not
    permitted. Unmounted lazily after (a Ray process that has not exited yet may still hold a file)."""
    path.mkdir(parents=True, exist_ok=True)
    try:
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                                 capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"cannot mount a small tmpfs here: {exc}")
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=30)


def fill(folder: Path, leave: int) -> Path:
    """A file taking all of ``folder``'s free space but ``leave`` bytes; deleting it frees the space."""
    filler = folder / "filler"
    with open(filler, "wb") as f:
        size = shutil.disk_usage(folder).free - leave
        if size > 0:
            os.posix_fallocate(f.fileno(), 0, size)
    return filler

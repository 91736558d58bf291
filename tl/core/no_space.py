"""Telling a full disk from other write failures: "No space left on device" (ENOSPC).

Python's writes raise ``OSError`` with ``errno.ENOSPC``; others say it only in their text:
pyarrow (Ray's uploads) raises an ``OSError`` without an errno, safetensors a ``SafetensorError``
("No space left on device (os error 28)"). The CLIs turn any of them into one ``error:`` line.
"""
from __future__ import annotations

import errno
import os

NO_SPACE = os.strerror(errno.ENOSPC)  # "No space left on device"


def is_no_space(error: BaseException | str | None) -> bool:
    """Whether ``error`` (an exception or its causes, or an error's text) is a full disk."""
    seen = set()
    while isinstance(error, BaseException) and id(error) not in seen:
        if isinstance(error, OSError) and error.errno == errno.ENOSPC:
            return True
        if NO_SPACE in str(error):
            return True
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return isinstance(error, str) and NO_SPACE in error

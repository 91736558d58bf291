"""The decode's progress on stderr: images done, images/s and time left."""
from __future__ import annotations

import sys
import time

PROGRESS_EVERY_S = 10.0  # off a terminal: a progress line every 10 s or 10 % of the images


class Progress:
    """Images done, images/s and time left on stderr: a tqdm bar updated in place on a terminal;
    elsewhere (logs, CI) a line every ``PROGRESS_EVERY_S`` or 10 % of the images."""

    def __init__(self, total: int, what: str, stream=None):
        from tqdm import tqdm

        self.stream = stream or sys.stderr
        self.total, self.n, self.what = total, 0, what
        self.started = self.last_time = time.monotonic()
        self.last_step = 0
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.bar = tqdm(total=total, desc=what, unit="img", file=self.stream, dynamic_ncols=True,
                        mininterval=0.5, leave=True) if self.tty else None

    def update(self, n: int) -> None:
        self.n += n
        if self.bar is not None:
            self.bar.update(n)
            return
        now = time.monotonic()
        step = 10 * self.n // max(1, self.total)
        if now - self.last_time >= PROGRESS_EVERY_S or step > self.last_step or self.n >= self.total:
            self.last_time, self.last_step = now, step
            self._line(now)

    def _line(self, now: float) -> None:
        from tqdm import tqdm

        print(tqdm.format_meter(self.n, self.total, now - self.started, prefix=self.what, unit="img", ncols=100),
              file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

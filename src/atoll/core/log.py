"""Logging and progress for long work.

Messages go to stderr; ``--json`` output of commands goes to stdout alone, so
automation can parse it. Progress is a line per step (``[3/17] hashing ...``),
throttled, and silent when stderr is not a terminal unless asked for.
"""

from __future__ import annotations

import logging
import sys
import time

__all__ = ["Progress", "setup_logging"]


def setup_logging(debug: bool = False, quiet: bool = False) -> None:
    level = logging.DEBUG if debug else (logging.WARNING if quiet else logging.INFO)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s" if not debug else "%(name)s: %(message)s"))
    root = logging.getLogger("atoll")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


class Progress:
    """Report progress of a counted task on stderr, at most every ``interval`` seconds."""

    def __init__(self, what: str, total: int | None = None, *, interval: float = 1.0):
        self.what = what
        self.total = total
        self.done = 0
        self.interval = interval
        self._log = logging.getLogger("atoll.progress")
        self._start = time.monotonic()
        self._last = self._start  # first report after one interval: short tasks stay quiet

    def advance(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._last = now
            self._emit()

    def _emit(self) -> None:
        if self.total:
            pct = 100 * self.done // max(self.total, 1)
            self._log.info("%s: %d/%d (%d%%)", self.what, self.done, self.total, pct)
        else:
            self._log.info("%s: %d", self.what, self.done)

    def finish(self) -> float:
        elapsed = time.monotonic() - self._start
        self._log.info("%s: done, %d in %.1fs", self.what, self.done, elapsed)
        return elapsed

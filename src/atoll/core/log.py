"""Logging.

Messages go to stderr; ``--json`` output of commands goes to stdout alone, so
automation can parse it. Progress of long steps is :mod:`atoll.core.progress`.
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

from atoll.core.text import terminal_safe

__all__ = ["setup_logging"]


class _SafeFormatter(logging.Formatter):
    """Log lines carry names, URLs and reasons from files: no escape sequence in them
    reaches the terminal or the journal (:func:`atoll.core.text.terminal_safe`)."""

    def format(self, record: logging.LogRecord) -> str:
        return terminal_safe(super().format(record))


class _Stderr(logging.StreamHandler[TextIO]):
    """Writes to ``sys.stderr`` as it is at each record: while progress rows are
    drawn, rich puts a proxy there that prints each line above the rows."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def setup_logging(debug: bool = False, quiet: bool = False) -> None:
    level = logging.DEBUG if debug else (logging.WARNING if quiet else logging.INFO)
    handler = _Stderr(sys.stderr)
    handler.setFormatter(_SafeFormatter("%(message)s" if not debug else
                                        "%(name)s: %(message)s"))
    root = logging.getLogger("atoll")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False

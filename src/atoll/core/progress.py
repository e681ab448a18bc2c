"""Progress of long steps, drawn on the operator's terminal.

One mechanism for every long step (commit hashing, fsck, publish, deltas,
downloads, compose)::

    with progress("fsck", total=len(objs), unit="objects") as step:
        for obj in objs:
            ...
            step.advance()

    with progress("compose stable: mmdebstrap"):   # no total: a step of unknown length
        run([...])

It is off until the ``atoll`` command's ``main()`` calls :func:`enable`, which it
does unless ``-q`` or ``--json`` was given; :func:`enable` itself refuses when
stderr is not a terminal (a pipe, a file, the journal) or ``TERM=dumb``. atolld
calls :func:`enable_log` instead: its journal gets a line at each tenth of a
step (``verify 3f2a9c0d1e4b: 2,000/5,000 files (40%)``) and one when the step
ends (``verify 3f2a9c0d1e4b  5,000 files  4.8s``), at INFO on the
``atoll.progress`` logger. Library code never decides: tests and anything else
that imports the library stay silent. Off, :func:`progress` returns one shared
step whose methods do nothing (no output, no thread, rich not even imported).

On, rich draws one row per open step on stderr (a step opened while another is
open is indented under it)::

    commit rootfs  ━━━━━━━━╸━━━━━━  12,034/20,000 files  4,210 files/s  eta 0:02

columns: description, bar (a pulse for a step of unknown length), done/total in
its unit (bytes humanised: ``0.5/1.2 GB``), rate, and the time left (elapsed for
a step of unknown length). A finished step leaves one line, in place of its row::

      pack 3f2a9c0d1e4b  1.2 GB  2m31s          <- when the pack was written
      delta from 9b8c7d6e5f4a: patches  2,310 files  48.0s
      delta from 9b8c7d6e5f4a: compress  310.2 MB  40.1s
    publish stable  3m40s                       <- the outer step, last

one ended by an exception says so (``interrupted``, ``failed``; a ``track()``
loop left early: ``stopped``). Object ids in descriptions are cut to 12
characters. Log lines written meanwhile print above the rows:
rich replaces ``sys.stderr`` while it draws, and atoll's log handler writes to
``sys.stderr`` as it is at each record (``atoll.core.log``); so progress stays on
under ``--debug`` too.

:meth:`Step.advance` is cheap and thread-safe (a lock and an addition; a pool's
workers may call it per object); the rows read the counts at each refresh, five
times a second.

Terminal state: rows are redrawn in place and the cursor is never hidden, so
whatever ends the process leaves a usable terminal. A step ended by an exception
(Ctrl-C too) prints its line and the display stops cleanly; a process killed by
SIGKILL (or by a SIGTERM, which the ``atoll`` command does not catch) leaves the
last drawn rows on the screen, nothing else can be done then. A narrow or short
terminal crops the rows (rich fits them to its size at each refresh).
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sized
from types import TracebackType
from typing import TYPE_CHECKING, Any, TextIO, TypeVar

from atoll.core.text import printable

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Task

__all__ = ["Step", "disable", "enable", "enable_log", "enabled", "format_amount",
           "format_duration", "format_rate", "progress", "track"]

T = TypeVar("T")

REFRESH_PER_SECOND = 5
_LONG_ID = re.compile(r"\b([0-9a-f]{12})[0-9a-f]{28,}\b")  # object ids: 12 characters do
_UNITS = ("B", "kB", "MB", "GB", "TB", "PB")


# -- formatting (pure) -----------------------------------------------------

def _bytes(n: float, scale: float, suffix: str) -> str:
    return f"{n:,.0f}" if suffix == "B" else f"{n / scale:,.1f}"


def _scale(n: float) -> tuple[float, str]:
    scale = 1.0
    for suffix in _UNITS:
        if abs(n) < scale * 1000 or suffix == _UNITS[-1]:
            return scale, suffix
        scale *= 1000
    raise AssertionError  # pragma: no cover


def format_amount(done: int, total: int | None, unit: str) -> str:
    """``done`` (of ``total``) in ``unit``: bytes humanised (SI: 1 kB = 1000 B).

    >>> format_amount(512_000_000, 1_200_000_000, "bytes")
    '0.5/1.2 GB'
    >>> format_amount(12034, 20000, "files")
    '12,034/20,000 files'
    """
    if unit == "bytes":
        scale, suffix = _scale(total if total is not None else done)
        head = "" if total is None else _bytes(done, scale, suffix) + "/"
        return f"{head}{_bytes(total if total is not None else done, scale, suffix)} {suffix}"
    amount = f"{done:,}" if total is None else f"{done:,}/{total:,}"
    if not unit:
        return "" if total is None else amount
    if total is None and done == 1 and unit.endswith("s"):
        unit = unit[:-1]  # 1 ref, 1 chunk
    return f"{amount} {unit}"


def format_rate(per_second: float | None, unit: str) -> str:
    """A rate (``12.5 MB/s``, ``4,210 files/s``); empty while unknown or for no unit."""
    if per_second is None or not unit:
        return ""
    if unit == "bytes":
        scale, suffix = _scale(per_second)
        return f"{_bytes(per_second, scale, suffix)} {suffix}/s"
    return f"{per_second:,.1f} {unit}/s" if per_second < 10 else f"{per_second:,.0f} {unit}/s"


def format_duration(seconds: float) -> str:
    """A duration as people read it: ``0.4s``, ``42.0s``, ``2m31s``, ``1h02m``."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    s = int(seconds)
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "-:--"
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


# -- steps -----------------------------------------------------------------

class Step:
    """A long step. This base class is the silent step that :func:`progress` gives
    while progress is off: every method does nothing."""

    __slots__ = ()

    def __enter__(self) -> Step:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        return None

    def advance(self, n: int = 1) -> None:
        """Count ``n`` more units done. Thread-safe."""

    def track(self, items: Iterable[T], weight: Callable[[T], int] | None = None
              ) -> Iterator[T]:
        """``items``, advancing as each is done with: by one, or by ``weight(item)``
        (``step.track(http_chunks, len)`` counts bytes)."""
        return iter(items)


_SILENT = Step()


class _LiveStep(Step):
    __slots__ = ("_lock", "depth", "description", "done", "start", "task", "total", "unit")

    def __init__(self, description: str, total: int | None, unit: str, done: int):
        self._lock = threading.Lock()
        self.description = description
        self.total = total
        self.unit = unit
        self.done = done
        self.depth = 0
        self.task: Any = None
        self.start = 0.0

    def advance(self, n: int = 1) -> None:
        with self._lock:
            self.done += n

    def track(self, items: Iterable[T], weight: Callable[[T], int] | None = None
              ) -> Iterator[T]:
        for item in items:
            yield item
            self.advance(1 if weight is None else weight(item))

    def __enter__(self) -> Step:
        display = _display
        if display is not None:
            display.open(self)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.task is None or _display is None:
            return
        _display.close(self, self.final_line(time.monotonic() - self.start,
                                             _outcome(self, exc_type)))

    def final_line(self, seconds: float, outcome: str = "") -> str:
        """The line a finished step leaves: ``fsck  20,000 objects  4.8s``."""
        if outcome and self.total is not None and self.done < self.total:
            amount = format_amount(self.done, self.total, self.unit)
        else:
            amount = format_amount(self.done, None, self.unit)
        parts = ["  " * self.depth + self.description, amount, format_duration(seconds), outcome]
        return "  ".join(p for p in parts if p)


def _outcome(step: _LiveStep, exc_type: type[BaseException] | None) -> str:
    """How a step ended, for its last line: "" (done), stopped, interrupted, failed."""
    if exc_type is None:
        return ""
    if issubclass(exc_type, GeneratorExit):  # track()'s loop was left early
        return "stopped" if step.total is not None and step.done < step.total else ""
    return "interrupted" if issubclass(exc_type, KeyboardInterrupt) else "failed"


class _LogStep(_LiveStep):
    """A step in a log (atolld's journal): a line at each tenth done, one at the end."""

    __slots__ = ("_next",)

    def __init__(self, description: str, total: int | None, unit: str, done: int):
        super().__init__(description, total, unit, done)
        self._next = 1 if not total else done * 10 // total + 1  # the next tenth to log

    def advance(self, n: int = 1) -> None:
        with self._lock:
            self.done += n
            total = self.total
            if not total or self.done * 10 < self._next * total:
                return
            tenth = min(10, self.done * 10 // total)
            self._next, done = tenth + 1, self.done
        if tenth < 10:  # the end has its own line
            _LOG.info("%s: %s (%d%%)", self.description,
                      format_amount(done, total, self.unit), tenth * 10)

    def __enter__(self) -> Step:
        self.start = time.monotonic()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        _LOG.info("%s", self.final_line(time.monotonic() - self.start, _outcome(self, exc_type)))


def progress(description: str, total: int | None = None, *, unit: str = "",
             done: int = 0) -> Step:
    """A step of long work, to use as a context manager (see the module docstring).

    Args:
        description: what is being done, e.g. ``publish stable: pack``.
        total: how many units the step has; None for a step of unknown length (a
            pulsing bar and the time elapsed, and the count so far if ``unit``).
        unit: what is counted: ``bytes`` (humanised), or a plural noun
            (``files``, ``objects``, ``chunks``); empty for none.
        done: units done already (a resumed download): shown, not counted in the rate.

    Returns:
        A :class:`Step`; silent (and shared) while progress is off, and for a step
        with nothing to do (``total`` 0).
    """
    if total == 0:  # nothing to do: nothing to show
        return _SILENT
    if _display is None:
        if not _logging:
            return _SILENT
        return _LogStep(_LONG_ID.sub(r"\1", printable(description)), total, unit, done)
    return _LiveStep(_LONG_ID.sub(r"\1", printable(description)), total, unit, done)


def track(items: Iterable[T], description: str, *, unit: str = "", total: int | None = None,
          weight: Callable[[T], int] | None = None) -> Iterator[T]:
    """``items``, counted in a step of their own: ``for ref in track(refs, "gc: mark",
    unit="refs"):``. The step ends when the iteration does (a loop left early: ``stopped``).

    Args:
        total: default: ``len(items)``, or the sum of the weights, when ``items`` has a length.
        weight: how much each item counts (default 1), e.g. the bytes it stands for.
    """
    if total is None and isinstance(items, Sized):
        total = len(items) if weight is None else sum(weight(i) for i in items)
    with progress(description, total, unit=unit) as step:
        yield from step.track(items, weight)


# -- the display (rich, loaded only when enabled) --------------------------

_display: _Display | None = None
_logging = False  # enable_log(): steps go to the log instead
_switch = threading.Lock()
_LOG = logging.getLogger("atoll.progress")


def enabled() -> bool:
    """Whether steps are drawn."""
    return _display is not None


def enable_log() -> None:
    """Report steps in the log from now on, for a daemon (atolld): at INFO on
    ``atoll.progress``, a line at each tenth of a step with a total and one when
    any step ends. Drawing (:func:`enable`) takes precedence; :func:`disable`
    stops this too."""
    global _logging
    _logging = True


def enable(*, console: Console | None = None, stream: TextIO | None = None) -> bool:
    """Draw progress from now on, if the terminal allows; only ``atoll``'s ``main()``
    calls this (and tests, with a ``console`` of their own).

    Args:
        console: a rich console to draw on (tests); else one on ``stream``.
        stream: default ``sys.stderr``; nothing is drawn unless it is a terminal
            and ``TERM`` is not ``dumb``.

    Returns:
        Whether progress is now on.
    """
    global _display
    with _switch:
        if _display is not None:
            return True
        if console is None:
            stream = stream if stream is not None else sys.stderr
            if not _isatty(stream) or os.environ.get("TERM") in ("dumb", "unknown"):
                return False
            try:
                from rich.console import Console
            except ImportError:  # progress is a nicety: a host without rich still works
                return False
            console = Console(file=stream, highlight=False, emoji=False, soft_wrap=False)
        _display = _Display(console)
        return True


def disable() -> None:
    """Stop drawing (rows of steps still open are dropped); steps become silent."""
    global _display, _logging
    with _switch:
        display, _display, _logging = _display, None, False
    if display is not None:
        display.stop()


class _Display:
    """rich's Progress over the open steps; started with the first, stopped with the last."""

    def __init__(self, console: Console):
        from rich.progress import BarColumn, Progress, ProgressColumn, TextColumn
        from rich.table import Column
        from rich.text import Text

        class Fn(ProgressColumn):
            def __init__(self, fn: Callable[[Task], Text]):
                super().__init__(Column(no_wrap=True, overflow="ellipsis"))
                self.fn = fn

            def render(self, task: Task) -> Text:
                return self.fn(task)

        class Synced(Progress):
            def get_renderables(self) -> Iterable[Any]:
                for task in self.tasks:  # the counts the steps' advance() kept
                    step = task.fields.get("step")
                    if isinstance(step, _LiveStep) and step.done != task.completed:
                        self.update(task.id, completed=step.done)
                yield from super().get_renderables()

        def amount(task: Task) -> Text:
            return Text(format_amount(int(task.completed), None if task.total is None
                                      else int(task.total), task.fields.get("unit", "")))

        def rate(task: Task) -> Text:
            return Text(format_rate(task.speed, task.fields.get("unit", "")))

        def clock(task: Task) -> Text:
            if task.total is None or task.finished:
                return Text(_clock(task.elapsed), style="progress.elapsed")
            return Text("eta " + _clock(task.time_remaining), style="progress.remaining")

        self.lock = threading.RLock()
        self.steps: list[_LiveStep] = []
        self.console = console
        self.progress = Synced(
            TextColumn("{task.description}", markup=False,
                       table_column=Column(no_wrap=True, overflow="ellipsis")),
            BarColumn(bar_width=24),
            Fn(amount), Fn(rate), Fn(clock),
            console=console, refresh_per_second=REFRESH_PER_SECOND, transient=False,
            redirect_stdout=_isatty(sys.stdout),  # a pipe keeps its own data
            redirect_stderr=True)

    def open(self, step: _LiveStep) -> None:
        with self.lock:
            step.depth = len(self.steps)
            step.start = time.monotonic()
            if not self.steps:
                self.progress.start()
                self.console.show_cursor(True)  # a killed process leaves a usable terminal
            self.steps.append(step)
            step.task = self.progress.add_task(
                "  " * step.depth + step.description, total=step.total,
                completed=step.done, unit=step.unit, step=step)
            self.progress.refresh()  # shown at once, not at the next refresh

    def close(self, step: _LiveStep, line: str) -> None:
        from rich.text import Text

        with self.lock:
            if step not in self.steps:
                return
            self.steps.remove(step)
            self.progress.remove_task(step.task)
            if self.steps:
                self.progress.refresh()  # the line goes above the rows still open
            else:
                self.progress.stop()
            self.console.print(Text(line), no_wrap=True, overflow="ellipsis", crop=True)

    def stop(self) -> None:
        with self.lock:
            for step in self.steps:
                self.progress.remove_task(step.task)
            self.steps.clear()
            self.progress.stop()


def _isatty(stream: TextIO | None) -> bool:
    try:  # a closed stream raises ValueError; a stand-in may lack isatty
        return stream is not None and stream.isatty()
    except (AttributeError, ValueError):
        return False


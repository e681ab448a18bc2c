"""Run a server in the foreground until SIGTERM or SIGINT (the CLI's `serve` commands)."""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Protocol

__all__ = ["serve_until_signalled"]


class _Server(Protocol):
    def serve_forever(self) -> None: ...

    def shutdown(self) -> None: ...


def serve_until_signalled(server: _Server) -> None:
    """``server.serve_forever()`` until SIGTERM or SIGINT; the first signal starts
    ``server.shutdown()`` (from another thread: it waits for the loop), later ones are
    ignored. The previous signal handlers are restored afterwards."""
    stop = threading.Event()

    def _term(signum: int, frame: object) -> None:
        if not stop.is_set():
            stop.set()
            threading.Thread(target=server.shutdown, daemon=True).start()

    old = {s: signal.signal(s, _term) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        with contextlib.suppress(KeyboardInterrupt):
            server.serve_forever()
    finally:
        for s, h in old.items():
            signal.signal(s, h)

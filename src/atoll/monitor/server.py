"""The classic Checkmk pull agent over TCP (port 6556), with an only-from allowlist.

A client connects, receives the whole agent output, and the connection is
closed: no request is read. Connections from addresses outside only-from are
closed at once without data and logged. At most ``max_clients`` connections
are served at a time (others are closed and logged as busy); the output is
computed at most once per ``cache_seconds`` and shared by every client that
asks meanwhile (single flight), so a burst of connections costs one agent run
and memory stays bounded by one output plus ``max_clients`` send buffers.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from atoll.core.cache import SharedValue
from atoll.core.errors import InputError
from atoll.monitor.access import OnlyFrom

__all__ = ["AgentServer", "OutputCache", "ServerStats"]

log = logging.getLogger("atoll.monitor")


class OutputCache(SharedValue[bytes]):
    """Share one computed output (UTF-8) between concurrent callers for ``max_age``
    seconds."""

    def __init__(self, produce: Callable[[], str], max_age: float = 1.0):
        super().__init__(lambda: produce().encode("utf-8"), max_age)


class ServerStats:
    """Counters of the TCP agent (read by tests and the debug log)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.served = 0
        self.refused = 0
        self.busy = 0
        self.failed = 0

    def bump(self, name: str) -> None:
        with self.lock:
            setattr(self, name, getattr(self, name) + 1)


class AgentServer:
    """Serve the agent output on a TCP port.

    Args:
        produce: returns the agent output (e.g. ``Agent.output``).
        listen: the address to bind (``0.0.0.0``, ``::`` for dual stack, ``127.0.0.1``).
        port: the TCP port (0: any free port, see :attr:`port`).
        only_from: the allowlist; empty allows everyone.
        max_clients: connections served at the same time.
        cache_seconds: how long one computed output is reused.
        send_timeout: seconds a client has to read the output.

    Raises:
        InputError: the address cannot be bound.
    """

    def __init__(
        self,
        produce: Callable[[], str],
        *,
        listen: str = "127.0.0.1",
        port: int = 6556,
        only_from: OnlyFrom | None = None,
        max_clients: int = 8,
        cache_seconds: float = 1.0,
        send_timeout: float = 10.0,
    ):
        self.only_from = only_from or OnlyFrom()
        self.cache = OutputCache(produce, cache_seconds)
        self.stats = ServerStats()
        self.send_timeout = send_timeout
        self._slots = threading.BoundedSemaphore(max_clients)
        self._pool = ThreadPoolExecutor(max_workers=max_clients, thread_name_prefix="atoll-cmk")
        self._stop = threading.Event()
        family = socket.AF_INET6 if ":" in listen else socket.AF_INET
        self._sock = socket.socket(family, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            self._sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        try:
            self._sock.bind((listen, port))
        except OSError as exc:
            self._sock.close()
            raise InputError(f"cannot listen on {listen}:{port}", details=str(exc),
                             resolution="choose a free port or another address") from exc
        self._sock.listen(128)
        self._sock.settimeout(0.2)
        self.port: int = self._sock.getsockname()[1]

    def serve_forever(self) -> None:
        """Accept connections until :meth:`shutdown`."""
        log.info("checkmk agent listening on port %d (only from: %s)", self.port,
                 self.only_from.render() or "anywhere")
        try:
            while not self._stop.is_set():
                try:
                    conn, addr = self._sock.accept()
                except TimeoutError:
                    continue
                except OSError:
                    if self._stop.is_set():
                        break
                    raise
                self._dispatch(conn, str(addr[0]))
        finally:
            self._sock.close()
            self._pool.shutdown(wait=True)

    def _dispatch(self, conn: socket.socket, peer: str) -> None:
        if not self.only_from.allows(peer):
            self.stats.bump("refused")
            log.warning("refused connection from %s: not in only-from", peer)
            _close(conn)
            return
        if not self._slots.acquire(blocking=False):
            self.stats.bump("busy")
            log.warning("refused connection from %s: %s", peer, "too many clients")
            _close(conn)
            return
        self._pool.submit(self._handle, conn, peer)

    def _handle(self, conn: socket.socket, peer: str) -> None:
        try:
            conn.settimeout(self.send_timeout)
            conn.sendall(self.cache.get())
            self.stats.bump("served")
        except Exception as exc:
            self.stats.bump("failed")
            log.warning("serving %s failed: %s", peer, exc)
        finally:
            _close(conn)
            self._slots.release()

    def shutdown(self) -> None:
        """Stop accepting; connections in progress finish."""
        self._stop.set()


def _close(conn: socket.socket) -> None:
    with contextlib.suppress(OSError):
        conn.shutdown(socket.SHUT_RDWR)
    conn.close()

"""The FleetLock HTTP server: stdlib ``ThreadingHTTPServer`` around ``FleetLockService``.

``FleetLockServer`` binds at construction (port 0 picks a free port, see
``url``), serves in a background thread with ``start()`` or in the caller's
thread with ``serve_forever()``, and stops with ``stop()``. HTTP/1.1 with
keep-alive; a request body is read only up to 64 KiB; idle connections time out.
"""

from __future__ import annotations

import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from atoll.core.errors import InputError
from atoll.fleet.protocol import MAX_BODY, ProtocolError
from atoll.fleet.service import FleetLockService

__all__ = ["FleetLockServer", "parse_listen"]

log = logging.getLogger("atoll.fleet")
IDLE_TIMEOUT = 30.0


def parse_listen(listen: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6) into a tuple.

    Raises:
        InputError: not HOST:PORT with a port from 0 to 65535.
    """
    host, sep, port = listen.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise InputError(f"--listen {listen!r} is not HOST:PORT",
                         resolution="e.g. --listen 127.0.0.1:8080")
    return host, int(port)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "atoll-fleetlock"
    timeout = IDLE_TIMEOUT
    server: _HTTPServer

    def _answer(self) -> None:
        length_text = self.headers.get("Content-Length", "0") or "0"
        try:
            length = int(length_text)
        except ValueError:
            length = -1
        if length < 0 or length > 4 * MAX_BODY:
            self.close_connection = True
            error = ProtocolError(413, "request_too_large", f"body over {MAX_BODY} bytes")
            status, body = error.status, error.body()
        else:
            body_in = self.rfile.read(length) if length else b""
            status, body = self.server.service.handle(
                self.command, self.path, dict(self.headers.items()), body_in)
        self.send_response(status)
        if body:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body:
            self.wfile.write(body)

    do_POST = _answer
    do_GET = _answer
    do_PUT = _answer
    do_DELETE = _answer

    def log_message(self, format: str, *args: object) -> None:
        log.debug("%s %s", self.address_string(), format % args)


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], service: FleetLockService) -> None:
        self.service = service
        super().__init__(address, _Handler)


class FleetLockServer:
    """A FleetLock server bound to ``host:port``."""

    def __init__(self, service: FleetLockService, host: str = "127.0.0.1", port: int = 0) -> None:
        try:
            self._httpd = _HTTPServer((host, port), service)
        except OSError as exc:
            raise InputError(f"cannot listen on {host}:{port}", details=str(exc),
                             resolution="choose a free port and a local address") from exc
        self._thread: threading.Thread | None = None

    @property
    def service(self) -> FleetLockService:
        """The service this server answers with."""
        return self._httpd.service

    @property
    def url(self) -> str:
        """The base URL clients use."""
        host, port = self._httpd.server_address[:2]
        shown = f"[{host!s}]" if ":" in str(host) else str(host)
        return f"http://{shown}:{port}"

    def serve_forever(self) -> None:
        """Serve in this thread until ``stop()`` (from another thread) or an interrupt."""
        log.info("FleetLock server on %s", self.url)
        self._httpd.serve_forever(poll_interval=0.2)

    def shutdown(self) -> None:
        """Make ``serve_forever`` return; call it from another thread than the serving one."""
        self._httpd.shutdown()

    def start(self) -> FleetLockServer:
        """Serve in a background thread; returns self."""
        self._thread = threading.Thread(target=self._httpd.serve_forever,
                                        kwargs={"poll_interval": 0.1},
                                        name="fleetlock-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(timeout=10)
            self._thread = None
        self._httpd.server_close()

    def __enter__(self) -> FleetLockServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

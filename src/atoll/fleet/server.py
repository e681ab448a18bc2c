"""The FleetLock HTTP server: a Starlette application served by uvicorn (h11, HTTP/1.1).

``FleetLockServer`` binds at construction (port 0 picks a free port, see
``url``), serves in a background thread with ``start()`` or in the caller's
thread with ``serve_forever()``, and stops with ``stop()`` (or ``shutdown()``
from another thread). The caller keeps its signal handlers: uvicorn installs none.

What the HTTP layer guarantees (h11 parses every request; the application
only sees whole, well-framed requests):

* keep-alive with ``Content-Length`` and ``Transfer-Encoding: chunked``
  bodies alike; a body is always consumed (or the connection closed), so it can
  never be read as the next request;
* a body is read as a stream and never held beyond ``MAX_BODY`` (64 KiB): a
  larger one, declared or chunked, is 413 ``request_too_large`` and the
  connection is closed (lingering: the client reads the answer, not a reset);
* idle timeouts: a connection without a request for ``idle_timeout`` seconds is
  closed; a body that does not arrive within it is 408 ``request_timeout``;
* every error is JSON ``{"kind", "value"}``, including malformed HTTP (400
  ``bad_request``), unknown paths (404), wrong methods (405, ``Allow``) and bugs
  (500 ``internal_error``).

Backend calls block (etcd over HTTP, sqlite): they run in a thread pool,
so the event loop never waits on them. uvicorn's log records go to the
``atoll.fleet.http`` logger, its routine chatter as DEBUG.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import socket
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Self

import anyio
import h11
import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from atoll.core.errors import InputError
from atoll.fleet.protocol import MAX_BODY, ProtocolError, internal_error, too_large
from atoll.fleet.service import FleetLockService

__all__ = ["IDLE_TIMEOUT", "AsgiServer", "FleetLockServer", "build_app", "parse_listen",
           "read_body"]

log = logging.getLogger("atoll.fleet")
IDLE_TIMEOUT = 30.0
GRACE_SECONDS = 5  # on stop, requests in flight get this long to finish
LINGER_SECONDS = 2.0  # after refusing a request unread: how long to drop what still comes
# twice the largest body an atoll server accepts (a 2 MiB check-in): a client sending
# one that is refused unread can finish writing it and read the 413
LINGER_BYTES = 4 << 20
JSON = "application/json"


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


def _error(exc: ProtocolError) -> Response:
    return Response(exc.body(), exc.status, headers=exc.headers, media_type=JSON)


async def read_body(request: Request, timeout: float) -> bytes:
    """The request body, read as a stream and never kept beyond ``MAX_BODY`` bytes.

    Raises:
        ProtocolError: 413 (declared or found larger), 408 (not all there in ``timeout``).
    """
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY:
        raise too_large()  # h11 checked the header; nothing of the body is read
    body = bytearray()
    try:
        with anyio.fail_after(timeout):
            async for chunk in request.stream():
                body += chunk
                if len(body) > MAX_BODY:
                    raise too_large()
    except TimeoutError:
        raise ProtocolError(408, "request_timeout",
                            f"request body not received within {timeout:g} s",
                            {"Connection": "close"}) from None
    return bytes(body)


class _Endpoint:
    """Every path and every method (an ASGI app, so Starlette's router passes all methods).

    The service routes (404, 405) after the body was read, so that every
    request is consumed whole before it is answered.
    """

    def __init__(self, service: FleetLockService, idle_timeout: float) -> None:
        self.service = service
        self.idle_timeout = idle_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = await self.respond(Request(scope, receive))
        await response(scope, receive, send)

    async def respond(self, request: Request) -> Response:
        try:
            body = await read_body(request, self.idle_timeout)
            target = self.service.route(request.method, request.scope["path"])
            headers: dict[str, str] = {}
            for name, value in request.headers.items():  # the first of repeated headers
                headers.setdefault(name, value)
            status, out = await run_in_threadpool(self.service.answer, target, headers, body)
        except ProtocolError as exc:
            return _error(exc)
        except ClientDisconnect:  # nobody is left to read an answer
            return _error(ProtocolError(400, "bad_request", "client disconnected"))
        except Exception:
            log.exception("FleetLock %s %r: internal error", request.method,
                          request.scope.get("path"))
            return _error(internal_error())
        return Response(out, status, media_type=JSON if out else None)


def build_app(service: FleetLockService, *, idle_timeout: float = IDLE_TIMEOUT) -> Starlette:
    """The ASGI application: every request goes to ``service`` (route, then answer)."""

    async def http_error(request: Request, exc: Exception) -> Response:
        # only what Starlette's router answers itself: a request target that is not a path
        code = exc.status_code if isinstance(exc, HTTPException) else 500
        if code == 404:
            return _error(ProtocolError(404, "not_found",
                                        f"no such endpoint: {request.scope.get('path')}"))
        return _error(internal_error() if code >= 500 else
                      ProtocolError(code, "bad_request", str(getattr(exc, "detail", exc))))

    return Starlette(routes=[Route("/{path:path}", _Endpoint(service, idle_timeout))],
                     exception_handlers={HTTPException: http_error, Exception: http_error})


class _LingeringTransport(asyncio.Transport):
    """A connection's transport whose ``close`` does not reset an unread request.

    Closing a socket with unread bytes makes the kernel send a reset, and the
    client may then lose the answer (a 413 refusing the body it is still
    sending). When the request is not read to its end, ``close`` sends the answer
    and a FIN, then reads and drops what the client still sends (at most
    ``LINGER_BYTES``, ``LINGER_SECONDS``) before it closes: a "lingering close".
    """

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop,
                 unread: Callable[[], bool]) -> None:
        super().__init__()
        self._transport = transport
        self._loop = loop
        self._unread = unread
        self.lingering = False
        self._dropped = 0

    def close(self) -> None:
        if self.lingering or self._transport.is_closing():
            return
        if not self._unread() or not self._transport.can_write_eof():
            self._transport.close()
            return
        self.lingering = True
        self._transport.write_eof()  # after what is buffered: the answer
        self._transport.resume_reading()  # uvicorn may have paused it (its buffer was full)
        self._loop.call_later(LINGER_SECONDS, self._transport.close)

    def drop(self, data: bytes) -> None:
        """Data that arrived while lingering: counted, never kept."""
        self._dropped += len(data)
        if self._dropped > LINGER_BYTES:
            self._transport.close()

    def is_closing(self) -> bool:
        return self.lingering or self._transport.is_closing()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._transport.write(data)

    def writelines(self, list_of_data: Iterable[bytes | bytearray | memoryview]) -> None:
        self._transport.writelines(list_of_data)

    def write_eof(self) -> None:
        self._transport.write_eof()

    def can_write_eof(self) -> bool:
        return self._transport.can_write_eof()

    def abort(self) -> None:
        self._transport.abort()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)

    def pause_reading(self) -> None:
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._transport.resume_reading()

    def is_reading(self) -> bool:
        return self._transport.is_reading()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._transport.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._transport.get_protocol()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size()

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._transport.get_write_buffer_limits()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._transport.set_write_buffer_limits(high, low)


class _Protocol(H11Protocol):
    """uvicorn's h11 protocol: an idle timeout from the first byte, JSON 400s, lingering close."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._lingering = _LingeringTransport(transport, self.loop, self._request_unread)
        super().connection_made(self._lingering)
        self._arm_idle_timer()

    def _request_unread(self) -> bool:
        # mid-body (a refused body), a broken request, or bytes h11 has not parsed yet
        return (self.conn.their_state in (h11.SEND_BODY, h11.ERROR)
                or bool(self.conn.trailing_data[0]))

    def data_received(self, data: bytes) -> None:
        if self._lingering.lingering:
            self._lingering.drop(data)
            return
        super().data_received(data)
        waiting_for_head = self.cycle is None or self.cycle.response_complete
        if (waiting_for_head and self.timeout_keep_alive_task is None
                and not self.transport.is_closing()):
            self._arm_idle_timer()  # a request head arriving slowly: still bounded

    def _arm_idle_timer(self) -> None:
        self.timeout_keep_alive_task = self.loop.call_later(
            self.timeout_keep_alive, self.timeout_keep_alive_handler)

    def timeout_keep_alive_handler(self) -> None:
        try:
            super().timeout_keep_alive_handler()
        except h11.LocalProtocolError:
            self.transport.close()

    def send_400_response(self, msg: str) -> None:
        body = ProtocolError(400, "bad_request",
                             "malformed HTTP/1.1 request; the connection is closed").body()
        headers = [(b"content-type", JSON.encode()), (b"content-length", b"%d" % len(body)),
                   (b"connection", b"close")]
        with contextlib.suppress(h11.LocalProtocolError):
            self.transport.write(self.conn.send(
                h11.Response(status_code=400, headers=headers, reason=b"Bad Request")))
            self.transport.write(self.conn.send(h11.Data(data=body)))
            self.transport.write(self.conn.send(h11.EndOfMessage()))
        self.transport.close()


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # signals stay with the caller (`atoll fleetlock serve` calls shutdown())


class _ToAtollLog(logging.Handler):
    """uvicorn's records, re-emitted on ``atoll.fleet.http`` (below ERROR as DEBUG)."""

    def emit(self, record: logging.LogRecord) -> None:
        target = logging.getLogger("atoll.fleet.http")
        if record.levelno < logging.ERROR:
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        if target.isEnabledFor(record.levelno):
            record.name = target.name
            target.handle(record)


def _route_uvicorn_logs() -> None:
    logger = logging.getLogger("uvicorn")
    if not any(isinstance(h, _ToAtollLog) for h in logger.handlers):
        logger.addHandler(_ToAtollLog())
        logger.propagate = False


class AsgiServer:
    """An ASGI application served by uvicorn with this module's HTTP rules (h11, idle
    timeouts, JSON 400s, lingering close), bound to ``host:port``. The FleetLock server
    and the control plane (``atoll.control.server``) are two."""

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0, *,
                 idle_timeout: float = IDLE_TIMEOUT, name: str = "atoll-fleetlock") -> None:
        """Bind the socket now (so ``url`` is known); serve with ``start``/``serve_forever``.

        Args:
            idle_timeout: seconds a connection may stay idle, or a body take to arrive.
            name: the ``Server`` header and the serving thread's name.

        Raises:
            InputError: the address cannot be bound (in use, not local...).
        """
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            self._sock = socket.create_server((host, port), family=family, backlog=128)
        except OSError as exc:
            raise InputError(f"cannot listen on {host}:{port}", details=str(exc),
                             resolution="choose a free port and a local address") from exc
        bound_host, bound_port = self._sock.getsockname()[:2]
        shown = f"[{bound_host}]" if ":" in str(bound_host) else str(bound_host)
        self._url = f"http://{shown}:{bound_port}"
        self._name = name
        _route_uvicorn_logs()
        config = uvicorn.Config(
            app, http=_Protocol, ws="none",
            loop="asyncio", lifespan="off", interface="asgi3", log_config=None,
            access_log=False, proxy_headers=False, server_header=False,
            headers=[("server", name)],
            timeout_keep_alive=max(1, math.ceil(idle_timeout)),
            timeout_graceful_shutdown=GRACE_SECONDS)
        self._uvicorn = _Server(config)
        self._thread: threading.Thread | None = None
        self._running = threading.Event()
        self._stopped = threading.Event()

    @property
    def url(self) -> str:
        """The base URL clients use."""
        return self._url

    def _serve(self) -> None:
        self._running.set()
        try:
            self._uvicorn.run(sockets=[self._sock])
        finally:
            self._stopped.set()

    def serve_forever(self) -> None:
        """Serve in this thread until ``shutdown()``/``stop()`` from another thread."""
        log.info("%s on %s", self._name, self.url)
        self._serve()

    def shutdown(self) -> None:
        """Make ``serve_forever`` return (after requests in flight, at most a few seconds).

        Call it from another thread than the serving one; it waits until serving ended.
        """
        self._uvicorn.should_exit = True
        if self._running.is_set():
            self._stopped.wait(GRACE_SECONDS + 5)

    def start(self) -> Self:
        """Serve in a background thread; returns self."""
        self._thread = threading.Thread(target=self._serve, name=self._name, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self.shutdown()
        if self._thread is not None:
            self._thread.join(timeout=GRACE_SECONDS + 5)
            self._thread = None
        self._sock.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class FleetLockServer(AsgiServer):
    """A FleetLock server bound to ``host:port``."""

    def __init__(self, service: FleetLockService, host: str = "127.0.0.1", port: int = 0, *,
                 idle_timeout: float = IDLE_TIMEOUT) -> None:
        """Bind the socket now (so ``url`` is known); serve with ``start``/``serve_forever``.

        Args:
            idle_timeout: seconds a connection may stay idle, or a body take to arrive.

        Raises:
            InputError: the address cannot be bound (in use, not local...).
        """
        super().__init__(build_app(service, idle_timeout=idle_timeout), host, port,
                         idle_timeout=idle_timeout, name="atoll-fleetlock")
        self.service = service

"""The service-discovery HTTP API: Prometheus HTTP SD and the service list (Starlette).

Routes (all ``GET``, all authorized; docs/control-plane.md, "Service discovery"):

=============================  ==============================================================
``/v1/sd/prometheus``          the Prometheus HTTP SD document (``http_sd_configs``): a JSON
                               list of ``{"targets", "labels"}``, one group per host with a
                               metrics endpoint (:func:`atoll.fleet.discovery.sd_document`)
``/v1/services``               every entry, as ``atoll fleet services --json`` prints them
=============================  ==============================================================

Both take ``?customer=NAME`` (repeatable) to list only those customers;
``/v1/services`` also ``?app=NAME``. Source of the SD format:
https://prometheus.io/docs/prometheus/latest/http_sd/ (200 with
``Content-Type: application/json``; ``[]`` when there is nothing; on an error
Prometheus keeps the targets it has, so when etcd cannot be read the answer is
503, never an empty list that would drop every target).

**Authorization** is an ``Authorize`` callable: it gets the request and returns
the customers the caller may see (None: all), or raises
:class:`NotAuthorized`. :func:`bearer_token` is the standalone server's: one
token, read from a file, sent by Prometheus as ``authorization: {type: Bearer,
credentials_file: ...}``; compared in constant time. The control plane mounts
:func:`sd_routes` with its own (operator tokens scoped to customers).

Entries are read from etcd at most once per ``cache_seconds`` (default 5), one
read shared by concurrent requests, so any number of Prometheus servers cost
etcd one range read per interval.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from atoll.core.cache import SharedValue
from atoll.core.errors import AtollError, InputError
from atoll.core.userfile import open_user_file
from atoll.fleet.discovery import APP_RE, Services, check_name, sd_document

if TYPE_CHECKING:
    from atoll.fleet.server import AsgiServer

__all__ = ["Authorize", "NotAuthorized", "ServiceCache", "bearer_token", "build_sd_app",
           "load_token", "sd_routes", "serve_entries"]

log = logging.getLogger("atoll.fleet")
JSON = "application/json"
SD_PATH = "/v1/sd/prometheus"
SERVICES_PATH = "/v1/services"
MIN_TOKEN = 16  # characters: a guessable token is refused at start
MAX_TOKEN_FILE = 4096


class NotAuthorized(Exception):
    """The request may not see what it asked for: 401 (no or wrong credentials) or 403."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


Authorize = Callable[[Request], "frozenset[str] | None"]


def load_token(path: Path) -> str:
    """The bearer token in ``path`` (one line; surrounding whitespace dropped).

    Raises:
        InputError: missing, not a regular file, readable by group or others
            (``chmod 600``), empty, over 4 KiB, or shorter than 16 characters.
    """
    with open_user_file(path, "token file") as fh:
        mode = os.fstat(fh.fileno()).st_mode
        if mode & 0o077:
            raise InputError(f"token file {path}: readable by others (mode {mode & 0o777:04o})",
                             resolution=f"chmod 600 {path}")
        raw = fh.read(MAX_TOKEN_FILE + 1)
    if len(raw) > MAX_TOKEN_FILE:
        raise InputError(f"token file {path}: over {MAX_TOKEN_FILE} bytes; one token a file")
    try:
        token = raw.decode().strip()
    except UnicodeDecodeError:
        raise InputError(f"token file {path}: not UTF-8 text") from None
    if len(token) < MIN_TOKEN or any(c.isspace() or not c.isprintable() for c in token):
        raise InputError(f"token file {path}: the token must be one word of at least "
                         f"{MIN_TOKEN} printable characters",
                         resolution=f"e.g. openssl rand -hex 32 > {path}; chmod 600 {path}")
    return token


def bearer_token(token: str) -> Authorize:
    """An ``Authorize`` that lets in ``Authorization: Bearer <token>`` (any customer)."""
    expected = token.encode()

    def authorize(request: Request) -> frozenset[str] | None:
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            raise NotAuthorized(401, "a bearer token is needed (Authorization: Bearer ...)")
        if not hmac.compare_digest(given.strip().encode(), expected):
            raise NotAuthorized(401, "the bearer token is not valid")
        return None

    return authorize


class ServiceCache(SharedValue[Services]):
    """``read()`` results kept ``max_age`` seconds; one read at a time (single flight).

    A failing read raises to its caller, and is not cached.
    """

    def __init__(self, read: Callable[[], Services], max_age: float = 5.0) -> None:
        super().__init__(read, max_age)


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(body, sort_keys=True, separators=(",", ":")), status,
                    headers=headers, media_type=JSON)


def _error(status: int, kind: str, brief: str, headers: dict[str, str] | None = None
           ) -> Response:
    return _json(status, {"error": kind, "brief": brief}, headers)


def _customers(request: Request, scope: frozenset[str] | None) -> frozenset[str] | None:
    """The customers to list: those asked for (checked against ``scope``), else ``scope``."""
    asked = request.query_params.getlist("customer")
    if not asked:
        return scope
    for name in asked:
        check_name(name, "customer")
        if scope is not None and name not in scope:
            raise NotAuthorized(403, f"customer {name!r} is not yours to see")
    return frozenset(asked)


def sd_routes(services: Callable[[], Services], authorize: Authorize) -> list[Route]:
    """The routes, to serve on their own (:func:`build_sd_app`) or among another app's.

    Args:
        services: the current entries (e.g. ``ServiceCache(...).get``); blocking: it is
            called in a worker thread.
        authorize: who may see which customers (see the module's docstring).
    """

    async def answer(request: Request, render: Callable[[Services], Any]) -> Response:
        try:
            scope = authorize(request)
            customers = _customers(request, scope)
            app = request.query_params.get("app")
            if app is not None and not APP_RE.match(app):
                raise InputError(f"app {app!r} is not an app name")
        except NotAuthorized as exc:
            headers = {"WWW-Authenticate": 'Bearer realm="atoll"'} if exc.status == 401 \
                else None
            return _error(exc.status, "NotAuthorized", exc.message, headers)
        except InputError as exc:
            return _error(400, "InputError", exc.brief)
        try:
            found = await run_in_threadpool(services)
        except AtollError as exc:  # Prometheus keeps its targets on an error: never "[]"
            log.warning("service discovery: cannot read the entries: %s", exc.brief)
            return _error(503, type(exc).__name__, f"cannot read the entries: {exc.brief}",
                          {"Retry-After": "10"})
        return _json(200, render(found.select(customers=customers, app=app)))

    async def prometheus(request: Request) -> Response:
        return await answer(request, sd_document)

    async def listing(request: Request) -> Response:
        return await answer(request, lambda s: s.to_json())

    return [Route(SD_PATH, prometheus, methods=["GET"]),
            Route(SERVICES_PATH, listing, methods=["GET"])]


def build_sd_app(services: Callable[[], Services], authorize: Authorize) -> Starlette:
    """A Starlette application serving :func:`sd_routes`; every error is JSON."""

    async def http_error(request: Request, exc: Exception) -> Response:
        code = exc.status_code if isinstance(exc, HTTPException) else 500
        if code == 404:
            return _error(404, "NotFound", f"no such endpoint: {request.url.path}")
        if code == 405:
            return _error(405, "MethodNotAllowed", f"{request.method} {request.url.path}: "
                          "use GET", {"Allow": "GET"})
        if code >= 500:
            log.error("service discovery: internal error on %s", request.url.path,
                      exc_info=exc)
            return _error(500, "InternalError", "internal error; see the server's log")
        return _error(code, "BadRequest", str(getattr(exc, "detail", exc)))

    return Starlette(routes=sd_routes(services, authorize),
                     exception_handlers={HTTPException: http_error, Exception: http_error})


def serve_entries(read: Callable[[], Services], token: str, host: str, port: int, *,
                  cache_seconds: float = 5.0) -> AsgiServer:
    """``atoll fleet sd serve``: the standalone server (the FleetLock server's HTTP rules,
    :class:`atoll.fleet.server.AsgiServer`), authorized by one bearer token
    (:func:`load_token`), entries from ``read`` at most every ``cache_seconds``.

    Raises:
        InputError: the address cannot be bound.
    """
    from atoll.fleet.server import AsgiServer

    app = build_sd_app(ServiceCache(read, cache_seconds).get, bearer_token(token))
    return AsgiServer(app, host, port, name="atoll-sd")


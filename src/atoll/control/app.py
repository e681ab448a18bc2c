"""The control plane's HTTP API: a FastAPI application (OpenAPI at ``/openapi.json``).

Routes validate and translate; :mod:`atoll.control.service` (hosts) and
:mod:`atoll.control.operations` (operators) decide and write. Every route but
``/v1/health``, ``/v1/enrol`` (an enrolment token) and ``/v1/checkin`` (a host's
signature) needs an operator token, checked here on every request.

HTTP rules (as the FleetLock server's, docs/control-plane.md):

* bodies are JSON (``Content-Type: application/json``, else 415; the web console's
  forms under ``/console`` are form-encoded), read as a stream
  and never held beyond their limit: 2 MiB for a check-in, 64 KiB elsewhere (413);
* every error is JSON ``{"error", "kind", "brief", "details", "resolution"}``
  (:mod:`atoll.control.errors`), a database that cannot be reached included:
  503 ``database_unavailable`` with ``Retry-After``; nothing was written.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Query, Request
from fastapi import Path as FastApiPath
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import atoll
from atoll.control import operations as ops
from atoll.control import rollout_ops, service
from atoll.control.auth import Principal
from atoll.control.console import CONSOLE
from atoll.control.console.web import build_console
from atoll.control.db import Database, unavailable
from atoll.control.errors import ApiError
from atoll.control.limits import Bucket, HostLimits
from atoll.control.protocol import MAX_CHECKIN_BYTES, CheckIn, Directive, Enrolled, EnrolRequest
from atoll.control.releases import ReleaseSource, releases_json, rollout_versions
from atoll.control.retention import DEFAULT_RETENTION

__all__ = ["MAX_BODY", "Settings", "build_app"]

log = logging.getLogger("atoll.control")
MAX_BODY = 64 * 1024
FLEETLOCK = "/fleetlock"  # where a FleetLock application is served, when given
Clock = Callable[[], dt.datetime]
Name = Annotated[str, StringConstraints(pattern=r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$",
                                        max_length=63)]


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


# Check-ins processed at once by one server instance (the rest wait for a turn): the
# database pool's size (atoll.control.db), so that a check-in never waits for a
# connection, and few enough threads that one holding a rollout's lock is not starved.
CHECKIN_CONCURRENCY = 8
MAX_ID = 2**63 - 1  # ids are 64-bit signed integers in both databases
MAX_SPAN_S = 10 * 365 * 86400  # the longest duration a request may name


@dataclass(frozen=True)
class Settings:
    """``directive_ttl``: how long a host holds itself to an answer when it cannot check
    in again; ``lost_after``: a host not seen this long is marked lost;
    ``checkin_limit``, ``event_limit``: the per-host budgets (:mod:`atoll.control.limits`);
    ``event_retention``: events older than this are deleted (None: kept forever;
    :mod:`atoll.control.retention`)."""

    directive_ttl: dt.timedelta = dt.timedelta(days=1)
    lost_after: dt.timedelta = dt.timedelta(hours=1)
    checkin_limit: Bucket = field(default_factory=lambda: Bucket(30, 2.0))
    event_limit: Bucket = field(default_factory=lambda: Bucket(200, 10.0))
    event_retention: dt.timedelta | None = DEFAULT_RETENTION
    releases: ReleaseSource | None = None  # the signed versions (atoll.control.releases)


# -- bodies ------------------------------------------------------------------


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CustomerIn(_In):
    name: Name


class TokenIn(_In):
    name: Name
    role: str = Field(description="viewer, operator or admin")
    customers: list[Name] | None = Field(None, description="null: every customer")
    expires_in_s: int | None = Field(None, ge=60, le=MAX_SPAN_S)


class EnrolTokenIn(_In):
    customer: Name
    host_name: Name | None = Field(None, description="only a host of this name may use it "
                                   "(and it may replace that host's key)")
    labels: dict[str, str] = Field(default_factory=dict, max_length=32)
    expires_in_s: int = Field(7 * 86400, ge=1, le=MAX_SPAN_S,
                              description="default 7 days, at most 30")


class LabelsIn(_In):
    set: dict[str, str] = Field(default_factory=dict, max_length=32)
    remove: list[str] = Field(default_factory=list, max_length=32)


class RequestIn(_In):
    kind: str = Field(description="cancel, pin, ack-rollback or apply")
    args: dict[str, Any] = Field(default_factory=dict, max_length=8)


class PruneIn(_In):
    lost_for_s: int = Field(ge=0, le=MAX_SPAN_S)


RolloutId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]


def _printable(text: str) -> str:
    # a version goes into every directive, and atolld refuses one that is not
    # printable (atoll.agent.control.check_answer): refused here, at the rollout
    if not text.isprintable():
        raise ValueError("a version or channel is printable text (no control characters)")
    return text


Version = Annotated[str, StringConstraints(min_length=1, max_length=200),
                    AfterValidator(_printable)]


class SignedVersionIn(_In):
    version: Version
    commit: str = Field(pattern=r"^[0-9a-f]{64}$")


class RolloutIn(_In):
    id: RolloutId
    customer: Name | None = Field(None, description="null: the group spans every customer "
                                  "(an every-customer token only)")
    labels: dict[str, str] = Field(default_factory=dict, max_length=32,
                                   description="the group: hosts with all these labels")
    channel: Version = Field(description="the channel the versions are signed on")
    versions: list[SignedVersionIn] = Field(default_factory=list, max_length=1000,
                                            description=(
        "the signed versions the rollout chooses among, oldest first (empty: every signed "
        "version of the channel, when the server reads the update repository)"))
    to_version: Version
    from_version: Version | None = None
    floors: list[Version] = Field(default_factory=list, max_length=100)
    dead_ends: list[Version] = Field(default_factory=list, max_length=100)
    spec: dict[str, Any] = Field(default_factory=dict, description="RolloutSpec "
                                 "(docs/control-plane.md); omitted fields take defaults")


class ReasonIn(_In):
    reason: str = Field("", max_length=1000)


class ResumeIn(_In):
    excuse: bool = Field(True, description="failures so far no longer count against the "
                         "budget (those hosts stay where they are)")
    reason: str = Field("", max_length=1000, description="why (recorded in its event)")


# -- the guard: body limits and content types -------------------------------


class _TooLarge(Exception):
    pass


def _error_response(exc: ApiError) -> JSONResponse:
    return JSONResponse(exc.body(), exc.status, headers=exc.headers)


class _Guard:
    """Refuse bodies over their limit (413) and bodies that are not JSON (415) before
    any route reads them. Requests under ``/fleetlock`` go to ``fleetlock`` (when
    given), which keeps its own rules, with the prefix moved from ``path`` to
    ``root_path`` (FleetLock routes on the path it is given)."""

    def __init__(self, app: ASGIApp, fleetlock: ASGIApp | None = None) -> None:
        self.app, self.fleetlock = app, fleetlock

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http" and self.fleetlock is not None and (
                path == FLEETLOCK or path.startswith(FLEETLOCK + "/")):
            rest = path[len(FLEETLOCK):] or "/"
            raw = scope.get("raw_path") or b""
            raw = raw[len(FLEETLOCK):] if raw.startswith(FLEETLOCK.encode()) else b""
            inner = dict(scope, path=rest, raw_path=raw or rest.encode(),
                         root_path=scope.get("root_path", "") + FLEETLOCK)
            await self.fleetlock(inner, receive, send)
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = MAX_CHECKIN_BYTES if path == "/v1/checkin" else MAX_BODY
        headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                   for k, v in scope.get("headers", [])}
        declared = headers.get("content-length", "")
        has_body = (declared not in ("", "0")) or "transfer-encoding" in headers
        too_large = ApiError(413, "request_too_large",
                             f"request body over {limit // 1024} KiB",
                             headers={"Connection": "close"})
        if declared.isdigit() and int(declared) > limit:
            await _error_response(too_large)(scope, receive, send)
            return
        ctype = headers.get("content-type", "").split(";")[0].strip().lower()
        form = path.startswith(CONSOLE + "/") and ctype == "application/x-www-form-urlencoded"
        if has_body and ctype != "application/json" and not form:
            await _error_response(ApiError(415, "unsupported_media_type",
                                           "the body must be JSON (Content-Type: "
                                           "application/json)"))(scope, receive, send)
            return
        seen = 0
        started = False

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise _TooLarge
            return message

        async def watched(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except _TooLarge:
            if not started:
                await _error_response(too_large)(scope, receive, send)


# -- the application ---------------------------------------------------------


def _labels(values: list[str]) -> dict[str, str]:
    out = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ApiError(422, "invalid", f"label {item!r}: give KEY=VALUE")
        out[key] = value
    return out


def _time(value: str | None, what: str) -> dt.datetime | None:
    if value is None:
        return None
    try:
        t = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        return t.astimezone(dt.UTC) if t.tzinfo else t.replace(tzinfo=dt.UTC)
    except (ValueError, OverflowError):
        raise ApiError(422, "invalid", f"{what}: not an ISO 8601 time in range") from None


def _principal(request: Request) -> Principal:
    """The operator behind the request's bearer token (every operator route needs one)."""
    db: Database = request.app.state.db
    with db.read() as s:
        return ops.authenticate(s, request.headers.get("authorization"),
                                request.app.state.clock())


Op = Annotated[Principal, Depends(_principal)]


def build_app(db: Database, settings: Settings | None = None, *, clock: Clock = utcnow,
              fleetlock: ASGIApp | None = None,
              driver: Callable[[], dict[str, Any]] | None = None) -> FastAPI:
    """The ASGI application over ``db``; ``fleetlock``: a FleetLock application mounted
    at ``/fleetlock`` (one process for a one-site setup); ``driver``: this instance's
    rollout driver status, shown by ``/v1/health``."""
    settings = settings or Settings()
    limits = HostLimits(settings.checkin_limit, settings.event_limit)
    # Check-ins run in the thread pool at most CHECKIN_CONCURRENCY at once; the others
    # wait here, in the event loop. Without it a burst put ~40 threads on one GIL: a
    # check-in holding a rollout's row lock got a fortieth of the CPU, the others
    # queued behind the lock holding database connections, and the pool ran out
    # (10,000 hosts in a rollout: 500s after its 10 s timeout; docs/benchmarks.md).
    checkins = asyncio.Semaphore(CHECKIN_CONCURRENCY)
    app = FastAPI(title="atoll control plane", version=atoll.__version__,
                  description="Fleet inventory, check-ins, history (docs/control-plane.md).",
                  docs_url=None, redoc_url=None)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return _error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = list(exc.errors())
        if any(e.get("type") == "json_invalid" for e in errors):
            return _error_response(ApiError(400, "malformed_json", "the body is not JSON"))
        lines = [f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}"
                 for e in errors[:50]]
        return _error_response(ApiError(422, "invalid", f"{len(errors)} invalid field(s)",
                                        details="\n".join(lines)))

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> JSONResponse:
        kind = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "bad_request")
        brief = (f"no such endpoint: {request.url.path}" if exc.status_code == 404
                 else str(exc.detail))
        return _error_response(ApiError(exc.status_code, kind, brief,
                                        headers=dict(exc.headers or {})))

    @app.exception_handler(DBAPIError)
    async def _db(request: Request, exc: DBAPIError) -> JSONResponse:
        if unavailable(exc):
            log.warning("database unavailable: %s", str(exc.orig)[:300])
            return _error_response(ApiError(
                503, "database_unavailable", "the control plane's database cannot be "
                "reached; nothing was written", resolution="try again later",
                headers={"Retry-After": "5"}))
        log.exception("database error")
        return _error_response(ApiError(500, "internal_error", "internal error"))

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception) -> JSONResponse:
        log.error("%s %s: internal error", request.method, request.url.path, exc_info=exc)
        return _error_response(ApiError(500, "internal_error", "internal error (a bug in "
                                        "atoll; the server log has the traceback)"))

    app.state.db, app.state.clock = db, clock
    # -- hosts -----------------------------------------------------------

    @app.get("/v1/health", tags=["server"])
    def health() -> dict[str, Any]:
        """Whether the server and its database answer (no token needed)."""
        with db.read() as s:
            s.execute(text("SELECT 1"))
        out: dict[str, Any] = {"status": "ok", "version": atoll.__version__}
        if driver is not None:
            out["rollout_driver"] = driver()
        return out

    @app.post("/v1/enrol", tags=["hosts"], response_model=Enrolled, openapi_extra={
        "requestBody": {"required": True, "content": {
            "application/json": {"schema": EnrolRequest.model_json_schema()}}}})
    async def enrol(request: Request) -> Enrolled:
        """Enrol a host with a one-time enrolment token (Authorization: Bearer atl_en_...)."""
        body = await request.body()
        return await run_in_threadpool(service.enrol, db, request.headers.get("authorization"),
                                       body, clock())

    @app.post("/v1/checkin", tags=["hosts"], response_model=Directive, openapi_extra={
        "requestBody": {"required": True, "content": {
            "application/json": {"schema": CheckIn.model_json_schema()}}},
        "parameters": [{"name": "Atoll-Signature", "in": "header", "required": True,
                        "schema": {"type": "string"},
                        "description": "host=<host id>;ed25519=<base64 signature>"}]})
    async def checkin(request: Request) -> Directive:
        """A host's signed report; the answer is its directive."""
        body = await request.body()
        async with checkins:
            return await run_in_threadpool(
                service.checkin, db, request.headers.get("atoll-signature"), body, clock(),
                directive_ttl=settings.directive_ttl, limits=limits)

    # -- inventory -------------------------------------------------------

    @app.get("/v1/hosts", tags=["inventory"])
    def hosts(p: Op, customer: str | None = None,
              label: Annotated[list[str], Query()] = [],  # noqa: B006 (FastAPI's idiom)
              lost: bool | None = None,
              cve_at_least: str | None = None) -> list[dict[str, Any]]:
        """Hosts in the token's scope; ``label=KEY=VALUE`` (repeatable) filters;
        ``cve_at_least=URGENCY``: only hosts with an open CVE that urgent or more."""
        with db.read() as s:
            return ops.list_hosts(s, p, customer=customer, labels=_labels(label), lost=lost,
                                  cve_at_least=cve_at_least, now=clock())

    @app.get("/v1/cves", tags=["inventory"])
    def cves(p: Op, customer: str | None = None,
             label: Annotated[list[str], Query()] = [],  # noqa: B006 (FastAPI's idiom)
             top: Annotated[int, Query(ge=1, le=500)] = 20) -> dict[str, Any]:
        """CVEs across the hosts in the token's scope, from their last check-ins
        (atoll.control.cves; docs/control-plane.md)."""
        with db.read() as s:
            return ops.cve_summary(s, p, clock(), customer=customer, labels=_labels(label),
                                   top=top)

    @app.get("/v1/hosts/{ref}", tags=["inventory"])
    def host(p: Op, ref: str, customer: str | None = None,
             packages: bool = False) -> dict[str, Any]:
        """One host by id or name, with its last report and recent requests."""
        with db.read() as s:
            return ops.host_detail(s, p, ref, customer, packages=packages, now=clock())

    @app.post("/v1/hosts/{ref}/labels", tags=["inventory"])
    def labels(p: Op, ref: str, body: LabelsIn, customer: str | None = None) -> dict[str, Any]:
        with db.write() as s:
            return ops.set_labels(s, p, ref, customer, body.set, body.remove, clock())

    @app.post("/v1/hosts/{ref}/requests", tags=["requests"], status_code=201)
    def request_for_host(p: Op, ref: str, body: RequestIn,
                         customer: str | None = None) -> dict[str, Any]:
        """Queue an operator's request for the host (sent at its next check-in)."""
        with db.write() as s:
            return ops.create_request(s, p, ref, customer, body.kind, body.args, clock())

    @app.post("/v1/requests/{request_id}/cancel", tags=["requests"])
    def cancel(p: Op, request_id: Annotated[int, FastApiPath(ge=1, le=MAX_ID)]
               ) -> dict[str, Any]:
        with db.write() as s:
            return ops.cancel_request(s, p, request_id, clock())

    @app.get("/v1/events", tags=["history"])
    def events(p: Op, host: str | None = None, customer: str | None = None,
               since: str | None = None, kind: str | None = None,
               after: Annotated[int | None, Query(ge=0, le=MAX_ID)] = None,
               limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[dict[str, Any]]:
        """History, oldest first; ``after=ID`` continues after an event seen."""
        with db.read() as s:
            return ops.list_events(s, p, host=host, customer=customer,
                                   since=_time(since, "since"), kind=kind, after_id=after,
                                   limit=limit)

    @app.post("/v1/prune", tags=["inventory"])
    def prune(p: Op, body: PruneIn) -> dict[str, Any]:
        """Remove hosts lost for longer than ``lost_for_s`` (their history stays)."""
        with db.write() as s:
            pruned = ops.prune(s, p, dt.timedelta(seconds=body.lost_for_s), clock())
        return {"pruned": pruned}

    # -- rollouts --------------------------------------------------------

    @app.post("/v1/rollouts", tags=["rollouts"], status_code=201)
    def create_rollout(p: Op, body: RolloutIn) -> dict[str, Any]:
        """Start a rollout over the hosts its group matches now (its members); with a
        repository (``fleet serve --repo``), among its signed versions only (else 422)."""
        ops._require(p, "operator")  # before reading the repository for a viewer
        named = [body.to_version, *body.floors] + ([body.from_version]
                                                   if body.from_version else [])
        versions = rollout_versions(settings.releases, body.channel,
                                    [v.model_dump() for v in body.versions], named)
        with db.write() as s:
            return rollout_ops.create(
                s, p, rollout_id=body.id, customer=body.customer, labels=body.labels,
                channel=body.channel, versions=versions,
                to_version=body.to_version, from_version=body.from_version,
                floors=body.floors, dead_ends=body.dead_ends, spec=body.spec, now=clock())

    @app.get("/v1/releases", tags=["rollouts"])
    def releases(p: Op) -> dict[str, Any]:
        """The signed versions per channel of the update repository the server reads
        (newest first), verified with python-tuf as hosts do."""
        return releases_json(settings.releases)

    @app.get("/v1/rollouts", tags=["rollouts"])
    def rollouts(p: Op, state: str | None = None) -> list[dict[str, Any]]:
        with db.read() as s:
            return rollout_ops.list_rollouts(s, p, state=state)

    @app.get("/v1/rollouts/{rollout_id}", tags=["rollouts"])
    def rollout(p: Op, rollout_id: str, hosts: bool = False) -> dict[str, Any]:
        """The rollout's waves, phases, failing hosts and the driver's next step."""
        with db.read() as s:
            return rollout_ops.status(s, p, rollout_id, clock(), hosts=hosts)

    @app.post("/v1/rollouts/{rollout_id}/halt", tags=["rollouts"])
    def halt_rollout(p: Op, rollout_id: str, body: ReasonIn | None = None) -> dict[str, Any]:
        with db.write() as s:
            return rollout_ops.halt(s, p, rollout_id, (body or ReasonIn()).reason, clock())

    @app.post("/v1/rollouts/{rollout_id}/resume", tags=["rollouts"])
    def resume_rollout(p: Op, rollout_id: str,
                       body: ResumeIn | None = None) -> dict[str, Any]:
        with db.write() as s:
            body = body or ResumeIn()
            return rollout_ops.resume(s, p, rollout_id, body.excuse, clock(), body.reason)

    @app.post("/v1/rollouts/{rollout_id}/abort", tags=["rollouts"])
    def abort_rollout(p: Op, rollout_id: str, body: ReasonIn | None = None) -> dict[str, Any]:
        with db.write() as s:
            return rollout_ops.abort(s, p, rollout_id, (body or ReasonIn()).reason, clock())

    # -- tenancy and access ----------------------------------------------

    @app.get("/v1/customers", tags=["access"])
    def customers(p: Op) -> list[dict[str, Any]]:
        with db.read() as s:
            return ops.list_customers(s, p)

    @app.post("/v1/customers", tags=["access"], status_code=201)
    def add_customer(p: Op, body: CustomerIn) -> dict[str, Any]:
        with db.write() as s:
            return ops.add_customer(s, p, body.name, clock())

    @app.get("/v1/tokens", tags=["access"])
    def tokens(p: Op) -> list[dict[str, Any]]:
        with db.read() as s:
            return ops.list_tokens(s, p)

    @app.post("/v1/tokens", tags=["access"], status_code=201)
    def create_token(p: Op, body: TokenIn) -> dict[str, Any]:
        """A new operator token: the secret is in this answer only."""
        now = clock()
        expires = now + dt.timedelta(seconds=body.expires_in_s) if body.expires_in_s else None
        with db.write() as s:
            return ops.create_token(s, p, body.name, body.role, body.customers, now, expires)

    @app.post("/v1/tokens/{name}/revoke", tags=["access"])
    def revoke(p: Op, name: str) -> dict[str, Any]:
        with db.write() as s:
            return ops.revoke_token(s, p, name, clock())

    @app.post("/v1/enrol-tokens", tags=["access"], status_code=201)
    def enrol_token(p: Op, body: EnrolTokenIn) -> dict[str, Any]:
        """A one-time enrolment token for a customer's new host (shown once)."""
        with db.write() as s:
            return ops.create_enrol_token(s, p, body.customer, body.host_name, body.labels,
                                          dt.timedelta(seconds=body.expires_in_s), clock())

    @app.get("/v1/enrol-tokens", tags=["access"])
    def enrol_tokens(p: Op, customer: str | None = None,
                     valid: bool = False) -> list[dict[str, Any]]:
        """Enrolment tokens in the caller's scope (never their secrets)."""
        with db.read() as s:
            return ops.list_enrol_tokens(s, p, clock(), customer=customer, valid=valid)

    @app.post("/v1/enrol-tokens/{token_id}/revoke", tags=["access"])
    def revoke_enrol_token(p: Op, token_id: Annotated[int, FastApiPath(ge=1, le=MAX_ID)]
                           ) -> dict[str, Any]:
        with db.write() as s:
            return ops.revoke_enrol_token(s, p, token_id, clock())

    app.mount(CONSOLE, build_console(db, clock, settings.releases))  # docs/console.md
    app.add_middleware(_Guard, fleetlock=fleetlock)
    return app

"""The console's pages: a Starlette application mounted at ``/console`` by
:func:`atoll.control.app.build_app`. Server-rendered (Jinja2, autoescaped), no
JavaScript.

Security (docs/console.md):

* session: cookie ``__Host-atoll-console`` (Secure, HttpOnly, SameSite=Strict,
  Path=/), 256 random bits; the server keeps only their sha256
  (:mod:`atoll.control.console.users`);
* CSRF: every form carries ``csrf``, an HMAC of the session's secret (login: of a
  pre-login cookie's, double submit); a POST without it gets 403 and changes nothing;
* login rate limit: per user in the database, per client address in memory;
* headers on every answer: a CSP without inline scripts or styles, frame-ancestors
  'none' and X-Frame-Options DENY, nosniff, no referrer; ``Cache-Control: no-store``
  on everything but the style sheet;
* authorization: a page reads through the user's Principal, as the API's tokens do.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hmac
import secrets
import time
from collections.abc import Callable
from importlib import resources
from typing import Any
from urllib.parse import urlencode

import jinja2
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from atoll.control.console import (
    audit_views,
    fleet_actions,
    rollout_views,
    security_views,
    users,
    views,
)
from atoll.control.db import Database
from atoll.control.errors import ApiError
from atoll.control.limits import Bucket, Buckets
from atoll.control.releases import ReleaseSource

__all__ = ["SESSION_COOKIE", "build_console"]

SESSION_COOKIE = "__Host-atoll-console"
LOGIN_COOKIE = "__Host-atoll-console-login"
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
HEADERS = [(b"content-security-policy", CSP.encode()), (b"x-frame-options", b"DENY"),
           (b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer"),
           (b"cross-origin-opener-policy", b"same-origin")]
LOGIN_ADDRESS_LIMIT = Bucket(20, 3.0)  # per client address: 20 at once, one per 3 s


class _Headers:
    """Add the security headers to every answer; no-store unless under /static/."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        cacheable = scope.get("path", "").startswith("/static/")

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", [])
                           if k.lower() != b"cache-control" or cacheable]
                headers += HEADERS
                headers.append((b"cache-control",
                                b"max-age=3600" if cacheable else b"no-store"))
                message = dict(message, headers=headers)
            await send(message)

        await self.app(scope, receive, with_headers)


def _templates() -> Jinja2Templates:
    root = resources.files("atoll.control.console") / "templates"
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(root)), autoescape=True,
                             undefined=jinja2.StrictUndefined)
    env.filters["when"] = lambda t: (t.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")
                                     if isinstance(t, dt.datetime) else (t or "-"))
    return Jinja2Templates(env=env)


def build_console(db: Database, clock: Callable[[], dt.datetime],
                  releases: ReleaseSource | None = None) -> ASGIApp:
    """The console over ``db`` (mount it at ``/console``); ``clock``: aware UTC now;
    ``releases``: the signed versions (Releases page, rollouts, package changes)."""
    templates = _templates()
    per_address = Buckets(LOGIN_ADDRESS_LIMIT, max_keys=100_000)

    def page(request: Request, name: str, context: dict[str, Any],
             status: int = 200, headers: dict[str, str] | None = None) -> Response:
        context = {"base": request.scope.get("root_path", ""), "user": None} | context
        return templates.TemplateResponse(request, name, context, status_code=status,
                                          headers=headers)

    def error(request: Request, status: int, brief: str, user: users.User | None = None,
              headers: dict[str, str] | None = None) -> Response:
        return page(request, "error.html", {"status": status, "brief": brief, "user": user,
                                            "csrf": _csrf(request)}, status, headers)

    def _csrf(request: Request) -> str:
        secret = request.cookies.get(SESSION_COOKIE)
        return users.csrf_token(secret) if secret else ""

    def current(request: Request) -> users.User | None:
        with db.read() as s:
            return users.session_user(s, request.cookies.get(SESSION_COOKIE), clock())

    def to_login(request: Request) -> Response:
        return RedirectResponse(f"{request.scope.get('root_path', '')}/login", 303)

    async def form_with_csrf(request: Request, secret: str | None,
                             purpose: str) -> dict[str, str] | None:
        form = await request.form()
        given = form.get("csrf")
        if not secret or not isinstance(given, str) or not hmac.compare_digest(
                given.encode(), users.csrf_token(secret, purpose).encode()):
            return None
        return {k: v for k, v in form.items() if isinstance(v, str)}

    async def index(request: Request) -> Response:
        return RedirectResponse(f"{request.scope.get('root_path', '')}/fleet", 303)

    async def login_form(request: Request) -> Response:
        return _login_page(request, None, 200)

    def _login_page(request: Request, message: str | None, status: int,
                    headers: dict[str, str] | None = None) -> Response:
        secret = secrets.token_urlsafe(32)
        response = page(request, "login.html", {
            "csrf": users.csrf_token(secret, "login"), "message": message}, status, headers)
        response.set_cookie(LOGIN_COOKIE, secret, max_age=3600, path="/", secure=True,
                            httponly=True, samesite="strict")
        return response

    async def login(request: Request) -> Response:
        form = await form_with_csrf(request, request.cookies.get(LOGIN_COOKIE), "login")
        if form is None:
            if LOGIN_COOKIE not in request.cookies:  # most often: plain HTTP, not loopback
                return error(request, 403, "Your browser sent no login cookie. The "
                             "console's cookies are Secure: browsers send them only over "
                             "HTTPS or to a loopback address (127.0.0.1, localhost), so put "
                             "a TLS-terminating proxy in front of `atoll fleet serve` "
                             "(docs/console.md, HTTPS); then reload the login page.")
            return error(request, 403, "The form is stale or did not come from this "
                         "console (no CSRF token): reload the login page.")
        address = request.client.host if request.client else "-"
        wait = per_address.take(address, time.monotonic())
        if wait:
            retry = str(max(1, int(wait + 0.999)))
            return _login_page(request, "Too many login attempts: try again later.", 429,
                               {"Retry-After": retry})
        attempt = await run_in_threadpool(users.log_in, db, form.get("name", "")[:100],
                                          # one over the most a password may have:
                                          # a longer one never matches (not cut to one)
                                          form.get("password", "")[:users.MAX_PASSWORD + 1],
                                          clock())
        if attempt.secret is None:
            if attempt.retry_after:
                return _login_page(request, "Too many login attempts: try again later.",
                                   429, {"Retry-After": str(attempt.retry_after)})
            return _login_page(request, "Wrong name or password.", 401)
        response = RedirectResponse(f"{request.scope.get('root_path', '')}/fleet", 303)
        response.set_cookie(SESSION_COOKIE, attempt.secret,
                            max_age=int(users.SESSION_TTL.total_seconds()), path="/",
                            secure=True, httponly=True, samesite="strict")
        response.delete_cookie(LOGIN_COOKIE, path="/", secure=True, httponly=True,
                               samesite="strict")
        return response

    async def logout(request: Request) -> Response:
        secret = request.cookies.get(SESSION_COOKIE)
        if await form_with_csrf(request, secret, "form") is None:
            return error(request, 403, "The form is stale or did not come from this "
                         "console (no CSRF token).")
        with db.write() as s:
            users.log_out(s, secret)
        response = to_login(request)
        response.delete_cookie(SESSION_COOKIE, path="/", secure=True, httponly=True,
                               samesite="strict")
        return response

    def fleet(request: Request) -> Response:
        user = current(request)
        if user is None:
            return to_login(request)
        try:
            f = views.FleetFilter.parse(dict(request.query_params))
        except ApiError as exc:
            return error(request, 422, exc.brief, user)
        with db.read() as s:
            data = views.fleet(s, user.principal, f, now=clock())
        pages = {n: urlencode(f.query(n)) for n in (data["page"] - 1, data["page"] + 1)
                 if 1 <= n <= data["pages"]}
        # the links that change the plot's span or the breakdown keep the rest
        spans = {d: urlencode(dataclasses.replace(f, days=d).query())
                 for d in data["history"]["choices"]}
        return page(request, "fleet.html", {"user": user, "csrf": _csrf(request),
                                            "f": f, "fleet": data, "states": views.STATES,
                                            "pages": pages, "spans": spans,
                                            "bulk_actions": [
                                                (k, a[2]) for k, a in
                                                fleet_actions.ACTIONS.items()]})

    def host(request: Request) -> Response:
        user = current(request)
        if user is None:
            return to_login(request)
        try:
            with db.read() as s:
                detail = views.host_page(s, user.principal, request.path_params["host_id"],
                                          now=clock())
            detail["package_changes"] = rollout_views.host_package_changes(
                kit, user.principal, detail["id"], detail["deployments"])
        except ApiError as exc:
            if exc.status != 404:
                raise
            return error(request, 404, "No such host.", user)
        return page(request, "host.html", {"user": user, "csrf": _csrf(request),
                                           "h": detail})

    async def style(request: Request) -> Response:
        css = (resources.files("atoll.control.console") / "static" / "console.css")
        return Response(css.read_bytes(), media_type="text/css")

    async def script(request: Request) -> Response:
        js = (resources.files("atoll.control.console") / "static" / "live.js")
        return Response(js.read_bytes(), media_type="text/javascript")

    kit = rollout_views.Kit(db, clock, releases, page, error, current, to_login,
                            form_with_csrf, _csrf, SESSION_COOKIE)
    app = Starlette(routes=[
        Route("/", index), Route("/login", login_form, methods=["GET"]),
        Route("/login", login, methods=["POST"]), Route("/logout", logout, methods=["POST"]),
        Route("/fleet", fleet), Route("/hosts/{host_id}", host),
        Route("/static/console.css", style), Route("/static/live.js", script),
        *rollout_views.routes(kit), *fleet_actions.routes(kit),
        *audit_views.routes(db, page, error, current, to_login, _csrf),
        *security_views.routes(db, clock, page, current, to_login, _csrf),
    ])
    return _Headers(app)

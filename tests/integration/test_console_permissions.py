"""The permission matrix (issue 17): every route of the control plane's API and of the
web console, taken from the applications' own route tables, for every kind of caller,
against one real ``atoll fleet serve --repo`` process (the Rollouts tests' site: a real
signed repository, hosts checked in through the real protocol) over plain HTTP.

A route added later without a row in :data:`API` or :data:`CONSOLE` fails
:func:`test_every_route_has_an_expected_outcome`. For each route x caller the exact
status is asserted; a refused request to a mutating route changes no row (the
relevant tables compared before and after); an answer to a caller of one customer
never names the other customer's hosts or records; out of scope answers exactly as
"no such thing" does. Then CSRF on every mutating console route and the session's
life (logout, expiry, cookie flags). The matrix is the table of docs/console.md
("Permission matrix").
"""

from __future__ import annotations

import datetime as dt
import hashlib
import http.client
import itertools
import json
import os
import re
import sqlite3
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import update
from starlette.routing import BaseRoute, Mount

from atoll.control.app import build_app
from atoll.control.console.models import ConsoleSession
from atoll.control.db import Database
from atoll.control.protocol import b64encode, sign
from tests.integration.test_console import PASSWORD, _atoll, _session
from tests.integration.test_console_rollouts import (
    CHANNEL,
    RolloutSite,
    _status,
    rsite,  # noqa: F401 (the fixture "rs": one site for the module)
)

# -- the matrix --------------------------------------------------------------------
# API callers: no credentials; a host's own signature (db01 of acme); a (valid, unused)
# enrolment token of acme; the console session cookie of root (admin of every
# customer: a cookie is no API credential); operator tokens: viewer/operator/admin of
# acme (va oa aa), admin of every customer (ad), viewer/operator of globex (vb ob).
# Targets are acme's: for vb and ob they are out of scope.
API = """
route                                    anon  host  enrol cookie va    oa    aa    ad    vb    ob
GET  /openapi.json                       200   200   200   200   200   200   200   200   200   200
GET  /v1/health                          200   200   200   200   200   200   200   200   200   200
POST /v1/enrol                           401   401   200   401   401   401   401   401   401   401
POST /v1/checkin                         401   200   401   401   401   401   401   401   401   401
GET  /v1/hosts                           401   401   401   401   200   200   200   200   200   200
GET  /v1/cves                            401   401   401   401   200   200   200   200   200   200
GET  /v1/hosts/{ref}                     401   401   401   401   200   200   200   200   404   404
POST /v1/hosts/{ref}/labels              401   401   401   401   403   200   200   200   403   404
POST /v1/hosts/{ref}/requests            401   401   401   401   403   201   201   201   403   404
POST /v1/requests/{request_id}/cancel    401   401   401   401   403   200   200   200   403   404
GET  /v1/events                          401   401   401   401   200   200   200   200   200   200
POST /v1/prune                           401   401   401   401   403   403   200   200   403   403
POST /v1/rollouts                        401   401   401   401   403   201   201   201   403   404
GET  /v1/releases                        401   401   401   401   200   200   200   200   200   200
GET  /v1/rollouts                        401   401   401   401   200   200   200   200   200   200
GET  /v1/rollouts/{rollout_id}           401   401   401   401   200   200   200   200   404   404
POST /v1/rollouts/{rollout_id}/halt      401   401   401   401   403   200   200   200   403   404
POST /v1/rollouts/{rollout_id}/resume    401   401   401   401   403   200   200   200   403   404
POST /v1/rollouts/{rollout_id}/abort     401   401   401   401   403   200   200   200   403   404
GET  /v1/customers                       401   401   401   401   200   200   200   200   200   200
POST /v1/customers                       401   401   401   401   403   403   403   201   403   403
GET  /v1/tokens                          401   401   401   401   403   403   403   200   403   403
POST /v1/tokens                          401   401   401   401   403   403   403   201   403   403
POST /v1/tokens/{name}/revoke            401   401   401   401   403   403   403   200   403   403
GET  /v1/enrol-tokens                    401   401   401   401   403   200   200   200   403   200
POST /v1/enrol-tokens                    401   401   401   401   403   201   201   201   403   404
POST /v1/enrol-tokens/{token_id}/revoke  401   401   401   401   403   200   200   200   403   404
"""

# Console callers: no session; console users ann (viewer of acme), op (operator of
# acme), root (admin of every customer), ben (viewer of globex), gop (operator of
# globex); the every-customer admin's API token as a bearer (no console credential).
# "login": 303 to the login page; "303": a redirect elsewhere (done).
CONSOLE = """
route                                    anon  va    oa    ad    vb    ob    token
GET  /console/                           303   303   303   303   303   303   303
GET  /console/login                      200   200   200   200   200   200   200
POST /console/login                      403   403   403   403   403   403   403
POST /console/logout                     403   login login login login login 403
GET  /console/fleet                      login 200   200   200   200   200   login
POST /console/fleet/requests             login 403   200   200   403   200   login
GET  /console/hosts/{host_id}            login 200   200   200   404   404   login
GET  /console/static/console.css         200   200   200   200   200   200   200
GET  /console/static/live.js             200   200   200   200   200   200   200
GET  /console/rollouts                   login 200   200   200   200   200   login
POST /console/rollouts                   login 403   303   303   403   404   login
GET  /console/rollouts/new               login 403   200   200   403   200   login
GET  /console/rollouts/{rid}             login 200   200   200   404   404   login
GET  /console/rollouts/{rid}/halt        login 403   200   200   403   404   login
POST /console/rollouts/{rid}/halt        login 403   303   303   403   404   login
GET  /console/rollouts/{rid}/resume      login 403   200   200   403   404   login
POST /console/rollouts/{rid}/resume      login 403   303   303   403   404   login
GET  /console/rollouts/{rid}/abort       login 403   200   200   403   404   login
POST /console/rollouts/{rid}/abort       login 403   303   303   403   404   login
GET  /console/releases                   login 200   200   200   200   200   login
GET  /console/audit                      login 200   200   200   200   200   login
GET  /console/audit.csv                  login 200   200   200   200   200   login
GET  /console/security                   login 200   200   200   200   200   login
"""

# refused although the answer is 200: the bulk action's page lists acme's host as not
# found for globex's operator, and nothing is queued
REFUSED_200 = {("POST /console/fleet/requests", "ob")}
WRITES_NOTHING = {"POST /v1/prune"}  # no host of this site is lost: nothing to prune
SCOPE = {"va": "acme", "oa": "acme", "aa": "acme", "vb": "globex", "ob": "globex"}
USERS = {"va": "ann", "oa": "op", "ad": "root", "vb": "ben", "ob": "gop"}


def _table(text: str) -> tuple[list[str], dict[str, dict[str, str]]]:
    lines = [line.split() for line in text.strip().splitlines()]
    callers = lines[0][1:]
    rows = {f"{r[0]} {r[1]}": dict(zip(callers, r[2:], strict=True)) for r in lines[1:]}
    return callers, rows


API_CALLERS, API_ROWS = _table(API)
CONSOLE_CALLERS, CONSOLE_ROWS = _table(CONSOLE)


# -- the site ----------------------------------------------------------------------


@dataclass
class Answer:
    status: int
    text: str
    headers: dict[str, str]
    cookies: list[str]


@dataclass
class Matrix:
    rs: RolloutSite
    tokens: dict[str, str]  # caller -> operator token
    enrol: str  # an unused enrolment token of acme
    sessions: dict[str, tuple[dict[str, str], str]]  # caller -> (cookies, csrf)
    markers: dict[str, list[str]]  # customer -> what names its hosts and records
    serial: Iterator[int] = field(default_factory=itertools.count)

    def send(self, method: str, path: str, body: bytes | None = None,
             headers: dict[str, str] | None = None) -> Answer:
        conn = http.client.HTTPConnection("127.0.0.1", int(self.rs.url.rsplit(":", 1)[1]),
                                          timeout=60)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            text = resp.read().decode(errors="replace")
            return Answer(resp.status, text, {k.lower(): v for k, v in resp.getheaders()},
                          [v for k, v in resp.getheaders() if k.lower() == "set-cookie"])
        finally:
            conn.close()

    def admin(self, method: str, path: str, body: Any = None) -> Any:
        """A call as the every-customer admin that must succeed: its document."""
        code, doc = self.rs.api.call(method, path, body)
        assert 200 <= code < 300, (path, code, doc)
        return doc

    def rollout(self, state: str = "running") -> str:
        """A new rollout of acme over db04 (``matrix=x``), halted when asked."""
        rid = f"acme-m{next(self.serial)}"
        self.admin("POST", "/v1/rollouts", {"id": rid, "customer": "acme",
                                            "labels": {"matrix": "x"}, "channel": CHANNEL,
                                            "to_version": "2"})
        if state == "halted":
            self.admin("POST", f"/v1/rollouts/{rid}/halt", {"reason": "matrix"})
        return rid

    def request_id(self) -> str:
        doc = self.admin("POST", f"/v1/hosts/{self.rs.hosts['db01']}/requests",
                         {"kind": "ack-rollback"})
        return str(doc["id"])


def _snapshot(db_url: str) -> dict[str, Any]:
    """What a mutating route could change: the rows of the tables the routes write
    (events and audit links by count)."""
    path = db_url.removeprefix("sqlite:///")
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        out: dict[str, Any] = {}
        for table in ("customers", "operator_tokens", "enrol_tokens", "hosts", "host_labels",
                      "host_requests", "rollouts", "rollout_hosts", "console_sessions",
                      "console_users"):
            out[table] = sorted(map(repr, con.execute(f"SELECT * FROM {table}")))
        for table in ("events", "audit_links"):
            out[table] = con.execute(f"SELECT count(*) FROM {table}").fetchone()
        return out
    finally:
        con.close()


@pytest.fixture(scope="module")
def m(rs: RolloutSite, tmp_path_factory: pytest.TempPathFactory) -> Matrix:
    tmp = tmp_path_factory.mktemp("permissions")
    pw = tmp / "pw"
    pw.write_text(PASSWORD + "\n")
    os.chmod(pw, 0o600)
    for user, role, customers in [("root", "admin", []), ("ben", "viewer", ["globex"])]:
        extra = [a for c in customers for a in ("--customer", c)]
        done = _atoll("fleet", "users", "add", user, "--role", role, *extra, "--db", rs.db,
                      "--password-file", str(pw))
        assert done.returncode == 0, done.stderr
    tokens = {"ad": rs.api.token or ""}
    for caller, role, customer in [("va", "viewer", "acme"), ("oa", "operator", "acme"),
                                   ("aa", "admin", "acme"), ("vb", "viewer", "globex"),
                                   ("ob", "operator", "globex")]:
        code, doc = rs.api.call("POST", "/v1/tokens", {"name": f"t-{caller}", "role": role,
                                                       "customers": [customer]})
        assert code == 201, doc
        tokens[caller] = doc["token"]
    code, enrol = rs.api.call("POST", "/v1/enrol-tokens", {"customer": "acme"})
    assert code == 201, enrol
    code, doc = rs.api.call("POST", f"/v1/hosts/{rs.hosts['db04']}/labels",
                            {"set": {"matrix": "x"}})
    assert code == 200, doc
    # a rollout of acme's to read; a record of globex's of every kind, so that lists
    # have something to leak
    for path, body in [("/v1/rollouts", {"id": "acme-base", "customer": "acme",
                                         "labels": {"matrix": "x"}, "channel": CHANNEL,
                                         "to_version": "2"}),
                       ("/v1/rollouts", {"id": "globex-r", "customer": "globex",
                                         "labels": {"role": "db"}, "channel": CHANNEL,
                                         "to_version": "2"}),
                       ("/v1/enrol-tokens", {"customer": "globex"}),
                       (f"/v1/hosts/{rs.hosts['gx01']}/requests", {"kind": "ack-rollback"})]:
        code, doc = rs.api.call("POST", path, body)
        assert code == 201, doc
    sessions = {caller: _session(rs, name) for caller, name in USERS.items()}
    sessions["anon"] = sessions["token"] = ({}, "")
    markers = {"acme": ["acme", *(rs.hosts[n] for n in ("db01", "db02", "db03", "db04")),
                        "db01", "db02", "db03", "db04"],
               "globex": ["globex", rs.hosts["gx01"], "gx01"]}
    return Matrix(rs, tokens, enrol["token"], sessions, markers)


def _app_routes() -> set[str]:
    """Every ``METHOD /path`` of ``fleet serve``'s application (the API and the console
    mounted in it), from the route tables (HEAD goes with GET)."""
    def walk(routes: list[BaseRoute], prefix: str) -> Iterator[str]:
        for r in routes:
            if isinstance(r, Mount):
                inner: Any = r.app
                while not hasattr(inner, "routes"):  # the console's header middleware
                    inner = inner.app
                yield from walk(inner.routes, prefix + r.path)
                continue
            for method in sorted(set(getattr(r, "methods", None) or ["GET"]) - {"HEAD"}):
                yield f"{method} {prefix}{getattr(r, 'path', '?')}"

    root = Path(os.environ.get("TMPDIR", "/tmp")) / f"atoll-routes-{uuid.uuid4().hex}"
    try:
        app = build_app(Database(f"sqlite:///{root}/c.db"))
        return set(walk(list(app.routes), ""))
    finally:
        for f in sorted(root.glob("*")):
            f.unlink()
        if root.exists():
            root.rmdir()


def test_every_route_has_an_expected_outcome() -> None:
    routes = _app_routes()
    rows = set(API_ROWS) | set(CONSOLE_ROWS)
    missing = sorted(routes - rows)
    assert not missing, "\n".join(f"route {r} has no expected outcome" for r in missing)
    assert not rows - routes, f"matrix rows for routes that do not exist: {rows - routes}"
    assert all(r.split()[1].startswith("/console/") for r in CONSOLE_ROWS)
    assert not any(r.split()[1].startswith("/console/") for r in API_ROWS)


# -- the API -----------------------------------------------------------------------


def _api_call(m: Matrix, route: str, caller: str) -> tuple[str, bytes | None]:
    """The path (acme's target; a fresh one where the call would use it up) and the
    JSON body ``caller`` sends to ``route``."""
    rs, n = m.rs, next(m.serial)
    method, path = route.split(" ", 1)
    fresh: dict[str, Callable[[], str]] = {
        "{ref}": lambda: rs.hosts["db01"],
        "{request_id}": m.request_id,
        "{rollout_id}": lambda: "acme-base" if method == "GET" else m.rollout(
            "halted" if path.endswith("/resume") else "running"),
        "{name}": lambda: m.admin("POST", "/v1/tokens", {
            "name": f"t-victim{n}", "role": "viewer", "customers": ["acme"]})["name"],
        "{token_id}": lambda: str(m.admin("POST", "/v1/enrol-tokens",
                                          {"customer": "acme"})["id"]),
    }
    for param, make in fresh.items():
        if param in path:
            path = path.replace(param, make())
    body: Any = {
        "POST /v1/enrol": {"name": f"m-host{n}", "public_key": b64encode(
            Ed25519PrivateKey.generate().public_key().public_bytes_raw())},
        "POST /v1/checkin": rs.sims["db01"].report(
            status=_status("1", rs.commits, update="prepared"), policy={"mode": "apply"}),
        "POST /v1/hosts/{ref}/labels": {"set": {"matrix-seen": str(n)}},
        "POST /v1/hosts/{ref}/requests": {"kind": "ack-rollback"},
        "POST /v1/prune": {"lost_for_s": 10 * 365 * 86400},
        "POST /v1/rollouts": {"id": f"acme-c{n}", "customer": "acme",
                              "labels": {"matrix": "x"}, "channel": CHANNEL,
                              "to_version": "2"},
        "POST /v1/customers": {"name": f"cust{n}"},
        "POST /v1/tokens": {"name": f"t-new{n}", "role": "viewer", "customers": ["acme"]},
        "POST /v1/enrol-tokens": {"customer": "acme"},
    }.get(route)
    if body is None and method == "POST":
        body = {"reason": "matrix"} if "/rollouts/" in route else None
    data = None if body is None else json.dumps(body, sort_keys=True).encode()
    return path, data


def _api_headers(m: Matrix, caller: str, body: bytes | None) -> dict[str, str]:
    headers = {"Content-Type": "application/json"} if body is not None else {}
    if caller == "host":
        host = m.rs.sims["db01"]
        headers["Atoll-Signature"] = sign(host.key, host.host_id, body or b"")
    elif caller == "enrol":
        headers["Authorization"] = f"Bearer {m.enrol}"
    elif caller == "cookie":
        headers["Cookie"] = f"__Host-atoll-console={m.sessions['ad'][0]['__Host-atoll-console']}"
    elif caller in m.tokens:
        headers["Authorization"] = f"Bearer {m.tokens[caller]}"
    return headers


def _leaks(m: Matrix, caller: str, text: str, sent: str) -> list[str]:
    """The other customer's names and ids found in ``caller``'s answer (but for those
    it sent itself: a 404 may name what was asked for)."""
    mine = SCOPE.get(caller)
    if mine is None:
        return []
    other = "globex" if mine == "acme" else "acme"
    # whole words only: "db04" may be part of a CSRF token's or another host id's hex
    return [x for x in m.markers[other] if x not in sent and re.search(
        rf"(?<![0-9A-Za-z]){re.escape(x)}(?![0-9A-Za-z])", text)]


NOT_THERE = {"{ref}": str(uuid.uuid4()), "{request_id}": "987654321",
             "{rollout_id}": "no-such-rollout", "{token_id}": "987654321",
             "{host_id}": str(uuid.uuid4()), "{rid}": "no-such-rollout",
             "{name}": "no-such-token"}


def test_api_matrix(m: Matrix) -> None:
    wrong = []
    for route, expected in API_ROWS.items():
        for caller in API_CALLERS:
            path, body = _api_call(m, route, caller)
            before = _snapshot(m.rs.db) if route.startswith("POST") else None
            a = m.send(route.split()[0], path, body, _api_headers(m, caller, body))
            if str(a.status) != expected[caller]:
                wrong.append(f"{route} as {caller}: {a.status}, expected {expected[caller]}: "
                             f"{a.text[:200]}")
                continue
            if before is not None and a.status in (401, 403, 404):
                assert _snapshot(m.rs.db) == before, f"{route} as {caller} changed rows"
            elif before is not None and route not in WRITES_NOTHING:
                # the snapshot sees what this route writes (so "unchanged" means something)
                assert _snapshot(m.rs.db) != before, f"{route} as {caller} changed nothing"
            leaks = _leaks(m, caller, a.text, path + (body or b"").decode())
            assert not leaks, (route, caller, leaks)
            if a.status == 404 and caller in ("vb", "ob") and "{" in route:
                _same_as_missing(m, route, caller, path, body, a)
    assert not wrong, "\n".join(wrong)


def _same_as_missing(m: Matrix, route: str, caller: str, path: str, body: bytes | None,
                     a: Answer) -> None:
    """Out of scope answers exactly as a target that does not exist."""
    template = route.split(" ", 1)[1]
    param = next(p for p in NOT_THERE if p in template)
    prefix, _, suffix = template.partition(param)
    real = path[len(prefix):len(path) - len(suffix)]
    missing = prefix + NOT_THERE[param] + suffix
    if template.startswith("/console/"):
        cookies, _ = m.sessions[caller]
        b = _console(m, route.split()[0], missing, cookies,
                     None if body is None else body.decode().replace(real, NOT_THERE[param]))
    else:
        b = m.send(route.split()[0], missing, body, _api_headers(m, caller, body))
    assert (b.status, b.text.replace(NOT_THERE[param], "X")) == \
        (a.status, a.text.replace(real, "X")), route


# -- the console -------------------------------------------------------------------


def _console(m: Matrix, method: str, path: str, cookies: dict[str, str],
             form: str | None = None, bearer: str | None = None) -> Answer:
    headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
    if cookies:
        headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in cookies.items())
    if form is not None:
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    return m.send(method, path, None if form is None else form.encode(), headers)


def _form(pairs: list[tuple[str, str]]) -> str:
    return urllib.parse.urlencode(pairs)


def _console_call(m: Matrix, route: str, caller: str) -> tuple[str, str | None,
                                                                dict[str, str]]:
    """Path, form and cookies of ``caller`` for ``route`` (acme's targets)."""
    rs, n = m.rs, next(m.serial)
    method, path = route.split(" ", 1)
    cookies, csrf = m.sessions[caller]
    if "{host_id}" in path:
        path = path.replace("{host_id}", rs.hosts["db01"])
    if "{rid}" in path:
        kind = path.rsplit("/", 1)[1]
        rid = "acme-base" if method == "GET" else m.rollout(
            "halted" if kind == "resume" else "running")
        path = path.replace("{rid}", rid)
    form: list[tuple[str, str]] | None = None
    if method == "POST":
        form = [("csrf", csrf)]
        if route == "POST /console/login":
            form += [("name", USERS.get(caller, "ann")), ("password", PASSWORD)]
        elif route == "POST /console/logout" and caller in USERS:
            cookies, csrf = _session(rs, USERS[caller])  # its own session, ended here
            form = [("csrf", csrf)]
        elif route == "POST /console/fleet/requests":
            form += [("action", "ack-rollback"), ("host", rs.hosts["db01"])]
        elif route == "POST /console/rollouts":
            form += [("id", f"acme-f{n}"), ("customer", "acme"), ("labels", "matrix=x"),
                     ("target", f"{CHANNEL} 2"), ("waves", "100"), ("max_failures", "0")]
        else:
            form += [("reason", "matrix"), ("excuse", "yes")]
    return path, None if form is None else _form(form), cookies


def _outcome(a: Answer) -> str:
    if a.status == 303:
        return "login" if a.headers.get("location") == "/console/login" else "303"
    return str(a.status)


def test_console_matrix(m: Matrix) -> None:
    wrong = []
    for route, expected in CONSOLE_ROWS.items():
        for caller in CONSOLE_CALLERS:
            path, form, cookies = _console_call(m, route, caller)
            method = route.split()[0]
            before = _snapshot(m.rs.db) if method == "POST" else None
            a = _console(m, method, path, cookies, form,
                         m.tokens["ad"] if caller == "token" else None)
            if _outcome(a) != expected[caller]:
                wrong.append(f"{route} as {caller}: {_outcome(a)}, expected "
                             f"{expected[caller]}: {a.text[:200]}")
                continue
            refused = expected[caller] in ("403", "404") or (route, caller) in REFUSED_200 \
                or (expected[caller] == "login" and caller in ("anon", "token"))
            if before is not None and refused:
                assert _snapshot(m.rs.db) == before, f"{route} as {caller} changed rows"
            elif before is not None:
                assert _snapshot(m.rs.db) != before, f"{route} as {caller} changed nothing"
            leaks = _leaks(m, caller, a.text, path + (form or ""))
            assert not leaks, (route, caller, leaks)
            if a.status == 404 and caller in ("vb", "ob") and "{" in route:
                _same_as_missing(m, route, caller, path,
                                 None if form is None else form.encode(), a)
    assert not wrong, "\n".join(wrong)


# -- CSRF and sessions ---------------------------------------------------------------


def test_every_mutating_console_route_checks_the_csrf_token(m: Matrix) -> None:
    """Without the token, with a wrong one, with another session's: 403, nothing
    changed, for every POST route of the console (the operator may do all of them)."""
    posts = [r for r in CONSOLE_ROWS if r.startswith("POST ")]
    other_cookies, other_csrf = _session(m.rs, "op")  # op's second session
    for route in posts:
        if route == "POST /console/login":
            continue  # below: its token goes with a pre-login cookie
        for token in (None, "0" * 64, other_csrf):
            path, form, cookies = _console_call(m, route, "oa")
            pairs = [p for p in (form or "").split("&") if not p.startswith("csrf=")]
            if token is not None:
                pairs.insert(0, f"csrf={token}")
            before = _snapshot(m.rs.db)
            a = _console(m, "POST", path, cookies, "&".join(pairs))
            assert a.status == 403, (route, token, a.status, a.text[:200])
            assert _snapshot(m.rs.db) == before, (route, token)
            assert not any("atoll-console=" in c for c in a.cookies)
    # the session whose token was borrowed, and the ones it was offered to, still work
    assert _outcome(_console(m, "GET", "/console/fleet", other_cookies)) == "200"
    # login: the token is bound to the pre-login cookie it came with
    first, second = (m.send("GET", "/console/login") for _ in range(2))
    tokens = [re.search(r'name="csrf" value="([0-9a-f]+)"', a.text) for a in (first, second)]
    jars = [re.search(r"__Host-atoll-console-login=([^;]+)", ";".join(a.cookies))
            for a in (first, second)]
    assert all(tokens) and all(jars)
    own, others = (t.group(1) for t in tokens if t)
    jar = {"__Host-atoll-console-login": jars[0].group(1) if jars[0] else ""}
    # no token, a wrong one, the other login form's, the right one without its cookie
    for cookies, token in [(jar, None), (jar, "0" * 64), (jar, others), ({}, own)]:
        fields = [("name", "op"), ("password", PASSWORD)]
        if token is not None:
            fields.insert(0, ("csrf", token))
        before = _snapshot(m.rs.db)
        a = _console(m, "POST", "/console/login", cookies, _form(fields))
        assert a.status == 403, a.text[:200]
        assert _snapshot(m.rs.db) == before
        assert not any(c.startswith("__Host-atoll-console=") for c in a.cookies)


def _sha256(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def test_sessions_end_on_logout_and_expiry_and_their_cookie_is_locked_down(
        m: Matrix) -> None:
    # the cookies' flags, as docs/console.md says
    login = m.send("GET", "/console/login")
    pre = next(c for c in login.cookies if c.startswith("__Host-atoll-console-login="))
    token = re.search(r'name="csrf" value="([0-9a-f]+)"', login.text)
    assert token
    a = _console(m, "POST", "/console/login",
                 {"__Host-atoll-console-login": pre.split("=", 1)[1].split(";")[0]},
                 _form([("csrf", token.group(1)), ("name", "op"), ("password", PASSWORD)]))
    assert _outcome(a) == "303", a.text[:200]
    cookie = next(c for c in a.cookies if c.startswith("__Host-atoll-console="))
    for c in (cookie, pre):
        flags = {f.strip().split("=")[0].lower(): f.strip() for f in c.split(";")[1:]}
        assert "secure" in flags and "httponly" in flags, c
        assert flags.get("samesite", "").lower() == "samesite=strict", c
        assert flags.get("path") == "Path=/" and "domain" not in flags, c
    assert "Max-Age=28800" in cookie  # 8 hours
    secret = cookie.split(";")[0].split("=", 1)[1]
    session = {"__Host-atoll-console": secret}
    page = _console(m, "GET", "/console/fleet", session)
    assert page.status == 200
    csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', page.text)
    assert csrf
    # logout: the row is gone on the server; the same cookie and token replayed open
    # nothing and act on nothing
    out = _console(m, "POST", "/console/logout", session, _form([("csrf", csrf.group(1))]))
    assert _outcome(out) == "login"
    assert any(c.startswith("__Host-atoll-console=") and "Max-Age=0" in c
               for c in out.cookies), out.cookies
    assert _sha256(secret) not in repr(_snapshot(m.rs.db)["console_sessions"])
    assert _outcome(_console(m, "GET", "/console/fleet", session)) == "login"
    before = _snapshot(m.rs.db)
    replay = _console(m, "POST", "/console/fleet/requests", session, _form([
        ("csrf", csrf.group(1)), ("action", "ack-rollback"), ("host", m.rs.hosts["db01"])]))
    assert _outcome(replay) == "login" and _snapshot(m.rs.db) == before
    # an expired session (its row's expiry moved into the past): refused
    cookies, csrf2 = _session(m.rs, "op")
    db = Database(m.rs.db)
    try:
        with db.write() as s:
            done = s.execute(update(ConsoleSession).where(
                ConsoleSession.secret_sha256 == _sha256(cookies["__Host-atoll-console"]))
                .values(expires_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)))
            assert done.rowcount == 1  # type: ignore[attr-defined]
    finally:
        db.engine.dispose()
    assert _outcome(_console(m, "GET", "/console/fleet", cookies)) == "login"
    before = _snapshot(m.rs.db)
    late = _console(m, "POST", "/console/fleet/requests", cookies, _form([
        ("csrf", csrf2), ("action", "ack-rollback"), ("host", m.rs.hosts["db01"])]))
    assert _outcome(late) == "login" and _snapshot(m.rs.db) == before


def test_another_customers_name_answers_as_an_unknown_one(m: Matrix) -> None:
    """A customer named in a query or a body: out of scope answers exactly as a name
    that does not exist, and nothing is created."""
    unknown = "no-such-customer"
    form = {"id": "scoped-x", "labels": "role=db", "target": f"{CHANNEL} 2", "waves": "100"}
    for caller, method, path, body in [
            ("ob", "GET", "/v1/hosts?customer={}", None),
            ("ob", "GET", "/v1/cves?customer={}", None),
            ("vb", "GET", "/v1/events?customer={}", None),
            ("ob", "GET", "/v1/enrol-tokens?customer={}", None),
            ("ob", "POST", "/v1/enrol-tokens", {"customer": "{}"}),
            ("ob", "POST", "/v1/rollouts", {"id": "scoped-x", "customer": "{}",
                                            "labels": {"role": "db"}, "channel": CHANNEL,
                                            "to_version": "2"})]:
        answers = []
        for name in ("acme", unknown):
            data = None if body is None else json.dumps(body).replace("{}", name).encode()
            before = _snapshot(m.rs.db)
            a = m.send(method, path.replace("{}", name), data,
                       _api_headers(m, caller, data))
            assert _snapshot(m.rs.db) == before
            answers.append((a.status, a.text.replace(name, "X")))
        assert answers[0] == answers[1] and answers[0][0] == 404, (path, answers)
    cookies, csrf = m.sessions["ob"]
    answers = []
    for name in ("acme", unknown):
        before = _snapshot(m.rs.db)
        a = _console(m, "POST", "/console/rollouts", cookies, _form(
            [("csrf", csrf), ("customer", name), *form.items()]))
        assert _snapshot(m.rs.db) == before
        answers.append((a.status, a.text.replace(name, "X")))
    assert answers[0] == answers[1] and answers[0][0] == 404
    # the audit filter: another customer's name matches nothing, as an unknown one
    cookies, _ = m.sessions["vb"]
    pages = [_console(m, "GET", f"/console/audit?customer={n}", cookies) for n in
             ("acme", unknown)]
    assert [p.status for p in pages] == [200, 200]
    assert pages[0].text.replace("acme", "X") == pages[1].text.replace(unknown, "X")
    # known limit (docs/control-plane.md): rollout ids are fleet-wide; a taken one is
    # refused without a word about whose it is
    taken = json.dumps({"id": "acme-base", "customer": "globex", "labels": {"role": "db"},
                        "channel": CHANNEL, "to_version": "2"}).encode()
    before = _snapshot(m.rs.db)
    a = m.send("POST", "/v1/rollouts", taken, _api_headers(m, "ob", taken))
    assert a.status == 409 and "acme" not in a.text.replace("acme-base", "X"), a.text
    assert _snapshot(m.rs.db) == before

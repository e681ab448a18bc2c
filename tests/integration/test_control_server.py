"""The control plane's server on real SQLite and real PostgreSQL over real HTTP:
enrolment, signed check-ins, inventory and history, operators' requests, the lost
sweep and pruning, tenancy on every route, bad input, and the OpenAPI description."""

from __future__ import annotations

import datetime as dt
import json
import socket
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import select, text

from atoll.control.db import Database
from atoll.control.models import Customer, Host, VersionSample
from atoll.control.protocol import MAX_CHECKIN_BYTES, Package, manifest_digest, sign
from atoll.core.errors import HostStateError
from atoll.fleet.client import FleetLockError
from tests.integration.control_fixtures import (
    Control,
    SimHost,
    commit_of,
    control_db_fixture,  # noqa: F401 (a fixture)
    control_fixture,  # noqa: F401 (a fixture)
    host_status,
    pg_fixture,  # noqa: F401 (a fixture)
    start_control,
)


def enrolled(c: Control, name: str, customer: str = "acme", **kw: Any) -> SimHost:
    h = SimHost(c.server.url, name)
    status, doc = h.enrol(c.enrol_token(customer, **kw))
    assert status == 200, doc
    return h


def events(c: Control, **query: Any) -> list[dict[str, Any]]:
    status, doc = c.api.call("GET", "/v1/events", query=query)
    assert status == 200, doc
    return list(doc)


def test_enrol_checkin_inventory_and_history(control: Control) -> None:
    c = control
    c.customer("acme")
    h = enrolled(c, "db01", labels={"site": "fra"})
    status, d = h.checkin()
    assert status == 200, d
    assert d["kind"] == "Directive" and d["target"] is None
    assert d["allow"] == ["download", "prepare", "apply"] and d["requests"] == []
    assert d["counter"] == h.counter and d["host_id"] == h.host_id
    status, host = c.api.call("GET", "/v1/hosts/db01")
    assert status == 200
    assert (host["booted_version"], host["customer"], host["labels"]) == ("1", "acme",
                                                                          {"site": "fra"})
    assert host["report"]["status"]["booted"]["version"] == "1"
    # a new boot into v2, then an automatic rollback to v1
    h.checkin(status=host_status("2", boot_time="2026-12-02T00:00:00Z", update="up-to-date"))
    h.checkin(status=host_status("1", boot_time="2026-12-02T00:05:00Z", result="rolled-back",
                                 reason="health check mariadb failed", rollbacks=1))
    kinds = [e["kind"] for e in events(c, host="db01")]
    assert kinds == ["enrolled", "first-checkin", "boot", "version", "boot", "rollback",
                     "version"]
    rollback = events(c, host="db01", kind="rollback")[0]
    assert rollback["data"]["reason"] == "health check mariadb failed"
    assert rollback["actor"] == f"host:{h.host_id}"
    # a check-in that changes nothing appends nothing
    before = len(events(c))
    assert h.checkin(status=host_status("1", boot_time="2026-12-02T00:05:00Z",
                                        result="rolled-back", rollbacks=1))[0] == 200
    assert len(events(c)) == before
    status, rows = c.api.call("GET", "/v1/hosts", query={"label": "site=fra"})
    assert [r["name"] for r in rows] == ["db01"] and rows[0]["rollback_events"] == 1
    assert c.api.call("GET", "/v1/hosts", query={"label": "site=ber"})[1] == []


def test_manifest_sent_only_when_the_server_asks(control: Control) -> None:
    c = control
    c.customer("acme")
    a, b = enrolled(c, "db01"), enrolled(c, "db02")
    packages = [{"name": "mariadb-server", "version": "1:10.11.6-0+deb12u1"},
                {"name": "libc6", "version": "2.36-9", "architecture": "amd64"}]
    sha = manifest_digest([Package.model_validate(p) for p in packages])
    status, d = a.checkin(manifest_sha256=sha)
    assert d["manifest_wanted"] is True
    status, d = a.checkin(manifest_sha256=sha, manifest=packages)
    assert status == 200 and d["manifest_wanted"] is False
    # another host with the same image: the server has it already
    assert b.checkin(manifest_sha256=sha)[1]["manifest_wanted"] is False
    status, host = c.api.call("GET", "/v1/hosts/db02", query={"packages": "true"})
    assert host["packages"] == packages and host["manifest_sha256"] == sha
    # a manifest that is not what its hash says is refused
    status, err = a.checkin(manifest_sha256=sha, manifest=packages[:1])
    assert (status, err["kind"]) == (422, "invalid")


def test_a_host_cycling_manifests_does_not_grow_the_database(control: Control) -> None:
    """A host owns its machine: a new manifest at every check-in must not pile up
    (each up to 2 MiB); one still run by another host stays, and a host that comes
    back to a deleted one is asked for it again."""
    from sqlalchemy import func, select

    from atoll.control.models import Manifest

    c = control
    c.customer("acme")
    a, b = enrolled(c, "db01"), enrolled(c, "db02")

    def manifest(i: int) -> tuple[str, list[dict[str, str]]]:
        packages = [{"name": "libc6", "version": f"2.36-{i}"}]
        return manifest_digest([Package.model_validate(p) for p in packages]), packages

    def stored() -> set[str]:
        with c.db.read() as s:
            assert s.scalar(select(func.count()).select_from(Manifest)) is not None
            return set(s.scalars(select(Manifest.sha256)))

    shared, shared_pkgs = manifest(0)
    assert a.checkin(manifest_sha256=shared, manifest=shared_pkgs)[0] == 200
    assert b.checkin(manifest_sha256=shared)[1]["manifest_wanted"] is False
    for i in range(1, 8):
        sha, pkgs = manifest(i)
        assert a.checkin(manifest_sha256=sha, manifest=pkgs)[0] == 200
    assert stored() == {shared, manifest(7)[0]}  # db02 still runs the shared one
    assert b.checkin(manifest_sha256=manifest(7)[0])[0] == 200
    assert stored() == {manifest(7)[0]}
    # db01 rolls back to the first image: asked for its manifest again, and it is kept
    status, d = a.checkin(manifest_sha256=shared)
    assert status == 200 and d["manifest_wanted"] is True
    assert a.checkin(manifest_sha256=shared, manifest=shared_pkgs)[1]["manifest_wanted"] \
        is False
    assert stored() == {shared, manifest(7)[0]}
    status, host = c.api.call("GET", "/v1/hosts/db01", query={"packages": "true"})
    assert host["packages"] == shared_pkgs


def test_a_manifest_stored_by_two_checkins_at_once_is_stored_once(control: Control) -> None:
    """Hosts booting one new image send its manifest at the same moment: each check-in
    saw it missing, the second insert must not fail (on PostgreSQL: a 500, the check-in
    lost) but leave the one row."""
    import threading

    from sqlalchemy import select

    from atoll.control.models import Manifest
    from atoll.control.service import _add_manifest

    c = control
    packages = [{"name": "libc6", "version": "2.36-9"}]
    sha = manifest_digest([Package.model_validate(p) for p in packages])
    now = c.clock()
    first_in = threading.Event()
    done: list[str] = []

    def second() -> None:  # its transaction waits for the first's row, then adds none
        first_in.wait(10)
        with c.db.write() as s:
            _add_manifest(s, sha, now, packages)
        done.append("second")

    t = threading.Thread(target=second)
    t.start()
    with c.db.write() as s:
        _add_manifest(s, sha, now, packages)
        first_in.set()
        done.append("first")
    t.join(30)
    assert done == ["first", "second"]
    with c.db.read() as s:
        assert list(s.scalars(select(Manifest.sha256))) == [sha]


def test_replays_and_hosts_reporting_for_others_are_refused(control: Control) -> None:
    c = control
    c.customer("acme")
    a, b = enrolled(c, "db01"), enrolled(c, "db02")
    doc = a.report()
    assert a.send(doc)[0] == 200
    status, err = a.send(doc)  # the same check-in again
    assert (status, err["kind"]) == (409, "replay")
    older = a.report()
    older["counter"] = 1
    assert a.send(older)[1]["kind"] == "replay"
    # A signs a report about B, naming itself in the header: the body must be its own
    forged = b.report()
    status, err = a.send(forged)
    assert (status, err["kind"]) == (403, "forbidden")
    # A signs a report naming B in the header: B's key does not verify it
    status, err = a.send(b.report(), host_id=b.host_id)
    assert (status, err["kind"]) == (401, "unauthorized")
    # a key nobody enrolled, an unsigned check-in
    assert a.send(a.report(), key=Ed25519PrivateKey.generate())[0] == 401
    status, _, _ = a.api.raw("POST", "/v1/checkin", json.dumps(a.report()).encode(),
                             {"Content-Type": "application/json"})
    assert status == 401
    status, host = c.api.call("GET", "/v1/hosts/db02")
    assert host["checkins"] == 0 and host["last_seen"] is None  # nothing from A landed


def test_a_checkin_still_being_sent_gets_the_413_not_a_reset(control: Control) -> None:
    # The guard refuses a declared body over 2 MiB before reading it. The server must
    # still read what the client sends (up to twice the limit) before it closes: a client
    # that writes its whole body before it reads (Python's http.client, most scripts)
    # would otherwise fail with "broken pipe" and never see the 413.
    url = urllib.parse.urlsplit(control.api.url)
    body = b"x" * (MAX_CHECKIN_BYTES + (1 << 20))
    head = (f"POST /v1/checkin HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    with socket.create_connection((url.hostname, url.port), timeout=20) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
        sent: list[BaseException | None] = []
        sender = threading.Thread(target=_send, args=(sock, head + body, sent))
        sender.start()
        time.sleep(0.5)  # the answer is sent (and a reset would be) before it is read
        f = sock.makefile("rb")
        status_line = f.readline()
        rest = f.read()  # to the end: a FIN
        sender.join(timeout=30)
    assert sent == [None], sent  # the whole body went out: no reset under the sender
    assert status_line.startswith(b"HTTP/1.1 413 "), status_line
    assert json.loads(rest.partition(b"\r\n\r\n")[2])["kind"] == "request_too_large"


def _send(sock: socket.socket, data: bytes, outcome: list[BaseException | None]) -> None:
    try:
        sock.sendall(data)
        outcome.append(None)
    except OSError as exc:
        outcome.append(exc)


def test_bad_input_changes_nothing(control: Control) -> None:
    c = control
    c.customer("acme")
    h = enrolled(c, "db01")
    assert h.checkin()[0] == 200

    def refused(body: bytes, status: int, kind: str, **kw: Any) -> None:
        got, err = h.send(body, **kw)
        assert (got, err["kind"]) == (status, kind), err

    refused(b'{"host_id": ', 400, "malformed_json")
    refused(b"[1, 2]", 422, "invalid")
    doc = h.report()
    refused(json.dumps(doc | {"surprise": 1}).encode(), 422, "invalid")
    refused(json.dumps(h.report()).encode(), 415, "unsupported_media_type",
            content_type="text/plain")
    bad = h.report()
    bad["status"]["booted"]["commit"] = "not-a-commit"
    refused(json.dumps(bad).encode(), 422, "invalid")
    huge = h.report(manifest_sha256="0" * 64,
                    manifest=[{"name": f"p{i}", "version": "1" * 150} for i in range(12000)])
    body = json.dumps(huge).encode()
    assert len(body) > MAX_CHECKIN_BYTES
    refused(body, 413, "request_too_large")
    many = h.report(manifest_sha256="0" * 64,
                    manifest=[{"name": f"p{i}", "version": "1"} for i in range(20001)])
    refused(json.dumps(many).encode(), 422, "invalid")
    # operators' bodies too
    status, err = c.api.call("POST", "/v1/customers", {"name": "x", "extra": 1})
    assert (status, err["kind"]) == (422, "invalid")
    status, err, _ = c.api.raw("POST", "/v1/customers", b"{nope", {
        "Content-Type": "application/json", "Authorization": f"Bearer {c.admin}"})
    assert (status, err["kind"]) == (400, "malformed_json")
    status, err, _ = c.api.raw("POST", "/v1/customers", b"x" * 70000, {
        "Content-Type": "application/json", "Authorization": f"Bearer {c.admin}"})
    assert (status, err["kind"]) == (413, "request_too_large")
    # numbers past what the databases or the clock hold: 422, never an internal error
    big = 10**20
    for method, path, payload in (
            ("POST", f"/v1/requests/{big}/cancel", None),
            ("GET", f"/v1/events?after={big}", None),
            ("GET", "/v1/events?since=9999-12-31T23:59:59-23:59", None),
            ("GET", "/v1/events?since=0001-01-01T00:00:00%2B14:00", None),
            ("POST", "/v1/tokens", {"name": "t9", "role": "viewer", "expires_in_s": big}),
            ("POST", "/v1/enrol-tokens", {"customer": "acme", "expires_in_s": big}),
            ("POST", "/v1/prune", {"lost_for_s": big}),
            ("POST", "/v1/hosts/db01/labels", {"set": {"site\n": "x"}}),
            ("POST", "/v1/rollouts", {"id": "r9", "customer": "acme", "labels": {},
                                      "channel": "site/db", "versions": [], "to_version": "2",
                                      "spec": {"budget": {"max_failures": "5"}}}),
            ("POST", "/v1/rollouts", {"id": "r9", "customer": "acme", "labels": {},
                                      "channel": "site/db", "versions": [], "to_version": "2",
                                      "spec": {"budget": [1]}})):
        status, err = c.api.call(method, path, payload)
        assert status in (404, 422) and err["kind"] != "internal_error", (path, err)
    status, host = c.api.call("GET", "/v1/hosts/db01")
    assert host["checkins"] == 1  # none of those was recorded
    assert [e["kind"] for e in events(c, host="db01")] == ["enrolled", "first-checkin"]


def test_enrolment_tokens_are_one_time_and_bound(control: Control) -> None:
    c = control
    c.customer("acme")
    token = c.enrol_token("acme")
    a = SimHost(c.server.url, "db01")
    assert a.enrol(token)[0] == 200
    status, err = SimHost(c.server.url, "db02").enrol(token)
    assert status == 401  # spent
    status, err = SimHost(c.server.url, "db01").enrol(c.enrol_token("acme"))
    assert (status, err["kind"]) == (409, "conflict")  # the name is taken
    status, err = SimHost(c.server.url, "db03").enrol(c.enrol_token("acme", host_name="db04"))
    assert status == 403
    # a token made for db01 replaces its key (a reinstalled host); the old key is dead
    new = SimHost(c.server.url, "db01")
    assert new.enrol(c.enrol_token("acme", host_name="db01"))[0] == 200
    assert new.host_id == a.host_id
    assert a.checkin()[0] == 401 and new.checkin()[0] == 200
    assert SimHost(c.server.url, "db05").enrol(c.admin)[0] == 401  # an operator token


def test_requests_reach_the_host_and_come_back_done(control: Control) -> None:
    c = control
    c.customer("acme")
    h = enrolled(c, "db01")
    h.checkin(policy={"mode": "prepare", "windows": [], "operator_apply": False})
    status, err = c.api.call("POST", "/v1/hosts/db01/requests", {"kind": "apply"})
    assert (status, err["kind"]) == (409, "conflict")  # the customer did not allow it
    status, req = c.api.call("POST", "/v1/hosts/db01/requests",
                             {"kind": "pin", "args": {"deployment": "booted"}})
    assert status == 201 and req["state"] == "queued"
    assert c.api.call("POST", "/v1/hosts/db01/requests", {"kind": "reboot"})[0] == 422
    d = h.checkin()[1]
    assert [(r["id"], r["kind"]) for r in d["requests"]] == [(req["id"], "pin")]
    assert h.checkin()[1]["requests"]  # until the host reports it
    d = h.checkin(requests=[{"id": req["id"], "result": "done", "message": "pinned"}])[1]
    assert d["requests"] == []
    host = c.api.call("GET", "/v1/hosts/db01")[1]
    assert host["requests"][0]["state"] == "done"
    assert "request-done" in [e["kind"] for e in events(c, host="db01")]
    # with the customer's consent (and a window) an apply may be requested
    h.checkin(policy={"mode": "prepare", "windows": ["Sat 02:00-04:00 UTC"],
                      "operator_apply": True})
    assert c.api.call("POST", "/v1/hosts/db01/requests", {"kind": "apply"})[0] == 201


def test_lost_hosts_are_marked_once_and_pruned(control: Control) -> None:
    c = control
    c.customer("acme")
    a, b = enrolled(c, "db01"), enrolled(c, "db02")
    a.checkin()
    b.checkin()
    c.clock.now += dt.timedelta(hours=2)
    b.checkin()
    assert c.server.sweep() == [a.host_id]
    assert c.server.sweep() == []
    rows = c.api.call("GET", "/v1/hosts", query={"lost": "true"})[1]
    assert [r["name"] for r in rows] == ["db01"]
    a.checkin()  # back
    assert c.api.call("GET", "/v1/hosts/db01")[1]["lost"] is False
    c.clock.now += dt.timedelta(days=40)
    b.checkin()
    c.server.sweep()
    out = c.api.call("POST", "/v1/prune", {"lost_for_s": 30 * 86400})[1]
    assert [h["name"] for h in out["pruned"]] == ["db01"]
    assert c.api.call("GET", "/v1/hosts/db01")[0] == 404
    # its history stays, findable by name
    assert [e["kind"] for e in events(c, host="db01")][-4:] == ["lost", "found", "lost",
                                                                 "pruned"]
    assert a.checkin()[0] == 401  # pruned: it enrols again


# -- tenancy: every route, every role, a foreign customer ----------------------------

ROUTES: list[tuple[str, str, Any, str]] = [
    # method, path, body, the least role that may
    ("GET", "/v1/hosts", None, "viewer"),
    ("GET", "/v1/hosts/{host}", None, "viewer"),
    ("GET", "/v1/events", None, "viewer"),
    ("GET", "/v1/cves", None, "viewer"),
    ("GET", "/v1/customers", None, "viewer"),
    ("POST", "/v1/hosts/{host}/labels", {"set": {"role": "db"}}, "operator"),
    ("POST", "/v1/hosts/{host}/requests", {"kind": "ack-rollback"}, "operator"),
    ("POST", "/v1/enrol-tokens", {"customer": "{customer}"}, "operator"),
    ("GET", "/v1/enrol-tokens", None, "operator"),
    ("POST", "/v1/enrol-tokens/{etoken}/revoke", None, "operator"),
    ("POST", "/v1/requests/{request}/cancel", None, "operator"),
    ("POST", "/v1/prune", {"lost_for_s": 0}, "admin"),
    ("GET", "/v1/tokens", None, "admin*"),
    ("POST", "/v1/tokens", {"name": "t{n}", "role": "viewer"}, "admin*"),
    ("POST", "/v1/tokens/victim/revoke", None, "admin*"),
    ("POST", "/v1/customers", {"name": "c{n}"}, "admin*"),
    ("POST", "/v1/rollouts", {"id": "r{n}", "customer": "{customer}", "channel": "site/db",
                              "versions": [{"version": v, "commit": commit_of(v)}
                                           for v in ("1", "2")],
                              "to_version": "2"}, "operator"),
    ("GET", "/v1/rollouts", None, "viewer"),
    ("GET", "/v1/rollouts/r0", None, "viewer"),
    ("POST", "/v1/rollouts/r0/halt", None, "operator"),
    ("POST", "/v1/rollouts/r0/resume", None, "operator"),
    ("POST", "/v1/rollouts/r0/abort", None, "operator"),
]
ROLES = ["viewer", "operator", "admin"]


def _fill(value: Any, names: dict[str, str]) -> Any:
    if isinstance(value, str):
        return value.format(**names)
    if isinstance(value, dict):
        return {k: _fill(v, names) for k, v in value.items()}
    return value


def test_every_route_is_authorized(control: Control) -> None:
    c = control
    c.customer("acme")
    c.customer("beta")
    h = enrolled(c, "db01", "acme")
    h.checkin()
    foreign = enrolled(c, "db09", "beta")
    foreign.checkin(status=host_status("7"))
    c.token("victim", "viewer")
    etoken = str(c.api.call("POST", "/v1/enrol-tokens", {"customer": "acme"})[1]["id"])
    status, doc = c.api.call("POST", "/v1/rollouts", _fill(ROUTES[-6][2], {
        "n": "0", "customer": "acme"}))
    assert status == 201, doc
    tokens = {(role, scope): c.token(f"{role}-{scope}", role, None if scope == "all"
                                     else [scope])
              for role in ROLES for scope in ("all", "acme")}
    n = 0
    for method, path, body, least in ROUTES:
        everywhere = least.endswith("*")
        need = least.rstrip("*")
        for (role, scope), token in tokens.items():
            n += 1
            req = c.api.call("POST", "/v1/hosts/db01/requests", {"kind": "cancel"})[1]
            names = {"host": "db01", "customer": "acme", "request": str(req["id"]),
                     "n": str(n), "etoken": etoken}
            status, doc = c.api.call(method, _fill(path, names), _fill(body, names),
                                     token=token)
            allowed = ROLES.index(role) >= ROLES.index(need) and (
                scope == "all" or not everywhere)
            assert (status < 300) == allowed, (method, path, role, scope, status, doc)
            if not allowed:
                assert status == 403 and doc["kind"] == "forbidden"
        # a token without a valid secret, and none at all
        for bad in ("atl_op_nope", ""):
            status, doc = c.api.call(method, _fill(path, {"host": "db01", "customer": "acme",
                                                          "request": "1", "n": "x",
                                                          "etoken": etoken}),
                                     body and _fill(body, {"customer": "acme", "n": "x"}),
                                     token=bad)
            assert status == 401, (method, path, doc)
    # a customer's operator sees nothing of another customer
    acme = tokens[("admin", "acme")]
    assert [r["name"] for r in c.api.call("GET", "/v1/hosts", token=acme)[1]] == ["db01"]
    for path in ("/v1/hosts/db09", f"/v1/hosts/{foreign.host_id}"):
        assert c.api.call("GET", path, token=acme)[0] == 404
    assert c.api.call("GET", "/v1/hosts", query={"customer": "beta"}, token=acme)[0] == 404
    assert c.api.call("POST", "/v1/hosts/db09/requests", {"kind": "cancel"},
                      token=acme)[0] == 404
    assert c.api.call("POST", "/v1/hosts/db09/labels", {"set": {"a": "b"}},
                      token=acme)[0] == 404
    assert c.api.call("POST", "/v1/enrol-tokens", {"customer": "beta"}, token=acme)[0] == 404
    seen = c.api.call("GET", "/v1/events", query={"limit": 1000}, token=acme)[1]
    assert seen and all(e["customer"] == "acme" for e in seen)
    assert not any(e["host_name"] == "db09" for e in seen)
    assert c.api.call("GET", "/v1/events", query={"host": "db09"}, token=acme)[1] == []
    assert [x["name"] for x in c.api.call("GET", "/v1/customers", token=acme)[1]] == ["acme"]
    assert c.api.call("POST", "/v1/prune", {"lost_for_s": 0}, token=acme)[0] == 200
    assert c.api.call("GET", "/v1/hosts/db09")[0] == 200  # the admin of all still sees it


def test_revoked_and_expired_tokens_stop_working(control: Control) -> None:
    c = control
    t = c.token("temp", "viewer")
    assert c.api.call("GET", "/v1/hosts", token=t)[0] == 200
    assert c.api.call("POST", "/v1/tokens/temp/revoke")[1]["changed"] is True
    assert c.api.call("GET", "/v1/hosts", token=t)[0] == 401
    doc = c.api.call("POST", "/v1/tokens", {"name": "short", "role": "viewer",
                                            "expires_in_s": 60})[1]
    c.clock.now += dt.timedelta(minutes=2)
    assert c.api.call("GET", "/v1/hosts", token=doc["token"])[0] == 401
    listed = c.api.call("GET", "/v1/tokens")[1]
    assert all("token" not in t and "secret_sha256" not in t for t in listed)


def test_enrolment_tokens_are_listed_and_revoked(control: Control) -> None:
    c = control
    c.customer("acme")
    c.customer("beta")
    made = c.api.call("POST", "/v1/enrol-tokens", {"customer": "acme", "host_name": "db01"})[1]
    other = c.api.call("POST", "/v1/enrol-tokens", {"customer": "beta"})[1]
    listed = c.api.call("GET", "/v1/enrol-tokens")[1]
    assert [(t["id"], t["customer"], t["state"]) for t in listed] == [
        (made["id"], "acme", "valid"), (other["id"], "beta", "valid")]
    assert all("token" not in t and "secret_sha256" not in t for t in listed)
    acme = c.token("acme-op", "operator", ["acme"])
    assert [t["id"] for t in c.api.call("GET", "/v1/enrol-tokens", token=acme)[1]] == [
        made["id"]]
    # another customer's token does not exist for a scoped operator
    assert c.api.call("POST", f"/v1/enrol-tokens/{other['id']}/revoke", token=acme)[0] == 404
    status, out = c.api.call("POST", f"/v1/enrol-tokens/{made['id']}/revoke", token=acme)
    assert status == 200 and out["changed"] is True and out["state"] == "revoked"
    assert c.api.call("POST", f"/v1/enrol-tokens/{made['id']}/revoke")[1]["changed"] is False
    # a revoked token enrols nothing
    status, doc = SimHost(c.server.url, "db01").enrol(made["token"])
    assert status == 401 and "revoked" in doc["brief"], doc
    assert c.api.call("GET", "/v1/enrol-tokens", query={"valid": True})[1][0]["id"] == \
        other["id"]
    kinds = [e["kind"] for e in c.api.call("GET", "/v1/events", query={"customer": "acme"})[1]]
    assert kinds.count("enrol-token-revoked") == 1


def test_openapi_describes_every_route(control: Control) -> None:
    status, spec = control.api.call("GET", "/openapi.json")
    assert status == 200 and spec["openapi"].startswith("3.")
    paths = spec["paths"]
    listed = set()
    for method, path, _, _ in ROUTES:
        template = path.replace("{host}", "{ref}").replace("{request}", "{request_id}")
        template = template.replace("{etoken}", "{token_id}")
        template = template.replace("victim", "{name}").replace("/r0", "/{rollout_id}")
        assert method.lower() in paths[template], path
        listed.add((method.lower(), template))
    # and every operator route is in ROUTES (so test_every_route_is_authorized runs it)
    public = {("get", "/v1/health"), ("post", "/v1/enrol"), ("post", "/v1/checkin")}
    # needs a server reading an update repository: authorized in test_releases.py
    public |= {("get", "/v1/releases")}
    assert {(m, p) for p, ops in paths.items() for m in ops} - public == listed
    checkin = paths["/v1/checkin"]["post"]
    body = checkin["requestBody"]["content"]["application/json"]["schema"]
    assert "counter" in body["properties"] and body["additionalProperties"] is False
    assert any(p["name"] == "Atoll-Signature" for p in checkin["parameters"])


def test_events_are_append_only(control_db: Database) -> None:
    from atoll.control.models import Event
    from atoll.control.service import record

    now = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
    with control_db.write() as s:
        record(s, now, "server", "test", {})
    old = dt.datetime.now(dt.UTC) - dt.timedelta(days=31)
    with control_db.write() as s:
        record(s, old, "server", "old", {})
    for statement in ("UPDATE events SET kind = 'x'", "DELETE FROM events",
                      "UPDATE events SET kind = 'x' WHERE kind = 'old'"):
        with pytest.raises(Exception, match="append-only"), control_db.write() as s:
            s.execute(text(statement))
    with control_db.read() as s:
        assert sorted(e.kind for e in s.query(Event)) == ["old", "test"]
    # only the retention's path: an event older than 30 days may be deleted
    with control_db.write() as s:
        s.execute(text("DELETE FROM events WHERE kind = 'old'"))
    with control_db.read() as s:
        assert [e.kind for e in s.query(Event)] == ["test"]


def test_a_newer_schema_is_refused(control_db: Database) -> None:
    with control_db.write() as s:
        s.execute(text("UPDATE alembic_version SET version_num = '9999_future'"))
    with pytest.raises(HostStateError, match="newer atoll"):
        control_db.upgrade()
    with pytest.raises(HostStateError, match="newer atoll"):
        control_db.require_current()


def test_commit_helper_is_a_commit() -> None:
    assert len(commit_of("1")) == 64


def test_the_one_site_setup_from_the_command_line(tmp_path: Path) -> None:
    """`atoll fleet db init` and `atoll fleet serve` as processes on a SQLite file, with
    FleetLock served at /fleetlock; the operators' CLI reads the inventory."""
    import os
    import subprocess
    import sys
    import time
    import urllib.request

    from atoll.fleet.client import FleetLockClient
    from tests.services import free_port

    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ, PYTHONPATH=str(root / "src"))
    db, token = f"sqlite:///{tmp_path}/control.db", tmp_path / "admin-token"

    def atoll(*argv: str) -> Any:
        done = subprocess.run([sys.executable, "-m", "atoll.cli", *argv, "--json"], env=env,
                              capture_output=True, timeout=120, check=False)
        assert done.returncode == 0, done.stderr.decode()
        return json.loads(done.stdout)

    atoll("fleet", "db", "init", "--db", db, "--token-file", str(token))
    assert token.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "control.db").stat().st_mode & 0o077 == 0  # token hashes, host keys
    url = f"http://127.0.0.1:{free_port()}"
    log = open(tmp_path / "serve.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, "-m", "atoll.cli", "fleet", "serve", "--db", db,
                             "--listen", url.removeprefix("http://"), "--fleetlock-embedded",
                             str(tmp_path / "locks.db")], stdout=log, stderr=log, env=env)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()
            try:
                urllib.request.urlopen(url + "/v1/health", timeout=2).read()
                break
            except OSError:
                assert time.monotonic() < deadline, "the server did not start"
                time.sleep(0.2)
        ops = ("--server", url, "--token-file", str(token))
        atoll("fleet", "customers", "add", "acme", *ops)
        enrol = atoll("fleet", "enrol-token", "create", "--customer", "acme", "--host", "db01",
                      "--label", "site=fra", "--out", str(tmp_path / "enrol"), *ops)
        assert enrol["token"] is None  # written to the file, not printed
        h = SimHost(url, "db01")
        assert h.enrol((tmp_path / "enrol").read_text().strip())[0] == 200
        assert h.checkin(status=host_status("1"))[0] == 200
        hosts = atoll("fleet", "hosts", "--label", "site=fra", *ops)
        assert [(x["name"], x["customer"], x["booted_version"]) for x in hosts] == [
            ("db01", "acme", "1")]
        # a rollout from the command line: created, read, halted, resumed, aborted
        made = atoll("fleet", "rollout", "create", "r1", "--customer", "acme", "--label",
                     "site=fra", "--channel", "site/db", "--to", "2", "--version",
                     f"1={commit_of('1')}", "--version", f"2={commit_of('2')}",
                     "--waves", "50,100", "--soak", "10m", "--max-failures", "1", *ops)
        assert (made["state"], made["members"], made["spec"]["soak_s"]) == ("running", 1, 600)
        assert made["spec"]["waves"] == [50, 100]
        assert [r["id"] for r in atoll("fleet", "rollout", "status", *ops)] == ["r1"]
        shown = atoll("fleet", "rollout", "status", "r1", "--hosts", *ops)
        assert [x["name"] for x in shown["hosts"]] == ["db01"]
        assert atoll("fleet", "rollout", "halt", "r1", "--reason", "wait", *ops)["state"] \
            == "halted"
        assert atoll("fleet", "rollout", "resume", "r1", *ops)["state"] == "running"
        assert atoll("fleet", "rollout", "abort", "r1", *ops)["state"] == "aborted"
        bad = subprocess.run([sys.executable, "-m", "atoll.cli", "fleet", "rollout", "create",
                              "r2", "--channel", "c", "--to", "2", "--version", "nocommit",
                              *ops], env=env, capture_output=True, timeout=120, check=False)
        assert bad.returncode != 0 and b"VERSION=COMMIT" in bad.stderr
        assert b"Traceback" not in bad.stderr
        # FleetLock in the same process: one slot (the default group)
        lock = FleetLockClient(url + "/fleetlock/")
        lock.pre_reboot("db01")
        with pytest.raises(FleetLockError):
            lock.pre_reboot("db02")
        lock.steady_state("db01")
        lock.pre_reboot("db02")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
    assert proc.returncode == 0, (tmp_path / "serve.log").read_text()


def test_a_host_is_held_to_its_checkin_and_event_budgets(control_db: Database) -> None:
    """A host checking in faster than its budget gets 429 with Retry-After and nothing
    is recorded; events over its event budget are not written, the report still is."""
    from atoll.control.app import Settings
    from atoll.control.limits import Bucket

    c = start_control(control_db, settings=Settings(checkin_limit=Bucket(3, 3600.0),
                                                    event_limit=Bucket(1, 3600.0)))
    try:
        c.customer("acme")
        h = enrolled(c, "db01")
        assert h.checkin()[0] == 200  # first-checkin: the one event of the budget
        assert h.checkin(status=host_status("2", result="rolled-back", rollbacks=1))[0] == 200
        status, host = c.api.call("GET", "/v1/hosts/db01")
        assert host["booted_version"] == "2"  # the report is kept
        assert [e["kind"] for e in events(c, host="db01")] == ["enrolled", "first-checkin"]
        assert h.checkin()[0] == 200
        body = json.dumps(h.report(), sort_keys=True).encode()
        status, doc, headers = h.api.raw("POST", "/v1/checkin", body, {
            "Content-Type": "application/json", "Atoll-Signature": sign(h.key, h.host_id,
                                                                        body)})
        assert status == 429 and doc["kind"] == "rate_limited", doc
        assert int(headers["retry-after"]) >= 1
        assert c.api.call("GET", "/v1/hosts/db01")[1]["checkins"] == 3
    finally:
        c.server.stop()


def test_events_past_the_retention_are_pruned_and_younger_ones_kept(control: Control) -> None:
    from atoll.control.service import record

    c = control
    now = c.clock()
    with c.db.write() as s:
        for days in (500, 401, 399, 10):
            record(s, now - dt.timedelta(days=days), "server", f"old-{days}", {})
        # an operator's action: the audit trail outlives the retention
        record(s, now - dt.timedelta(days=900), "operator:admin", "labels", {})
    assert c.server.prune_events() == 2  # the default retention: 400 days
    kinds = [e["kind"] for e in events(c)]
    assert "old-500" not in kinds and "old-401" not in kinds and "labels" in kinds
    assert {"old-399", "old-10", "events-pruned"} <= set(kinds)
    pruned = next(e for e in events(c) if e["kind"] == "events-pruned")
    assert pruned["data"]["count"] == 2 and pruned["actor"] == "server"
    assert c.server.prune_events() == 0
    # the version samples: the server's one an hour, pruned with the events
    c.customer("acme")
    with c.db.write() as s:
        cid = s.scalars(select(Customer.id).where(Customer.name == "acme")).one()
        s.add(Host(id="h-1", customer_id=cid, name="db01", public_key="k",
                   enrolled_at=now, booted_version="7"))
        s.add(VersionSample(bucket=now - dt.timedelta(days=401), customer_id=cid,
                            version="6", hosts=1))
    assert c.server.sample_versions() == 1
    assert c.server.sample_versions() == 0  # this hour has its sample
    c.server.prune_events()
    with c.db.read() as s:
        assert [(v.bucket, v.version, v.hosts) for v in s.scalars(select(VersionSample))] \
            == [(now.replace(minute=0, second=0, microsecond=0), "7", 1)]


@pytest.mark.parametrize("option", [
    ["--checkin-limit", "30/0"],        # would mean "no limit", silently
    ["--checkin-limit", "30/inf"],      # would lock a host out for good
    ["--event-limit", "200/nan"],
    ["--event-retention", "1000000d"],  # the hourly pass would overflow (year < 1)
    ["--event-retention", "99999999999d"],
    ["--lost-after", "99999999999d"],
])
def test_fleet_serve_refuses_bad_budgets_and_durations(
        option: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from atoll.cli import main

    assert main(["fleet", "serve", "--db", f"sqlite:///{tmp_path}/c.db", "--listen",
                 "127.0.0.1:0", *option]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {option[0]}: ") and "internal error" not in err, err
    assert not (tmp_path / "c.db").exists()  # refused before anything is written


def test_replaying_a_captured_checkin_does_not_spend_the_hosts_budget(
        control_db: Database) -> None:
    """Whoever captured one signed check-in (a proxy's log, plain HTTP) and sends it
    again and again gets 409 each time, and the host itself is not locked out (429)."""
    from atoll.control.app import Settings
    from atoll.control.limits import Bucket

    c = start_control(control_db, settings=Settings(checkin_limit=Bucket(3, 3600.0)))
    try:
        c.customer("acme")
        h = enrolled(c, "db01")
        body = json.dumps(h.report(), sort_keys=True).encode()
        headers = {"Content-Type": "application/json",
                   "Atoll-Signature": sign(h.key, h.host_id, body)}
        statuses = [h.api.raw("POST", "/v1/checkin", body, headers)[0] for _ in range(10)]
        assert statuses == [200] + [409] * 9, statuses
        assert [h.checkin()[0] for _ in range(3)] == [200, 200, 429]  # its own budget
    finally:
        c.server.stop()


def test_a_wrong_enrolment_token_never_waits_for_the_write_lock(control: Control) -> None:
    """/v1/enrol is open to anyone who can reach the port: a wrong token is refused by
    a read, so a flood of them cannot queue on SQLite's one writer (check-ins would
    wait, then fail with 503). Here a writer holds the lock while the knock comes."""
    import threading

    c = control
    c.customer("acme")
    held, answered = threading.Event(), threading.Event()

    def writer() -> None:
        with c.db.write() as s:
            s.execute(text("UPDATE customers SET name = name"))
            held.set()
            answered.wait(60)

    t = threading.Thread(target=writer)
    t.start()
    try:
        assert held.wait(10)
        status, doc = SimHost(c.server.url, "db01").enrol("atl_en_" + "x" * 43)
    finally:
        answered.set()
        t.join(30)
    assert (status, doc["kind"]) == (401, "unauthorized"), doc
    assert enrolled(c, "db01").host_id  # a good token still enrols


def test_checkins_are_admitted_a_few_at_a_time(control: Control,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """At most CHECKIN_CONCURRENCY check-ins run at once (the others wait in the event
    loop, not in threads holding database connections), and every one is answered: a
    burst during a rollout ran the pool out without it (docs/control-plane.md, "HTTP")."""
    import threading
    import time
    import urllib.error
    import urllib.request

    from atoll.control import service
    from atoll.control.app import CHECKIN_CONCURRENCY

    inside, most, lock = 0, 0, threading.Lock()
    real = service.checkin

    def counted(*args: Any, **kwargs: Any) -> Any:
        nonlocal inside, most
        with lock:
            inside += 1
            most = max(most, inside)
        try:
            time.sleep(0.05)  # long enough for the others to pile up
            return real(*args, **kwargs)
        finally:
            with lock:
                inside -= 1

    monkeypatch.setattr(service, "checkin", counted)
    statuses: list[int] = []

    def knock() -> None:
        req = urllib.request.Request(f"{control.server.url}/v1/checkin", data=b"{}",
                                     headers={"Content-Type": "application/json",
                                              "Atoll-Signature": "host=x;ed25519=AA=="})
        try:
            urllib.request.urlopen(req, timeout=60)
        except urllib.error.HTTPError as exc:
            statuses.append(exc.code)

    threads = [threading.Thread(target=knock) for _ in range(5 * CHECKIN_CONCURRENCY)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    assert statuses == [401] * len(threads)  # each answered (not a 500 from the pool)
    assert most == CHECKIN_CONCURRENCY

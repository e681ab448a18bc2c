"""The control plane on real databases, real HTTP on 127.0.0.1, and simulated hosts.

``control_db`` is parametrized over SQLite (a file) and PostgreSQL (Debian's 15,
started once per session by ``tests/services.py``; a fresh database per test).
``SimHost`` is a host that speaks the protocol (its own Ed25519 key, signed
check-ins) without a sysroot: for the server's tests. Real agents are in
test_control_agent.py.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import http.client
import itertools
import json
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from atoll.control import operations
from atoll.control.app import Settings
from atoll.control.db import Database
from atoll.control.protocol import b64encode, sign
from atoll.control.server import ControlServer
from tests.services import PostgreSQL, postgresql

_names = itertools.count()


@pytest.fixture(scope="session", name="pg")
def pg_fixture() -> Iterator[PostgreSQL]:
    with postgresql() as server:
        yield server


def _new_db(kind: str, tmp_path: Path, pg_server: PostgreSQL | None) -> Database:
    if kind == "sqlite":
        return Database(f"sqlite:///{tmp_path}/control.db")
    assert pg_server is not None
    return Database(pg_server.create_database(f"t{next(_names)}_{tmp_path.name[-20:]}"
                                              .replace("-", "_").lower()))


@pytest.fixture(params=["sqlite", "postgresql"], name="control_db")
def control_db_fixture(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    pg_server = request.getfixturevalue("pg") if request.param == "postgresql" else None
    db = _new_db(request.param, tmp_path, pg_server)
    db.upgrade()
    yield db
    db.close()


@pytest.fixture(name="pg_db")
def pg_db_fixture(pg: PostgreSQL, tmp_path: Path) -> Iterator[Database]:
    db = _new_db("postgresql", tmp_path, pg)
    db.upgrade()
    yield db
    db.close()


class Clock:
    def __init__(self, now: dt.datetime | None = None):
        self.now = now or dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.now


@dataclass
class Api:
    """HTTP calls to a server: (status, decoded JSON)."""

    url: str
    token: str | None = None

    def raw(self, method: str, path: str, body: bytes | None = None,
            headers: dict[str, str] | None = None) -> tuple[int, Any, dict[str, str]]:
        parts = urllib.parse.urlsplit(self.url)
        conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=60)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            data = resp.read()
        finally:
            conn.close()
        try:
            doc = json.loads(data) if data else None
        except ValueError:
            doc = data
        return resp.status, doc, {k.lower(): v for k, v in resp.getheaders()}

    def call(self, method: str, path: str, body: Any = None, *, token: str | None = None,
             query: dict[str, Any] | None = None) -> tuple[int, Any]:
        headers = {}
        tok = token if token is not None else self.token
        if tok:
            headers["Authorization"] = f"Bearer {tok}"
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if query:
            path += "?" + urllib.parse.urlencode(query, doseq=True)
        status, doc, _ = self.raw(method, path, data, headers)
        return status, doc


@dataclass
class Control:
    db: Database
    server: ControlServer
    clock: Clock
    admin: str
    api: Api = field(init=False)

    def __post_init__(self) -> None:
        self.api = Api(self.server.url, self.admin)

    def customer(self, name: str) -> None:
        status, doc = self.api.call("POST", "/v1/customers", {"name": name})
        assert status == 201, doc

    def token(self, name: str, role: str, customers: list[str] | None = None) -> str:
        status, doc = self.api.call("POST", "/v1/tokens", {"name": name, "role": role,
                                                           "customers": customers})
        assert status == 201, doc
        return str(doc["token"])

    def enrol_token(self, customer: str, **kw: Any) -> str:
        status, doc = self.api.call("POST", "/v1/enrol-tokens", {"customer": customer, **kw})
        assert status == 201, doc
        return str(doc["token"])


def start_control(db: Database, clock: Clock | None = None, **kw: Any) -> Control:
    clock = clock or Clock()
    with db.write() as s:
        admin = operations.create_token(s, None, f"admin{next(_names)}", "admin", None,
                                        clock())["token"]
    server = ControlServer(db, "127.0.0.1", 0, clock=clock, sweep_s=3600,
                           settings=kw.pop("settings", Settings()), **kw).start()
    return Control(db, server, clock, admin)


@pytest.fixture(name="control")
def control_fixture(control_db: Database) -> Iterator[Control]:
    c = start_control(control_db)
    try:
        yield c
    finally:
        c.server.stop()


def commit_of(version: str) -> str:
    return hashlib.sha256(version.encode()).hexdigest()


def host_status(version: str, *, boot_time: str = "2026-12-01T00:00:00Z",
                result: str = "good", reason: str = "", update: str = "up-to-date",
                rollbacks: int = 0) -> dict[str, Any]:
    commit = commit_of(version)
    dep = {"id": f"{commit}.0", "commit": commit, "serial": 0, "version": version,
           "timestamp": None, "created": "2026-12-01T00:00:00Z", "origin": "origin:site/db",
           "ref": None, "pinned": False, "kernel": None, "etc_conflicts": [],
           "role": "booted", "index": 0}
    return {"apiVersion": "atoll/v1", "kind": "HostStatus", "sysroot": "/",
            "deployments": [dep], "booted": dep, "pending": None, "rollback": None,
            "prepared": None, "etc_conflicts": [],
            "last_boot": {"result": result, "reason": reason, "time": boot_time,
                          "deployment": dep["id"], "acknowledged": result == "good",
                          "checks": []},
            "rollback_events": rollbacks, "update": {"state": update}, "backups": [],
            "agent": None, "provision": None, "problems": []}


class SimHost:
    """A host that speaks the protocol without a sysroot."""

    def __init__(self, url: str, name: str):
        self.api = Api(url)
        self.name = name
        self.key = Ed25519PrivateKey.generate()
        self.host_id = ""
        self.counter = 0
        self.version = "1"

    @property
    def public(self) -> str:
        return b64encode(self.key.public_key().public_bytes(serialization.Encoding.Raw,
                                                            serialization.PublicFormat.Raw))

    def enrol(self, token: str) -> tuple[int, Any]:
        status, doc = self.api.call("POST", "/v1/enrol", {"name": self.name,
                                                          "public_key": self.public},
                                    token=token)
        if status == 200:
            self.host_id = doc["host_id"]
        return status, doc

    def report(self, **kw: Any) -> dict[str, Any]:
        self.counter += 1
        status = kw.pop("status", None) or host_status(kw.pop("version", self.version))
        return {"host_id": self.host_id, "counter": self.counter,
                "sent": "2026-12-01T12:00:00Z", "agent_version": "0.1.0", "status": status,
                "apps": [], "policy": {"mode": "prepare"}, **kw}

    def send(self, doc: dict[str, Any] | bytes, *, key: Ed25519PrivateKey | None = None,
             host_id: str | None = None,
             content_type: str = "application/json") -> tuple[int, Any]:
        body = doc if isinstance(doc, bytes) else json.dumps(doc, sort_keys=True).encode()
        sig = sign(key or self.key, host_id or self.host_id, body)
        status, answer, _ = self.api.raw("POST", "/v1/checkin", body, {
            "Content-Type": content_type, "Atoll-Signature": sig})
        return status, answer

    def checkin(self, **kw: Any) -> tuple[int, Any]:
        return self.send(self.report(**kw))

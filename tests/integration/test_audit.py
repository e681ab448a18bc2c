"""The audit chain on real databases, and ``atoll fleet audit verify`` as a process.

SQLite: operators' actions (``fleet db init``, ``fleet users add``) are chained; a row
changed with sqlite3 (its append-only trigger dropped first, as whoever owns the
database could) makes ``verify`` fail naming the entry; the newest entries deleted,
or rewritten with fresh hashes, are caught by the signed checkpoint; an action slipped
in beside the chain is named; the migration chains the actions recorded before it;
``fleet serve`` signs a checkpoint at start and at stop. SQLite and PostgreSQL: two
writers at once keep the chain linear.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import insert, select, text
from sqlalchemy.exc import DBAPIError

from atoll.control import audit
from atoll.control.db import Database
from atoll.control.errors import ApiError
from atoll.control.models import AuditLink, Customer, Event
from atoll.control.service import record
from tests.integration.control_fixtures import (
    Api,
    control_db_fixture,  # noqa: F401 (a fixture)
    pg_fixture,  # noqa: F401 (a fixture)
)
from tests.services import free_port

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "correct horse battery staple"


def _atoll(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    return subprocess.run([sys.executable, "-m", "atoll.cli", *args], capture_output=True,
                          text=True, env=env, timeout=120, check=False)


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A database with five chained actions and a checkpoint at its head (copied by
    each test)."""
    tmp = tmp_path_factory.mktemp("audit")
    db = f"sqlite:///{tmp}/control.db"
    done = _atoll("fleet", "db", "init", "--db", db, "--token-file", str(tmp / "admin"))
    assert done.returncode == 0, done.stderr
    (tmp / "pw").write_text(PASSWORD + "\n")
    os.chmod(tmp / "pw", 0o600)
    for user in ("ann", "ben", "cat", "dan"):
        done = _atoll("fleet", "users", "add", user, "--role", "viewer", "--db", db,
                      "--password-file", str(tmp / "pw"))
        assert done.returncode == 0, done.stderr
    done = _atoll("fleet", "audit", "checkpoint", "--db", db, "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["checkpoint"]["seq"] == 5
    os.unlink(tmp / "pw")
    return tmp


@pytest.fixture
def site(made: Path, tmp_path: Path) -> Path:
    shutil.copytree(made, tmp_path / "site")
    return tmp_path / "site"


def _verify(site: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return _atoll("fleet", "audit", "verify", "--db", f"sqlite:///{site}/control.db", *extra)


def _sql(site: Path, *statements: str) -> None:
    """What an attacker with the database file does: drop the triggers, change rows."""
    conn = sqlite3.connect(site / "control.db")
    try:
        for statement in statements:
            conn.execute(statement)
        conn.commit()
    finally:
        conn.close()


def _event_of(site: Path, seq: int) -> int:
    conn = sqlite3.connect(site / "control.db")
    try:
        return int(conn.execute("SELECT event_id FROM audit_links WHERE seq = ?",
                                (seq,)).fetchone()[0])
    finally:
        conn.close()


def test_an_untouched_chain_verifies(site: Path) -> None:
    done = _verify(site)
    assert done.returncode == 0, done.stderr
    assert "audit chain intact: 5 entries" in done.stdout
    assert "checkpoint at entry 5" in done.stdout
    doc = json.loads(_verify(site, "--json").stdout)
    assert doc["ok"] and doc["entries"] == 5 and doc["checkpoint"]["seq"] == 5
    # the key: 0600 in a 0700 directory; the checkpoints readable
    assert (site / "audit" / "audit-key.pem").stat().st_mode & 0o777 == 0o600
    assert (site / "audit").stat().st_mode & 0o777 == 0o700
    kinds = [json.loads(p.read_text())["seq"] for p in (site / "audit" / "checkpoints").iterdir()]
    assert kinds == [5]


def test_a_changed_row_is_named(site: Path) -> None:
    event = _event_of(site, 3)
    _sql(site, "DROP TRIGGER events_no_update",
         f"UPDATE events SET data = json_set(data, '$.role', 'admin') WHERE id = {event}")
    done = _verify(site)
    assert done.returncode == 3  # CorruptObjectError
    assert f"audit chain is broken: entry 3 (event {event}): its event was changed" \
        in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    # who did it is part of the hash too
    _sql(site, "UPDATE events SET data = json_set(data, '$.role', 'viewer'), "
         f"actor = 'server:someone-else' WHERE id = {event}")
    assert "entry 3" in _verify(site).stderr


def test_deleting_the_tail_is_caught_by_the_checkpoint(site: Path) -> None:
    last = _event_of(site, 5)
    _sql(site, "DROP TRIGGER audit_links_no_delete", "DROP TRIGGER events_no_delete",
         "DELETE FROM audit_links WHERE seq = 5", f"DELETE FROM events WHERE id = {last}")
    done = _verify(site, "--json")
    assert done.returncode != 0
    assert "entry 5, the head checkpointed at" in done.stderr
    assert "no longer in the chain" in done.stderr
    # nor is a new checkpoint signed over the cut chain, even once it grows again
    (site / "pw").write_text(PASSWORD + "\n")
    os.chmod(site / "pw", 0o600)
    db = f"sqlite:///{site}/control.db"
    for user in ("eve", "fay"):
        assert _atoll("fleet", "users", "add", user, "--role", "viewer", "--db", db,
                      "--password-file", str(site / "pw")).returncode == 0
    done = _atoll("fleet", "audit", "checkpoint", "--db", db)
    assert done.returncode == 7 and "no new checkpoint is signed over it" in done.stderr
    assert [p.name for p in (site / "audit" / "checkpoints").iterdir()] == ["000000000005.json"]
    assert "entry 5 differs from the one checkpointed" in _verify(site).stderr


def test_rewriting_the_tail_with_fresh_hashes_is_caught_by_the_checkpoint(site: Path) -> None:
    from atoll.control.auditchain import canonical, link_hash

    event = _event_of(site, 5)
    conn = sqlite3.connect(site / "control.db")
    prev, eid, t, actor, kind, cid, hid, hname, data = conn.execute(
        "SELECT l.prev_hash, e.id, e.time, e.actor, e.kind, e.customer_id, e.host_id, "
        "e.host_name, e.data FROM audit_links l JOIN events e ON e.id = l.event_id "
        "WHERE l.seq = 5").fetchone()
    conn.close()
    doc = json.loads(data) | {"role": "admin"}
    when = dt.datetime.fromisoformat(t).replace(tzinfo=dt.UTC)
    digest = link_hash(prev, canonical(5, eid, when, actor, kind, cid, hid, hname, doc))
    _sql(site, "DROP TRIGGER events_no_update", "DROP TRIGGER audit_links_no_update",
         f"UPDATE events SET data = '{json.dumps(doc)}' WHERE id = {event}",
         f"UPDATE audit_links SET hash = '{digest}' WHERE seq = 5")
    done = _verify(site)
    assert done.returncode != 0
    assert "entry 5 differs from the one checkpointed" in done.stderr


def test_an_action_beside_the_chain_and_a_forged_checkpoint_are_named(site: Path) -> None:
    _sql(site, "INSERT INTO events (time, actor, kind, data) VALUES "
         "('2026-11-29 12:00:00.000000', 'operator:mallory', 'token-created', '{}')")
    done = _verify(site)
    assert done.returncode != 0 and "outside the chain" in done.stderr
    assert "operator:mallory" in done.stderr


def test_a_checkpoint_by_another_key_is_refused(site: Path, tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    other = tmp_path / "other.pub"
    other.write_bytes(Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    done = _verify(site, "--public-key", str(other))
    assert done.returncode != 0 and "not signed by the audit key" in done.stderr
    done = _verify(site, "--public-key", str(site / "audit" / "audit-key.pub"))
    assert done.returncode == 0, done.stderr
    done = _verify(site, "--public-key", str(tmp_path / "missing.pub"))
    assert done.returncode == 2, done.stderr
    assert "missing.pub: cannot read the audit public key (No such file" in done.stderr


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_the_migration_chains_the_actions_before_it(kind: str, tmp_path: Path,
                                                    request: pytest.FixtureRequest) -> None:
    if kind == "sqlite":
        db = Database(f"sqlite:///{tmp_path}/control.db")
    else:
        db = Database(request.getfixturevalue("pg").create_database(
            f"mig_{tmp_path.name[-20:]}".replace("-", "_").lower()))
    try:
        with db.engine.begin() as conn:
            command.upgrade(db._alembic(conn), "0004_console")
        with db.engine.begin() as conn:  # Core: as an older atoll wrote them, no links
            for i, actor in enumerate(["operator:a", "host:h1", "server", "console:ann",
                                       "operator:b"]):
                conn.execute(insert(Event.__table__).values(
                    time=dt.datetime(2026, 11, i + 1, 10, 0, 0, 1234, tzinfo=dt.UTC),
                    actor=actor, kind="k", data={"n": i, "é": [1.5, None]}))
        assert db.upgrade()[0] == "0005_audit_chain"  # then the later ones
        with db.read() as s:
            chained = [actor for actor, in s.execute(
                select(Event.actor).join(AuditLink, AuditLink.event_id == Event.id)
                .order_by(AuditLink.seq))]
        assert chained == ["operator:a", "console:ann", "operator:b"]
        result = audit.verify(db, None, None)
        assert result.ok and result.entries == 3
        # and the chain goes on from there
        with db.write() as s:
            record(s, dt.datetime.now(dt.UTC), "operator:c", "k", {})
        assert audit.verify(db, None, None).entries == 4
        # the links are append-only
        for statement in ("UPDATE audit_links SET hash = 'x' WHERE seq = 1",
                          "DELETE FROM audit_links WHERE seq = 4"):
            with pytest.raises(DBAPIError, match="append-only"), db.engine.begin() as conn:
                conn.execute(text(statement))
    finally:
        db.close()


def _two_customers(db: Database) -> dict[str, int]:
    now = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)
    with db.write() as s:
        ids = {}
        for name in ("acme", "globex"):
            c = Customer(name=name, created_at=now, created_by="test")
            s.add(c)
            s.flush()
            ids[name] = c.id
        for i in range(120):  # 80 on acme, 40 on globex, a minute apart
            name = "globex" if i % 3 == 2 else "acme"
            record(s, now + dt.timedelta(minutes=i), f"operator:op{i % 2}",
                   "labels" if i % 2 else "request", {"i": i}, customer_id=ids[name])
        record(s, now, "server:cli", "console-user-added", {"user": "x"})
    return ids


def test_the_page_pages_filters_and_scopes(control_db: Database) -> None:
    from atoll.control.auth import Principal
    from atoll.control.console.audit_views import PAGE_SIZE, AuditFilter, audit_page, csv_rows

    ids = _two_customers(control_db)
    acme = Principal("ann", "viewer", frozenset({ids["acme"]}))
    everyone = Principal("root", "admin", None)
    with control_db.read() as s:
        first = audit_page(s, acme, AuditFilter.parse({}))
        assert first["total"] == 80 and first["pages"] == 2
        assert len(first["entries"]) == PAGE_SIZE
        assert {e["customer"] for e in first["entries"]} == {"acme"}
        seqs = [e["seq"] for e in first["entries"]]
        assert seqs == sorted(seqs, reverse=True)
        second = audit_page(s, acme, AuditFilter.parse({"page": "2"}))
        assert len(second["entries"]) == 30 and second["entries"][0]["seq"] < seqs[-1]
        assert first["customers"] == ["acme"]
        # globex is no filter for acme's viewer: nothing, not an error
        assert audit_page(s, acme, AuditFilter.parse({"customer": "globex"}))["total"] == 0
        assert audit_page(s, acme, AuditFilter.parse({"customer": "nope"}))["total"] == 0
        who = audit_page(s, acme, AuditFilter.parse({"who": "op1", "what": "labels"}))
        assert who["total"] == 40 and {e["actor"] for e in who["entries"]} == {"operator:op1"}
        # LIKE wildcards are text
        assert audit_page(s, everyone, AuditFilter.parse({"who": "op%"}))["total"] == 0
        # until a date: through that day; since a time
        day = audit_page(s, everyone, AuditFilter.parse({"until": "2026-12-01"}))
        assert day["total"] == 121
        late = audit_page(s, everyone, AuditFilter.parse({"since": "2026-12-01T13:00Z"}))
        assert late["total"] == 60
        assert audit_page(s, everyone, AuditFilter.parse({}))["total"] == 121
    for bad in ({"page": "0"}, {"since": "soon"}, {"until": "2026-13-01"}):
        with pytest.raises(ApiError):
            AuditFilter.parse(bad)
    lines = list(csv_rows(control_db, acme, AuditFilter.parse({})))
    assert len(lines) == 81 and lines[0].startswith("seq,time,actor,action")
    assert len(list(csv_rows(control_db, everyone, AuditFilter.parse({}), limit=7))) == 8


def test_the_server_checkpoints_at_start_and_stop(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path}/control.db"
    done = _atoll("fleet", "db", "init", "--db", db, "--token-file", str(tmp_path / "admin"))
    assert done.returncode == 0, done.stderr
    port = free_port()
    where = tmp_path / "anchors"
    log = open(tmp_path / "serve.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, "-m", "atoll.cli", "fleet", "serve", "--db", db,
                             "--listen", f"127.0.0.1:{port}", "--audit-dir", str(where)],
                            stdout=log, stderr=log,
                            env=dict(os.environ, PYTHONPATH=str(ROOT / "src")))
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()
            try:
                urllib.request.urlopen(url + "/v1/health", timeout=2).read()
                break
            except OSError:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        assert audit.latest(where) is not None and audit.latest(where).seq == 1  # type: ignore[union-attr]
        api = Api(url, (tmp_path / "admin").read_text().strip())
        assert api.call("POST", "/v1/customers", {"name": "acme"})[0] == 201
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        log.close()
    last = audit.latest(where)
    assert last is not None and last.seq == 2, (tmp_path / "serve.log").read_text()
    done = _atoll("fleet", "audit", "verify", "--db", db, "--audit-dir", str(where))
    assert done.returncode == 0, done.stderr


def test_two_writers_keep_the_chain_linear(control_db: Database) -> None:
    """Two engines (two connections, as two servers would) append at once; each
    transaction holds on after its event so that the other really waits."""
    other = Database(control_db.url.render_as_string(hide_password=False))
    errors: list[BaseException] = []
    per_writer = 25

    def write(db: Database, who: str) -> None:
        try:
            for i in range(per_writer):
                with db.write() as s:
                    record(s, dt.datetime.now(dt.UTC), f"operator:{who}", "test",
                           {"n": i})
                    s.flush()
                    time.sleep(0.002)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(db, who))
               for db, who in ((control_db, "a"), (other, "b"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    other.close()
    assert errors == []
    with control_db.read() as s:
        seqs = list(s.scalars(select(AuditLink.seq).order_by(AuditLink.seq)))
        actors = set(s.scalars(select(Event.actor).join(AuditLink,
                                                        AuditLink.event_id == Event.id)))
    assert seqs == list(range(1, 2 * per_writer + 1))
    assert actors == {"operator:a", "operator:b"}
    result = audit.verify(control_db, None, None)
    assert result.ok, result.to_json()
    assert result.entries == 2 * per_writer


def test_the_retention_keeps_every_chained_action(tmp_path: Path) -> None:
    from atoll.control.retention import prune_events

    db = Database(f"sqlite:///{tmp_path}/control.db")
    try:
        db.upgrade()
        now = dt.datetime.now(dt.UTC)
        old = now - dt.timedelta(days=500)
        with db.write() as s:
            for actor in ("host:h1", "server", "console:ann", "server:cli", "operator:a"):
                record(s, old, actor, "k", {"actor": actor})
        assert prune_events(db, now, dt.timedelta(days=400)) == 2
        with db.read() as s:
            left = set(s.scalars(select(Event.actor).where(Event.kind == "k")))
        assert left == {"console:ann", "server:cli", "operator:a"}
        result = audit.verify(db, None, None)
        assert result.ok and result.entries == 3
    finally:
        db.close()


def test_export_writes_the_filtered_log_as_csv(site: Path) -> None:
    import csv
    import io

    db = f"sqlite:///{site}/control.db"
    done = _atoll("fleet", "audit", "export", "--db", db, "--what", "console-user-added")
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader(io.StringIO(done.stdout)))
    assert [r["seq"] for r in rows] == ["5", "4", "3", "2"]
    assert json.loads(rows[-1]["data"])["user"] == "ann"
    out = site / "audit.csv"
    done = _atoll("fleet", "audit", "export", "--db", db, "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert out.stat().st_mode & 0o777 == 0o600 and len(out.read_text().splitlines()) == 6
    done = _atoll("fleet", "audit", "export", "--db", db, "--out", str(out))
    assert done.returncode == 2 and "exists" in done.stderr
    done = _atoll("fleet", "audit", "export", "--db", db, "--since", "last tuesday")
    assert done.returncode == 2 and "--since: a date or time" in done.stderr


def test_serve_refuses_a_key_others_may_read(site: Path) -> None:
    os.chmod(site / "audit" / "audit-key.pem", 0o644)
    done = _atoll("fleet", "serve", "--db", f"sqlite:///{site}/control.db", "--listen",
                  f"127.0.0.1:{free_port()}")
    assert done.returncode == 2, done.stderr
    assert "audit-key.pem: the audit key is readable by others" in done.stderr
    assert "Traceback" not in done.stderr
    done = _atoll("fleet", "audit", "checkpoint", "--db", f"sqlite:///{site}/control.db")
    assert done.returncode == 2 and "chmod 600" in done.stderr


def test_the_default_directory_is_one_per_database(tmp_path: Path) -> None:
    sqlite = Database(f"sqlite:///{tmp_path}/x/control.db")
    try:
        assert audit.default_dir(sqlite) == tmp_path / "x" / "audit"
    finally:
        sqlite.close()
    a = audit.default_dir(Database("postgresql://atoll@db.example:5433/atoll"))
    b = audit.default_dir(Database("postgresql://atoll@db.example/other"))
    assert a == Path("/var/lib/atoll/control/audit/db.example-5433-atoll")
    assert b == Path("/var/lib/atoll/control/audit/db.example-5432-other")

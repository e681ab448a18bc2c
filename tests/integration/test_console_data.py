"""The console's data layer on SQLite and PostgreSQL: users, sessions and the login
rate limit (:mod:`atoll.control.console.users`), the fleet page's counts, filters,
pages, breakdowns and versions over time in a customer's scope
(:mod:`atoll.control.console.views`), the version samples (:mod:`atoll.control.history`)
and their migration."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import func, insert, select

from atoll.control import history
from atoll.control.auth import Principal
from atoll.control.console import users, views
from atoll.control.console.models import ConsoleSession, ConsoleUser
from atoll.control.db import Database
from atoll.control.errors import ApiError
from atoll.control.models import Customer, Event, Host, HostLabel, VersionSample
from atoll.control.retention import DEFAULT_RETENTION, prune_samples
from tests.integration.control_fixtures import (
    control_db_fixture,  # noqa: F401 (a fixture)
    pg_fixture,  # noqa: F401 (a fixture)
)

NOW = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)
PASSWORD = "correct horse battery staple"


def _customers(db: Database) -> dict[str, int]:
    with db.write() as s:
        for name in ("acme", "globex"):
            s.add(Customer(name=name, created_at=NOW, created_by="test"))
        s.flush()
        return {c.name: c.id for c in s.scalars(select(Customer))}


def test_users_log_in_and_out(control_db: Database) -> None:
    ids = _customers(control_db)
    with control_db.write() as s:
        doc = users.add_user(s, "ann", PASSWORD, "viewer", ["acme"], NOW)
        assert doc["customers"] == ["acme"]
        for bad, status in [(("ann", PASSWORD, "viewer", None), 409),
                            (("bob", "short", "viewer", None), 422),
                            # longer than the login form takes: it could never log in
                            (("bob", "x" * (users.MAX_PASSWORD + 1), "viewer", None), 422),
                            (("Bob <b>", PASSWORD, "viewer", None), 422),
                            (("bob", PASSWORD, "root", None), 422),
                            (("bob", PASSWORD, "viewer", ["initech"]), 404)]:
            with pytest.raises(ApiError) as err:
                users.add_user(s, *bad, NOW)  # type: ignore[arg-type]
            assert err.value.status == status
    with control_db.read() as s:
        row = s.scalars(select(ConsoleUser)).one()
        assert row.password_hash.startswith("$argon2id$") and PASSWORD not in row.password_hash
        assert users.list_users(s)[0]["customers"] == ["acme"]

    assert users.log_in(control_db, "ann", "wrong password!", NOW) == users.Attempt(None)
    assert users.log_in(control_db, "nobody", PASSWORD, NOW) == users.Attempt(None)
    attempt = users.log_in(control_db, "ann", PASSWORD, NOW)
    assert attempt.secret is not None
    with control_db.read() as s:
        # only the sha256 of the secret is stored
        assert s.scalar(select(func.count()).where(
            ConsoleSession.secret_sha256 == attempt.secret)) == 0
        user = users.session_user(s, attempt.secret, NOW)
        assert user is not None
        assert user.principal == Principal("console-ann", "viewer", frozenset({ids["acme"]}))
        assert users.session_user(s, attempt.secret, NOW + users.SESSION_TTL) is None
        assert users.session_user(s, "x" * 43, NOW) is None
        assert s.scalars(select(ConsoleUser)).one().failed_logins == 0  # reset by the login
        assert s.scalar(select(func.count()).where(Event.kind == "console-login")) == 1
    with control_db.write() as s:
        users.log_out(s, attempt.secret)
    with control_db.read() as s:
        assert users.session_user(s, attempt.secret, NOW) is None


def test_the_rate_limit_holds_even_the_right_password(control_db: Database) -> None:
    _customers(control_db)
    with control_db.write() as s:
        users.add_user(s, "ann", PASSWORD, "viewer", None, NOW)
    got = [users.log_in(control_db, "ann", "wrong password!", NOW).retry_after
           for _ in range(users.FREE_FAILURES)]
    assert got == [None] * (users.FREE_FAILURES - 1) + [60]
    assert users.log_in(control_db, "ann", PASSWORD, NOW + dt.timedelta(seconds=30)) == \
        users.Attempt(None, 30)
    later = NOW + dt.timedelta(seconds=61)
    secret = users.log_in(control_db, "ann", PASSWORD, later).secret
    assert secret is not None
    with control_db.write() as s:
        s.scalars(select(ConsoleUser)).one().disabled_at = later
    # a disabled user can neither log in nor go on with the session it had
    assert users.log_in(control_db, "ann", PASSWORD, later) == users.Attempt(None)
    with control_db.read() as s:
        assert users.session_user(s, secret, later) is None


def test_the_fleet_page_counts_filters_and_pages_within_the_scope(
        control_db: Database) -> None:
    ids = _customers(control_db)
    with control_db.write() as s:
        for i in range(120):
            state = ("lost", "rolled-back", "pending")[i % 3] if i < 9 else "up-to-date"
            s.add(Host(id=f"a{i:04d}", customer_id=ids["acme"], name=f"db{i:03d}",
                       public_key="k", enrolled_at=NOW, lost=state == "lost",
                       booted_version="2" if i % 2 else "1",
                       last_boot_result="rolled-back" if state == "rolled-back" else "good",
                       update_state="pending" if state == "pending" else "up-to-date"))
            s.add(HostLabel(host_id=f"a{i:04d}", key="site", value="ams" if i < 10 else "fra"))
        for i in range(5):
            s.add(Host(id=f"g{i:04d}", customer_id=ids["globex"], name=f"gx{i}",
                       public_key="k", enrolled_at=NOW, booted_version="9"))
    acme = Principal("t", "viewer", frozenset({ids["acme"]}))
    with control_db.read() as s:
        page = views.fleet(s, acme, views.FleetFilter())
        assert page["total_in_scope"] == 120 and page["total"] == 120
        assert dict(page["by_state"]) == {"lost": 3, "rolled-back": 3, "pending": 3,
                                          "up-to-date": 111}
        assert dict(page["by_version"]) == {"1": 60, "2": 60}
        assert page["by_customer"] == [("acme", 120)]
        assert page["pages"] == 3 and len(page["hosts"]) == views.PAGE_SIZE
        assert page["hosts"][0]["name"] == "db000" and page["hosts"][0]["state"] == "lost"
        last = views.fleet(s, acme, views.FleetFilter(page=3))
        assert [h["name"] for h in last["hosts"]] == [f"db{i:03d}" for i in range(100, 120)]
        beyond = views.fleet(s, acme, views.FleetFilter(page=40))
        assert beyond["page"] == 3 and beyond["hosts"] == last["hosts"]
        ams = views.fleet(s, acme, views.FleetFilter(label=("site", "ams"), version="2"))
        assert [h["name"] for h in ams["hosts"]] == ["db001", "db003", "db005", "db007",
                                                     "db009"]
        rolled = views.fleet(s, acme, views.FleetFilter(state="rolled-back"))
        assert [h["name"] for h in rolled["hosts"]] == ["db001", "db004", "db007"]
        assert views.fleet(s, acme, views.FleetFilter(version="9"))["total"] == 0
        everyone = views.fleet(s, Principal("r", "admin", None), views.FleetFilter(version="9"))
        assert [h["customer"] for h in everyone["hosts"]] == ["globex"] * 5
        assert everyone["by_customer"] == [("acme", 120), ("globex", 5)]
        assert views.host_page(s, acme, "a0001")["state"] == "rolled-back"
        with pytest.raises(ApiError) as err:
            views.host_page(s, acme, "g0001")
        assert err.value.status == 404


def test_versions_over_time_and_breakdowns_within_the_scope(control_db: Database) -> None:
    ids = _customers(control_db)
    with control_db.write() as s:
        for i in range(6):
            s.add(Host(id=f"a{i}", customer_id=ids["acme"], name=f"db{i}", public_key="k",
                       enrolled_at=NOW, booted_version="1" if i < 2 else "2",
                       lost=i == 5, update_state="up-to-date"))
            s.add(HostLabel(host_id=f"a{i}", key="site", value="ams" if i < 3 else "fra"))
            if i % 2:
                s.add(HostLabel(host_id=f"a{i}", key="role", value="db"))
        for i in range(2):
            s.add(Host(id=f"g{i}", customer_id=ids["globex"], name=f"gx{i}", public_key="k",
                       enrolled_at=NOW, booted_version="9"))
            s.add(HostLabel(host_id=f"g{i}", key="site", value="ams"))
    # the server's sample: one per hour, per customer and version
    assert history.record_versions(control_db, NOW + dt.timedelta(minutes=5)) == 3
    assert history.record_versions(control_db, NOW + dt.timedelta(minutes=50)) == 0
    day = dt.timedelta(days=1)
    with control_db.write() as s:
        for bucket, cid, version, n in [
                (NOW - 2 * day, "acme", "1", 6),
                (NOW - 2 * day + dt.timedelta(hours=3), "acme", "1", 4),  # the day's last
                (NOW - 2 * day + dt.timedelta(hours=3), "acme", "2", 2),
                (NOW - day, "acme", "1", 3), (NOW - day, "acme", "2", 3),
                (NOW - day, "globex", "9", 5),
                (NOW - 40 * day, "acme", "0", 6),  # outside the 30 days shown
                (NOW - 500 * day, "acme", "0", 6)]:  # past the retention
            s.add(VersionSample(bucket=bucket, customer_id=ids[cid], version=version,
                                hosts=n))
    acme = Principal("t", "viewer", frozenset({ids["acme"]}))
    later = NOW + dt.timedelta(hours=1)
    with control_db.read() as s:
        page = views.fleet(s, acme, views.FleetFilter(), now=later)
        h = page["history"]
        assert h["series"] == ["2", "1"]  # most hosts now first; globex's "9" never
        assert [(p.time, p.hosts, p.live) for p in h["points"]] == [
            (NOW - 2 * day + dt.timedelta(hours=3), {"2": 2, "1": 4}, False),
            (NOW - day, {"2": 3, "1": 3}, False),
            (NOW, {"2": 4, "1": 2}, False),
            (later, {"2": 4, "1": 2}, True)]
        assert [a["name"] for a in h["plot"]["areas"]] == ["2", "1"]
        assert h["plot"]["drawn"]
        hourly = views.fleet(s, acme, views.FleetFilter(days=1), now=later)["history"]
        assert [p.time for p in hourly["points"]] == [NOW, later]  # 13:00 back to 13:00
        everyone = views.fleet(s, Principal("r", "admin", None), views.FleetFilter(),
                               now=later)["history"]
        assert everyone["series"] == ["2", "9", "1"]
        assert everyone["points"][1].hosts == {"2": 3, "9": 5, "1": 3}
        # the breakdowns: by site (the default) and by any label key, in scope
        assert page["by_label"]["keys"] == ["role", "site"]
        assert [(r["name"], r["label"], r["hosts"], r["states"], r["versions"])
                for r in page["by_label"]["rows"]] == [
            ("ams", "site=ams", 3, {"up-to-date": 3}, [("1", 2), ("2", 1)]),
            ("fra", "site=fra", 3, {"up-to-date": 2, "lost": 1}, [("2", 3)])]
        role = views.fleet(s, acme, views.FleetFilter(by="role"), now=later)["by_label"]
        assert [(r["name"], r["label"], r["hosts"], r["versions"]) for r in role["rows"]] == [
            ("(no role label)", None, 3, [("2", 2), ("1", 1)]),
            ("db", "role=db", 3, [("2", 2), ("1", 1)])]
        assert page["customer_rows"] == []  # one customer in scope
        rows = views.fleet(s, Principal("r", "admin", None), views.FleetFilter(),
                           now=later)["customer_rows"]
        assert [(r["name"], r["hosts"], r["versions"]) for r in rows] == [
            ("acme", 6, [("2", 4), ("1", 2)]), ("globex", 2, [("9", 2)])]
    # the retention prunes samples as events
    assert prune_samples(control_db, NOW, DEFAULT_RETENTION) == 1
    with control_db.read() as s:
        assert s.scalar(select(func.count()).select_from(VersionSample)) == 3 + 8 - 1


def test_the_samples_migration_upgrades_a_0005_database(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path}/control.db")
    try:
        with db.engine.begin() as conn:
            command.upgrade(db._alembic(conn), "0005_audit_chain")
        with db.engine.begin() as conn:  # Core: as the older atoll wrote them
            conn.execute(insert(Customer.__table__).values(id=1, name="acme", created_at=NOW,
                                                           created_by="t"))
            conn.execute(insert(Host.__table__).values(
                id="h1", customer_id=1, name="db01", public_key="k", enrolled_at=NOW,
                booted_version="7", counter=0, lost=False, checkins=0, rollback_events=0))
        assert db.upgrade() == ["0006_version_samples"]
        assert history.record_versions(db, NOW) == 1
        with db.read() as s:
            assert [(r.customer_id, r.version, r.hosts) for r in
                    s.scalars(select(VersionSample))] == [(1, "7", 1)]
    finally:
        db.close()

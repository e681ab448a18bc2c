"""The console's data layer on SQLite and PostgreSQL: users, sessions and the login
rate limit (:mod:`atoll.control.console.users`), the fleet page's counts, filters and
pages in a customer's scope (:mod:`atoll.control.console.views`)."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import func, select

from atoll.control.auth import Principal
from atoll.control.console import users, views
from atoll.control.console.models import ConsoleSession, ConsoleUser
from atoll.control.db import Database
from atoll.control.errors import ApiError
from atoll.control.models import Customer, Event, Host, HostLabel
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

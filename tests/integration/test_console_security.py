"""The console's Security page data on SQLite and PostgreSQL: SQL aggregates over the
stored check-ins' JSON (counts per urgency, the worst hosts, hotfixes, data ages) in a
customer's scope (:mod:`atoll.control.console.security_views`). The page itself, in
Chromium: tests/integration/test_console.py."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import select

from atoll.control.auth import Principal
from atoll.control.console.security_views import security_page
from atoll.control.db import Database
from atoll.control.models import Customer, Host
from tests.integration.control_fixtures import (
    control_db_fixture,  # noqa: F401 (a fixture)
    pg_fixture,  # noqa: F401 (a fixture)
)

NOW = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)


def _report(age_h: int | None, *, source: str = "tracker", hotfix: bool = False,
            **opened: int) -> dict[str, Any]:
    status: dict[str, Any] = {"booted": {"id": "x", "hotfix": None}}
    if hotfix:
        status["booted"]["hotfix"] = {"base": "b" * 64, "base_version": "7", "packages": [
            {"name": "openssl", "version": "3.0.17-1~deb12u9", "kind": "fast-track",
             "expires": None}]}
    if age_h is None:
        return {"status": status}
    stamp = "%Y-%m-%dT%H:%M:%SZ"
    generated = NOW - dt.timedelta(hours=age_h)
    return {"status": status, "cves": {
        "source": source, "generated": generated.strftime(stamp),
        "expires": (generated + dt.timedelta(days=7)).strftime(stamp),
        "open": None if source != "tracker" else {
            u: opened.get(u.replace(" ", "_"), 0)
            for u in ("unimportant", "low", "medium", "high", "not yet assigned")}}}


def test_security_counts_worst_hosts_hotfixes_and_ages_in_scope(
        control_db: Database) -> None:
    with control_db.write() as s:
        for name in ("acme", "globex"):
            s.add(Customer(name=name, created_at=NOW, created_by="test"))
        s.flush()
        ids = {c.name: c.id for c in s.scalars(select(Customer))}
        hosts = [("db1", "acme", _report(1, high=3, medium=1)),
                 ("db2", "acme", _report(30, medium=2, not_yet_assigned=4, hotfix=True)),
                 ("db3", "acme", _report(24 * 9, high=1)),  # expired data
                 ("db4", "acme", _report(2, source="changelog")),
                 ("db5", "acme", _report(None)),
                 ("gx1", "globex", _report(1, high=50, hotfix=True))]
        for i, (name, customer, report) in enumerate(hosts):
            s.add(Host(id=f"h{i}", customer_id=ids[customer], name=name, public_key="k",
                       enrolled_at=NOW, booted_version="7", report=report))
    acme = Principal("t", "viewer", frozenset({ids["acme"]}))
    with control_db.read() as s:
        page = security_page(s, acme, NOW)
        everyone = security_page(s, Principal("r", "admin", None), NOW)
    assert (page["hosts"], page["with_data"], page["stale"], page["hotfix_hosts"]) == (
        5, 3, 1, 1)
    by = {u["urgency"]: (u["hosts"], u["open"]) for u in page["urgency"]}
    assert by == {"high": (2, 4), "medium": (2, 3), "low": (0, 0), "unimportant": (0, 0),
                  "not yet assigned": (1, 4)}
    assert [h["name"] for h in page["worst"]] == ["db1", "db3", "db2"]
    assert page["worst"][1]["stale"] and page["worst"][0]["age"] == "1 h"
    assert [(h["name"], h["packages"][0]["name"]) for h in page["hotfixes"]] == [
        ("db2", "openssl")]
    assert {a["label"]: a["hosts"] for a in page["ages"]} == {
        "under a day": 2, "1 to 7 days": 1, "over 7 days": 1, "no CVE data": 1}
    assert [h["name"] for h in page["oldest"]] == ["db3", "db2", "db4", "db1"]
    assert [c["customer"] for c in page["customers"]] == ["acme"]
    assert "gx1" not in str(page)
    assert {u["urgency"]: u["open"] for u in everyone["urgency"]}["high"] == 54
    assert everyone["worst"][0]["name"] == "gx1" and everyone["hotfix_hosts"] == 2
    assert [(c["customer"], c["hosts"], c["high"], c["hotfixes"])
            for c in everyone["customers"]] == [("acme", 5, 2, 1), ("globex", 1, 1, 1)]

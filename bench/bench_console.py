"""Web console benchmark: the fleet page over a large fleet.

    .venv/bin/python -m bench.bench_console [--db sqlite|postgresql] [--hosts 10000]

``--hosts`` hosts (two customers, 9:1; a ``site`` label of 10 values; versions 1-4;
1 % lost, 1 % rolled back, 5 % pending) and 90 days of hourly version samples (every
customer and version each hour, as the server writes them: 17,280 rows) inserted
straight into a fresh database
(a SQLite file, or Debian's PostgreSQL 15 started as the tests start it,
tests/services.py), then a real control plane server on 127.0.0.1 and a logged-in
console session. Measured, median of 7 after one warm-up, one request at a time:

* ``GET /console/fleet`` as an admin of every customer (counts over the whole
  fleet, the breakdowns by customer and site, the versions plot over 30 days, the
  first page of 50); the same with the plot over 90 days;
* the same filtered by label, by state, by label + version, and the last page;
* ``GET /console/fleet`` as a viewer of the smaller customer;
* the anchor: ``GET /v1/health`` (HTTP, the same server, ``SELECT 1``); ratios to it.

The issue asks for < 500 ms for the fleet page and a filtered search at 10,000 hosts.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import http.client
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import insert  # noqa: E402

from atoll.control.console import users  # noqa: E402
from atoll.control.db import Database  # noqa: E402
from atoll.control.models import Customer, Host, HostLabel, VersionSample  # noqa: E402
from atoll.control.server import ControlServer  # noqa: E402

NOW = dt.datetime.now(dt.UTC)
PASSWORD = "bench password 0123456789"


@contextlib.contextmanager
def database(kind: str) -> Iterator[Database]:
    if kind == "sqlite":
        with tempfile.TemporaryDirectory(prefix="atoll-bench-console-") as tmp:
            db = Database(f"sqlite:///{tmp}/control.db")
            yield db
            db.close()
        return
    from tests.services import postgresql

    with postgresql() as pg:
        db = Database(pg.create_database("bench_console"))
        yield db
        db.close()


def fill(db: Database, n: int) -> None:
    db.upgrade()
    with db.write() as s:
        for name in ("big", "small"):
            s.add(Customer(name=name, created_at=NOW, created_by="bench"))
        s.flush()
        big, small = (s.scalar(Customer.__table__.select().with_only_columns(Customer.id)
                               .where(Customer.name == c)) for c in ("big", "small"))
        hosts, labels = [], []
        for i in range(n):
            hid = f"{i:08d}-0000-0000-0000-000000000000"
            hosts.append({
                "id": hid, "customer_id": small if i % 10 == 0 else big,
                "name": f"db{i:05d}", "public_key": "k", "enrolled_at": NOW,
                "last_seen": NOW, "lost": i % 100 == 1, "counter": 0, "checkins": 1,
                "booted_version": str(1 + i % 4), "rollback_events": 0,
                "last_boot_result": "rolled-back" if i % 100 == 2 else "good",
                "update_state": "pending" if i % 20 == 3 else "up-to-date",
                "report": {"status": {"deployments": []}, "apps": []}})
            labels.append({"host_id": hid, "key": "site", "value": f"site{i % 10}"})
        s.execute(insert(Host), hosts)
        s.execute(insert(HostLabel), labels)
        hour = NOW.replace(minute=0, second=0, microsecond=0)
        s.execute(insert(VersionSample), [
            {"bucket": hour - dt.timedelta(hours=h), "customer_id": cid,
             "version": str(v), "hosts": n // 40}
            for h in range(1, 90 * 24 + 1) for cid in (big, small) for v in range(1, 5)])
        users.add_user(s, "admin", PASSWORD, "admin", None, NOW)
        users.add_user(s, "viewer", PASSWORD, "viewer", ["small"], NOW)


def timed(port: int, path: str, cookie: str | None, runs: int = 7) -> float:
    """Median milliseconds of ``runs`` GETs after one warm-up."""
    times = []
    for i in range(runs + 1):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        t0 = time.perf_counter()
        conn.request("GET", path, headers={"Cookie": f"__Host-atoll-console={cookie}"}
                     if cookie else {})
        resp = conn.getresponse()
        resp.read()
        elapsed = time.perf_counter() - t0
        conn.close()
        assert resp.status == 200, (path, resp.status)
        if i:
            times.append(elapsed * 1000)
    return statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--db", choices=["sqlite", "postgresql"], default="sqlite")
    ap.add_argument("--hosts", type=int, default=10_000)
    args = ap.parse_args()
    with database(args.db) as db:
        t0 = time.perf_counter()
        fill(db, args.hosts)
        print(f"{args.hosts} hosts in {args.db}: filled in {time.perf_counter() - t0:.1f} s")
        server = ControlServer(db, "127.0.0.1", 0, sweep_s=3600).start()
        try:
            port = int(server.url.rsplit(":", 1)[1])
            sessions = {u: users.log_in(db, u, PASSWORD, dt.datetime.now(dt.UTC)).secret
                        for u in ("admin", "viewer")}
            anchor = timed(port, "/v1/health", None)
            rows = [
                ("fleet page, admin (every customer)", "/console/fleet", "admin"),
                ("fleet page, plot over 90 days", "/console/fleet?days=90", "admin"),
                ("filter: label site=site3", "/console/fleet?label=site%3Dsite3", "admin"),
                ("filter: state rolled-back", "/console/fleet?state=rolled-back", "admin"),
                ("filter: label + version", "/console/fleet?label=site%3Dsite3&version=4",
                 "admin"),
                ("last page", f"/console/fleet?page={args.hosts // 50 + 1}", "admin"),
                ("fleet page, viewer of one customer (10 %)", "/console/fleet", "viewer"),
            ]
            print(f"| request | median ms | ratio to /v1/health ({anchor:.1f} ms) |")
            print("| --- | --- | --- |")
            for what, path, user in rows:
                ms = timed(port, path, sessions[user])
                print(f"| {what} | {ms:.1f} | {ms / anchor:.1f} |")
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

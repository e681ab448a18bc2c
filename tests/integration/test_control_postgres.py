"""Several control-plane servers on one PostgreSQL, and a database that goes away.

Two servers (one in this process, one a real ``atoll fleet serve`` process) share one
database: concurrent check-ins, replays sent to both at once, one enrolment token
tried at both, operators' actions and lost-host sweeps racing: no lost or duplicated
rows. Then PostgreSQL is stopped in the middle of a check-in: 503, nothing
half-written, and the server works again once it is back.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from atoll.control import service
from atoll.control.db import Database
from atoll.control.models import Event, Host
from tests.integration.control_fixtures import (
    Api,
    Control,
    SimHost,
    host_status,
    pg_db_fixture,  # noqa: F401 (a fixture)
    pg_fixture,  # noqa: F401 (a fixture)
    start_control,
)
from tests.services import PostgreSQL, free_port

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def two_servers(pg_db: Database, tmp_path: Path) -> Iterator[tuple[Control, Api]]:
    a = start_control(pg_db)
    port = free_port()
    url = pg_db.url.render_as_string(hide_password=False).replace("+psycopg", "")
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    log = open(tmp_path / "serve-b.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, "-m", "atoll.cli", "fleet", "serve", "--db", url,
                             "--listen", f"127.0.0.1:{port}", "--audit-dir",
                             str(tmp_path / "audit")], stdout=log, stderr=log, env=env)
    b = Api(f"http://127.0.0.1:{port}", a.admin)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, (tmp_path / "serve-b.log").read_text()
            try:
                urllib.request.urlopen(b.url + "/v1/health", timeout=2).read()
                break
            except OSError:
                assert time.monotonic() < deadline, "the second server did not start"
                time.sleep(0.2)
        yield a, b
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
        a.server.stop()


def test_two_servers_one_database(two_servers: tuple[Control, Api], pg_db: Database) -> None:
    a, b_api = two_servers
    apis = [a.api, b_api]
    a.customer("acme")
    # one enrolment token tried at both servers at once: exactly one host
    tokens = [a.enrol_token("acme") for _ in range(10)]
    hosts = [SimHost(a.server.url, f"db{i:02}") for i in range(20)]
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda i: (hosts[i].enrol(tokens[i // 2]), i), range(20)))
    ok = [i for (status, _), i in results if status == 200]
    assert len(ok) == 10 and {i // 2 for i in ok} == set(range(10))
    hosts = [hosts[i] for i in ok]
    for n, h in enumerate(hosts):  # half of them talk to the other server
        if n % 2:
            h.api = Api(b_api.url)

    accepted: Counter[str] = Counter()
    lock = threading.Lock()

    def life(h: SimHost) -> None:
        for v in range(1, 9):
            doc = h.report(version=str(v))
            # the same check-in at both servers at once: one is accepted, one a replay
            with ThreadPoolExecutor(2) as two:
                answers = list(two.map(_send, [h, h], apis, [doc, doc]))
            assert sorted(s for s, _ in answers) == [200, 409], answers
            with lock:
                accepted[h.host_id] += 1

    def operator(n: int) -> None:
        api = apis[n % 2]
        for i in range(5):
            host = hosts[(n + i) % len(hosts)]
            assert api.call("POST", f"/v1/hosts/{host.name}/labels",
                            {"set": {"wave": str(i)}})[0] == 200
            assert api.call("POST", f"/v1/hosts/{host.name}/requests",
                            {"kind": "ack-rollback"})[0] == 201

    with ThreadPoolExecutor(12) as pool:
        futures = [pool.submit(life, h) for h in hosts]
        futures += [pool.submit(operator, n) for n in range(4)]
        for f in futures:
            f.result()
    # the same customer added at both at once: one 201, one 409
    with ThreadPoolExecutor(2) as two:
        codes = sorted(two.map(lambda api: api.call("POST", "/v1/customers",
                                                    {"name": "beta"})[0], apis))
    assert codes == [201, 409]
    with pg_db.read() as s:
        rows = {h.id: h for h in s.scalars(select(Host))}
        assert len(rows) == 10
        for h in hosts:
            row = rows[h.host_id]
            assert (row.counter, row.checkins, row.booted_version) == (h.counter, 8, "8")
        versions = Counter(s.scalars(select(Event.host_id).where(Event.kind == "version")))
        assert versions == {h.host_id: 7 for h in hosts}  # 1->2 ... 7->8, none twice
        assert s.scalar(select(func.count()).select_from(Event)
                        .where(Event.kind == "request")) == 20
        assert s.scalar(select(func.count()).select_from(Event)
                        .where(Event.kind == "customer-added")) == 2
    # both servers sweep at once: each lost host is marked, and recorded, once
    import datetime as dt

    later = a.clock() + dt.timedelta(hours=5)
    other = Database(pg_db.url.render_as_string(hide_password=False))
    try:
        with ThreadPoolExecutor(2) as two:
            marked = list(two.map(lambda db: service.mark_lost(db, later, dt.timedelta(hours=1)),
                                  [pg_db, other]))
    finally:
        other.close()
    assert sorted(marked[0] + marked[1]) == sorted(h.host_id for h in hosts)
    with pg_db.read() as s:
        lost = Counter(s.scalars(select(Event.host_id).where(Event.kind == "lost")))
    assert lost == {h.host_id: 1 for h in hosts}


def _send(h: SimHost, api: Api, doc: dict[str, Any]) -> tuple[int, Any]:
    import json

    from atoll.control.protocol import sign

    body = json.dumps(doc, sort_keys=True).encode()
    status, answer, _ = api.raw("POST", "/v1/checkin", body, {
        "Content-Type": "application/json", "Atoll-Signature": sign(h.key, h.host_id, body)})
    return status, answer


def test_database_gone_mid_checkin(pg_db: Database, pg: PostgreSQL) -> None:
    c = start_control(pg_db)
    try:
        c.customer("acme")
        h = SimHost(c.server.url, "db01")
        assert h.enrol(c.enrol_token("acme"))[0] == 200
        assert h.checkin()[0] == 200
        # PostgreSQL stops after the host's row and events are written, before commit
        service.FAULT_HOOKS["checkin:recorded"] = lambda: pg.stop("immediate")
        try:
            status, err = h.checkin(status=host_status("2"))
        finally:
            service.FAULT_HOOKS.clear()
        assert (status, err["kind"]) == (503, "database_unavailable"), err
        assert c.api.call("GET", "/v1/hosts")[0] == 503
        assert Api(c.server.url).call("GET", "/v1/health")[0] == 503
        pg.start()
        with pg_db.read() as s:
            row = s.scalars(select(Host)).one()
            assert (row.booted_version, row.checkins, row.counter) == ("1", 1, h.counter - 1)
            kinds = list(s.scalars(select(Event.kind).where(Event.host_id == row.id)))
        assert kinds == ["enrolled", "first-checkin"]  # nothing of the refused check-in
        # the server recovers by itself (pool_pre_ping): the host sends again
        status, d = h.checkin(status=host_status("2"))
        assert status == 200, d
        host = c.api.call("GET", "/v1/hosts/db01")[1]
        assert (host["booted_version"], host["checkins"]) == ("2", 2)
    finally:
        c.server.stop()

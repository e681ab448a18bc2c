"""The rollout driver's election in etcd (``atoll fleet serve --etcd``): two real
``atoll fleet serve`` processes on one PostgreSQL and a real etcd. Only the leader
drives; when it dies (SIGKILL: no resignation), the other takes over once the dead
one's lease expires, and drives the rollouts from then on."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from atoll.control import operations
from atoll.control.db import Database
from atoll.control.leader import LEADER_KEY
from atoll.fleet.etcdv3 import EtcdClient
from tests.integration.control_fixtures import (
    Api,
    SimHost,
    commit_of,
    host_status,
    pg_db_fixture,  # noqa: F401 (a fixture)
    pg_fixture,  # noqa: F401 (a fixture)
)
from tests.integration.fleet_fixtures import fleet_etcd  # noqa: F401 (a fixture)
from tests.services import free_port

ROOT = Path(__file__).resolve().parents[2]


class Serve:
    """One ``atoll fleet serve --etcd`` process."""

    def __init__(self, db_url: str, etcd_url: str, log: Path, token: str) -> None:
        self.port = free_port()
        self.log = log
        env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
        self.out = open(log, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "atoll.cli", "fleet", "serve", "--db", db_url,
             "--listen", f"127.0.0.1:{self.port}", "--etcd", etcd_url, "--etcd-lease", "5s",
             "--rollout-tick", "0.2s", "--audit-dir", str(log.parent / f"audit-{self.port}")],
            stdout=self.out, stderr=self.out, env=env)
        self.api = Api(f"http://127.0.0.1:{self.port}", token)
        wait_for(self.up, 60, f"the server on :{self.port} did not start")

    def up(self) -> bool:
        assert self.proc.poll() is None, self.log.read_text()
        try:
            urllib.request.urlopen(self.api.url + "/v1/health", timeout=2).read()
        except OSError:
            return False
        return True

    def driver(self) -> dict[str, Any]:
        status, doc = self.api.call("GET", "/v1/health")
        assert status == 200, doc
        return dict(doc["rollout_driver"])

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=30)
        self.out.close()


def wait_for(check: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


@pytest.fixture
def etcd_leader_key(fleet_etcd: str) -> Iterator[EtcdClient]:  # noqa: F811
    with EtcdClient(fleet_etcd) as client:
        client.delete(LEADER_KEY)
        yield client
        client.delete(LEADER_KEY)


def test_only_the_leader_drives_and_the_other_takes_over(
        pg_db: Database, fleet_etcd: str, etcd_leader_key: EtcdClient,  # noqa: F811
        tmp_path: Path) -> None:
    import datetime as dt

    now = dt.datetime.now(dt.UTC)
    with pg_db.write() as s:
        token = operations.create_token(s, None, "admin", "admin", None, now)["token"]
    url = pg_db.url.render_as_string(hide_password=False).replace("+psycopg", "")
    a = Serve(url, fleet_etcd, tmp_path / "a.log", token)
    servers = [a]
    try:
        wait_for(lambda: a.driver()["role"] == "leader", 30, "the first server never led")
        b = Serve(url, fleet_etcd, tmp_path / "b.log", token)
        servers.append(b)
        held = etcd_leader_key.get(LEADER_KEY)
        assert held is not None and held.value.decode().endswith(f":{a.port}")
        ticks = a.driver()["ticks"]
        wait_for(lambda: a.driver()["ticks"] >= ticks + 10, 30, "the leader stopped driving")
        assert b.driver() == {"election": "etcd", "role": "standby", "ticks": 0}
        # a host already at the target: the rollout is for the driver to finish
        assert a.api.call("POST", "/v1/customers", {"name": "acme"})[0] == 201
        h = SimHost(a.api.url, "db01")
        status, doc = a.api.call("POST", "/v1/enrol-tokens", {"customer": "acme"})
        assert h.enrol(doc["token"])[0] == 200
        assert h.checkin(status=host_status("2"))[0] == 200
        a.stop(signal.SIGKILL)  # dies leading: its lease expires by itself
        status, doc = b.api.call("POST", "/v1/rollouts", {
            "id": "r1", "customer": "acme", "channel": "site/db", "to_version": "2",
            "versions": [{"version": v, "commit": commit_of(v)} for v in ("1", "2")],
            "spec": {"waves": [100], "soak_s": 0}})
        assert status == 201, doc
        wait_for(lambda: b.driver()["role"] == "leader", 30, "the other server never led")
        wait_for(lambda: b.api.call("GET", "/v1/rollouts/r1")[1]["state"] == "finished", 30,
                 "the new leader did not drive the rollout")
        assert b.driver()["ticks"] > 0
        held = etcd_leader_key.get(LEADER_KEY)
        assert held is not None and held.value.decode().endswith(f":{b.port}")
        b.stop()  # a clean stop resigns: the key goes at once
        assert etcd_leader_key.get(LEADER_KEY) is None
    finally:
        for server in servers:
            server.stop()

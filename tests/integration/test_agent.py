"""The host agent on a real sysroot: real TUF over HTTP, a real FleetLock server.

Policy modes, a customer's apply, a maintenance window, a cancelled apply, the
fleet slot taken before the reboot and given back once the new deployment is
marked good, and an agent killed in the middle of a download.
"""

from __future__ import annotations

import datetime as dt
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from atoll.agent import api
from atoll.agent.daemon import Agent, serve_api
from atoll.agent.host import Host, node_id
from atoll.agent.state import AgentFiles
from atoll.cli import main
from atoll.core.fsutil import atomic_write_json
from atoll.deploy.sysroot import Sysroot
from atoll.fleet.backends import open_backend
from atoll.fleet.config import FleetConfig
from atoll.fleet.server import FleetLockServer
from atoll.fleet.service import FleetLockService
from atoll.store.repo import Repo
from tests.integration.delivery_fixtures import WwwServer, serve_www, snapshot_dirs

WED = dt.datetime(2026, 12, 2, 12, 0, tzinfo=dt.UTC)


def make_tree(root: Path, version: int, big: int = 0) -> Path:
    rnd = random.Random(version)
    for d in ("usr/bin", "usr/etc", "etc", "var"):
        (root / d).mkdir(parents=True)
    (root / "usr/bin/db-tool").write_bytes(rnd.randbytes(200_000))
    (root / "usr/etc/os-release").write_text(f"VERSION={version}\n")
    if big:
        (root / "usr/lib").mkdir()
        (root / "usr/lib/blob").write_bytes(rnd.randbytes(big))
    return root


class Site:
    """A publisher with a www/ on HTTP, and one host that runs v1."""

    def __init__(self, tmp: Path, url: str):
        self.tmp = tmp
        self.pub = Repo.create(tmp / "pub")
        self.www, self.keys = tmp / "www", tmp / "keys"
        self.host = tmp / "host"
        assert main(["-q", "keys", "init", str(self.keys), "--to", str(self.www)]) == 0
        self.publish(1)
        sr = Sysroot(self.host)
        sr.init()
        (self.host / "etc").mkdir()
        (self.host / "etc/machine-id").write_text("0123456789abcdef0123456789abcdef\n")
        assert main(["-q", "--sysroot", str(self.host), "remote", "add", "origin", url,
                     "--root", str(self.www / "metadata/root.json")]) == 0
        assert main(["-q", "--sysroot", str(self.host), "update", "download"]) == 0
        dep = sr.deploy(sr.repo.refs("remotes")["origin/site/base"])
        self.boot(dep.id)
        self.sr = sr

    def publish(self, version: int, big: int = 0) -> str:
        cid = self.pub.commit_dir(make_tree(self.tmp / f"t{version}", version, big),
                                  ref="site/base", version=str(version),
                                  manifest=[{"name": "db-tool", "version": str(version)}])
        assert main(["-q", "publish", "site/base", "--repo", str(self.pub.path), "--to",
                     str(self.www), "--keys", str(self.keys)]) == 0
        return cid

    def boot(self, dep_id: str, good: bool = False) -> None:
        (self.host / "run/atoll").mkdir(parents=True, exist_ok=True)
        (self.host / "run/atoll/booted").write_text(dep_id + "\n")
        if good:  # what the boot layer's boot-complete writes
            atomic_write_json(self.host / "atoll/state/boot.json", {"good": [dep_id]})


@pytest.fixture
def site(tmp_path: Path) -> Iterator[tuple[Site, WwwServer]]:
    (tmp_path / "www").mkdir()
    with serve_www(tmp_path / "www") as server:
        yield Site(tmp_path, server.url), server


@pytest.fixture
def fleetlock(tmp_path: Path) -> Iterator[FleetLockServer]:
    with open_backend("embedded", str(tmp_path / "locks.db")) as backend:
        service = FleetLockService(backend, FleetConfig({"db": 1}))
        with FleetLockServer(service, "127.0.0.1", 0).start() as server:
            yield server


class Clock:
    def __init__(self, now: dt.datetime):
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


def test_stage_mode_customer_apply_and_fleet_slot(site: tuple[Site, WwwServer],
                                                  fleetlock: FleetLockServer) -> None:
    s, _ = site
    v2 = s.publish(2)
    reboots: list[Path] = []
    AgentFiles(s.host).save_policy(AgentFiles(s.host).policy().from_json(
        {"mode": "prepare", "fleet_lock": fleetlock.url, "group": "db"}))
    clock = Clock(WED)
    agent = Agent(s.host, host=Host(s.host, reboot=reboots.append), clock=clock)
    assert [agent.tick().action for _ in range(4)] == ["check", "download", "prepare", "none"]
    prepared = s.sr.prepared()
    assert prepared is not None and prepared.commit == v2
    assert len(s.sr.deployments()) == 1  # prepared, not the next boot
    assert "waiting for the customer" in AgentFiles(s.host).load()["decisions"][-1]["reason"]
    # the customer applies through the CLI, which goes through the agent's socket
    server = serve_api(agent)
    try:
        assert api.running(s.host)
        assert main(["-q", "--sysroot", str(s.host), "update", "apply", "--reboot"]) == 0
        assert agent.tick().action == "apply"
    finally:
        server.shutdown()
        server.server_close()
    assert reboots == [s.host]
    assert s.sr.deployments()[0].commit == v2
    holders = fleetlock.service.status()
    assert next(h.holders for h in holders if h.group == "db")[0].id == node_id(s.host)
    # not yet marked good: the slot stays held
    new = s.sr.deployments()[0].id
    s.boot(new)
    agent.tick()
    assert AgentFiles(s.host).load()["lock_held"]
    s.boot(new, good=True)
    agent.tick()
    assert not AgentFiles(s.host).load()["lock_held"]
    assert next(h.holders for h in fleetlock.service.status() if h.group == "db") == ()


def test_window_and_cancelled_apply(site: tuple[Site, WwwServer]) -> None:
    s, _ = site
    s.publish(2)
    files = AgentFiles(s.host)
    files.save_policy(files.policy().from_json(
        {"mode": "prepare", "windows": ["Sat 02:00-04:00 UTC"]}))
    reboots: list[Path] = []
    clock = Clock(WED)
    agent = Agent(s.host, host=Host(s.host, reboot=reboots.append), clock=clock)
    for _ in range(3):
        agent.tick()
    out = agent.request_apply("window", None, True)
    assert out["decision"]["action"] == "wait"
    assert out["decision"]["at"] == "2026-12-05T02:00:00+00:00"
    assert agent.tick().action == "wait"
    agent.cancel_apply()
    assert files.request() is None
    clock.now = dt.datetime(2026, 12, 5, 2, 30, tzinfo=dt.UTC)
    assert agent.tick().action in ("check", "none")
    assert reboots == [] and len(s.sr.deployments()) == 1
    # scheduled again, inside the window now: applies
    agent.request_apply("window", None, True)
    assert agent.tick().action == "apply" and reboots == [s.host]


def test_apply_mode_applies_in_the_window_by_itself(site: tuple[Site, WwwServer]) -> None:
    s, _ = site
    v2 = s.publish(2)
    files = AgentFiles(s.host)
    files.save_policy(files.policy().from_json(
        {"mode": "apply", "windows": ["Sat 02:00-04:00 UTC"]}))
    reboots: list[Path] = []
    clock = Clock(WED)
    agent = Agent(s.host, host=Host(s.host, reboot=reboots.append), clock=clock)
    actions = [agent.tick().action for _ in range(4)]
    assert actions == ["check", "download", "prepare", "wait"]
    clock.now = dt.datetime(2026, 12, 5, 2, 5, tzinfo=dt.UTC)
    assert agent.tick().action == "apply"
    assert s.sr.deployments()[0].commit == v2 and reboots == [s.host]
    decisions = files.load()["decisions"]
    assert any("inside maintenance window" in d["reason"] for d in decisions)


def test_off_mode_and_apply_at(site: tuple[Site, WwwServer]) -> None:
    s, _ = site
    s.publish(2)
    files = AgentFiles(s.host)
    files.save_policy(files.policy().from_json({"mode": "off"}))
    clock = Clock(WED)
    agent = Agent(s.host, host=Host(s.host, reboot=lambda p: None), clock=clock)
    assert agent.tick().action == "none"
    assert (s.host / "atoll/state/update.json").stat().st_mtime > 0  # from the set-up only
    # the customer's own time: it checks, downloads and stages first, then waits for that time
    agent.request_apply("at", "2026-12-05T02:30:00+01:00", True)
    assert [agent.tick().action for _ in range(4)] == ["check", "download", "prepare", "wait"]
    clock.now = dt.datetime(2026, 12, 5, 1, 30, tzinfo=dt.UTC)
    assert agent.tick().action == "apply"


def test_agent_killed_mid_download_resumes(site: tuple[Site, WwwServer],
                                           tmp_path: Path) -> None:
    s, server = site
    s.publish(2, big=40_000_000)
    files = AgentFiles(s.host)
    files.save_policy(files.policy().from_json({"mode": "download"}))
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2] / "src"))
    once = [sys.executable, "-m", "atoll.agent.daemon", "--once", "--sysroot", str(s.host)]
    assert subprocess.run(once, env=env, capture_output=True).returncode == 0  # check
    before = snapshot_dirs(s.host, ("atoll/repo",))
    served = len(server.requests)
    # the server holds the download until the agent is killed (an event, not a sleep:
    # however slow the machine, the kill lands while the download is under way)
    release = threading.Event()
    for suffix in (".pack", ".delta"):
        server.faults[suffix] = ("hook", lambda: release.wait(120))
    proc = subprocess.Popen(once, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not any(p.endswith((".pack", ".delta")) for p, _ in server.requests[served:]):
            assert time.monotonic() < deadline and proc.poll() is None, "no download started"
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)  # the agent and the download it runs
        proc.wait()
    finally:
        release.set()
    # nothing reached the store; the next run completes the download
    assert snapshot_dirs(s.host, ("atoll/repo",)) == before
    server.faults.clear()
    r = subprocess.run(once, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert Repo.open(s.host / "atoll/repo").refs("remotes")["origin/site/base"] == \
        s.pub.refs()["site/base"]


def test_replication_gate_holds_the_apply(site: tuple[Site, WwwServer],
                                          fleetlock: FleetLockServer) -> None:
    from atoll.fleet.gating import GateDecision

    s, _ = site
    s.publish(2)
    files = AgentFiles(s.host)
    files.save_policy(files.policy().from_json(
        {"mode": "apply", "fleet_lock": fleetlock.url, "group": "db"}))
    reboots: list[Path] = []
    verdict = [GateDecision(False, "replica_lagging", "replica lag 900 s > 60 s")]

    def gate(sysroot: Path, lag: float) -> list[tuple[str, GateDecision]]:
        return [("mariadb", verdict[0])]

    agent = Agent(s.host, host=Host(s.host, reboot=reboots.append, gate=gate), clock=Clock(WED))
    actions = [agent.tick() for _ in range(4)]
    assert [d.action for d in actions] == ["check", "download", "prepare", "wait"]
    assert "replication gate: mariadb: replica lag 900 s" in actions[-1].reason
    assert reboots == [] and len(s.sr.deployments()) == 1
    assert next(h.holders for h in fleetlock.service.status() if h.group == "db") == ()
    verdict[0] = GateDecision(True, "replica_healthy", "ok")
    assert agent.tick().action == "apply" and reboots == [s.host]

"""Real atolld agents in sysroots checking in with a real control plane over HTTP.

The host's side of the protocol: enrolment with the one-time token from the host
config, the host's own key, signed check-ins with the HostStatus it already makes,
the manifest when the server asks, operators' requests done through the agent's own
paths, a directive gating the agent's own steps, and the agent going on by itself
when the control plane is down. The last test runs atolld as a process.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from atoll.agent.control import ControlFiles
from atoll.agent.daemon import Agent
from atoll.agent.host import Host
from atoll.agent.state import AgentFiles
from atoll.cli import main
from atoll.control import directives
from atoll.control.db import Database
from atoll.core.fsutil import atomic_write_json
from tests.integration.control_fixtures import Clock as ControlClock
from tests.integration.control_fixtures import Control, start_control
from tests.integration.delivery_fixtures import WwwServer, serve_www
from tests.integration.test_agent import WED, Clock, Site

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def site(tmp_path: Path) -> Iterator[tuple[Site, WwwServer]]:
    (tmp_path / "www").mkdir()
    with serve_www(tmp_path / "www") as server:
        s = Site(tmp_path, server.url)
        (s.host / "etc/hostname").write_text("db01\n")
        yield s, server


@pytest.fixture
def cp(tmp_path: Path) -> Iterator[Control]:
    db = Database(f"sqlite:///{tmp_path}/control.db")
    db.upgrade()
    c = start_control(db, ControlClock(WED))  # the hosts' clock: directives expire by it
    c.customer("acme")
    try:
        yield c
    finally:
        c.server.stop()
        db.close()


def provision(c: Control, host: Path, tmp: Path, **kw: Any) -> None:
    """What the host config's control: section does at first boot."""
    token = tmp / "enrol-token"
    token.write_text(c.enrol_token("acme", labels={"site": "fra"}) + "\n")
    token.chmod(0o600)
    ControlFiles(host).configure(c.server.url, token, **kw)


def fleet(c: Control, tmp: Path, capsys: pytest.CaptureFixture[str], *argv: str) -> Any:
    tok = tmp / "admin.tok"
    if not tok.exists():
        tok.write_text(c.admin + "\n")
        tok.chmod(0o600)
    capsys.readouterr()
    rc = main(["--json", "fleet", *argv, "--server", c.server.url, "--token-file", str(tok)])
    out = capsys.readouterr().out
    assert rc == 0, out
    return json.loads(out)


def test_agent_enrols_and_reports(site: tuple[Site, WwwServer], cp: Control, tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    s, _ = site
    provision(cp, s.host, tmp_path)
    files = ControlFiles(s.host)
    assert files.token_path.stat().st_mode & 0o777 == 0o600
    agent = Agent(s.host, host=Host(s.host, reboot=lambda p: None), clock=Clock(WED))
    d = agent.control.checkin()
    assert d is not None and d["target"] is None
    assert not files.token_path.exists()  # spent, and removed
    assert files.key_path.stat().st_mode & 0o777 == 0o600
    assert files.dir.stat().st_mode & 0o777 == 0o700
    assert b"PRIVATE KEY" in files.key_path.read_bytes()
    hosts = fleet(cp, tmp_path, capsys, "hosts", "--label", "site=fra")
    assert [(h["name"], h["booted_version"], h["customer"]) for h in hosts] == [
        ("db01", "1", "acme")]
    host = fleet(cp, tmp_path, capsys, "host", "db01", "--packages")
    assert host["packages"] == [{"name": "db-tool", "version": "1"}]  # asked for, sent
    assert host["report"]["policy"]["mode"] == "check"
    assert host["report"]["status"]["kind"] == "HostStatus"
    # published without tracker data: open CVEs unknown (null), never "no CVEs"
    assert host["report"]["cves"]["source"] == "changelog" and host["cves"]["open"] is None
    kinds = [e["kind"] for e in fleet(cp, tmp_path, capsys, "events", "--host", "db01")]
    assert kinds == ["enrolled", "first-checkin"]
    # the host's counter only grows: a replay of what it sent is refused by the server
    first = files.state()["counter"]
    agent.control.checkin()
    assert files.state()["counter"] > first
    # a provisioning run again does not bring back the spent token
    (tmp_path / "again").mkdir()
    provision(cp, s.host, tmp_path / "again")
    assert not files.token_path.exists()


def test_operator_requests_go_through_the_agent(site: tuple[Site, WwwServer], cp: Control,
                                               tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    s, _ = site
    s.publish(2)
    provision(cp, s.host, tmp_path)
    agent_files = AgentFiles(s.host)
    agent_files.save_policy(agent_files.policy().from_json(
        {"mode": "prepare", "windows": ["Sat 02:00-04:00 UTC"]}))
    agent = Agent(s.host, host=Host(s.host, reboot=lambda p: None), clock=Clock(WED))
    assert [agent.tick().action for _ in range(3)] == ["check", "download", "prepare"]
    booted = s.sr.deployments()[0]
    s.sr.record_event("boot", result="rolled-back", reason="health check mariadb failed",
                      deployment=booted.id)
    agent.control.checkin()
    for kind, extra in (("ack-rollback", []), ("pin", ["--deployment", "booted"]),
                        ("apply", [])):
        if kind == "apply":  # refused by the server: the customer has not allowed it
            with pytest.raises(AssertionError):
                fleet(cp, tmp_path, capsys, "request", "db01", kind)
            continue
        fleet(cp, tmp_path, capsys, "request", "db01", kind, *extra)
    agent.control.checkin()
    host = fleet(cp, tmp_path, capsys, "host", "db01")
    assert {r["kind"]: r["state"] for r in host["requests"]} == {"ack-rollback": "done",
                                                               "pin": "done"}
    assert s.sr.deployments()[0].pinned
    assert host["report"]["status"]["last_boot"]["acknowledged"] is True
    # the customer lets operators schedule the apply in the window
    agent_files.save_policy(agent_files.policy().from_json(
        {"mode": "prepare", "windows": ["Sat 02:00-04:00 UTC"], "operator_apply": True}))
    agent.control.checkin()
    fleet(cp, tmp_path, capsys, "request", "db01", "apply")
    agent.control.checkin()
    request = agent_files.request()
    assert request is not None and request.kind == "window"
    assert agent.tick().action == "wait"  # until Saturday's window
    fleet(cp, tmp_path, capsys, "request", "db01", "cancel")
    agent.control.checkin()
    assert agent_files.request() is None
    states = {r["kind"]: r["state"] for r in fleet(cp, tmp_path, capsys, "host",
                                                     "db01")["requests"]}
    assert states["apply"] == states["cancel"] == "done"
    kinds = [e["kind"] for e in fleet(cp, tmp_path, capsys, "events", "--host", "db01")]
    assert kinds.count("request") == 4 and kinds.count("request-done") == 4


def test_directive_holds_the_agents_own_steps(site: tuple[Site, WwwServer], cp: Control,
                                             tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    s, _ = site
    v2 = s.publish(2)
    provision(cp, s.host, tmp_path)
    files = AgentFiles(s.host)
    files.save_policy(files.policy().from_json({"mode": "prepare"}))
    agent = Agent(s.host, host=Host(s.host, reboot=lambda p: None), clock=Clock(WED))
    allow: list[str] = []
    target = [directives.Target("site/base", "2", v2)]
    monkeypatch.setattr(directives, "decide_for_host",
                        lambda session, host, now: directives.Directive(
                            target[0], tuple(allow), "wave 2 has not started"))
    agent.control.checkin()
    assert agent.tick().action == "check"  # checks are never held
    d = agent.tick()
    assert (d.action, "not allowed now" in d.reason) == ("none", True), d
    assert s.sr.prepared() is None and agent.host.state().downloaded is None
    allow.append("download")
    agent.control.checkin()
    assert agent.tick().action == "download"
    assert agent.tick().action == "none"  # prepare is not allowed yet
    allow.append("prepare")
    agent.control.checkin()
    assert agent.tick().action == "prepare" and s.sr.prepared().commit == v2  # type: ignore[union-attr]
    # a target that is not a signed version: the host's check refuses it, nothing taken
    target[0] = directives.Target("site/base", "1.5", "ab" * 32)
    v3 = s.publish(3)
    agent.control.checkin()
    agent.clock = Clock(WED + dt.timedelta(hours=2))  # type: ignore[method-assign]
    d = agent.tick()
    assert d.action == "wait" and "not a signed version" in d.reason, d
    assert agent.host.state().downloaded != v3
    # the directive expires: the host follows its own policy again
    agent.clock = Clock(WED + dt.timedelta(days=2))  # type: ignore[method-assign]
    assert [agent.tick().action for _ in range(2)] == ["check", "download"]
    assert agent.host.state().downloaded == v3


def test_agent_goes_on_without_the_control_plane(site: tuple[Site, WwwServer], cp: Control,
                                                 tmp_path: Path) -> None:
    s, _ = site
    v2 = s.publish(2)
    provision(cp, s.host, tmp_path)
    files = AgentFiles(s.host)
    files.save_policy(files.policy().from_json({"mode": "download"}))
    agent = Agent(s.host, host=Host(s.host, reboot=lambda p: None), clock=Clock(WED))
    agent.control.checkin()
    cp.server.stop()
    with pytest.raises(OSError):
        agent.control.checkin()
    assert [agent.tick().action for _ in range(2)] == ["check", "download"]
    assert agent.host.state().downloaded == v2
    # the run loop logs the failure and goes on (one round, then stop)
    import threading

    stop = threading.Event()
    atomic_write_json(ControlFiles(s.host).config_path,
                      ControlFiles(s.host).config().__dict__ | {"interval_s": 1,  # type: ignore[union-attr]
                                                                "jitter_s": 0})
    t = threading.Thread(target=agent.control.run, args=(stop,))
    t.start()
    time.sleep(1.5)
    stop.set()
    t.join(timeout=30)
    assert not t.is_alive()
    assert "last_error" not in ControlFiles(s.host).state()  # unreachable: no answer at all


def test_atolld_checks_in_on_its_schedule(site: tuple[Site, WwwServer], cp: Control,
                                          tmp_path: Path) -> None:
    s, _ = site
    provision(cp, s.host, tmp_path, interval_s=1, jitter_s=0)
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    log = open(tmp_path / "atolld.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, "-m", "atoll.agent.daemon", "--sysroot",
                             str(s.host)], stdout=log, stderr=log, env=env)
    try:
        deadline = time.monotonic() + 60
        while True:
            hosts = cp.api.call("GET", "/v1/hosts")[1]
            if hosts and hosts[0]["checkins"] >= 3:
                break
            assert proc.poll() is None, (tmp_path / "atolld.log").read_text()
            assert time.monotonic() < deadline, (tmp_path / "atolld.log").read_text()
            time.sleep(0.3)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        log.close()
    assert hosts[0]["name"] == "db01" and hosts[0]["booted_version"] == "1"

"""Signed versions to choose from (issue 16, item 2): a real update repository on HTTP
(127.0.0.1), a real control plane reading it (``fleet serve --repo``), and a real
atolld agent in a sysroot taking the version its directive names, and refusing an
older or unsigned one whatever the control plane says."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from atoll.agent.control import ControlFiles
from atoll.agent.daemon import Agent
from atoll.agent.host import Host
from atoll.agent.policy import Decision
from atoll.agent.state import AgentFiles
from atoll.cli import main
from atoll.control import directives
from atoll.control.app import Settings
from atoll.control.db import Database
from atoll.control.releases import ReleaseSource
from tests.integration.control_fixtures import Clock as ControlClock
from tests.integration.control_fixtures import Control, start_control
from tests.integration.delivery_fixtures import WwwServer, serve_www
from tests.integration.test_agent import WED, Clock, Site


@pytest.fixture
def site(tmp_path: Path) -> Iterator[tuple[Site, WwwServer]]:
    (tmp_path / "www").mkdir()
    with serve_www(tmp_path / "www") as server:
        s = Site(tmp_path, server.url)
        (s.host / "etc/hostname").write_text("db01\n")
        yield s, server


def _control(tmp: Path, releases: ReleaseSource | None = None) -> Control:
    db = Database(f"sqlite:///{tmp}/control.db")
    db.upgrade()
    c = start_control(db, ControlClock(WED),
                      settings=dataclasses.replace(Settings(), releases=releases))
    c.customer("acme")
    return c


def _provision(c: Control, host: Path, tmp: Path) -> None:
    token = tmp / "enrol-token"
    token.write_text(c.enrol_token("acme", labels={"site": "fra"}) + "\n")
    token.chmod(0o600)
    ControlFiles(host).configure(c.server.url, token)


def test_a_compromised_control_plane_cannot_make_a_host_go_back_or_take_unsigned(
        site: tuple[Site, WwwServer], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    s, _ = site
    v1 = s.sr.deployments()[0].commit
    v2, v3, v4 = s.publish(2), s.publish(3), s.publish(4)
    cp = _control(tmp_path)
    try:
        _provision(cp, s.host, tmp_path)
        files = AgentFiles(s.host)
        files.save_policy(files.policy().from_json({"mode": "prepare"}))
        agent = Agent(s.host, host=Host(s.host, reboot=lambda p: None), clock=Clock(WED))
        target = [directives.Target("site/base", "2", v2)]
        monkeypatch.setattr(directives, "decide_for_host",
                            lambda session, host, now: directives.Directive(
                                target[0], directives.ALL_STEPS, "the control plane says so"))
        # an honest directive: version 2, neither the head (4) nor what runs (1)
        agent.control.checkin()
        assert [agent.tick().action for _ in range(3)] == ["check", "download", "prepare"]
        assert s.sr.prepared().commit == v2  # type: ignore[union-attr]
        s.boot(s.sr.finalize().id, good=True)  # applied and rebooted: it runs 2 now
        assert agent.host.state().booted == v2
        hours = iter(range(2, 100, 2))

        def attempt(t: directives.Target) -> Decision:
            target[0] = t
            agent.control.checkin()
            agent.clock = Clock(WED + dt.timedelta(hours=next(hours)))  # type: ignore[method-assign]
            return agent.tick()

        # version 1 is signed and kept, but older than what runs: refused by the host
        d = attempt(directives.Target("site/base", "1", v1))
        assert d.action == "wait" and "older than what this host runs" in d.reason, d
        # a version the repository never signed
        d = attempt(directives.Target("site/base", "7", "ab" * 32))
        assert d.action == "wait" and "not a signed version" in d.reason, d
        # a signed version, but another commit than the one signed: verified, not taken
        assert attempt(directives.Target("site/base", "3", "cd" * 32)).action == "check"
        d = agent.tick()
        assert d.action == "none" and "is not what this host's TUF client verified" in d.reason
        st = agent.host.state()
        assert (st.booted, st.downloaded, st.available, st.pending) == (v2, None, v3, None)
        assert s.sr.prepared() is None and s.sr.deployments()[0].commit == v2
        # the operator at the host may go back on purpose, only with --allow-downgrade
        assert main(["-q", "--sysroot", str(s.host), "update", "download",
                     "--version", "1"]) == 4
        assert main(["-q", "--sysroot", str(s.host), "update", "download",
                     "--version", "1", "--allow-downgrade"]) == 0
        capsys.readouterr()
        assert main(["--sysroot", str(s.host), "update", "check", "--version", "3"]) == 0
        assert "signed version 3 asked for; the channel's newest is 4" in \
            capsys.readouterr().out
        # and a directive to version 3 (not the head) is taken
        target[0] = directives.Target("site/base", "3", v3)
        agent.control.checkin()
        agent.clock = Clock(WED + dt.timedelta(hours=next(hours)))  # type: ignore[method-assign]
        assert [agent.tick().action for _ in range(3)] == ["check", "download", "prepare"]
        assert s.sr.prepared().commit == v3 != v4  # type: ignore[union-attr]
    finally:
        cp.server.stop()
        cp.db.close()


def test_the_control_plane_lists_signed_versions_and_refuses_others(
        site: tuple[Site, WwwServer], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    s, server = site
    for v in range(2, 8):
        s.publish(v)  # 7 publications; the channel keeps the last 5 (3..7)
    source = ReleaseSource(server.url, s.www / "metadata/root.json")
    cp = _control(tmp_path, source)
    try:
        tok = tmp_path / "admin.tok"
        tok.write_text(cp.admin + "\n")
        tok.chmod(0o600)
        capsys.readouterr()
        assert main(["--json", "fleet", "releases", "--server", cp.server.url,
                     "--token-file", str(tok)]) == 0
        doc = json.loads(capsys.readouterr().out)
        kept = doc["channels"]["site/base"]
        assert [(v["version"], v["sequence"], v["head"]) for v in kept] == [
            ("7", 7, True), ("6", 6, False), ("5", 5, False), ("4", 4, False),
            ("3", 3, False)]
        commits = {v["version"]: v["commit"] for v in kept}
        # without a token: refused
        assert cp.api.call("GET", "/v1/releases", token="")[0] == 401
        # a rollout must choose among signed versions
        viewer = cp.token("ro", "viewer")
        assert cp.api.call("GET", "/v1/releases", token=viewer)[0] == 200
        body = {"id": "r1", "customer": "acme", "channel": "site/base", "to_version": "7",
                "versions": [{"version": "2", "commit": "ab" * 32},
                             {"version": "7", "commit": commits["7"]}]}
        status, err = cp.api.call("POST", "/v1/rollouts", body)
        assert (status, err["kind"]) == (422, "not_signed"), err
        assert "'2'" in err["brief"] and "3 (" in err["details"]
        body["versions"] = [{"version": "7", "commit": "ef" * 32}]  # another commit
        assert cp.api.call("POST", "/v1/rollouts", body)[0] == 422
        body.pop("versions")
        body["floors"] = ["1"]  # pruned: not a signed version any more
        status, err = cp.api.call("POST", "/v1/rollouts", body)
        assert (status, err["kind"]) == (422, "not_signed") and "'1'" in err["brief"]
        body["channel"] = "site/other"
        body["floors"] = []
        status, err = cp.api.call("POST", "/v1/rollouts", body)
        assert status == 422 and "not signed" in err["brief"]
        with cp.db.read() as sess:  # nothing was written by the refused ones
            from sqlalchemy import text

            assert sess.execute(text("SELECT count(*) FROM rollouts")).scalar() == 0
        # publishing again is seen (the server reads the repository when asked)
        s.publish(8)
        body.update(channel="site/base", floors=["5"], to_version="8")
        status, doc = cp.api.call("POST", "/v1/rollouts", body)
        assert status == 422 and "no host" in doc["brief"], doc  # signed, but no member yet
    finally:
        cp.server.stop()
        cp.db.close()
        source.close()


def test_fleet_serve_without_repo_root_is_refused(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["fleet", "serve", "--db", f"sqlite:///{tmp_path}/c.db", "--listen",
                 "127.0.0.1:0", "--repo", str(tmp_path)]) == 2
    assert "--repo and --repo-root go together" in capsys.readouterr().err


def test_a_rollout_to_a_signed_version_that_is_not_the_head_reaches_the_host(
        site: tuple[Site, WwwServer], tmp_path: Path) -> None:
    s, server = site
    v3 = [s.publish(v) for v in (2, 3, 4)][1]
    source = ReleaseSource(server.url, s.www / "metadata/root.json")
    cp = _control(tmp_path, source)
    try:
        _provision(cp, s.host, tmp_path)
        files = AgentFiles(s.host)
        files.save_policy(files.policy().from_json({"mode": "prepare"}))
        agent = Agent(s.host, host=Host(s.host, reboot=lambda p: None), clock=Clock(WED))
        agent.control.checkin()  # enrolled, reports version 1
        status, doc = cp.api.call("POST", "/v1/rollouts", {
            "id": "to-3", "customer": "acme", "labels": {"site": "fra"},
            "channel": "site/base", "to_version": "3",
            "spec": {"waves": [100], "canary_wave": False}})
        assert status == 201, doc
        assert [v["version"] for v in doc["versions"]] == ["1", "2", "3", "4"]
        d = agent.control.checkin()
        assert d is not None and d["target"]["version"] == "3", d
        assert [agent.tick().action for _ in range(3)] == ["check", "download", "prepare"]
        assert s.sr.prepared().commit == v3  # type: ignore[union-attr]
    finally:
        cp.server.stop()
        cp.db.close()
        source.close()

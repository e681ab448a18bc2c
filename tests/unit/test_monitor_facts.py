"""Host status dict -> typed facts, and the local checks computed from them."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from atoll.monitor import facts as facts_mod
from atoll.monitor.facts import HostFacts, load_host_facts, parse_host_status
from atoll.monitor.localchecks import (
    CRIT,
    OK,
    UNKNOWN,
    WARN,
    LocalCheck,
    SectionOutcome,
    agent_check,
    host_checks,
    render_local,
)
from tests.unit.test_monitor_conformance import check_agent_output

NOW = dt.datetime(2026, 11, 26, 16, 0, tzinfo=dt.UTC)
DEP = {"id": "abc123.0", "commit": "abc123" * 10, "version": "2026.11.1",
       "ref": "site/base", "origin": "stable"}


def sample(**over: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "sysroot": "/",
        "booted": DEP,
        "pending": None,
        "rollback": DEP | {"id": "old.0", "version": "2026.10.1"},
        "deployments": [DEP],
        "etc_conflicts": [],
        "last_boot": {"result": "good", "reason": "", "time": "2026-11-26T08:00:00Z",
                      "deployment": "abc123.0", "acknowledged": True},
        "update": {"state": "up-to-date", "version": "", "since": "2026-11-26T08:00:00Z",
                   "metadata_expires": "2026-12-24T00:00:00Z"},
        "backups": [{"app": "shop", "last": "2026-11-26T03:00:00Z", "max_age_s": 86400}],
    }
    data.update(over)
    return data


def states(f: HostFacts) -> dict[str, int]:
    return {c.name: c.state for c in host_checks(f, NOW)}


def text(f: HostFacts, name: str) -> str:
    return next(c for c in host_checks(f, NOW) if c.name == name).summary


def test_parse_full_sample() -> None:
    f = parse_host_status(sample())
    assert f.available and f.error == ""
    assert f.booted is not None and f.booted.version == "2026.11.1"
    assert f.booted.channel == "stable"
    assert f.update is not None and f.update.metadata_expires == dt.datetime(2026, 12, 24,
                                                                            tzinfo=dt.UTC)
    assert f.backups[0].max_age_s == 86400
    assert f.last_boot is not None and f.last_boot.acknowledged


def test_parse_minimal_and_tolerant() -> None:
    f = parse_host_status({})
    assert f.available and f.booted is None and f.update is None and f.backups == ()
    f = parse_host_status(sample(backups=[{"app": "x", "last": None, "max_age_s": None}],
                                 last_boot={"result": "weird"}, update={"state": "paused"}))
    assert f.available
    assert f.backups[0].max_age_s == 0
    assert f.last_boot is not None and f.last_boot.result == "unknown"
    assert "weird" in f.last_boot.reason
    assert states(f)["atoll update"] == UNKNOWN


@pytest.mark.parametrize("bad", [
    [], "x", {"booted": "nope"}, {"etc_conflicts": "a"}, {"update": {"since": "not a date"}},
    {"backups": [{"last": None}]},
])
def test_parse_malformed_gives_unknown(bad: Any) -> None:
    f = parse_host_status(bad)
    assert not f.available and f.error
    assert set(states(f).values()) == {UNKNOWN}


def test_load_host_facts_reports_deploy_errors(tmp_path: Path, monkeypatch: Any) -> None:
    f = load_host_facts(tmp_path)  # not a sysroot: the deploy layer says so
    assert not f.available and "host status" in f.error

    def boom(sysroot: Path) -> dict[str, Any]:
        raise RuntimeError("disk on fire")

    class Mod:
        host_status = staticmethod(boom)

    monkeypatch.setattr(facts_mod.importlib, "import_module", lambda name: Mod)
    f = load_host_facts(tmp_path)
    assert not f.available and "disk on fire" in f.error

    class Good:
        @staticmethod
        def host_status(sysroot: Path) -> dict[str, Any]:
            return sample()

    monkeypatch.setattr(facts_mod.importlib, "import_module", lambda name: Good)
    assert load_host_facts(tmp_path).available


def test_version_check() -> None:
    f = parse_host_status(sample(pending=DEP | {"id": "new.0", "version": "2026.11.2"}))
    assert states(f)["atoll version"] == OK
    t = text(f, "atoll version")
    assert "2026.11.1" in t and "channel stable" in t and "next boot: 2026.11.2" in t
    assert states(parse_host_status(sample(booted=None)))["atoll version"] == UNKNOWN


def test_update_states_and_since() -> None:
    assert states(parse_host_status(sample()))["atoll update"] == OK
    for state, words in (("available", "available"), ("downloaded", "downloaded"),
                         ("prepared", "prepared"), ("pending", "boots at the next reboot"),
                         ("staged", "boots at the next reboot")):  # staged: the old word
        f = parse_host_status(sample(update={"state": state, "version": "2026.11.2",
                                             "since": "2026-11-25T16:00:00Z"}))
        assert states(f)["atoll update"] == OK
        t = text(f, "atoll update")
        assert words in t and "2026.11.2" in t and "since 2026-11-25T16:00:00Z (1d 0h)" in t
    old = parse_host_status(sample(update={"state": "available", "version": "v",
                                           "since": "2026-10-01T00:00:00Z"}))
    assert states(old)["atoll update"] == WARN


def test_rollback_is_crit_until_acknowledged() -> None:
    lb = {"result": "rolled-back", "reason": "health check db-writes failed",
          "time": "2026-11-26T09:00:00Z", "acknowledged": False}
    f = parse_host_status(sample(last_boot=lb))
    assert states(f)["atoll last boot"] == CRIT
    assert "db-writes failed" in text(f, "atoll last boot")
    f = parse_host_status(sample(last_boot=lb | {"acknowledged": True}))
    assert states(f)["atoll last boot"] == OK
    assert "acknowledged" in text(f, "atoll last boot")
    assert states(parse_host_status(sample(last_boot=None)))["atoll last boot"] == UNKNOWN


def test_etc_conflicts_warn() -> None:
    f = parse_host_status(sample(etc_conflicts=["ssh/sshd_config", "hosts"]))
    assert states(f)["atoll etc merge"] == WARN
    assert "ssh/sshd_config" in text(f, "atoll etc merge")


@pytest.mark.parametrize(("expires", "state"), [
    ("2026-12-24T00:00:00Z", OK),
    ("2026-11-27T11:00:00Z", OK),  # a fresh 1-day timestamp: 23 h left
    ("2026-11-26T20:00:00Z", WARN),
    ("2026-11-26T13:00:00Z", CRIT),
    ("2026-11-20T00:00:00Z", CRIT),
])
def test_metadata_expiry(expires: str, state: int) -> None:
    f = parse_host_status(sample(update={"state": "up-to-date", "metadata_expires": expires}))
    assert states(f)["atoll update metadata"] == state


def test_backups_against_policy() -> None:
    f = parse_host_status(sample(backups=[
        {"app": "shop", "last": "2026-11-26T03:00:00Z", "max_age_s": 86400},
        {"app": "crm", "last": "2026-11-24T03:00:00Z", "max_age_s": 86400},
        {"app": "new", "last": None, "max_age_s": 86400},
    ]))
    s = states(f)
    assert s["atoll backup shop"] == OK
    assert s["atoll backup crm"] == CRIT and "older than its policy" in text(f, "atoll backup crm")
    assert s["atoll backup new"] == CRIT


def test_local_lines_parse_as_checkmk_local() -> None:
    f = parse_host_status(sample(etc_conflicts=['we"ird path'], update={
        "state": "pending", "version": "v2", "since": "2026-11-26T10:00:00Z",
        "metadata_expires": "2026-11-27T00:00:00Z"}))
    out = render_local(host_checks(f, NOW))
    sections = check_agent_output(out)
    assert len(sections[("", "local")].rows) == 7
    assert LocalCheck(OK, "a", "multi\nline  text").line() == '0 "a" - multi line text'


def test_agent_check() -> None:
    ok = [SectionOutcome("mem", "ok", 0.0), SectionOutcome("systemd_units", "skipped", 0.0, "x")]
    c = agent_check(ok)
    assert c.state == OK and "systemd_units" in c.summary
    bad = [*ok, SectionOutcome("docker", "timeout", 5.0, "no answer within 5s")]
    c = agent_check(bad)
    assert c.state == WARN and "docker: timeout" in c.summary
    assert "sections_failed=1;1" in c.line()


def test_agent_decision_becomes_a_local_check() -> None:
    import datetime as dt

    from atoll.monitor.facts import parse_host_status
    from atoll.monitor.localchecks import host_checks

    facts = parse_host_status({
        "booted": None, "deployments": [], "etc_conflicts": [],
        "agent": {"last_decision": {"action": "wait", "reason":
                                    "replication gate: mariadb: replica lag 900 s > 60 s"},
                  "request": {"kind": "window", "at": None}},
    })
    checks = {c.name: c for c in host_checks(facts, dt.datetime.now(dt.UTC))}
    c = checks["atoll update decision"]
    assert c.state == 1 and "replication gate" in c.summary
    assert "apply requested (window)" in c.summary


def test_refused_host_config_is_crit_with_its_problem() -> None:
    problem = "/etc/atoll/host-config.yaml:4: users.0.ssh_authorized_keys: Value error, bad key"
    f = parse_host_status(sample(provision={"result": "refused", "problems": [problem]}))
    assert states(f)["atoll provisioning"] == CRIT
    assert problem in text(f, "atoll provisioning")
    f = parse_host_status(sample(provision={"result": "applied", "phases": ["system", "apps"]}))
    assert states(f)["atoll provisioning"] == OK
    assert "atoll provisioning" not in states(parse_host_status(sample()))


def test_store_fsck_check() -> None:
    """The scheduled fsck: OK before the first run and when recent, CRIT on damage,
    WARN when the timer seems to have stopped."""
    assert states(parse_host_status(sample()))["atoll store fsck"] == OK
    recent = {"time": "2026-11-24T03:00:00Z", "ok": True, "checked": 14720, "corrupt": 0,
              "missing": 0, "verity": True}
    f = parse_host_status(sample(fsck=recent))
    assert states(f)["atoll store fsck"] == OK
    assert text(f, "atoll store fsck") == \
        "14720 objects whole at 2026-11-24T03:00:00Z; sealed with fs-verity"
    damaged = recent | {"ok": False, "corrupt": 2, "missing": 1}
    f = parse_host_status(sample(fsck=damaged))
    assert states(f)["atoll store fsck"] == CRIT
    assert "2 damaged (quarantined), 1 missing" in text(f, "atoll store fsck")
    assert "atoll store fsck --repair" in text(f, "atoll store fsck")
    stale = recent | {"time": "2026-11-01T03:00:00Z"}
    f = parse_host_status(sample(fsck=stale))
    assert states(f)["atoll store fsck"] == WARN
    assert "last fsck 25d 13h ago" in text(f, "atoll store fsck")
    repaired = recent | {"corrupt": 2, "repaired": 1}  # whole again; deployments may not be
    f = parse_host_status(sample(fsck=repaired))
    assert states(f)["atoll store fsck"] == WARN
    assert "2 damaged object(s) replaced" in text(f, "atoll store fsck")

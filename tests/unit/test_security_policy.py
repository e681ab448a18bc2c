"""Update policy ``security-only``: only releases that fix an open CVE at or above the
threshold are downloaded and prepared; others wait for the operator (docs/security.md)."""

from __future__ import annotations

import datetime as dt

import pytest

from atoll.agent.policy import AgentState, ApplyRequest, Policy, decide

NOW = dt.datetime(2026, 12, 2, 12, 0, tzinfo=dt.UTC)
NEW = "b" * 64


def st(**kw: object) -> AgentState:
    base: dict[str, object] = {"last_check": NOW - dt.timedelta(minutes=5), "booted": "a" * 64}
    base.update(kw)
    return AgentState(**base)  # type: ignore[arg-type]


SEC = Policy(mode="prepare", updates="security-only", security_threshold="high")


@pytest.mark.parametrize(("fixes", "action", "why"), [
    (("CVE-2026-84782",), "download", "fixes CVE-2026-84782"),
    ((), "none", "fixes no open CVE of urgency high or above"),
    (None, "none", "has no CVE report"),
])
def test_download_only_what_fixes_enough(fixes: tuple[str, ...] | None, action: str,
                                         why: str) -> None:
    d = decide(SEC, st(available=NEW, security_fixes=fixes), NOW)
    assert d.action == action and why in d.reason
    if action == "none":
        assert "waits for the operator" in d.reason and d.wake is not None


def test_prepare_follows_the_same_rule() -> None:
    assert decide(SEC, st(downloaded=NEW, available=NEW, security_fixes=()),
                  NOW).action == "none"
    assert decide(SEC, st(downloaded=NEW, available=NEW, security_fixes=("CVE-1",)),
                  NOW).action == "prepare"


def test_an_operator_request_takes_any_release() -> None:
    req = ApplyRequest("now", NOW)
    assert decide(SEC, st(available=NEW, security_fixes=(), request=req), NOW).action \
        == "download"


def test_all_updates_ignore_cve_data() -> None:
    d = decide(Policy(mode="download"), st(available=NEW, security_fixes=None), NOW)
    assert d.action == "download"


def test_policy_fields_round_trip_and_are_checked() -> None:
    assert Policy.from_json(SEC.to_json()) == SEC
    with pytest.raises(ValueError, match="updates: 'security' is not one of"):
        Policy.from_json({"updates": "security"})
    with pytest.raises(ValueError, match="security_threshold: 'critical' is not one of"):
        Policy.from_json({"updates": "security-only", "security_threshold": "critical"})
    with pytest.raises(ValueError, match="unassigned_as"):
        Policy.from_json({"unassigned_as": "not yet assigned"})


def test_compose_security_only_drops_the_updates_suite() -> None:
    from pathlib import Path

    from atoll.compose.treefile import Treefile, security_only, treefile_hash

    tf = Treefile(ref="site/base", version="1", updates=True, security=False)
    sec = security_only(tf)
    assert sec.apt_sources() == [
        "deb http://deb.debian.org/debian bookworm main",
        "deb http://deb.debian.org/debian-security bookworm-security main"]
    # another image: another treefile hash (so another commit id)
    assert treefile_hash(sec, Path(".")) != treefile_hash(tf, Path("."))


def test_wait_reason_says_what_limits_the_data(tmp_path: object) -> None:
    """An update that waits under security-only says when its CVE data has no tracker
    ratings or expired: missing or old data never reads as plain "fixes nothing"."""
    from pathlib import Path

    from atoll.core import canonjson
    from atoll.security import host

    note = "its CVE data expired 2026-11-27T00:00:00Z"
    d = decide(SEC, st(available=NEW, security_fixes=(), security_note=note), NOW)
    assert d.action == "none" and note in d.reason and "waits for the operator" in d.reason
    # the note never turns a qualifying update away, nor explains a missing report
    assert decide(SEC, st(available=NEW, security_fixes=("CVE-1",), security_note=note),
                  NOW).action == "download"
    assert note not in decide(SEC, st(available=NEW, security_fixes=None,
                                      security_note=note), NOW).reason

    root = Path(str(tmp_path))
    doc = {"kind": "atoll-cves", "format": 1, "commit": NEW, "ref": "site/db",
           "release": "bookworm", "generated": "2026-11-20T00:00:00Z",
           "expires": "2026-11-27T00:00:00Z", "tracker": None, "open": [],
           "fixes": {"since": None, "cves": [], "missing": []}}
    host.save_report(root, NEW, canonjson.dumps(doc))
    got = host.update_data_note(root, NEW, NOW, unassigned="low")
    assert "no tracker data" in got and "= low" in got and "expired 2026-11-27" in got
    assert host.update_data_note(root, "d" * 64, NOW) == ""  # no report: update_fixes says so

"""The agent's decisions: policy modes, apply requests, windows."""

from __future__ import annotations

import datetime as dt

import pytest

from atoll.agent.policy import AgentState, ApplyRequest, Policy, decide

NOW = dt.datetime(2026, 12, 2, 12, 0, tzinfo=dt.UTC)  # a Wednesday
CHECKED = NOW - dt.timedelta(minutes=5)


def st(**kw: object) -> AgentState:
    base: dict[str, object] = {"last_check": CHECKED, "booted": "a" * 64}
    base.update(kw)
    return AgentState(**base)  # type: ignore[arg-type]


def test_off_does_nothing() -> None:
    d = decide(Policy(mode="off"), st(last_check=None, available="b" * 64), NOW)
    assert d.action == "none" and "off" in d.reason


def test_check_when_due() -> None:
    assert decide(Policy(mode="check"), st(last_check=None), NOW).action == "check"
    old = NOW - dt.timedelta(hours=2)
    assert decide(Policy(mode="check"), st(last_check=old), NOW).action == "check"
    assert decide(Policy(mode="check"), st(), NOW).action == "none"


@pytest.mark.parametrize("mode, expected", [
    ("check", "none"), ("download", "download"), ("stage", "download"), ("apply", "download")])
def test_available_update_by_mode(mode: str, expected: str) -> None:
    d = decide(Policy(mode=mode), st(available="b" * 64), NOW)  # type: ignore[arg-type]
    assert d.action == expected


@pytest.mark.parametrize("mode, expected", [("download", "none"), ("stage", "stage")])
def test_downloaded_update_by_mode(mode: str, expected: str) -> None:
    d = decide(Policy(mode=mode), st(available="b" * 64, downloaded="b" * 64), NOW)  # type: ignore[arg-type]
    assert d.action == expected


def test_stage_mode_waits_for_the_customer() -> None:
    s = st(available="b" * 64, downloaded="b" * 64, staged="b" * 64)
    d = decide(Policy(mode="stage"), s, NOW)
    assert d.action == "none" and "waiting for the customer" in d.reason
    req = ApplyRequest("now", NOW)
    assert decide(Policy(mode="stage"), st(staged="b" * 64, request=req), NOW).action == "apply"


def test_request_in_check_mode_pulls_and_stages_first() -> None:
    req = ApplyRequest("now", NOW)
    assert decide(Policy(mode="check"), st(available="b" * 64, request=req), NOW).action \
        == "download"
    s = st(available="b" * 64, downloaded="b" * 64, request=req)
    assert decide(Policy(mode="check"), s, NOW).action == "stage"


def test_apply_at_the_customers_time() -> None:
    at = NOW + dt.timedelta(hours=3)
    s = st(staged="b" * 64, request=ApplyRequest("at", NOW, at))
    d = decide(Policy(mode="stage", windows=("Sat 02:00-04:00 UTC",)), s, NOW)
    assert (d.action, d.at) == ("wait", at)
    assert d.wake == CHECKED + dt.timedelta(hours=1)  # it still checks on schedule meanwhile
    assert decide(Policy(mode="stage"), s, at).action == "apply"


def test_window_request_waits_for_the_window() -> None:
    pol = Policy(mode="stage", windows=("Sat 02:00-04:00 Europe/Berlin",))
    s = st(staged="b" * 64, request=ApplyRequest("window", NOW))
    d = decide(pol, s, NOW)
    assert d.action == "wait" and d.at == dt.datetime(2026, 12, 5, 1, 0, tzinfo=dt.UTC)
    inside = dt.datetime(2026, 12, 5, 1, 30, tzinfo=dt.UTC)
    d = decide(pol, st(last_check=inside, staged="b" * 64, request=s.request), inside)
    assert d.action == "apply" and "inside maintenance window" in d.reason


def test_window_too_short_for_last_apply_is_skipped() -> None:
    pol = Policy(mode="apply", windows=("Sat 02:00-02:10 UTC", "Sun 02:00-04:00 UTC"))
    s = st(staged="b" * 64, last_apply_s=900)
    d = decide(pol, s, NOW)
    assert d.action == "wait" and "skipped Sat 02:00-02:10 UTC" in d.reason
    assert d.at == dt.datetime(2026, 12, 6, 2, 0, tzinfo=dt.UTC)


def test_apply_mode_without_windows_applies_when_staged() -> None:
    assert decide(Policy(mode="apply"), st(staged="b" * 64), NOW).action == "apply"


def test_pending_update_is_not_downloaded_again() -> None:
    s = st(available="b" * 64, pending="b" * 64)
    assert decide(Policy(mode="apply"), s, NOW).action == "none"


def test_policy_json_validates() -> None:
    p = Policy.from_json({"mode": "stage", "windows": ["Sat 02:00-04:00 UTC"]})
    assert Policy.from_json(p.to_json()) == p
    with pytest.raises(ValueError, match="mode"):
        Policy.from_json({"mode": "yolo"})
    with pytest.raises(ValueError, match="time zone"):
        Policy.from_json({"windows": ["Sat 02:00-04:00 Nowhere/Town"]})

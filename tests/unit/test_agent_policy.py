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
    ("check", "none"), ("download", "download"), ("prepare", "download"), ("apply", "download")])
def test_available_update_by_mode(mode: str, expected: str) -> None:
    d = decide(Policy(mode=mode), st(available="b" * 64), NOW)  # type: ignore[arg-type]
    assert d.action == expected


@pytest.mark.parametrize("mode, expected", [("download", "none"), ("prepare", "prepare")])
def test_downloaded_update_by_mode(mode: str, expected: str) -> None:
    d = decide(Policy(mode=mode), st(available="b" * 64, downloaded="b" * 64), NOW)  # type: ignore[arg-type]
    assert d.action == expected


def test_prepare_mode_waits_for_the_customer() -> None:
    s = st(available="b" * 64, downloaded="b" * 64, prepared="b" * 64)
    d = decide(Policy(mode="prepare"), s, NOW)
    assert d.action == "none" and "waiting for the customer" in d.reason
    req = ApplyRequest("now", NOW)
    assert decide(Policy(mode="prepare"), st(prepared="b" * 64, request=req), NOW).action == "apply"


def test_request_in_check_mode_pulls_and_prepares_first() -> None:
    req = ApplyRequest("now", NOW)
    assert decide(Policy(mode="check"), st(available="b" * 64, request=req), NOW).action \
        == "download"
    s = st(available="b" * 64, downloaded="b" * 64, request=req)
    assert decide(Policy(mode="check"), s, NOW).action == "prepare"


def test_apply_at_the_customers_time() -> None:
    at = NOW + dt.timedelta(hours=3)
    s = st(prepared="b" * 64, request=ApplyRequest("at", NOW, at))
    d = decide(Policy(mode="prepare", windows=("Sat 02:00-04:00 UTC",)), s, NOW)
    assert (d.action, d.at) == ("wait", at)
    assert d.wake == CHECKED + dt.timedelta(hours=1)  # it still checks on schedule meanwhile
    assert decide(Policy(mode="prepare"), s, at).action == "apply"


def test_window_request_waits_for_the_window() -> None:
    pol = Policy(mode="prepare", windows=("Sat 02:00-04:00 Europe/Berlin",))
    s = st(prepared="b" * 64, request=ApplyRequest("window", NOW))
    d = decide(pol, s, NOW)
    assert d.action == "wait" and d.at == dt.datetime(2026, 12, 5, 1, 0, tzinfo=dt.UTC)
    inside = dt.datetime(2026, 12, 5, 1, 30, tzinfo=dt.UTC)
    d = decide(pol, st(last_check=inside, prepared="b" * 64, request=s.request), inside)
    assert d.action == "apply" and "inside maintenance window" in d.reason


def test_window_too_short_for_last_apply_is_skipped() -> None:
    pol = Policy(mode="apply", windows=("Sat 02:00-02:10 UTC", "Sun 02:00-04:00 UTC"))
    s = st(prepared="b" * 64, last_apply_s=900)
    d = decide(pol, s, NOW)
    assert d.action == "wait" and "skipped Sat 02:00-02:10 UTC" in d.reason
    assert d.at == dt.datetime(2026, 12, 6, 2, 0, tzinfo=dt.UTC)


def test_apply_mode_without_windows_applies_when_prepared() -> None:
    assert decide(Policy(mode="apply"), st(prepared="b" * 64), NOW).action == "apply"


def test_pending_update_is_not_downloaded_again() -> None:
    s = st(available="b" * 64, pending="b" * 64)
    assert decide(Policy(mode="apply"), s, NOW).action == "none"


def test_policy_json_validates() -> None:
    p = Policy.from_json({"mode": "stage", "windows": ["Sat 02:00-04:00 UTC"]})
    assert p.mode == "prepare"  # the mode's first name, in policies written before
    assert Policy.from_json(p.to_json()) == p
    with pytest.raises(ValueError, match="mode"):
        Policy.from_json({"mode": "yolo"})
    with pytest.raises(ValueError, match="time zone"):
        Policy.from_json({"windows": ["Sat 02:00-04:00 Nowhere/Town"]})


def test_apply_noop_says_why_nothing_is_to_be_done() -> None:
    from atoll.agent.policy import apply_noop

    never = AgentState(booted="c1")
    assert apply_noop(never) is None  # never checked: the agent checks first
    checked = dt.datetime(2026, 12, 2, tzinfo=dt.UTC)
    up_to_date = AgentState(checked=checked, booted="c1")
    assert apply_noop(up_to_date) == "already up to date (checked 2026-12-02 00:00 UTC): " \
        "nothing to apply; `atoll update check` looks again"
    assert apply_noop(up_to_date, "window") is None  # the agent checks again before
    assert apply_noop(AgentState(last_check=checked, booted="c1", pending="c2"), "at") == \
        "already applied: c2 boots next"
    assert apply_noop(AgentState(last_check=checked, booted="c1", available="c2",
                                 downloaded="c2", pending="c2")) == \
        "already applied: c2 boots next; `atoll update apply --reboot` reboots into it"
    assert apply_noop(AgentState(last_check=checked, booted="c1", available="c2")) is None
    assert apply_noop(AgentState(last_check=checked, booted="c1", available="c2",
                                 downloaded="c2", prepared="c2")) is None


def test_a_request_that_reboots_into_an_applied_update() -> None:
    """Applied first (pending), the customer then asks for the reboot: `apply --reboot`
    now, or `--at`/`--window` later. Without a reboot it is a no-op, as before."""
    from atoll.agent.policy import apply_noop

    checked = dt.datetime(2026, 12, 2, tzinfo=dt.UTC)
    pending = AgentState(last_check=checked, booted="c1", available="c2", downloaded="c2",
                         pending="c2")
    assert apply_noop(pending, "now", reboot=True) is None
    assert apply_noop(pending, "at", reboot=True) is None
    assert apply_noop(pending, "window", reboot=False) == "already applied: c2 boots next"
    at = NOW + dt.timedelta(hours=3)
    st = AgentState(last_check=NOW, booted="c1", pending="c2",
                    request=ApplyRequest("at", NOW, at, True))
    d = decide(Policy(mode="check"), st, NOW)
    assert d.action == "wait" and d.at == at
    d = decide(Policy(mode="check"), st, at)
    assert d.action == "apply" and "reboot into the pending update" in d.reason
    # a request that does not reboot has nothing to do for a pending update
    st = AgentState(last_check=NOW, booted="c1", pending="c2",
                    request=ApplyRequest("now", NOW, None, False))
    assert decide(Policy(mode="check"), st, NOW).action != "apply"


def test_apply_times_are_checked() -> None:
    from atoll.agent.policy import check_apply_request
    from atoll.core.errors import InputError

    policy = Policy()
    with pytest.raises(InputError, match="has passed"):
        check_apply_request(policy, "at", dt.datetime(2000, 1, 1, tzinfo=dt.UTC), NOW)
    with pytest.raises(InputError, match="more than a year"):
        check_apply_request(policy, "at", NOW + dt.timedelta(days=400), NOW)
    with pytest.raises(InputError, match="give a time"):
        check_apply_request(policy, "at", None, NOW)
    check_apply_request(policy, "at", NOW + dt.timedelta(hours=1), NOW)
    check_apply_request(policy, "at", NOW - dt.timedelta(seconds=30), NOW)  # typed a bit late


def test_policy_refuses_bad_groups_remotes_and_fleet_lock_urls() -> None:
    for field, value, needle in (("group", "a\x1bb", "group"), ("group", "", "group"),
                                 ("group", "a/b", "group"), ("remote", "a/b", "remote"),
                                 ("remote", 5, "remote"),
                                 ("fleet_lock", "notaurl", "http"),
                                 ("fleet_lock", "http://[::1", "not a valid URL"),
                                 ("fleet_lock", "http://u:p@lock/", "credentials")):
        with pytest.raises(ValueError, match=needle):
            Policy.from_json({field: value})
    assert Policy.from_json({"group": "db-eu.1", "fleet_lock": "https://lock.example/"}
                            ).group == "db-eu.1"

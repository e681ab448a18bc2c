"""What a check-in's report means to a rollout (``rollout_store.facts_of``, pure)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from atoll.control.models import Host
from atoll.control.rollout_store import facts_of

C1, C2 = "1" * 64, "2" * 64


def _host(status: dict[str, Any], **report: Any) -> Host:
    booted = status.get("booted") or {}
    return Host(id="h1", customer_id=1, name="db01", booted_version=booted.get("version"),
                pending_version=(status.get("pending") or {}).get("version"),
                last_seen=dt.datetime(2026, 12, 1, tzinfo=dt.UTC), lost=False,
                report={"status": status, **report})


def _status(**kw: Any) -> dict[str, Any]:
    v1 = {"id": f"{C1}.0", "commit": C1, "version": "1"}
    st: dict[str, Any] = {"booted": v1, "deployments": [v1], "pending": None,
                          "rollback": None, "update": {"state": "up-to-date"},
                          "last_boot": {"result": "good", "reason": "", "deployment": v1["id"],
                                        "time": "2026-12-01T10:00:00Z", "checks": []}}
    st.update(kw)
    return st


def test_a_boot_count_rollback_names_the_version_it_left() -> None:
    v2 = {"id": f"{C2}.1", "commit": C2, "version": "2"}
    st = _status(rollback=v2)
    st["deployments"].append(v2)
    st["last_boot"] = {"result": "rolled-back", "reason": "3 failed boots",
                       "deployment": v2["id"], "time": "2026-12-01T11:00:00Z", "checks": []}
    f = facts_of(_host(st), "acme", {"role": "db"})
    assert (f.version, f.rolled_back_from, f.rollback_reason) == ("1", "2", "3 failed boots")
    assert f.rolled_back_at == dt.datetime(2026, 12, 1, 11, tzinfo=dt.UTC)
    assert f.committed and f.customer == "acme" and f.labels == {"role": "db"}


def test_a_good_boot_is_no_rollback() -> None:
    f = facts_of(_host(_status()), None, {})
    assert f.rolled_back_from is None and f.rolled_back_at is None and f.committed


def test_right_after_a_reboot_the_previous_boots_result_is_not_this_ones() -> None:
    """The first check-in after the customer's apply and reboot, before boot-complete:
    the booted deployment is v2 but the last boot record is still v1's."""
    v2 = {"id": f"{C2}.1", "commit": C2, "version": "2"}
    st = _status(booted=v2)
    st["deployments"].append(v2)
    f = facts_of(_host(st), None, {})
    assert f.version == "2" and not f.committed
    st["last_boot"] = dict(st["last_boot"], deployment=v2["id"])
    assert facts_of(_host(st), None, {}).committed


def test_failed_required_checks_and_unhealthy_apps() -> None:
    st = _status()
    st["last_boot"]["checks"] = [{"name": "db", "required": True, "ok": False},
                                 {"name": "disk", "required": False, "ok": False},
                                 {"name": "net", "required": True, "ok": True}]
    apps = [{"name": "a", "container": {"state": "running", "health": "healthy"}},
            {"name": "b", "container": {"state": "running", "health": "unhealthy"}},
            {"name": "c", "container": {"state": "exited", "health": None}},
            {"name": "d", "container": {"state": "running", "health": None}},
            {"name": "e", "container": None}]
    f = facts_of(_host(st, apps=apps), None, {})
    assert f.failed_checks == ("db",)
    assert f.unhealthy_apps == ("b", "c", "e")


def test_apply_due_follows_the_hosts_own_policy() -> None:
    def due(state: str, mode: str) -> bool:
        return facts_of(_host(_status(update={"state": state}), policy={"mode": mode}),
                        None, {}).apply_due

    assert due("prepared", "apply") and due("pending", "prepare")
    assert not due("prepared", "prepare")  # waits for the customer's own trigger
    assert not due("available", "apply") and not due("up-to-date", "apply")


def test_no_report_yet() -> None:
    f = facts_of(Host(id="h2", customer_id=1, name="x", lost=True), None, {})
    assert f.version is None and not f.committed and f.lost and not f.apply_due

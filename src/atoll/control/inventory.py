"""What a check-in changes in the inventory, and which host events it makes (pure).

``summarize`` reads the facts the inventory keeps in columns from a check-in's
report (the stored ``hosts.report``, or a new one); ``changes`` compares two
summaries and names the events to record:

==============  ==================================================================
kind            when (data)
==============  ==================================================================
boot            the last boot is a new one ({result, deployment, reason, time})
rollback        ... and it rolled back by itself ({deployment, reason, time})
version         the booted version or commit changed ({from, to, commit})
update-state    available -> downloaded -> prepared -> pending ... ({from, to, version})
app-health      an app's container health or state changed, or it came or went
                ({app, from, to})
db-role         a database's replication role changed ({app, from, to})
==============  ==================================================================

The first check-in of a host records ``first-checkin`` and none of these.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["MAX_HOTFIXES", "MAX_HOTFIX_TEXT", "Summary", "app_health", "booted_hotfix", "changes",
           "hotfix_packages", "summarize"]


def _get(d: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(d, dict):
            return None
        d = d.get(key)
    return d


def app_health(app: dict[str, Any]) -> str:
    """One word for an app's state: docker's health when it has a health check, else
    its state (running, exited...), ``error`` when it could not be read, ``missing``
    when there is no container."""
    container = app.get("container")
    if isinstance(container, dict):
        return str(container.get("health") or container.get("state") or "unknown")
    return "error" if app.get("error") else "missing"


MAX_HOTFIXES = 20  # a hostile report's list is cut, never echoed whole
MAX_HOTFIX_TEXT = 200  # and each value (as atoll.control.protocol.Short)


def booted_hotfix(report: dict[str, Any] | None) -> Any:
    """The ``hotfix`` object of a stored report's booted deployment (None: a base)."""
    return _get(report or {}, "status", "booted", "hotfix")


def hotfix_packages(hotfix: Any) -> list[dict[str, Any]]:
    """A deployment's ``hotfix`` object's packages (docs/hotfix.md): ``[{"name",
    "version", "kind", "expires"}]``, each a str of at most :data:`MAX_HOTFIX_TEXT`
    characters or None (the ``hotfix`` object is an open field of the check-in: a value
    of another type is None, a longer one is cut; otherwise as the host wrote it: escape
    before printing), at most :data:`MAX_HOTFIXES`; ``[]`` for a base deployment."""
    pkgs = hotfix.get("packages") if isinstance(hotfix, dict) else None
    return [{k: v[:MAX_HOTFIX_TEXT] if isinstance(v := p.get(k), str) else None
             for k in ("name", "version", "kind", "expires")}
            for p in (pkgs if isinstance(pkgs, list) else []) if isinstance(p, dict)
            ][:MAX_HOTFIXES]


@dataclass(frozen=True)
class Summary:
    booted_id: str | None = None
    booted_version: str | None = None
    booted_commit: str | None = None
    pending_version: str | None = None
    update_state: str | None = None
    last_boot_result: str | None = None
    last_boot_time: str | None = None
    last_boot_reason: str | None = None
    last_boot_deployment: str | None = None
    rollback_events: int = 0
    apps: dict[str, tuple[str, str | None]] = field(default_factory=dict)  # health, db role

    def columns(self) -> dict[str, Any]:
        """The ``hosts`` columns this summary sets."""
        return {"booted_version": self.booted_version, "booted_commit": self.booted_commit,
                "pending_version": self.pending_version, "update_state": self.update_state,
                "last_boot_result": self.last_boot_result,
                "last_boot_time": self.last_boot_time,
                "rollback_events": self.rollback_events}


def summarize(report: dict[str, Any] | None) -> Summary | None:
    """The summary of a stored report (``{"status", "apps", ...}``), None for None."""
    if report is None:
        return None
    status = report.get("status") or {}
    apps: dict[str, tuple[str, str | None]] = {}
    for app in report.get("apps") or []:
        if isinstance(app, dict) and isinstance(app.get("name"), str):
            apps[app["name"]] = (app_health(app), _get(app, "database", "role"))
    rollbacks = status.get("rollback_events")
    return Summary(
        booted_id=_get(status, "booted", "id"),
        booted_version=_get(status, "booted", "version"),
        booted_commit=_get(status, "booted", "commit"),
        pending_version=_get(status, "pending", "version"),
        update_state=_get(status, "update", "state"),
        last_boot_result=_get(status, "last_boot", "result"),
        last_boot_time=_get(status, "last_boot", "time"),
        last_boot_reason=_get(status, "last_boot", "reason"),
        last_boot_deployment=_get(status, "last_boot", "deployment"),
        rollback_events=rollbacks if isinstance(rollbacks, int) else 0,
        apps=apps,
    )


def changes(old: Summary | None, new: Summary) -> list[tuple[str, dict[str, Any]]]:
    """The host events between two check-ins, in a fixed order."""
    if old is None:
        return [("first-checkin", {"version": new.booted_version,
                                   "commit": new.booted_commit,
                                   "update_state": new.update_state})]
    out: list[tuple[str, dict[str, Any]]] = []
    if new.last_boot_time is not None and new.last_boot_time != old.last_boot_time:
        boot = {"result": new.last_boot_result, "deployment": new.last_boot_deployment,
                "reason": new.last_boot_reason, "time": new.last_boot_time}
        out.append(("boot", boot))
        if new.last_boot_result == "rolled-back":
            out.append(("rollback", {k: boot[k] for k in ("deployment", "reason", "time")}))
    if (new.booted_version, new.booted_commit) != (old.booted_version, old.booted_commit):
        out.append(("version", {"from": old.booted_version, "to": new.booted_version,
                                "commit": new.booted_commit}))
    if new.update_state != old.update_state:
        out.append(("update-state", {"from": old.update_state, "to": new.update_state,
                                     "version": new.pending_version}))
    for app in sorted(set(old.apps) | set(new.apps)):
        before, after = old.apps.get(app, (None, None)), new.apps.get(app, (None, None))
        if before[0] != after[0]:
            out.append(("app-health", {"app": app, "from": before[0], "to": after[0]}))
        if before[1] != after[1] and app in old.apps and app in new.apps:
            out.append(("db-role", {"app": app, "from": before[1], "to": after[1]}))
    return out

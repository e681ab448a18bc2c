"""The host's status as one JSON-able dict: what ``atoll status --json`` prints.

Other layers read it too (the Checkmk agent, Prometheus metrics). Schema::

    {"sysroot", "booted", "pending", "rollback": {id, commit, version, ref, origin, ...}|None,
     "deployments": [... with "role"],
     "etc_conflicts": [paths, of the next-boot deployment],
     "last_boot": {"result", "reason", "time", "deployment", "acknowledged"}|None,
     "update": the delivery layer's atoll/state/update.json, or None,
     "backups": [{"app", "last", "max_age_s"}],
     "staged": the staged deployment (prepared, not yet the next boot) or None,
     "agent": {"policy", "request", "last_decision", "lock_held", "decisions"} or None}

It reads the state files other layers write (docs/on-disk.md), so it never
imports them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from atoll.core.fsutil import read_json
from atoll.deploy import plan
from atoll.deploy.sysroot import Deployment, Sysroot

__all__ = ["host_status"]


def _last_boot(events: list[dict[str, Any]]) -> dict[str, Any] | None:
    acked = {e.get("boot_time") for e in events if e.get("event") == "ack"}
    for e in reversed(events):
        if e.get("event") == "boot":
            return {
                "result": e.get("result", "unknown"),
                "reason": e.get("reason", ""),
                "time": e.get("time"),
                "deployment": e.get("deployment"),
                "acknowledged": e.get("result") != "rolled-back" or e.get("time") in acked,
            }
    return None


def _backups(sysroot: Path) -> list[dict[str, Any]]:
    out = []
    base = sysroot / "var/lib/atoll/backups"
    if base.is_dir():
        for app in sorted(p for p in base.iterdir() if p.is_dir()):
            info = read_json(app / "policy.json", {}) or {}
            stamps = sorted(
                (read_json(b / "manifest.json", {}) or {}).get("time", "")
                for b in app.iterdir() if b.is_dir()
            )
            out.append({"app": app.name, "last": stamps[-1] if stamps and stamps[-1] else None,
                        "max_age_s": info.get("max_age_s")})
    return out


def host_status(sysroot: Path) -> dict[str, Any]:
    """Collect the status of the sysroot at ``sysroot``."""
    sr = Sysroot(sysroot)
    deps = sr.deployments()
    staged = sr.staged()
    events = sr.events()
    booted = sr.booted_id()
    roles = plan.roles([d.id for d in deps], booted)
    listed = []
    by_role: dict[str, dict[str, Any] | None] = {"booted": None, "pending": None,
                                                 "rollback": None}
    for i, d in enumerate(deps):
        item = d.to_json() | {"index": i, "role": roles.get(d.id, "other")}
        listed.append(item)
        if item["role"] in by_role and by_role[item["role"]] is None:
            by_role[item["role"]] = item
    return {
        "sysroot": str(sysroot),
        **by_role,
        "deployments": listed,
        "etc_conflicts": list(deps[0].etc_conflicts) if deps else [],
        "last_boot": _last_boot(events),
        "update": _update(read_json(sr.state / "update.json"), by_role, staged),
        "rollback_events": sum(1 for e in events if e.get("event") == "boot"
                               and e.get("result") == "rolled-back"),
        "backups": _backups(Path(sysroot)),
        "staged": staged.to_json() if staged else None,
        "agent": _agent(sr),
        "provision": _provision(Path(sysroot)),
    }


def _provision(sysroot: Path) -> dict[str, Any] | None:
    """The first-boot host config's outcome (what ``atoll host-config apply`` recorded)."""
    rec = read_json(sysroot / "var/lib/atoll/provision/applied.json")
    if not isinstance(rec, dict):
        return None
    return {k: rec.get(k) for k in ("result", "time", "config_sha256", "phases", "problems",
                                    "error") if rec.get(k) is not None}


def _update(raw: dict[str, Any] | None, roles: dict[str, dict[str, Any] | None],
            staged: Deployment | None) -> dict[str, Any] | None:
    """One update state for people and monitoring: none | available | downloaded | staged.

    ``staged`` means "boots next" (applied at the next reboot); a deployment that
    is prepared but not yet applied counts as downloaded.
    """
    pending = roles.get("pending")
    if pending is not None:
        return (raw or {}) | {"state": "staged", "version": pending["version"],
                              "since": pending["created"], "commit": pending["commit"],
                              "last_check": (raw or {}).get("checked"),
                              "metadata_expires": (raw or {}).get("metadata_expires")}
    if raw is None:
        return None
    state = {"up-to-date": "none"}.get(raw.get("state", ""), raw.get("state", "unknown"))
    since = raw.get("downloaded_since") if state == "downloaded" else raw.get("available_since")
    if staged is not None and staged.commit == raw.get("commit"):
        state, since = "downloaded", since or staged.created
    return raw | {"state": state, "since": since if state != "none" else raw.get("since"),
                  "last_check": raw.get("checked")}


def _agent(sr: Sysroot) -> dict[str, Any] | None:
    agent = read_json(sr.state / "agent.json")
    policy = read_json(sr.state / "policy.json")
    if agent is None and policy is None:
        return None
    agent = agent or {}
    return {"policy": policy, "request": agent.get("request"),
            "last_decision": agent.get("last_decision"), "lock_held": agent.get("lock_held"),
            "decisions": agent.get("decisions", [])[-10:]}

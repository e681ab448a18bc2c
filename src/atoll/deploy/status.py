"""The host's status: what ``atoll status --json`` prints, schema ``atoll/v1`` ``HostStatus``.

One document for people (``atoll status`` renders it), monitoring (Checkmk local
checks, Prometheus), the agent, and Ansible/Salt. The words are those of
docs/states.md; the schema is docs/status.schema.json (checked in tests)::

    {"apiVersion": "atoll/v1", "kind": "HostStatus", "sysroot": str,
     "deployments": [Deployment...],          the boot order: [0] boots next
     "booted" | "pending" | "rollback" | "prepared": Deployment | null,
     "etc_conflicts": [paths, of the next-boot deployment],
     "last_boot": {"result": "good"|"rolled-back"|"failed"|"unknown", "reason",
                   "time", "deployment", "acknowledged", "checks": [...]} | null,
     "rollback_events": int,
     "update": {"state": "up-to-date"|"available"|"downloaded"|"prepared"|"pending",
                "version", "commit", "since", "remote", "channel", ...} | null,
     "backups": [...], "agent": {...} | null, "provision": {...} | null}

    Deployment: {"id": "<commit>.<serial>", "commit", "serial", "version",
                 "timestamp": commit time (ISO 8601) | null, "created", "origin",
                 "ref", "pinned", "kernel", "etc_conflicts", "role", "index"}
                 role: booted | pending | rollback | other (index: -1 for prepared)

It reads the state files other layers write (docs/on-disk.md), so it never
imports them.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from pathlib import Path
from typing import Any

from atoll.core.errors import StoreError
from atoll.core.fsutil import read_json
from atoll.deploy import plan
from atoll.deploy.sysroot import Deployment, Sysroot
from atoll.store.ops import package_changes

__all__ = ["API_VERSION", "KIND", "UPDATE_STATES", "host_status", "update_state"]

API_VERSION = "atoll/v1"
KIND = "HostStatus"
UPDATE_STATES = ("up-to-date", "available", "downloaded", "prepared", "pending")


def _iso(ts: int) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


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
                "checks": e.get("checks", []),
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


def _describe(sr: Sysroot, d: Deployment, role: str, index: int,
              packages: dict[str, Any] | None) -> dict[str, Any]:
    item = d.to_json() | {"role": role, "index": index, "timestamp": None}
    item["origin"] = d.origin or d.ref
    with contextlib.suppress(StoreError, OSError):  # a lost commit: shown without its time
        item["timestamp"] = _iso(sr.repo.read_commit(d.commit).timestamp)
    if packages is not None:
        item["packages"] = packages
    return item


def host_status(sysroot: Path, *, packages: bool = False) -> dict[str, Any]:
    """Collect the status of the sysroot at ``sysroot``.

    Args:
        packages: add each deployment's package changes against the booted one
            (``status -v``).

    Raises:
        HostStateError: not an atoll sysroot.
    """
    sr = Sysroot(sysroot)
    deps = sr.deployments()
    prepared = sr.prepared()
    events = sr.events()
    booted = sr.booted_id()
    roles = plan.roles([d.id for d in deps], booted)
    booted_dep = next((d for d in deps if d.id == booted), None)

    def diff(d: Deployment) -> dict[str, Any] | None:
        if not packages or booted_dep is None or d.id == booted_dep.id:
            return None
        try:
            repo = sr.repo
            return package_changes(repo.read_commit(booted_dep.commit), repo.read_commit(d.commit))
        except (StoreError, OSError):
            return None

    listed = [_describe(sr, d, roles.get(d.id, "other"), i, diff(d)) for i, d in enumerate(deps)]
    by_role: dict[str, dict[str, Any] | None] = {"booted": None, "pending": None,
                                                 "rollback": None}
    for item in listed:
        if item["role"] in by_role and by_role[item["role"]] is None:
            by_role[item["role"]] = item
    prep = _describe(sr, prepared, "prepared", -1, diff(prepared)) if prepared else None
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "sysroot": str(sysroot),
        **by_role,
        "prepared": prep,
        "deployments": listed,
        "etc_conflicts": list(deps[0].etc_conflicts) if deps else [],
        "last_boot": _last_boot(events),
        "rollback_events": sum(1 for e in events if e.get("event") == "boot"
                               and e.get("result") == "rolled-back"),
        "update": update_state(read_json(sr.state / "update.json"), by_role, prep),
        "backups": _backups(Path(sysroot)),
        "agent": _agent(sr),
        "provision": _provision(Path(sysroot)),
    }


def update_state(raw: dict[str, Any] | None, roles: dict[str, dict[str, Any] | None],
                 prepared: dict[str, Any] | None) -> dict[str, Any] | None:
    """The one update state (docs/states.md), from the delivery layer's update.json and
    the deployments. Pure.

    ``pending``: applied, boots next. ``prepared``: checked out, waits for
    ``update apply``. ``downloaded``: verified in the store. ``available``: signed
    on the remote, not downloaded. ``up-to-date``: the host runs the newest.
    """
    raw = dict(raw or {})
    common = {"last_check": raw.get("checked"), "metadata_expires": raw.get("metadata_expires"),
              "remote": raw.get("remote"), "channel": raw.get("channel")}
    pending = roles.get("pending")
    if pending is not None:
        return raw | common | {"state": "pending", "version": pending["version"],
                               "commit": pending["commit"], "since": pending["created"]}
    if prepared is not None:
        return raw | common | {"state": "prepared", "version": prepared["version"],
                               "commit": prepared["commit"], "since": prepared["created"]}
    if not raw:
        return None
    booted = roles.get("booted")
    state = str(raw.get("state", "unknown"))
    if state in ("up-to-date", "none") or (booted is not None
                                           and booted["commit"] == raw.get("commit")):
        return raw | common | {"state": "up-to-date", "since": raw.get("since")}
    since = raw.get("downloaded_since") if state == "downloaded" else raw.get("available_since")
    return raw | common | {"state": state, "since": since}


def _provision(sysroot: Path) -> dict[str, Any] | None:
    """The first-boot host config's outcome (what ``atoll host-config apply`` recorded)."""
    rec = read_json(sysroot / "var/lib/atoll/provision/applied.json")
    if not isinstance(rec, dict):
        return None
    return {k: rec.get(k) for k in ("result", "time", "config_sha256", "phases", "problems",
                                    "error") if rec.get(k) is not None}


def _agent(sr: Sysroot) -> dict[str, Any] | None:
    agent = read_json(sr.state / "agent.json")
    policy = read_json(sr.state / "policy.json")
    if agent is None and policy is None:
        return None
    agent = agent or {}
    return {"policy": policy, "request": agent.get("request"),
            "last_decision": agent.get("last_decision"), "lock_held": agent.get("lock_held"),
            "decisions": agent.get("decisions", [])[-10:]}

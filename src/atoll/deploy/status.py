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
     "backups": [...], "agent": {...} | null, "provision": {...} | null,
     "fsck": {...} | null,
     "problems": [{"file", "problem", "resolution"}]}   damaged state files: the
                 sections they feed are unknown (empty or null), the rest is reported

    Deployment: {"id": "<commit>.<serial>", "commit", "serial", "version",
                 "timestamp": commit time (ISO 8601) | null, "created", "origin",
                 "ref", "pinned", "kernel", "etc_conflicts", "role", "index",
                 "hotfix": {"base", "base_version", "packages": [{"name", "version",
                            "kind", "expires"}]} | null}   a hotfix deployment's base
                            and packages (expires: a pin's, ISO 8601 UTC, or null)
                 role: booted | pending | rollback | other (index: -1 for prepared)

It reads the state files other layers write (docs/on-disk.md), so it never
imports them. A damaged state file never stops it: the section that file feeds is
reported empty or null and the file is named in ``problems``, with what to do, so
that people and monitoring still see everything else.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from pathlib import Path
from typing import Any

from atoll.core.errors import DamagedStateError, StoreError
from atoll.core.fsutil import damaged, read_state_json
from atoll.deploy import plan
from atoll.deploy.sysroot import Deployment, Sysroot
from atoll.store.ops import package_changes

__all__ = ["API_VERSION", "KIND", "UPDATE_FIX", "UPDATE_STATES", "host_status",
           "update_state"]

API_VERSION = "atoll/v1"
KIND = "HostStatus"
UPDATE_STATES = ("up-to-date", "available", "downloaded", "prepared", "pending")


def _iso(ts: int) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _last_boot(events: list[dict[str, Any]]) -> dict[str, Any] | None:
    acked = {e.get("boot_time") for e in events if e.get("event") == "ack"}
    for e in reversed(events):
        if e.get("event") == "boot":
            result = e.get("result")
            if result not in ("good", "rolled-back", "failed"):
                result = "unknown"
            checks = e.get("checks")
            return {
                "result": result,
                "reason": _str(e.get("reason")) or "",
                "time": _str(e.get("time")),
                "deployment": _str(e.get("deployment")),
                "acknowledged": result != "rolled-back" or e.get("time") in acked,
                "checks": [c for c in checks if isinstance(c, dict)]
                if isinstance(checks, list) else [],
            }
    return None


def _backups(sysroot: Path, problems: list[dict[str, str]]) -> list[dict[str, Any]]:
    out = []
    base = sysroot / "var/lib/atoll/backups"
    fix = "run a backup again (`atoll app backup APP`); it rewrites it"
    if base.is_dir():
        for app in sorted(p for p in base.iterdir() if p.is_dir()):
            try:
                info = read_state_json(app / "policy.json", dict, {}, resolution=fix)
                stamps = sorted(
                    str(read_state_json(b / "manifest.json", dict, {}, resolution=fix)
                        .get("time") or "")
                    for b in app.iterdir() if b.is_dir()
                )
            except DamagedStateError as exc:
                _problem(problems, exc)
                continue
            max_age = info.get("max_age_s")
            out.append({"app": app.name, "last": stamps[-1] if stamps and stamps[-1] else None,
                        "max_age_s": max_age if isinstance(max_age, int) else None})
    return out


def _problem(problems: list[dict[str, str]], exc: DamagedStateError) -> None:
    problems.append({"file": exc.path, "problem": exc.brief,
                     "resolution": exc.resolution or ""})


def _hotfix(meta: Any, expiry: dict[str, str] | None = None) -> dict[str, Any] | None:
    """A hotfix deployment's base and packages (docs/hotfix.md), from its commit;
    ``expiry``: a pin's expiry by package sha256 (from the hotfix records)."""
    if not isinstance(meta, dict) or not isinstance(meta.get("base"), str):
        return None
    raw = meta.get("packages")
    pkgs: list[Any] = raw if isinstance(raw, list) else []
    return {"base": meta["base"], "base_version": _str(meta.get("base_version")) or "",
            "packages": [{"name": str(p.get("name")), "version": str(p.get("version")),
                          "kind": str(p.get("kind")),
                          "expires": (expiry or {}).get(str(p.get("sha256")))}
                         for p in pkgs if isinstance(p, dict)]}


def _expiry(sr: Sysroot) -> dict[str, str]:
    """The pins' expiry times (ISO 8601 UTC) by package sha256, from
    ``atoll/state/hotfixes.json`` (written by atoll.deploy.hotfix); {} when it does not
    read (``hotfix list`` names the problem)."""
    try:
        raw = read_state_json(sr.state / "hotfixes.json", dict, default={},
                              resolution="see `atoll hotfix list`")
    except DamagedStateError:
        return {}
    items = raw.get("hotfixes") if isinstance(raw, dict) else None
    return {h["sha256"]: h["expires"] for h in items or []
            if isinstance(h, dict) and isinstance(h.get("sha256"), str)
            and isinstance(h.get("expires"), str)}


def _describe(sr: Sysroot, d: Deployment, role: str, index: int,
              packages: dict[str, Any] | None,
              expiry: dict[str, str] | None = None) -> dict[str, Any]:
    item = d.to_json() | {"role": role, "index": index, "timestamp": None, "hotfix": None}
    item["origin"] = d.origin or d.ref
    with contextlib.suppress(StoreError, OSError):  # a lost commit: shown without its time
        c = sr.repo.read_commit(d.commit)
        item["timestamp"] = _iso(c.timestamp)
        item["hotfix"] = _hotfix(c.metadata.get("hotfix"), expiry)
    if packages is not None:
        item["packages"] = packages
    return item


def host_status(sysroot: Path, *, packages: bool = False) -> dict[str, Any]:
    """Collect the status of the sysroot at ``sysroot``.

    Args:
        packages: add each deployment's package changes against the booted one
            (``status -v``).

    Raises:
        HostStateError: not an atoll sysroot (a damaged state file is not raised: it is
            listed in ``problems`` and the section it feeds is empty or null).
    """
    sr = Sysroot(sysroot)
    sr.check()
    problems: list[dict[str, str]] = []
    deps: list[Deployment] = []
    booted: str | None = None
    prepared: Deployment | None = None
    try:
        deps = sr.deployments()
    except DamagedStateError as exc:
        _problem(problems, exc)
    try:
        booted = sr.booted_id()
    except DamagedStateError as exc:
        _problem(problems, exc)
    try:
        prepared = sr.prepared()
    except DamagedStateError as exc:
        _problem(problems, exc)
    events, bad_lines = sr.event_log()
    if bad_lines:
        lines = ", ".join(str(n) for n in bad_lines[:5]) + (", ..." if len(bad_lines) > 5 else "")
        problems.append({"file": str(sr.state / "events.jsonl"),
                         "problem": f"{len(bad_lines)} unreadable line(s) skipped ({lines})",
                         "resolution": "the other events are read; delete those lines to "
                         "silence this"})
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

    expiry = _expiry(sr)
    listed = [_describe(sr, d, roles.get(d.id, "other"), i, diff(d), expiry)
              for i, d in enumerate(deps)]
    by_role: dict[str, dict[str, Any] | None] = {"booted": None, "pending": None,
                                                 "rollback": None}
    for item in listed:
        if item["role"] in by_role and by_role[item["role"]] is None:
            by_role[item["role"]] = item
    prep = _describe(sr, prepared, "prepared", -1, diff(prepared), expiry) if prepared else None
    update_path = sr.state / "update.json"
    try:
        raw = read_state_json(update_path, dict, resolution=UPDATE_FIX)
        why = _update_problem(raw)
        if why:
            raise damaged(update_path, why, UPDATE_FIX)
    except DamagedStateError as exc:
        _problem(problems, exc)
        raw = None
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
        "update": update_state(raw, by_role, prep),
        "backups": _backups(Path(sysroot), problems),
        "agent": _agent(sr, problems),
        "provision": _provision(Path(sysroot), problems),
        "fsck": _fsck(sr.state / "fsck.json", problems),
        "problems": problems,
    }


UPDATE_FIX = "run `atoll update check`: it rewrites it"
# what `update check` writes (docs/delivery.md), the other states, older atolls' words
_UPDATE_WORDS = (*UPDATE_STATES, "none", "staged")


def _update_problem(raw: dict[str, Any] | None) -> str | None:
    """What is wrong with update.json's content, or None. Pure."""
    if raw is None:
        return None
    if raw.get("state") not in _UPDATE_WORDS:
        return f"unknown state {str(raw.get('state'))[:40]!r}"
    for key in ("version", "commit", "remote", "channel", "checked", "since",
                "metadata_expires", "available_since", "downloaded_since"):
        if raw.get(key) is not None and not isinstance(raw[key], str):
            return f"{key} is not a string"
    if raw.get("download_bytes") is not None and (
            not isinstance(raw["download_bytes"], int) or isinstance(raw["download_bytes"], bool)):
        return "download_bytes is not a number"
    return None


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
    # older atolls: "none" (nothing new), "staged" (applied; no longer pending here)
    state = {"none": "up-to-date", "staged": "downloaded"}.get(state, state)
    if state == "up-to-date" or (booted is not None and booted["commit"] == raw.get("commit")):
        return raw | common | {"state": "up-to-date", "since": raw.get("since")}
    since = raw.get("downloaded_since") if state == "downloaded" else raw.get("available_since")
    return raw | common | {"state": state, "since": since}


FSCK_FIX = "run `atoll store fsck` (atoll-fsck.service): it rewrites it"


def _fsck(path: Path, problems: list[dict[str, str]]) -> dict[str, Any] | None:
    """The last ``atoll store fsck`` of the host's store (state/fsck.json, written by
    the CLI: time, ok, checked, corrupt, missing, repaired, verity); None: never."""
    try:
        rec = read_state_json(path, dict, resolution=FSCK_FIX)
        if rec is None:
            return None
        for key in ("checked", "corrupt", "missing", "repaired"):
            if not isinstance(rec.get(key, 0), int) or isinstance(rec.get(key), bool):
                raise damaged(path, f"{key} is not a number", FSCK_FIX)
        if not isinstance(rec.get("time"), str) or not isinstance(rec.get("ok"), bool):
            raise damaged(path, "time or ok is missing", FSCK_FIX)
    except DamagedStateError as exc:
        _problem(problems, exc)
        return None
    return {k: rec.get(k) for k in ("time", "ok", "checked", "corrupt", "missing",
                                    "repaired", "verity")}


def _provision(sysroot: Path, problems: list[dict[str, str]]) -> dict[str, Any] | None:
    """The first-boot host config's outcome (what ``atoll host-config apply`` recorded)."""
    try:
        rec = read_state_json(sysroot / "var/lib/atoll/provision/applied.json", dict,
                              resolution="apply the host config again (`atoll host-config "
                              "apply`); it rewrites it")
    except DamagedStateError as exc:
        _problem(problems, exc)
        return None
    if rec is None:
        return None
    return {k: rec.get(k) for k in ("result", "time", "config_sha256", "phases", "problems",
                                    "error") if rec.get(k) is not None}


def _agent(sr: Sysroot, problems: list[dict[str, str]]) -> dict[str, Any] | None:
    agent = policy = None
    try:
        agent = read_state_json(sr.state / "agent.json", dict,
                                resolution="remove it: atolld starts a new one (its decision "
                                "log and a scheduled apply are lost)")
    except DamagedStateError as exc:
        _problem(problems, exc)
    try:
        policy = read_state_json(sr.state / "policy.json", dict,
                                 resolution="set the policy again (`atoll policy set`)")
    except DamagedStateError as exc:
        _problem(problems, exc)
    if agent is None and policy is None:
        return None
    agent = agent or {}
    decisions = agent.get("decisions")
    return {"policy": policy, "request": agent.get("request"),
            "last_decision": agent.get("last_decision"), "lock_held": agent.get("lock_held"),
            "decisions": decisions[-10:] if isinstance(decisions, list) else []}

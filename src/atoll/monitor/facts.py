"""Typed host facts for monitoring, parsed from ``atoll.deploy.status.host_status``.

The deploy layer reports the host as a JSON-able dict (the contract below);
this module turns it into frozen dataclasses once, so that the Checkmk local
checks and the Prometheus metrics read the same typed facts. A missing deploy
layer, a failing call or a malformed dict gives :class:`HostFacts` with
``available=False`` and the reason in ``error``: monitoring then says
"unknown" instead of breaking.

Contract (every key optional; unknown keys are ignored)::

    {"booted": {"id","commit","version","ref","origin"} | None,
     "pending": same | None, "rollback": same | None, "deployments": [...],
     "etc_conflicts": [paths],
     "last_boot": {"result": "good"|"rolled-back"|"unknown", "reason": str,
                   "time": iso8601, "acknowledged": bool} | None,
     "update": {"state": "up-to-date"|"available"|"downloaded"|"prepared"|"pending",
                "version": str,
                "since": iso8601, "metadata_expires": iso8601,
                "last_check": iso8601 (optional)} | None,
     "backups": [{"app": str, "last": iso8601 | None, "max_age_s": int}],
     "rollback_events": int (optional),
     "problems": [{"file": path, "problem": str}] (optional): damaged state files;
                 the checks fed by one say UNKNOWN and why, the others go on}
"""

from __future__ import annotations

import datetime as dt
import importlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from atoll.core.errors import AtollError

__all__ = [
    "BOOT_RESULTS",
    "UPDATE_STATES",
    "BackupFact",
    "BootFact",
    "CveFact",
    "DeploymentFact",
    "FsckFact",
    "HostFacts",
    "UpdateFact",
    "load_host_facts",
    "parse_host_status",
    "parse_time",
]

log = logging.getLogger("atoll.monitor")

# docs/states.md; the first words atoll used ("none", "staged") are read as today's
UPDATE_STATES = ("up-to-date", "available", "downloaded", "prepared", "pending")
_OLD_STATES = {"none": "up-to-date", "staged": "pending"}
BOOT_RESULTS = ("good", "rolled-back", "unknown")


@dataclass(frozen=True)
class DeploymentFact:
    """One deployment as the deploy layer reports it."""

    id: str
    commit: str = ""
    version: str = ""
    ref: str = ""
    origin: str = ""

    @property
    def channel(self) -> str:
        """The channel the deployment follows: its origin, else its ref."""
        return self.origin or self.ref


@dataclass(frozen=True)
class BootFact:
    """How the last boot ended."""

    result: str
    reason: str = ""
    time: dt.datetime | None = None
    acknowledged: bool = False


@dataclass(frozen=True)
class UpdateFact:
    """The update state machine's current state.

    ``state`` is one of :data:`UPDATE_STATES`, or a newer state name passed
    through as is (the local check reports it as UNKNOWN).
    """

    state: str
    version: str = ""
    since: dt.datetime | None = None
    metadata_expires: dt.datetime | None = None
    last_check: dt.datetime | None = None


@dataclass(frozen=True)
class FsckFact:
    """The last ``atoll store fsck`` of the host's store."""

    time: dt.datetime | None
    ok: bool
    checked: int = 0
    corrupt: int = 0
    missing: int = 0
    verity: bool = False


@dataclass(frozen=True)
class BackupFact:
    """The newest backup of one app and its policy (``max_age_s`` 0: no policy)."""

    app: str
    last: dt.datetime | None
    max_age_s: int


@dataclass(frozen=True)
class CveFact:
    """The booted commit's signed CVE report (atoll.security; None fields: no report)."""

    open_counts: tuple[tuple[str, int], ...] = ()  # (urgency, CVEs), atoll.security.report
    generated: dt.datetime | None = None
    expires: dt.datetime | None = None
    report: bool = False
    fixes_available: int = 0  # open CVEs the tracker knows a fixed version for
    open_known: bool = True  # False: published without tracker data (open CVEs unknown)
    problem: str = ""  # the kept report does not read (damaged, wrong shape)


@dataclass(frozen=True)
class HostFacts:
    """Everything monitoring knows about atoll on this host."""

    available: bool
    error: str = ""
    booted: DeploymentFact | None = None
    pending: DeploymentFact | None = None
    rollback: DeploymentFact | None = None
    etc_conflicts: tuple[str, ...] = ()
    last_boot: BootFact | None = None
    update: UpdateFact | None = None
    backups: tuple[BackupFact, ...] = field(default_factory=tuple)
    rollback_events: int | None = None
    # the host agent's last decision (why it did or did not apply/reboot), if it runs
    decision_action: str | None = None
    decision_reason: str = ""
    apply_request: str | None = None
    # the first-boot host config: applied | refused | failed, and why (None: never run)
    provision_result: str | None = None
    provision_problem: str = ""
    # damaged state files: (file name, problem); the checks they feed say UNKNOWN
    problems: tuple[tuple[str, str], ...] = ()
    fsck: FsckFact | None = None  # None: never run
    cves: CveFact | None = None  # None: no booted commit, or not read

    def damaged(self, *names: str) -> str | None:
        """The problem of the first damaged state file named (by file name), or None."""
        for path, problem in self.problems:
            if Path(path).name in names:
                return problem
        return None

    @classmethod
    def unknown(cls, error: str) -> HostFacts:
        """Facts that say only why they are unknown."""
        return cls(available=False, error=error)


def parse_time(value: Any) -> dt.datetime | None:
    """Parse an ISO 8601 time (``Z`` allowed); naive times are taken as UTC.

    Raises:
        ValueError: the value is neither None nor a valid ISO 8601 string.
    """
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ValueError(f"not an ISO 8601 time: {value!r}")
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    parsed = dt.datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed


def _str(value: Any) -> str:
    return "" if value is None else str(value)


def _deployment(value: Any, where: str) -> DeploymentFact | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ValueError(f"{where}: expected an object, got {type(value).__name__}")
    return DeploymentFact(
        id=_str(value.get("id")),
        commit=_str(value.get("commit")),
        version=_str(value.get("version")),
        ref=_str(value.get("ref")),
        origin=_str(value.get("origin")),
    )


def _boot(value: Any) -> BootFact | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ValueError("last_boot: expected an object")
    result = _str(value.get("result")) or "unknown"
    reason = _str(value.get("reason"))
    if result not in BOOT_RESULTS:  # a newer deploy layer: say so, do not guess
        reason = f"unknown boot result {result!r}" + (f": {reason}" if reason else "")
        result = "unknown"
    return BootFact(
        result=result,
        reason=reason,
        time=parse_time(value.get("time")),
        acknowledged=bool(value.get("acknowledged", False)),
    )


def _update(value: Any) -> UpdateFact | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ValueError("update: expected an object")
    state = _str(value.get("state")) or "up-to-date"
    state = _OLD_STATES.get(state, state)
    return UpdateFact(
        state=state,
        version=_str(value.get("version")),
        since=parse_time(value.get("since")),
        metadata_expires=parse_time(value.get("metadata_expires")),
        last_check=parse_time(value.get("last_check")),
    )


def _backups(value: Any) -> tuple[BackupFact, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ValueError("backups: expected a list")
    out = []
    for i, item in enumerate(value):
        if not isinstance(item, Mapping) or not item.get("app"):
            raise ValueError(f"backups[{i}]: expected an object with 'app'")
        out.append(
            BackupFact(
                app=str(item["app"]),
                last=parse_time(item.get("last")),
                max_age_s=int(item.get("max_age_s") or 0),
            )
        )
    return tuple(out)


def _fsck(value: Any) -> FsckFact | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ValueError("fsck: expected an object")
    return FsckFact(time=parse_time(value.get("time")), ok=value.get("ok") is True,
                    checked=int(value.get("checked") or 0),
                    corrupt=int(value.get("corrupt") or 0),
                    missing=int(value.get("missing") or 0),
                    verity=value.get("verity") is True)


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def parse_host_status(data: Any) -> HostFacts:
    """Turn the deploy layer's host status dict into :class:`HostFacts`.

    Malformed input never raises: it gives unknown facts naming the problem.
    """
    if not isinstance(data, Mapping):
        return HostFacts.unknown(f"host status is not an object: {type(data).__name__}")
    try:
        conflicts = data.get("etc_conflicts") or []
        if not isinstance(conflicts, list):
            raise ValueError("etc_conflicts: expected a list")
        events = data.get("rollback_events")
        agent = _mapping(data.get("agent"))
        decision = _mapping(agent.get("last_decision"))
        request = _mapping(agent.get("request"))
        prov = _mapping(data.get("provision"))
        problems = prov.get("problems") or ([prov["error"]] if prov.get("error") else [])
        damaged = data.get("problems") or []
        if not isinstance(damaged, list):
            raise ValueError("problems: expected a list")
        return HostFacts(
            available=True,
            booted=_deployment(data.get("booted"), "booted"),
            pending=_deployment(data.get("pending"), "pending"),
            rollback=_deployment(data.get("rollback"), "rollback"),
            etc_conflicts=tuple(str(p) for p in conflicts),
            last_boot=_boot(data.get("last_boot")),
            update=_update(data.get("update")),
            backups=_backups(data.get("backups")),
            rollback_events=None if events is None else int(events),
            decision_action=_str(decision.get("action")) or None,
            decision_reason=_str(decision.get("reason")),
            apply_request=(_str(request.get("kind")) + (f" at {request['at']}" if
                           request.get("at") else "")) if request else None,
            provision_result=_str(prov.get("result")) or None,
            provision_problem=_str(problems[0]) if problems else "",
            problems=tuple((_str(_mapping(d).get("file")), _str(_mapping(d).get("problem")))
                           for d in damaged),
            fsck=_fsck(data.get("fsck")),
        )
    except (ValueError, TypeError) as exc:
        return HostFacts.unknown(f"malformed host status: {exc}")


def load_host_facts(sysroot: Path) -> HostFacts:
    """Ask the deploy layer for the host status; unknown facts if it cannot say."""
    try:
        # the deploy layer, imported lazily: monitoring works without it
        host_status = importlib.import_module("atoll.deploy.status").host_status
    except (ImportError, AttributeError) as exc:
        return HostFacts.unknown(f"atoll.deploy.status is not available: {exc}")
    try:
        data = host_status(sysroot)
    except AtollError as exc:
        return HostFacts.unknown(f"host status: {exc.brief}")
    except Exception as exc:  # a monitoring agent must report, never crash
        log.debug("host_status failed", exc_info=True)
        return HostFacts.unknown(f"host status failed: {type(exc).__name__}: {exc}")
    facts = parse_host_status(data)
    if facts.booted is not None and facts.booted.commit:
        facts = replace(facts, cves=_cves(sysroot, facts.booted.commit))
    return facts


def _cves(sysroot: Path, commit: str) -> CveFact | None:
    """The booted commit's CVE report as a fact (``problem``: it does not read; logged)."""
    try:
        from atoll.security.host import load_report
        from atoll.security.report import counts

        doc = load_report(sysroot, commit)
    except AtollError as exc:  # said by the check (UNKNOWN), never a check that vanishes
        log.warning("CVE report of %s: %s", commit[:12], exc)
        return CveFact(problem=exc.brief)
    except ImportError as exc:
        log.warning("CVE report of %s: %s", commit[:12], exc)
        return None
    if doc is None:
        return CveFact()
    if doc.get("tracker") is None:  # no tracker data: its empty list means "unknown"
        return CveFact((), parse_time(doc["generated"]), parse_time(doc["expires"]), True,
                       0, open_known=False)
    return CveFact(tuple(counts(doc["open"]).items()), parse_time(doc["generated"]),
                   parse_time(doc["expires"]), True,
                   len({c["cve"] for c in doc["open"] if c.get("fixed_version")}))

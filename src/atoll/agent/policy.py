"""Update policy and the agent's decisions (pure).

Modes, as Zincati and the operations team name them:

======== ============================================================
off      never check
check    check on a schedule and report what is available
download check, then pull and verify the update into the host's store
stage    download, then prepare the deployment; apply only on the customer's command
apply    stage, then apply (make it the next boot and reboot) in the next window
======== ============================================================

Apply requests (the customer's command, any mode but off):

- ``now``: apply immediately (``--now``; also what ``--force`` means);
- ``at``: at the time the customer chose (``--at``): their explicit choice of time,
  windows do not delay it;
- ``window``: in the next maintenance window that is long enough (plain
  ``atoll update apply`` when windows are configured).

Without windows, ``window`` means now. Every decision carries its reason; the
agent logs it and keeps the last ones in its state for ``status --json`` and
the Checkmk local checks.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Literal

from atoll.agent.windows import Window, next_window, parse_window

__all__ = ["AgentState", "ApplyRequest", "Decision", "Policy", "decide"]

Mode = Literal["off", "check", "download", "stage", "apply"]
MODES: tuple[str, ...] = ("off", "check", "download", "stage", "apply")


@dataclass(frozen=True)
class Policy:
    mode: Mode = "check"
    windows: tuple[str, ...] = ()
    check_interval_s: int = 3600
    jitter_s: int = 300
    fleet_lock: str | None = None
    group: str = "default"
    reboot: bool = True
    remote: str = "origin"
    max_replica_lag_s: float = 60.0

    def parsed_windows(self) -> list[Window]:
        return [parse_window(w) for w in self.windows]

    def to_json(self) -> dict[str, Any]:
        return {"mode": self.mode, "windows": list(self.windows),
                "check_interval_s": self.check_interval_s, "jitter_s": self.jitter_s,
                "fleet_lock": self.fleet_lock, "group": self.group, "reboot": self.reboot,
                "remote": self.remote, "max_replica_lag_s": self.max_replica_lag_s}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Policy:
        """Raises: ValueError: a field has the wrong value or type."""
        mode = d.get("mode", "check")
        if mode not in MODES:
            raise ValueError(f"mode: must be one of {', '.join(MODES)}")
        raw = d.get("windows", ())
        if isinstance(raw, str) or not isinstance(raw, list | tuple) or not all(
                isinstance(w, str) for w in raw):
            raise ValueError("windows: expected a list of 'DAYS HH:MM-HH:MM [ZONE]' strings")
        windows = tuple(raw)
        for w in windows:
            parse_window(w)
        try:
            return cls._build(d, mode, windows)
        except TypeError as exc:
            raise ValueError(f"a field has the wrong type: {exc}") from exc

    @classmethod
    def _build(cls, d: dict[str, Any], mode: Mode, windows: tuple[str, ...]) -> Policy:
        return cls(mode=mode, windows=windows,
                   check_interval_s=int(d.get("check_interval_s", 3600)),
                   jitter_s=int(d.get("jitter_s", 300)), fleet_lock=d.get("fleet_lock"),
                   group=d.get("group", "default"), reboot=bool(d.get("reboot", True)),
                   remote=d.get("remote", "origin"),
                   max_replica_lag_s=float(d.get("max_replica_lag_s", 60.0)))


@dataclass(frozen=True)
class ApplyRequest:
    kind: Literal["now", "at", "window"]
    requested: dt.datetime
    at: dt.datetime | None = None
    reboot: bool = True

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "requested": self.requested.isoformat(),
                "at": self.at.isoformat() if self.at else None, "reboot": self.reboot}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ApplyRequest:
        return cls(d["kind"], dt.datetime.fromisoformat(d["requested"]),
                   dt.datetime.fromisoformat(d["at"]) if d.get("at") else None,
                   bool(d.get("reboot", True)))


@dataclass(frozen=True)
class AgentState:
    """What the agent knows (persisted by the daemon; commits identify versions)."""

    last_check: dt.datetime | None = None
    available: str | None = None     # newest commit the remote offers
    downloaded: str | None = None    # newest commit verified in the host's store
    staged: str | None = None        # commit of the staged deployment
    booted: str | None = None        # commit running now
    pending: str | None = None       # commit that boots next, when not the booted one
    request: ApplyRequest | None = None
    last_apply_s: float | None = None
    extra: dict[str, Any] = field(default_factory=dict, hash=False)


@dataclass(frozen=True)
class Decision:
    action: Literal["none", "check", "download", "stage", "apply", "wait"]
    reason: str
    wake: dt.datetime | None = None  # when to look again
    at: dt.datetime | None = None    # for "wait": when the apply is due

    def to_json(self) -> dict[str, Any]:
        return {"action": self.action, "reason": self.reason,
                "wake": self.wake.isoformat() if self.wake else None,
                "at": self.at.isoformat() if self.at else None}


def _want(mode: str, level: str) -> bool:
    return MODES.index(mode) >= MODES.index(level)


def _apply_decision(policy: Policy, st: AgentState, now: dt.datetime) -> Decision | None:
    """Apply or wait, when something is staged and an apply is requested (or automatic)."""
    request = st.request
    if request is None and policy.mode == "apply" and st.staged is not None:
        request = ApplyRequest("window", now)
    if st.staged is None or request is None:
        return None
    if request.kind == "now":
        return Decision("apply", "apply requested now")
    if request.kind == "at":
        assert request.at is not None
        if now >= request.at:
            return Decision("apply", f"apply requested for {request.at.isoformat()}")
        return Decision("wait", f"apply scheduled for {request.at.isoformat()}", request.at,
                        request.at)
    windows = policy.parsed_windows()
    if not windows:
        return Decision("apply", "apply requested; no maintenance windows configured")
    needed = dt.timedelta(seconds=st.last_apply_s or 0)
    choice = next_window(windows, now, needed=needed)
    if choice is None:
        return Decision("wait", "no maintenance window in the next two weeks is long enough",
                        now + dt.timedelta(hours=1))
    skipped = ("; skipped " + "; ".join(choice.skipped)) if choice.skipped else ""
    if choice.start <= now:
        return Decision("apply", f"inside maintenance window {choice.window}{skipped}")
    return Decision("wait", f"waiting for maintenance window {choice.window} at "
                    f"{choice.start.isoformat()}{skipped}", choice.start, choice.start)


def decide(policy: Policy, st: AgentState, now: dt.datetime) -> Decision:
    """The one next thing the agent should do, and why.

    A due apply of a staged update comes first; then the scheduled check; then
    download and stage as the mode allows (or an apply request needs).
    """
    next_check = (st.last_check + dt.timedelta(seconds=policy.check_interval_s)
                  if st.last_check else now)
    if policy.mode == "off" and st.request is None:
        return Decision("none", "updates are off (policy mode off)")
    applying = _apply_decision(policy, st, now)
    if applying is not None and applying.action == "apply":
        return applying
    if (policy.mode != "off" or st.request is not None) and now >= next_check:
        return Decision("check", "time for the scheduled update check")
    avail = st.available
    if avail is not None and avail not in (st.booted, st.pending) and avail != st.downloaded \
            and (_want(policy.mode, "download") or st.request is not None):
        return Decision("download", f"update {avail[:12]} is available")
    if st.downloaded is not None and st.downloaded not in (st.booted, st.pending) \
            and st.downloaded != st.staged and (
                _want(policy.mode, "stage") or st.request is not None):
        return Decision("stage", f"update {st.downloaded[:12]} is downloaded")
    if applying is not None:
        if applying.wake is not None and applying.wake > next_check:
            return Decision("wait", applying.reason, next_check, applying.at)
        return applying
    what = "nothing staged" if st.staged is None else "staged; waiting for the customer's apply"
    return Decision("none", f"{what} (mode {policy.mode})", next_check)

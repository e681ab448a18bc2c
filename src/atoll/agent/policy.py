"""Update policy and the agent's decisions (pure).

Modes, as Zincati and the operations team name them:

======== ============================================================
off      never check
check    check on a schedule and report what is available
download check, then pull and verify the update into the host's store
prepare  download, then prepare the deployment (check it out, verified); apply only
         on the customer's command ("stage" in policies written before: the same)
apply    prepare, then apply (make it the next boot and reboot) in the next window
======== ============================================================

The update states these lead to (docs/states.md): available, downloaded, prepared,
pending (applied: boots next), then booted.

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
import re
from dataclasses import dataclass, field
from typing import Any, Literal, cast

from atoll.agent.windows import Window, next_window, parse_window

__all__ = ["AgentState", "ApplyRequest", "Decision", "Policy", "apply_noop",
           "check_apply_request", "decide"]

Mode = Literal["off", "check", "download", "prepare", "apply"]
MODES: tuple[str, ...] = ("off", "check", "download", "prepare", "apply")
_OLD_MODES = {"stage": "prepare"}  # policies written before the words were settled
MIN_INTERVAL_S = 10  # a floor against busy loops; tests in QEMU use 20-30 s
MAX_INTERVAL_S = 7 * 86400
_URL = re.compile(r"^https?://[^\s/]+(/\S*)?$")


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
        mode = _OLD_MODES.get(mode, mode) if isinstance(mode, str) else mode
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
            return cls._build(d, cast(Mode, mode), windows)
        except TypeError as exc:
            raise ValueError(f"a field has the wrong type: {exc}") from exc

    @classmethod
    def _build(cls, d: dict[str, Any], mode: Mode, windows: tuple[str, ...]) -> Policy:
        interval, jitter = int(d.get("check_interval_s", 3600)), int(d.get("jitter_s", 300))
        if not MIN_INTERVAL_S <= interval <= MAX_INTERVAL_S:
            raise ValueError(f"check interval: {interval} s is not between {MIN_INTERVAL_S} s "
                             f"and {MAX_INTERVAL_S // 86400} days")
        if jitter < 0:
            raise ValueError("jitter: must be 0 or more seconds")
        lock = d.get("fleet_lock")
        if lock is not None and (not isinstance(lock, str) or not _URL.match(lock)):
            raise ValueError(f"fleet lock: {lock!r} is not an http(s) URL")
        group = d.get("group", "default")
        if not isinstance(group, str) or not group.strip():
            raise ValueError("group: must be a non-empty name")
        lag = float(d.get("max_replica_lag_s", 60.0))
        if not lag >= 0:
            raise ValueError("max replica lag: must be 0 or more seconds")
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

    last_check: dt.datetime | None = None  # the agent's own: when the next is due
    checked: dt.datetime | None = None     # the last check by anyone (update.json)
    available: str | None = None     # newest commit the remote offers
    downloaded: str | None = None    # newest commit verified in the host's store
    prepared: str | None = None      # commit of the prepared deployment
    booted: str | None = None        # commit running now
    pending: str | None = None       # commit that boots next, when not the booted one
    request: ApplyRequest | None = None
    last_apply_s: float | None = None
    extra: dict[str, Any] = field(default_factory=dict, hash=False)


@dataclass(frozen=True)
class Decision:
    action: Literal["none", "check", "download", "prepare", "apply", "wait"]
    reason: str
    wake: dt.datetime | None = None  # when to look again
    at: dt.datetime | None = None    # for "wait": when the apply is due

    def to_json(self) -> dict[str, Any]:
        return {"action": self.action, "reason": self.reason,
                "wake": self.wake.isoformat() if self.wake else None,
                "at": self.at.isoformat() if self.at else None}


def check_apply_request(policy: Policy, kind: str) -> None:
    """Refuse an apply request that cannot mean anything.

    Raises:
        InputError: ``window`` while the policy has no maintenance windows.
    """
    if kind == "window" and not policy.windows:
        from atoll.core.errors import InputError

        raise InputError("no maintenance windows are configured",
                         resolution="add one (atoll policy set --window 'Sat 02:00-04:00 "
                         "Europe/Berlin'), or apply at a time (--at) or now")


def apply_noop(st: AgentState, kind: str = "now") -> str | None:
    """Why an apply request has nothing to do (None: it has something). Pure.

    An update already applied (pending: boots next): every request says so and
    changes nothing, instead of preparing a copy of what already boots next. None
    known beyond what runs, as of the last check: an apply ``now`` says so; a
    scheduled one (``at``, ``window``) is taken, since the agent checks again
    before it is due. A host that never checked has something to do: the agent
    checks, downloads and prepares for the request.
    """
    checked = max((t for t in (st.last_check, st.checked) if t is not None), default=None)
    if st.prepared is not None or checked is None:  # never checked: check first
        return None
    if any(c is not None and c not in (st.booted, st.pending)
           for c in (st.downloaded, st.available)):
        return None  # something newer is known
    if st.pending is not None and st.pending != st.booted:
        return f"already applied: {st.pending[:12]} boots next"
    if kind != "now":
        return None
    return (f"already up to date (checked {checked.astimezone(dt.UTC):%Y-%m-%d %H:%M} UTC): "
            "nothing to apply; `atoll update check` looks again")


def _want(mode: str, level: str) -> bool:
    return MODES.index(mode) >= MODES.index(level)


def _apply_decision(policy: Policy, st: AgentState, now: dt.datetime) -> Decision | None:
    """Apply or wait, when something is prepared and an apply is requested (or automatic)."""
    request = st.request
    if request is None and policy.mode == "apply" and st.prepared is not None:
        request = ApplyRequest("window", now)
    if st.prepared is None or request is None:
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

    A due apply of a prepared update comes first; then the scheduled check; then
    download and prepare as the mode allows (or an apply request needs).
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
            and st.downloaded != st.prepared and (
                _want(policy.mode, "prepare") or st.request is not None):
        return Decision("prepare", f"update {st.downloaded[:12]} is downloaded")
    if applying is not None:
        if applying.wake is not None and applying.wake > next_check:
            return Decision("wait", applying.reason, next_check, applying.at)
        return applying
    what = ("nothing prepared" if st.prepared is None
            else "prepared; waiting for the customer's apply")
    return Decision("none", f"{what} (mode {policy.mode})", next_check)

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

Which updates the agent takes on its own (``updates``): ``all``, or ``security-only``:
only a release that fixes an open CVE at or above ``security_threshold`` (the Debian
security tracker's urgencies; ``not yet assigned`` counts as ``unassigned_as``), by
the signed CVE report published with it (docs/security.md). Other releases wait for
the operator: an apply request still takes them.
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
# A FleetLock group (as Zincati's `group`) and a remote's name: one word, no '/'.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
UPDATES = ("all", "security-only")
URGENCIES = ("unimportant", "low", "medium", "high")  # atoll.security.urgency.ORDER


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
    # the control plane's operators may schedule this host's apply in its next window
    # (a request at a check-in); otherwise only the customer's own trigger applies
    operator_apply: bool = False
    updates: Literal["all", "security-only"] = "all"
    security_threshold: str = "high"  # an urgency (atoll.security.urgency.ORDER)
    unassigned_as: str = "medium"     # what "not yet assigned" counts as

    def parsed_windows(self) -> list[Window]:
        return [parse_window(w) for w in self.windows]

    def to_json(self) -> dict[str, Any]:
        return {"mode": self.mode, "windows": list(self.windows),
                "check_interval_s": self.check_interval_s, "jitter_s": self.jitter_s,
                "fleet_lock": self.fleet_lock, "group": self.group, "reboot": self.reboot,
                "remote": self.remote, "max_replica_lag_s": self.max_replica_lag_s,
                "operator_apply": self.operator_apply, "updates": self.updates,
                "security_threshold": self.security_threshold,
                "unassigned_as": self.unassigned_as}

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
        if lock is not None:
            from atoll.core.errors import InputError
            from atoll.core.urls import check_http_url

            try:
                check_http_url(lock, "fleet lock", example="")
            except InputError as exc:
                raise ValueError(exc.brief) from None
        group = d.get("group", "default")
        if not isinstance(group, str) or not _NAME.match(group):
            raise ValueError(f"group: {group!r} is not a group name (1 to 63 letters, digits, "
                             "'.', '_', '-', starting with a letter or digit)")
        remote = d.get("remote", "origin")
        if not isinstance(remote, str) or not _NAME.match(remote):
            raise ValueError(f"remote: {remote!r} is not a remote's name")
        lag = float(d.get("max_replica_lag_s", 60.0))
        if not lag >= 0:
            raise ValueError("max replica lag: must be 0 or more seconds")
        updates = d.get("updates", "all")
        if updates not in UPDATES:
            raise ValueError(f"updates: {updates!r} is not one of {', '.join(UPDATES)}")
        for key, default in (("security_threshold", "high"), ("unassigned_as", "medium")):
            if d.get(key, default) not in URGENCIES:
                raise ValueError(f"{key}: {d.get(key)!r} is not one of {', '.join(URGENCIES)}")
        return cls(mode=mode, windows=windows,
                   check_interval_s=int(d.get("check_interval_s", 3600)),
                   jitter_s=int(d.get("jitter_s", 300)), fleet_lock=d.get("fleet_lock"),
                   group=d.get("group", "default"), reboot=bool(d.get("reboot", True)),
                   remote=d.get("remote", "origin"),
                   max_replica_lag_s=float(d.get("max_replica_lag_s", 60.0)),
                   operator_apply=bool(d.get("operator_apply", False)),
                   updates=updates, security_threshold=d.get("security_threshold", "high"),
                   unassigned_as=d.get("unassigned_as", "medium"))


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
        """Raises: ValueError: not an apply request."""
        if not isinstance(d, dict) or d.get("kind") not in ("now", "at", "window"):
            raise ValueError("not an apply request")
        requested = dt.datetime.fromisoformat(str(d.get("requested")))
        at = dt.datetime.fromisoformat(str(d["at"])) if d.get("at") else None
        if d["kind"] == "at" and at is None:
            raise ValueError("an apply at a time without the time")
        return cls(d["kind"], requested, at, bool(d.get("reboot", True)))


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
    # the CVEs at or above the threshold that the available or downloaded update fixes
    # (atoll.security.report.qualifies); None: no CVE report for it
    security_fixes: tuple[str, ...] | None = None
    # what limits that report (no tracker data, expired), for the wait reason
    # (atoll.security.host.update_data_note); "": nothing
    security_note: str = ""
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


MAX_AHEAD = dt.timedelta(days=366)  # `apply --at`: a time within a year
PAST_GRACE = dt.timedelta(minutes=1)  # "now", typed a little late, is still now


def check_apply_request(policy: Policy, kind: str, at: dt.datetime | None = None,
                        now: dt.datetime | None = None) -> None:
    """Refuse an apply request that cannot mean anything. Pure.

    Raises:
        InputError: ``window`` while the policy has no maintenance windows; ``at``
            without a time, in the past, or more than a year ahead.
    """
    from atoll.core.errors import InputError

    if kind == "window" and not policy.windows:
        raise InputError("no maintenance windows are configured",
                         resolution="add one (atoll policy set --window 'Sat 02:00-04:00 "
                         "Europe/Berlin'), or apply at a time (--at) or now")
    if kind != "at":
        return
    if at is None:
        raise InputError("--at: give a time, e.g. '2026-12-05 02:30'")
    if at.tzinfo is None:
        raise InputError("--at: the time needs a UTC offset or zone")
    now = now or dt.datetime.now(dt.UTC)
    if at < now - PAST_GRACE:
        raise InputError(f"--at {at.isoformat()}: that time has passed",
                         resolution="give a time to come, or apply now: atoll update apply "
                         "--reboot")
    if at > now + MAX_AHEAD:
        raise InputError(f"--at {at.isoformat()}: more than a year ahead",
                         resolution="give a time within a year (the signed metadata a "
                         "download relies on expires long before)")


def _pending(st: AgentState) -> bool:
    return st.pending is not None and st.pending != st.booted


def apply_noop(st: AgentState, kind: str = "now", reboot: bool = False) -> str | None:
    """Why an apply request has nothing to do (None: it has something). Pure.

    ``reboot``: the request reboots (``--reboot``; ``--at`` and ``--window`` always do,
    unless the policy says not to reboot). An update already applied (pending: boots
    next) has nothing to apply, but a request that reboots has something to do: the
    reboot into it (at its time, for a scheduled one). Without a reboot it says so
    and changes nothing, instead of preparing a copy of what boots next. None known
    beyond what runs, as of the last check: an apply ``now`` says so; a scheduled
    one is taken, since the agent checks again before it is due. A host that never
    checked has something to do: the agent checks, downloads and prepares for it.
    """
    checked = max((t for t in (st.last_check, st.checked) if t is not None), default=None)
    if st.prepared is not None:
        return None
    if any(c is not None and c not in (st.booted, st.pending)
           for c in (st.downloaded, st.available)):
        return None  # something newer is known
    if _pending(st):
        assert st.pending is not None
        if reboot:
            return None  # the reboot into it
        return (f"already applied: {st.pending[:12]} boots next"
                + ("" if kind != "now" else "; `atoll update apply --reboot` reboots into it"))
    if checked is None:  # never checked: check first
        return None
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
    if request is None or (st.prepared is None and not (_pending(st) and request.reboot)):
        return None
    what = "apply" if st.prepared is not None else "reboot into the pending update"
    if request.kind == "now":
        return Decision("apply", f"{what}: requested now")
    if request.kind == "at":
        assert request.at is not None
        if now >= request.at:
            return Decision("apply", f"{what}: requested for {request.at.isoformat()}")
        return Decision("wait", f"apply scheduled for {request.at.isoformat()}", request.at,
                        request.at)
    windows = policy.parsed_windows()
    if not windows:
        return Decision("apply", f"{what}: requested; no maintenance windows configured")
    needed = dt.timedelta(seconds=st.last_apply_s or 0)
    choice = next_window(windows, now, needed=needed)
    if choice is None:
        return Decision("wait", "no maintenance window in the next two weeks is long enough",
                        now + dt.timedelta(hours=1))
    skipped = ("; skipped " + "; ".join(choice.skipped)) if choice.skipped else ""
    if choice.start <= now:
        return Decision("apply", f"{what}: inside maintenance window {choice.window}{skipped}")
    return Decision("wait", f"waiting for maintenance window {choice.window} at "
                    f"{choice.start.isoformat()}{skipped}", choice.start, choice.start)


def _fixes(st: AgentState) -> str:
    return f" (fixes {', '.join(st.security_fixes)})" if st.security_fixes else ""


def _security_wait(policy: Policy, st: AgentState, commit: str,
                   next_check: dt.datetime) -> Decision | None:
    """Under ``security-only``, the reason an update is not taken (None: take it)."""
    if policy.updates != "security-only" or st.request is not None or st.security_fixes:
        return None
    why = ("has no CVE report" if st.security_fixes is None else
           f"fixes no open CVE of urgency {policy.security_threshold} or above")
    note = f"; {st.security_note}" if st.security_note and st.security_fixes is not None else ""
    return Decision("none", f"update {commit[:12]} {why} (policy: security-only){note}: it "
                    "waits for the operator", next_check)


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
        return _security_wait(policy, st, avail, next_check) or Decision(
            "download", f"update {avail[:12]} is available" + _fixes(st))
    if st.downloaded is not None and st.downloaded not in (st.booted, st.pending) \
            and st.downloaded != st.prepared and (
                _want(policy.mode, "prepare") or st.request is not None):
        return _security_wait(policy, st, st.downloaded, next_check) or Decision(
            "prepare", f"update {st.downloaded[:12]} is downloaded" + _fixes(st))
    if applying is not None:
        if applying.wake is not None and applying.wake > next_check:
            return Decision("wait", applying.reason, next_check, applying.at)
        return applying
    what = ("nothing prepared" if st.prepared is None
            else "prepared; waiting for the customer's apply")
    return Decision("none", f"{what} (mode {policy.mode})", next_check)

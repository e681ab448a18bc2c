"""Checkmk local checks for atoll itself: pure functions from facts to lines.

Each check is one line of the ``<<<local:sep(0)>>>`` section::

    <state> "<service name>" <metric=value;warn;crit;min;max|...|-> <summary>

with state 0 OK, 1 WARN, 2 CRIT, 3 UNKNOWN. Nothing here does I/O: the agent
loads :class:`~atoll.monitor.facts.HostFacts` and passes the current time.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from atoll.core.text import printable
from atoll.monitor.facts import HostFacts

__all__ = [
    "CRIT",
    "OK",
    "UNKNOWN",
    "WARN",
    "LocalCheck",
    "LocalCheckPolicy",
    "SectionOutcome",
    "agent_check",
    "host_checks",
    "render_local",
]

OK, WARN, CRIT, UNKNOWN = 0, 1, 2, 3
_STATE_WORD = {OK: "OK", WARN: "WARN", CRIT: "CRIT", UNKNOWN: "UNKNOWN"}


@dataclass(frozen=True)
class LocalCheckPolicy:
    """Thresholds of the local checks (seconds)."""

    update_pending_warn_s: int = 14 * 86400
    # The earliest expiry of the host's timestamp/snapshot/targets: the timestamp
    # role lives 1 day by default and every check fetches a fresh one, so a
    # healthy host sees 12-24 h left. Less means checks (or the publisher's
    # re-signing) stopped; at 0 the host refuses updates (freeze protection).
    metadata_expiry_warn_s: int = 12 * 3600
    metadata_expiry_crit_s: int = 2 * 3600
    # atoll-fsck.timer runs weekly (with up to 6 hours of random delay): two missed
    # runs mean the timer is off or fsck keeps failing
    fsck_age_warn_s: int = 15 * 86400


@dataclass(frozen=True)
class LocalCheck:
    """One local check result."""

    state: int
    name: str
    summary: str
    perfdata: tuple[str, ...] = ()

    def line(self) -> str:
        """The line Checkmk's local check parser reads."""
        perf = "|".join(self.perfdata) if self.perfdata else "-"
        name = printable(self.name).replace('"', "'")
        summary = printable(" ".join(self.summary.split()))  # one line, controls escaped
        return f'{self.state} "{name}" {perf} {summary}'


@dataclass(frozen=True)
class SectionOutcome:
    """How one agent section ended: ok, failed or timed out."""

    name: str
    status: str  # "ok" | "error" | "timeout" | "skipped"
    seconds: float
    detail: str = ""


def render_local(checks: Sequence[LocalCheck]) -> str:
    """The full ``<<<local:sep(0)>>>`` section."""
    return "<<<local:sep(0)>>>\n" + "".join(c.line() + "\n" for c in checks)


def _iso(t: dt.datetime | None) -> str:
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if t else "unknown time"


def _age(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m"


# Which state files feed which check (docs/on-disk.md): a damaged one makes only those
# UNKNOWN, with the problem, and the other checks go on.
_DEPLOYMENTS = ("deployments.json", "booted")
_UPDATE = ("update.json",)


def _damaged(facts: HostFacts, name: str, files: tuple[str, ...]) -> LocalCheck | None:
    problem = facts.damaged(*files)
    return LocalCheck(UNKNOWN, name, problem) if problem else None


def _version_check(facts: HostFacts) -> LocalCheck:
    name = "atoll version"
    if not facts.available:
        return LocalCheck(UNKNOWN, name, f"host status unknown: {facts.error}")
    bad = _damaged(facts, name, _DEPLOYMENTS)
    if bad is not None:
        return bad
    b = facts.booted
    if b is None:
        return LocalCheck(UNKNOWN, name, "no booted deployment is known")
    text = f"booted {b.version or 'unversioned'} ({b.commit[:12] or 'no commit'})"
    text += f", channel {b.channel or 'none'}, deployment {b.id or '?'}"
    if facts.pending is not None and facts.pending.id != b.id:
        text += f"; next boot: {facts.pending.version or facts.pending.id}"
    return LocalCheck(OK, name, text)


def _update_check(facts: HostFacts, now: dt.datetime, policy: LocalCheckPolicy) -> LocalCheck:
    name = "atoll update"
    if not facts.available:
        return LocalCheck(UNKNOWN, name, f"host status unknown: {facts.error}")
    bad = _damaged(facts, name, _UPDATE + _DEPLOYMENTS)
    if bad is not None:
        return bad
    u = facts.update
    if u is None:
        return LocalCheck(UNKNOWN, name, "update state unknown")
    if u.state == "up-to-date":
        return LocalCheck(OK, name, "system is up to date", ("update_pending=0",))
    words = {"available": "available", "downloaded": "downloaded",
             "prepared": "prepared, waiting for the apply",
             "pending": "applied, boots at the next reboot"}
    if u.state not in words:
        return LocalCheck(UNKNOWN, name, f"unknown update state {u.state!r}")
    age = (now - u.since).total_seconds() if u.since else 0.0
    what = words[u.state]
    text = f"update {u.version or '?'} {what}"
    text += f" since {_iso(u.since)} ({_age(age)})" if u.since else " (since unknown)"
    state = OK
    if u.since and age > policy.update_pending_warn_s:
        state = WARN
        text += f", pending for more than {_age(policy.update_pending_warn_s)}"
    perf = ("update_pending=1", f"update_pending_age={int(age)};{policy.update_pending_warn_s}")
    return LocalCheck(state, name, text, perf)


def _boot_check(facts: HostFacts) -> LocalCheck:
    name = "atoll last boot"
    if not facts.available:
        return LocalCheck(UNKNOWN, name, f"host status unknown: {facts.error}")
    check = _last_boot(facts, name)
    skipped = facts.damaged("events.jsonl")  # the other events still tell the last boot
    if skipped:
        return LocalCheck(check.state, name, f"{check.summary}; events.jsonl: {skipped}")
    return check


def _last_boot(facts: HostFacts, name: str) -> LocalCheck:
    b = facts.last_boot
    if b is None:
        return LocalCheck(UNKNOWN, name, "no boot recorded yet")
    if b.result == "good":
        return LocalCheck(OK, name, f"last boot at {_iso(b.time)} was good")
    if b.result == "rolled-back":
        text = f"last boot at {_iso(b.time)} rolled back: {b.reason or 'no reason given'}"
        if b.acknowledged:
            return LocalCheck(OK, name, text + " (acknowledged)")
        return LocalCheck(CRIT, name, text + " (not acknowledged yet: `atoll rollback ack`)")
    return LocalCheck(UNKNOWN, name, f"last boot result unknown: {b.reason or 'no reason given'}")


def _etc_check(facts: HostFacts) -> LocalCheck:
    name = "atoll etc merge"
    if not facts.available:
        return LocalCheck(UNKNOWN, name, f"host status unknown: {facts.error}")
    bad = _damaged(facts, name, _DEPLOYMENTS)
    if bad is not None:
        return bad
    n = len(facts.etc_conflicts)
    perf = (f"etc_conflicts={n};1",)
    if not n:
        return LocalCheck(OK, name, "no /etc merge conflicts", perf)
    shown = ", ".join(printable(p) for p in facts.etc_conflicts[:5]) + (", ..." if n > 5 else "")
    return LocalCheck(WARN, name, f"{n} /etc merge conflict(s): {shown}", perf)


def _metadata_check(facts: HostFacts, now: dt.datetime, policy: LocalCheckPolicy) -> LocalCheck:
    name = "atoll update metadata"
    if not facts.available:
        return LocalCheck(UNKNOWN, name, f"host status unknown: {facts.error}")
    bad = _damaged(facts, name, _UPDATE)
    if bad is not None:
        return bad
    if facts.update is None or facts.update.metadata_expires is None:
        return LocalCheck(UNKNOWN, name, "TUF metadata expiry unknown")
    left = (facts.update.metadata_expires - now).total_seconds()
    perf = (f"metadata_expires_in={int(left)}"
            f";{policy.metadata_expiry_warn_s}:;{policy.metadata_expiry_crit_s}:",)
    when = _iso(facts.update.metadata_expires)
    if left <= 0:
        return LocalCheck(CRIT, name, f"TUF metadata expired at {when}", perf)
    text = f"TUF metadata expires at {when} (in {_age(left)})"
    if left < policy.metadata_expiry_crit_s:
        return LocalCheck(CRIT, name, text, perf)
    if left < policy.metadata_expiry_warn_s:
        return LocalCheck(WARN, name, text, perf)
    return LocalCheck(OK, name, text, perf)


def _backup_checks(facts: HostFacts, now: dt.datetime) -> list[LocalCheck]:
    out = []
    for b in facts.backups:
        name = f"atoll backup {b.app}"
        if b.last is None:
            out.append(LocalCheck(CRIT, name, f"no backup of {b.app} yet"))
            continue
        age = (now - b.last).total_seconds()
        perf = (f"backup_age={int(age)};;{b.max_age_s}",)
        text = f"last backup {_iso(b.last)} ({_age(age)} ago, policy {_age(b.max_age_s)})"
        if b.max_age_s and age > b.max_age_s:
            out.append(LocalCheck(CRIT, name, text + ": older than its policy", perf))
        else:
            out.append(LocalCheck(OK, name, text, perf))
    return out


def _decision_check(facts: HostFacts) -> LocalCheck | None:
    """Why the agent did or did not apply / reboot (only when atolld has decided)."""
    if facts.decision_action is None:
        return None
    text = f"{facts.decision_action}: {facts.decision_reason}"
    if facts.apply_request:
        text += f"; apply requested ({facts.apply_request})"
    failed = "failed" in facts.decision_reason or "gate" in facts.decision_reason
    return LocalCheck(WARN if failed else OK, "atoll update decision", text)


def _fsck_check(facts: HostFacts, now: dt.datetime, policy: LocalCheckPolicy) -> LocalCheck:
    """The scheduled re-hash of the store (bit rot): CRIT on damage, WARN when stale."""
    name = "atoll store fsck"
    f = facts.fsck
    if f is None:
        return LocalCheck(OK, name, "no fsck yet (atoll-fsck.timer runs it weekly)")
    age = (now - f.time).total_seconds() if f.time else float("inf")
    perf = (f"fsck_age={int(min(age, 10**9))};{policy.fsck_age_warn_s}",
            f"fsck_damaged={f.corrupt + f.missing};;1")
    if not f.ok:
        return LocalCheck(CRIT, name, f"{f.corrupt} damaged (quarantined), {f.missing} missing "
                          f"object(s) at {_iso(f.time)}: run `atoll store fsck --repair`", perf)
    text = f"{f.checked} objects whole at {_iso(f.time)}" + (
        "; sealed with fs-verity" if f.verity else "")
    if f.corrupt:
        # the store is whole again, but deployments checked out before the repair
        # still link the damaged copies (quarantine keeps their inodes)
        return LocalCheck(WARN, name, f"{f.corrupt} damaged object(s) replaced at "
                          f"{_iso(f.time)}; deployments made before may still hold the damaged "
                          "copies: deploy them again (`atoll deploy --redeploy`)", perf)
    if age > policy.fsck_age_warn_s:
        return LocalCheck(WARN, name, f"last fsck {_age(age)} ago: is atoll-fsck.timer "
                          f"enabled? ({text})", perf)
    return LocalCheck(OK, name, text, perf)


def _provision_check(facts: HostFacts) -> LocalCheck | None:
    """The first-boot host config: CRIT when it was refused or failed."""
    if facts.provision_result is None:
        return None
    name = "atoll provisioning"
    if facts.provision_result == "applied":
        return LocalCheck(OK, name, "host config applied")
    return LocalCheck(CRIT, name, f"host config {facts.provision_result}: "
                                  f"{facts.provision_problem or 'see applied.json'}")


def host_checks(
    facts: HostFacts, now: dt.datetime, policy: LocalCheckPolicy | None = None
) -> list[LocalCheck]:
    """Every local check about atoll's state on this host."""
    policy = policy or LocalCheckPolicy()
    checks = [
        _version_check(facts),
        _update_check(facts, now, policy),
        _boot_check(facts),
        _etc_check(facts),
        _metadata_check(facts, now, policy),
    ]
    if facts.available:
        checks += _backup_checks(facts, now)
        checks.append(_fsck_check(facts, now, policy))
        checks += [c for c in (_decision_check(facts), _provision_check(facts)) if c is not None]
        if facts.cves is not None:  # read by load_host_facts for a booted commit
            checks.append(_cve_check(facts, now))
    return checks


def _cve_check(facts: HostFacts, now: dt.datetime) -> LocalCheck:
    """Open CVEs of the booted commit by urgency, from its signed CVE report: WARN with
    an open ``high`` one or when the report expired (docs/security.md)."""
    name = "atoll CVEs"
    c = facts.cves
    assert c is not None
    if c.problem:
        return LocalCheck(UNKNOWN, name, f"the booted commit's CVE report does not read: "
                          f"{c.problem} (`atoll update check` downloads it again)")
    if not c.report:
        return LocalCheck(UNKNOWN, name, "no CVE report for the booted commit (published "
                          "without one, or not downloaded: `atoll update check`)")
    if not c.open_known:
        return LocalCheck(UNKNOWN, name, "open CVEs unknown: the booted commit's CVE report "
                          "was published without tracker data (atoll publish "
                          "--security-tracker)")
    by = dict(c.open_counts)
    total = sum(by.values())
    perf = tuple(f"cves_{u.replace(' ', '_')}={n}" for u, n in c.open_counts)
    parts = ", ".join(f"{n} {u}" for u, n in reversed(c.open_counts) if n)
    text = f"{total} open CVE(s)" + (f" ({parts})" if parts else "")
    text += f", {c.fixes_available} fixed in a newer Debian version"
    age = (now - c.generated).total_seconds() if c.generated else 0.0
    text += f"; data {_age(age)} old"
    perf += (f"cve_data_age={int(age)}",)
    state = WARN if by.get("high") else OK
    if c.expires is not None and now >= c.expires:
        state = WARN
        text += f", expired {_iso(c.expires)} (stale: the publisher's tracker data is old)"
    return LocalCheck(state, name, text, perf)


def agent_check(outcomes: Sequence[SectionOutcome]) -> LocalCheck:
    """A check on the agent itself: WARN when a section failed or timed out."""
    bad = [o for o in outcomes if o.status in ("error", "timeout")]
    perf = (f"sections_failed={len(bad)};1", f"sections={len(outcomes)}")
    if not bad:
        ok = sum(1 for o in outcomes if o.status == "ok")
        skipped = [o.name for o in outcomes if o.status == "skipped"]
        text = f"{ok} sections OK"
        if skipped:
            text += f", {len(skipped)} not applicable ({', '.join(skipped)})"
        return LocalCheck(OK, "atoll agent", text, perf)
    parts = [f"{o.name}: {o.status}{' (' + o.detail + ')' if o.detail else ''}" for o in bad]
    return LocalCheck(WARN, "atoll agent", f"{len(bad)} section(s) failed: " + "; ".join(parts),
                      perf)

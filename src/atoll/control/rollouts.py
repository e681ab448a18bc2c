"""Rollouts: move a group of hosts from one signed version to another, in waves (pure).

A rollout is data; every decision about it is a pure function of that data, the
hosts' facts and the time. The control plane stores rollouts and calls these on
each check-in and on its driver's ticks; the rollout simulation
(:mod:`atoll.control.rollout_sim`) calls the same ones in virtual time. Nothing here reads
a clock, a database or the network.

    create_rollout(...) -> Rollout            the group frozen as members; all checked
    plan_waves(rollout) -> WavePlan           each member's wave (derived from the rollout)
    observe(rollout, progress, facts, now) -> HostProgress     a check-in (or silence)
    decide_host(rollout, plan, counts, progress, facts, order, now) -> HostDecision
    tally(rollout, plan, hosts, order) -> Tally      phases per wave, failures, in flight
    assess(rollout, plan, tally, order, now) -> Step    advance | halt | finish | none
    advance(rollout, step, now); halt / resume / abort (operators) -> Rollout

The data (spec, rollout, facts, progress: frozen dataclasses with JSON forms) is in
``_rollout_types`` and exported here.

**Waves.** Members are ordered canaries first, then by a stable seed (64 bits of
sha256 of the rollout id and host id: the same on every control-plane instance and
after every restart). With ``canary_wave`` the canaries are wave 0; then each wave
adds members in that order until ``ceil(N x percent / 100)`` of the ``N`` members
are in started waves (cumulative, as Bottlerocket's ``fleet_percentage``), at most
``max_per_site`` new hosts of one site per wave (the last wave is never capped: it
takes everyone left); hosts the cap holds back go first in the next wave. Empty
waves are dropped. A host that joins the group after creation is in the last wave.

**What a rollout does not decide.** The host's own policy (its mode, the customer's
apply and maintenance windows: :func:`atoll.agent.policy.decide`) decides when the
host really applies and reboots; FleetLock slots (:mod:`atoll.fleet`) still bound
reboots per group. A rollout says which version a host should move to and whether it
may download, prepare or apply now; it never makes a host apply.

**Order of calls on a check-in:** ``observe`` (store the progress), then
``decide_host`` with counts that include that progress; calls that may grant an
apply for one rollout must be serialized (a row lock on the rollout) so that
``max_in_flight`` holds across server instances.
"""

from __future__ import annotations

import bisect
import datetime as dt
import hashlib
import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from fractions import Fraction
from typing import Any, Literal

from atoll.control._rollout_types import (
    EPOCH,
    Failure,
    FailureBudget,
    Halt,
    HostFacts,
    HostProgress,
    Member,
    Outcome,
    Phase,
    Rollout,
    RolloutSpec,
    RolloutState,
    Selector,
    VersionOrder,
    aware,
    iso,
)
from atoll.core.errors import InputError

_DONE = (Phase.SUCCEEDED, Phase.FAILED, Phase.AT_TARGET)
_NOT_LIVE = (Phase.SKIPPED, Phase.LOST, Phase.EXCLUDED)

__all__ = [
    "Counts", "Failure", "FailureBudget", "Halt", "HostDecision", "HostFacts", "HostProgress",
    "Member", "Outcome", "Phase", "Rollout", "RolloutSpec", "RolloutState", "Selector", "Step",
    "Tally", "TallyBuilder", "VersionOrder", "Wave", "WavePlan", "abort", "advance", "assess",
    "create_rollout", "decide_host", "halt", "next_step", "observe", "phase_of", "plan_waves",
    "resume", "seed", "tally", "wave_count",
]

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def create_rollout(rollout_id: str, selector: Selector, to_version: str, spec: RolloutSpec,
                   hosts: Iterable[HostFacts], order: VersionOrder, now: dt.datetime, *,
                   created_by: str = "server", from_version: str | None = None,
                   floors: Iterable[str] = (), dead_ends: Iterable[str] = ()) -> Rollout:
    """A new running rollout over the hosts ``selector`` matches now (its members).

    Raises:
        InputError: a bad id or spec; the target, a floor or ``from_version`` not signed
            (not in ``order``); a floor not older than the target or a dead end; the target
            a dead end; ``from_version`` not older than the target; no host in the group.
    """
    aware(now, "now")
    if not _ID.match(rollout_id):
        raise InputError(f"rollout id {rollout_id!r}: 1 to 64 letters, digits, '.', '_', '-'")
    spec.check()
    dead = frozenset(dead_ends)
    target = order.rank(to_version)
    if target is None:
        raise InputError(f"version {to_version!r} is not signed in the repository",
                         resolution="publish it first; a rollout only chooses among signed "
                         "versions")
    if to_version in dead:
        raise InputError(f"version {to_version!r} is a dead end: no host may be moved to it")
    if from_version is not None:
        r = order.rank(from_version)
        if r is None or r >= target:
            raise InputError(f"--from {from_version!r} is not a signed version older than "
                             f"{to_version!r}")
    ranked = []
    for f in dict.fromkeys(floors):
        r = order.rank(f)
        if r is None or r >= target:
            raise InputError(f"floor {f!r} is not a signed version older than {to_version!r}")
        if f in dead:
            raise InputError(f"floor {f!r} is a dead end: a host cannot both pass through and "
                             "never be moved to it")
        ranked.append((r, f))
    members = tuple(sorted(
        (Member(h.host, h.labels.get("site"), _is_canary(h.labels))
         for h in hosts if selector.matches(h.customer, h.labels)), key=lambda m: m.host))
    if not members:
        raise InputError(f"no host matches the group ({selector.describe()})")
    if len({m.host for m in members}) != len(members):
        raise InputError("the same host id appears twice in the group")
    return Rollout(rollout_id, selector, to_version, spec, members, now, created_by,
                   from_version, tuple(f for _, f in sorted(ranked)), dead,
                   wave_started=now)


def _is_canary(labels: Mapping[str, str]) -> bool:
    return labels.get("canary", "").lower() in ("true", "yes", "1", "on")


# ---------------------------------------------------------------------------- waves


def seed(rollout_id: str, host: str) -> int:
    """A host's place in a rollout's order: the first 64 bits of sha256(id NUL host)."""
    digest = hashlib.sha256(f"atoll-rollout\0{rollout_id}\0{host}".encode(
        "utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big")


def wave_count(percent: float, n: int) -> int:
    """Members in started waves after a wave of ``percent`` % of ``n``: ``ceil(n x p / 100)``.

    Exact decimal arithmetic (10 % of 30 is 3, not 4): a wave never rounds to zero hosts
    and never overshoots by more than one host.
    """
    return min(n, math.ceil(Fraction(str(percent)) * n / 100))


@dataclass(frozen=True)
class Wave:
    index: int
    percent: float  # planned cumulative share (the canary wave: its actual share)
    canary: bool
    hosts: tuple[str, ...]  # the hosts this wave adds, in seed order


@dataclass(frozen=True)
class WavePlan:
    """Which wave each member is in. Derived from the stored rollout alone."""

    waves: tuple[Wave, ...]
    size: int
    _index: Mapping[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_index", {h: w.index for w in self.waves for h in w.hosts})

    @property
    def last(self) -> int:
        return len(self.waves) - 1

    def wave_of(self, host: str) -> int | None:
        """The member's wave; None for a host that is not a member."""
        return self._index.get(host)

    def cumulative(self, index: int) -> int:
        """Members in waves ``0..index``."""
        return sum(len(w.hosts) for w in self.waves[:index + 1])

    def achieved_percent(self, index: int) -> float:
        return 100 * self.cumulative(index) / self.size


def plan_waves(rollout: Rollout) -> WavePlan:
    """Place every member in a wave (see the module docstring for the rule)."""
    spec, members = rollout.spec, rollout.members
    n = len(members)
    ordered = sorted(members, key=lambda m: (not m.canary, seed(rollout.id, m.host), m.host))
    waves: list[Wave] = []
    pool = ordered
    if spec.canary_wave and ordered and ordered[0].canary:
        canaries = [m for m in ordered if m.canary]
        waves.append(Wave(0, 100 * len(canaries) / n, True, tuple(m.host for m in canaries)))
        pool = ordered[len(canaries):]
    assigned = n - len(pool)
    for i, percent in enumerate(spec.waves):
        if i == len(spec.waves) - 1:
            take, pool = pool, []
        else:
            quota = wave_count(percent, n) - assigned
            take, rest = [], []
            per_site: Counter[str] = Counter()
            cap = spec.max_per_site
            for m in pool:
                capped = cap is not None and m.site is not None and per_site[m.site] >= cap
                if len(take) < quota and not capped:
                    take.append(m)
                    if m.site is not None:
                        per_site[m.site] += 1
                else:
                    rest.append(m)
            pool = rest
        if take:
            waves.append(Wave(len(waves), float(percent), False, tuple(m.host for m in take)))
            assigned += len(take)
    return WavePlan(tuple(waves), n)


def next_step(rollout: Rollout, version: str | None, order: VersionOrder,
              channel: str | None = None) -> tuple[str | None, str, str]:
    """The version a host on ``version`` (following ``channel``) moves to next:
    ``(step, code, reason)``.

    The oldest floor above its version and below the target, else the target. ``step``
    is None when there is nothing to do or nothing safe to do: codes ``at-target``,
    ``ahead`` (never sent back), ``unknown-version``, ``other-channel`` (the host
    follows another channel than the one ``order`` is signed on), ``unsigned`` (the
    target or that floor is no longer signed); else the code is ``floor`` or ``target``.
    """
    t = order.rank(rollout.to_version)
    if t is None:
        return None, "unsigned", f"the target {rollout.to_version} is no longer signed"
    if order.channel is not None and channel is not None and channel != order.channel:
        return None, "other-channel", (f"follows channel {channel!r}, not the rollout's "
                                       f"{order.channel!r}")
    r = order.rank(version)
    if r is None:
        return None, "unknown-version", (f"version {version!r} is not among the signed "
                                         "versions: cannot tell whether it is older")
    if r == t:
        return None, "at-target", f"runs the target {rollout.to_version}"
    if r > t:
        return None, "ahead", f"runs {version}, newer than the target {rollout.to_version}"
    for f in rollout.floors:
        fr = order.rank(f)
        if fr is None:
            return None, "unsigned", f"the floor {f} is no longer signed"
        if r < fr:
            return f, "floor", f"must pass through the floor {f} first"
    return rollout.to_version, "target", f"moves to {rollout.to_version}"


def _health_failure(progress: HostProgress,
                    facts: HostFacts) -> tuple[Failure, str] | None:
    if facts.failed_checks:
        return Failure.HEALTH_CHECK, "required health checks fail: " + ", ".join(
            sorted(facts.failed_checks))
    new = sorted(set(facts.unhealthy_apps) - progress.unhealthy_before)
    if new:
        return Failure.APP_HEALTH, "apps unhealthy after the update: " + ", ".join(new)
    return None


def observe(rollout: Rollout, progress: HostProgress, facts: HostFacts,
            now: dt.datetime) -> HostProgress:
    """Fold what is known of a host (a check-in, or silence) into its progress.

    A failure is final for this rollout; a success turns into a failure if, while the
    rollout is active, the host on the target fails a required check or an app that was
    healthy before its apply. An apply grant the host did not use (it checked in again,
    not applying and no apply due) lapses.
    """
    if progress.outcome is Outcome.FAILED or not rollout.active:
        return progress
    if progress.outcome is Outcome.SUCCEEDED:
        if facts.version == rollout.to_version and facts.committed:
            bad = _health_failure(progress, facts)
            if bad is not None:
                return progress.failed(*bad, now)
        return progress
    step, granted = progress.step, progress.granted
    if step is not None and granted is None and progress.released is not None:
        return _observe_released(rollout, progress, step, progress.released, facts, now)
    if step is None or granted is None:
        return progress
    started = progress.started
    if started is None and facts.version == step:
        started = now
    if facts.rolled_back_from == step and (
            (facts.rolled_back_at is not None and facts.rolled_back_at >= granted)
            or (facts.rolled_back_at is None and started is not None)):
        return progress.failed(Failure.ROLLED_BACK,
                               facts.rollback_reason or f"rolled back from {step}", now)
    if facts.version == step and facts.committed:
        bad = _health_failure(progress, facts)
        if bad is not None:
            return progress.failed(*bad, now)
        if step == rollout.to_version:
            return replace(progress, started=started, outcome=Outcome.SUCCEEDED,
                           finished=now)
        return HostProgress(progress.host)  # a floor reached: the next step needs a grant
    timeout = dt.timedelta(seconds=rollout.spec.update_timeout_s)
    if started is not None and now - started > timeout:
        return progress.failed(Failure.TIMED_OUT, f"booted {step} but did not finish within "
                               f"{rollout.spec.update_timeout_s} s", now)
    last = max(granted, facts.seen) if facts.seen is not None else granted
    if now - last > timeout:
        return progress.failed(Failure.TIMED_OUT, f"no check-in for {rollout.spec.update_timeout_s}"
                               f" s while applying {step}", now)
    if started is None and facts.seen is not None and facts.seen > granted \
            and not facts.apply_due and facts.pending != step:
        return HostProgress(progress.host)  # the grant lapses: the host is not applying
    return progress if started == progress.started else replace(progress, started=started)


def _observe_released(rollout: Rollout, progress: HostProgress, step: str,
                      released: dt.datetime, facts: HostFacts,
                      now: dt.datetime) -> HostProgress:
    """A host the rollout let download and prepare ``step`` (no apply grant: its own
    policy applies): a move it made by itself is judged as a granted one."""
    if facts.rolled_back_from == step and facts.rolled_back_at is not None \
            and facts.rolled_back_at >= released:
        return progress.failed(Failure.ROLLED_BACK,
                               facts.rollback_reason or f"rolled back from {step}", now)
    if facts.version != step:
        return progress
    started = progress.started or now
    if facts.committed:
        bad = _health_failure(progress, facts)
        if bad is not None:
            return progress.failed(*bad, now)
        if step == rollout.to_version:
            return replace(progress, started=started, outcome=Outcome.SUCCEEDED, finished=now)
        return HostProgress(progress.host)  # a floor reached: the next step is released anew
    if now - started > dt.timedelta(seconds=rollout.spec.update_timeout_s):
        return progress.failed(Failure.TIMED_OUT, f"booted {step} but did not finish within "
                               f"{rollout.spec.update_timeout_s} s", now)
    return progress if started == progress.started else replace(progress, started=started)


# ---------------------------------------------------------------------------- phases and tally


def _in_wave(rollout: Rollout, plan: WavePlan, host: str,
             version: str | None) -> tuple[int, bool]:
    """(the host's wave, whether it may move now): a host on a dead end may move at once."""
    wave = plan.wave_of(host)
    if wave is None:
        wave = plan.last
    return wave, wave <= rollout.wave or (version is not None and version in rollout.dead_ends)


def _in_group(rollout: Rollout, facts: HostFacts) -> bool:
    return rollout.selector.matches(facts.customer, facts.labels)


def phase_of(rollout: Rollout, plan: WavePlan, progress: HostProgress, facts: HostFacts,
             order: VersionOrder) -> Phase:
    """Where a host stands in the rollout (its outcome, else its grant, else its facts)."""
    if progress.outcome is not None:
        return Phase.SUCCEEDED if progress.outcome is Outcome.SUCCEEDED else Phase.FAILED
    if progress.granted is not None or (
            progress.released is not None and facts.version == progress.step):
        return Phase.IN_FLIGHT  # applying, or moved by itself and not judged yet
    if not _in_group(rollout, facts):
        return Phase.EXCLUDED
    if facts.lost:
        return Phase.LOST
    step, code, _ = next_step(rollout, facts.version, order, facts.channel)
    if step is None:
        return Phase.AT_TARGET if code in ("at-target", "ahead") else Phase.SKIPPED
    return Phase.WAITING if _in_wave(rollout, plan, facts.host, facts.version)[1] \
        else Phase.QUEUED


@dataclass(frozen=True)
class Counts:
    """What a grant needs to know of the whole rollout."""

    in_flight: int = 0
    failed: int = 0  # failures that count against the budget (not excused)
    sample: int = 0  # outcomes that count (succeeded + counted failures)


@dataclass(frozen=True)
class Tally:
    """The rollout's hosts counted: phases per wave, failing hosts, in flight.

    ``live``/``done``: members of started waves (cumulative) that are not skipped, lost
    or excluded / that finished (succeeded, failed or at the target); ``quorum_at``: when
    the started waves' quorum was reached (None: not yet).
    """

    waves: tuple[Mapping[Phase, int], ...]
    counts: Counts
    failing: tuple[str, ...]
    live: int
    done: int
    quorum_at: dt.datetime | None


class TallyBuilder:
    """A tally kept up to date host by host (``set`` each change, ``build`` when needed)."""

    def __init__(self, rollout: Rollout, plan: WavePlan):
        self.rollout, self.plan = rollout, plan
        self._waves: list[Counter[Phase]] = [Counter() for _ in plan.waves]
        self._done: list[list[dt.datetime]] = [[] for _ in plan.waves]
        self._hosts: dict[str, tuple[int, Phase, dt.datetime | None]] = {}
        self._failing: set[str] = set()
        self._sample = 0

    def set(self, progress: HostProgress, phase: Phase) -> None:
        """Record (or replace) one host's phase."""
        host = progress.host
        self._drop(host)
        wave = self.plan.wave_of(host)
        wave = self.plan.last if wave is None else wave
        when = progress.finished if phase in (Phase.SUCCEEDED, Phase.FAILED) else (
            EPOCH if phase is Phase.AT_TARGET else None)
        self._hosts[host] = (wave, phase, when)
        self._waves[wave][phase] += 1
        if when is not None:
            bisect.insort(self._done[wave], when)
        if host not in self.rollout.excused:
            if phase is Phase.FAILED:
                self._failing.add(host)
                self._sample += 1
            elif phase is Phase.SUCCEEDED:
                self._sample += 1

    def _drop(self, host: str) -> None:
        old = self._hosts.pop(host, None)
        if old is None:
            return
        wave, phase, when = old
        self._waves[wave][phase] -= 1
        if when is not None:
            del self._done[wave][bisect.bisect_left(self._done[wave], when)]
        if host not in self.rollout.excused and phase in (Phase.FAILED, Phase.SUCCEEDED):
            self._sample -= 1
            self._failing.discard(host)

    def phase(self, host: str) -> Phase | None:
        got = self._hosts.get(host)
        return None if got is None else got[1]

    def counts(self) -> Counts:
        return Counts(sum(w[Phase.IN_FLIGHT] for w in self._waves), len(self._failing),
                      self._sample)

    def build(self) -> Tally:
        w = min(self.rollout.wave, self.plan.last)
        started = self._waves[:w + 1]
        live = sum(c.total() - sum(c[p] for p in _NOT_LIVE) for c in started)
        done = sum(c[p] for c in started for p in _DONE)
        needed = live if w >= self.plan.last else math.ceil(
            Fraction(str(self.rollout.spec.quorum_percent)) * live / 100)
        quorum_at: dt.datetime | None = None
        if done >= needed:
            times = sorted(t for d in self._done[:w + 1] for t in d)
            quorum_at = times[needed - 1] if needed > 0 else EPOCH
        return Tally(tuple(dict(c) for c in self._waves), self.counts(),
                     tuple(sorted(self._failing)), live, done, quorum_at)


def tally(rollout: Rollout, plan: WavePlan,
          hosts: Iterable[tuple[HostProgress, HostFacts]], order: VersionOrder) -> Tally:
    """Count every member (and every host that joined the group later).

    ``hosts``: each member's progress and facts, and those of non-members the group
    now matches (they are in the last wave); others are ignored.
    """
    b = TallyBuilder(rollout, plan)
    for progress, facts in hosts:
        if plan.wave_of(facts.host) is None and progress.granted is None \
                and progress.outcome is None and not _in_group(rollout, facts):
            continue
        b.set(progress, phase_of(rollout, plan, progress, facts, order))
    return b.build()


# ---------------------------------------------------------------------------- decisions


@dataclass(frozen=True)
class HostDecision:
    """What a rollout says to one host now.

    ``target``: the version to move to now (None: stay where it is); ``download``,
    ``prepare``, ``apply``: what it may do now (the host's own policy still decides
    whether and when it does); ``progress``: the progress to store (changed when
    ``granted``: an apply grant given now). ``code`` is stable (metrics, tests):
    ``rollout-finished``, ``rollout-aborted``, ``not-in-group``, ``failed``,
    ``succeeded``, ``at-target``, ``ahead``, ``unknown-version``, ``other-channel``,
    ``unsigned``,
    ``halted``, ``wave-not-started``, ``failure-budget``, ``applying``,
    ``waiting-for-host``, ``max-in-flight``, ``apply-granted``.
    """

    rollout: str
    code: str
    reason: str
    progress: HostProgress
    wave: int | None = None
    in_wave: bool = False
    target: str | None = None
    download: bool = False
    prepare: bool = False
    apply: bool = False
    granted: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"rollout": self.rollout, "code": self.code, "reason": self.reason,
                "wave": self.wave, "in_wave": self.in_wave, "target": self.target,
                "download": self.download, "prepare": self.prepare, "apply": self.apply}


def decide_host(rollout: Rollout, plan: WavePlan, counts: Counts, progress: HostProgress,
                facts: HostFacts, order: VersionOrder, now: dt.datetime) -> HostDecision:
    """Whether the host is in a started wave, its target, and what it may do now.

    ``progress`` must already have this check-in folded in (:func:`observe`), and
    ``counts`` must count it. Nothing is granted unless the rollout is running, the host
    in a started wave (or on a dead end), the failure budget not exceeded, the host's
    own policy due to apply and fewer than ``max_in_flight`` hosts applying.
    """
    def say(code: str, reason: str, **kw: Any) -> HostDecision:
        return HostDecision(rollout.id, code, reason, progress, **kw)

    if not rollout.active:
        return say(f"rollout-{rollout.state.value}", f"rollout {rollout.id} is "
                   f"{rollout.state.value}")
    member = plan.wave_of(facts.host) is not None
    if progress.granted is None and progress.outcome is None and not _in_group(rollout, facts):
        return say("not-in-group", f"not in the group ({rollout.selector.describe()})"
                   + (" any more" if member else ""))
    wave, moving = _in_wave(rollout, plan, facts.host, facts.version)
    if progress.outcome is Outcome.FAILED:
        return say("failed", f"failed in this rollout ({progress.failure}: "
                   f"{progress.detail}); held where it is", wave=wave, in_wave=moving)
    if progress.outcome is Outcome.SUCCEEDED:
        return say("succeeded", f"moved to {rollout.to_version}", wave=wave, in_wave=moving)
    step, code, why = next_step(rollout, facts.version, order, facts.channel)
    if step is None:
        return say(code, why, wave=wave, in_wave=moving)
    if (progress.granted is not None or progress.released is not None) \
            and progress.step != step:
        progress = HostProgress(progress.host)  # it moved on its own: the old grant is void
    if rollout.state is RolloutState.HALTED:
        halted = rollout.halt.reason if rollout.halt else "halted"
        return say("halted", f"rollout halted ({halted}): nothing is granted",
                   wave=wave, in_wave=moving,
                   target=step if progress.granted is not None else None)
    if not moving:
        return say("wave-not-started", f"in wave {wave}; wave {rollout.wave} is the "
                   f"current one: stays on {facts.version}", wave=wave)
    over = rollout.spec.budget.exceeded(counts.failed, counts.sample)
    if over is not None:
        return say("failure-budget", f"failure budget exceeded ({over}): nothing is granted",
                   wave=wave, in_wave=True,
                   target=step if progress.granted is not None else None)
    may = {"wave": wave, "in_wave": True, "target": step, "download": True, "prepare": True}
    dead = " (it runs a dead end)" if facts.version in rollout.dead_ends else ""
    if progress.granted is not None:
        return say("applying", f"{why}: apply granted{dead}", apply=True, **may)
    if not facts.apply_due:
        if progress.released is None:  # from now on, a move it makes is judged
            progress = replace(progress, step=step, released=now,
                               unhealthy_before=frozenset(facts.unhealthy_apps))
        return say("waiting-for-host", f"{why}: may download and prepare it{dead}; its own "
                   "policy (the customer's apply or a window) decides when it applies", **may)
    limit = rollout.spec.max_in_flight
    if limit is not None and counts.in_flight >= limit:
        return say("max-in-flight", f"{why}: {counts.in_flight} hosts are applying, the "
                   f"most this rollout allows at once", **may)
    progress = HostProgress(facts.host, step, now, unhealthy_before=(
        progress.unhealthy_before if progress.released is not None
        else frozenset(facts.unhealthy_apps)))
    return say("apply-granted", f"{why}: may apply now{dead}", apply=True, granted=True, **may)


@dataclass(frozen=True)
class Step:
    """What the rollout's driver should do now (``advance`` to ``wave``, ``halt``,
    ``finish``, or ``none`` until ``wake``)."""

    action: Literal["none", "advance", "halt", "finish"]
    code: str
    reason: str
    wave: int | None = None
    hosts: tuple[str, ...] = ()
    wake: dt.datetime | None = None


def assess(rollout: Rollout, plan: WavePlan, tally: Tally, order: VersionOrder,
           now: dt.datetime) -> Step:
    """The rollout's next move: halt on the failure budget (or an unsigned target or
    floor), advance when the current wave's quorum finished and soaked, finish when the
    last wave is all done and soaked."""
    if rollout.state is not RolloutState.RUNNING:
        return Step("none", rollout.state.value, f"rollout is {rollout.state.value}")
    for v in (rollout.to_version, *rollout.floors):
        if order.rank(v) is None:
            return Step("halt", "unsigned", f"{v} is no longer signed in the repository")
    over = rollout.spec.budget.exceeded(tally.counts.failed, tally.counts.sample)
    if over is not None:
        return Step("halt", "failure-budget", over, hosts=tally.failing)
    w = min(rollout.wave, plan.last)
    if tally.quorum_at is None:
        return Step("none", "wave-running", f"wave {w}: {tally.done} of {tally.live} hosts "
                    "done")
    soaked = max(rollout.wave_started, tally.quorum_at) + dt.timedelta(
        seconds=rollout.spec.soak_s)
    if now < soaked:
        return Step("none", "soaking", f"wave {w} soaks until {iso(soaked)}", wake=soaked)
    if w >= plan.last:
        return Step("finish", "finished", f"every wave done ({tally.done} of {tally.live} "
                    f"live hosts), {len(tally.failing)} failed")
    return Step("advance", "advanced", f"wave {w} done and soaked: wave {w + 1} starts",
                wave=w + 1)


def advance(rollout: Rollout, step: Step, now: dt.datetime) -> Rollout:
    """The rollout after the driver's ``step`` (the same rollout for ``none``)."""
    if step.action == "advance":
        assert step.wave is not None
        return replace(rollout, wave=step.wave, wave_started=now)
    if step.action == "halt":
        return replace(rollout, state=RolloutState.HALTED,
                       halt=Halt(step.code, step.reason, now, "server", step.hosts))
    if step.action == "finish":
        return replace(rollout, state=RolloutState.FINISHED, ended=now)
    return rollout


def halt(rollout: Rollout, by: str, reason: str, now: dt.datetime) -> Rollout:
    """An operator halts a running rollout.

    Raises:
        InputError: it is not running.
    """
    if rollout.state is not RolloutState.RUNNING:
        raise InputError(f"rollout {rollout.id} is {rollout.state.value}, not running: "
                         "nothing to halt")
    return replace(rollout, state=RolloutState.HALTED,
                   halt=Halt("operator", reason or "halted by an operator", now, by))


def resume(rollout: Rollout, by: str, now: dt.datetime, *,
           excuse: Iterable[str] = ()) -> Rollout:
    """An operator resumes a halted rollout, accepting the failures of ``excuse``
    (usually the halt's failing hosts): they no longer count against the budget, and
    those hosts stay where they are unless their progress is reset (a retry).

    Raises:
        InputError: it is not halted.
    """
    del by, now  # recorded as an event by the caller
    if rollout.state is not RolloutState.HALTED:
        raise InputError(f"rollout {rollout.id} is {rollout.state.value}, not halted: "
                         "nothing to resume")
    return replace(rollout, state=RolloutState.RUNNING, halt=None,
                   excused=rollout.excused | frozenset(excuse))


def abort(rollout: Rollout, by: str, reason: str, now: dt.datetime) -> Rollout:
    """An operator ends a running or halted rollout; hosts stay where they are.

    Raises:
        InputError: it already ended.
    """
    if not rollout.active:
        raise InputError(f"rollout {rollout.id} is already {rollout.state.value}")
    hosts = rollout.halt.hosts if rollout.halt is not None else ()
    return replace(rollout, state=RolloutState.ABORTED, ended=now,
                   halt=Halt("aborted", reason or "aborted by an operator", now, by, hosts))

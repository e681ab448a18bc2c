"""The data of rollouts: spec, rollout, hosts' facts and progress (frozen; JSON forms).

Private: import these from :mod:`atoll.control.rollouts`, which decides over them.
Times are aware datetimes; durations are whole seconds (``*_s``), as in the agent's
policy.
"""

from __future__ import annotations

import datetime as dt
import enum
import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from atoll.core.errors import InputError

__all__ = [
    "EPOCH", "Failure", "FailureBudget", "Halt", "HostFacts", "HostProgress", "Member",
    "Outcome", "Phase", "Rollout", "RolloutSpec", "RolloutState", "Selector", "VersionOrder",
    "aware", "iso",
]

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


MAX_SECONDS = 365 * 86400  # the longest soak or update timeout a spec may ask for


class RolloutState(enum.StrEnum):
    RUNNING = "running"
    HALTED = "halted"      # by the failure budget or an operator: nothing is granted
    FINISHED = "finished"  # every live member done, the last wave soaked
    ABORTED = "aborted"    # by an operator: hosts stay where they are


class Outcome(enum.StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class Failure(enum.StrEnum):
    """What atoll knows as a failed update."""

    ROLLED_BACK = "rolled-back"    # boot counting or a failed health check rolled it back
    HEALTH_CHECK = "health-check"  # a required health check fails on the new version
    APP_HEALTH = "app-health"      # an app healthy before the apply is unhealthy after it
    TIMED_OUT = "timed-out"        # not finished within the update timeout


class Phase(enum.StrEnum):
    """Where a member stands in a rollout (status, tally)."""

    QUEUED = "queued"        # its wave has not started
    WAITING = "waiting"      # in a started wave, not applying (downloading, prepared, its trigger)
    IN_FLIGHT = "in-flight"  # apply granted (or moved by itself once released), not judged yet
    SUCCEEDED = "succeeded"  # on the target, healthy, moved by this rollout
    AT_TARGET = "at-target"  # on (or past) the target without this rollout's grant
    FAILED = "failed"
    SKIPPED = "skipped"      # off the path: a version not signed here, or another channel
    LOST = "lost"            # the inventory marked it lost
    EXCLUDED = "excluded"    # no longer matches the group's labels




def aware(t: dt.datetime, what: str) -> dt.datetime:
    if t.tzinfo is None:
        raise InputError(f"{what}: a time without a time zone")
    return t


def _time(v: Any, what: str) -> dt.datetime:
    try:
        return aware(dt.datetime.fromisoformat(str(v)), what)
    except ValueError:
        raise InputError(f"{what}: {v!r} is not an ISO 8601 time") from None


def _opt_time(v: Any, what: str) -> dt.datetime | None:
    return None if v is None else _time(v, what)


def iso(t: dt.datetime | None) -> str | None:
    return None if t is None else t.astimezone(dt.UTC).isoformat()


# ---------------------------------------------------------------------------- the spec


@dataclass(frozen=True)
class FailureBudget:
    """How many failures a rollout tolerates before it halts by itself.

    Attributes:
        max_failures: halt when more hosts than this failed (None: no count limit).
            The default 0 halts at the first failure (Nebraska's rule).
        max_failure_percent: halt when more than this percentage of the hosts with an
            outcome failed, judged once ``min_sample`` hosts have one (None: no limit).
        min_sample: outcomes needed before the percentage is judged.
    """

    max_failures: int | None = 0
    max_failure_percent: float | None = None
    min_sample: int = 10

    def check(self) -> None:
        """Raises: InputError: a negative count, a percentage outside 0-100, sample < 1."""
        if self.max_failures is not None and (
                isinstance(self.max_failures, bool) or self.max_failures < 0):
            raise InputError(f"failure budget: max failures {self.max_failures!r} must be 0 "
                             "or more")
        p = self.max_failure_percent
        if p is not None and not (math.isfinite(p) and 0 <= p <= 100):
            raise InputError(f"failure budget: max failure percent {p!r} is not between 0 and 100")
        if isinstance(self.min_sample, bool) or self.min_sample < 1:
            raise InputError(f"failure budget: min sample {self.min_sample!r} must be 1 or more")

    def exceeded(self, failed: int, sample: int) -> str | None:
        """Why ``failed`` failures among ``sample`` outcomes exceed the budget (None: within)."""
        if self.max_failures is not None and failed > self.max_failures:
            return f"{failed} failed hosts, more than the budget of {self.max_failures}"
        p = self.max_failure_percent
        if p is not None and sample >= self.min_sample and failed * 100 > p * sample:
            return (f"{failed} of {sample} updated hosts failed ({failed * 100 / sample:.1f} %), "
                    f"more than the budget of {p:g} %")
        return None


@dataclass(frozen=True)
class RolloutSpec:
    """How a rollout moves: its waves and limits (what an operator writes).

    Attributes:
        waves: cumulative percentages of the group, increasing, the last 100.
        canary_wave: hosts labelled ``canary`` form wave 0 (else they only go first).
        soak_s: seconds a wave is watched, after its quorum finished, before the next starts
            (and before the rollout finishes).
        quorum_percent: share of a wave's live members (started waves, cumulative) that must
            have finished (succeeded, failed or at the target) before its soak counts; the
            last wave always needs all of them.
        max_in_flight: hosts applying at once in this rollout (None: no limit of its own).
        max_per_site: new hosts of one ``site`` per wave (None: no cap; the last wave is
            never capped; hosts without a site label are not capped).
        update_timeout_s: an apply not finished this long after booting the new version,
            or a host silent this long while applying, is a failure.
        budget: the failure budget.
    """

    waves: tuple[float, ...] = (1.0, 10.0, 100.0)
    canary_wave: bool = True
    soak_s: int = 3600
    quorum_percent: float = 100.0
    max_in_flight: int | None = None
    max_per_site: int | None = None
    update_timeout_s: int = 3600
    budget: FailureBudget = field(default_factory=FailureBudget)

    def check(self) -> None:
        """Raises: InputError: a field that cannot mean anything (the first one found)."""
        w = self.waves
        if not w:
            raise InputError("waves: give at least one percentage (the last is 100)")
        for p in w:
            if isinstance(p, bool) or not isinstance(p, int | float) or not (
                    math.isfinite(p) and 0 < p <= 100):
                raise InputError(f"waves: {p!r} is not a percentage above 0 and up to 100")
        if any(b <= a for a, b in itertools.pairwise(w)):
            raise InputError(f"waves: {', '.join(f'{p:g}' for p in w)} do not increase",
                             resolution="waves are cumulative: e.g. 1, 10, 100")
        if w[-1] != 100:
            raise InputError(f"waves: the last wave is {w[-1]:g} %, not 100",
                             resolution="the last wave takes the whole group: end with 100")
        for name in ("soak_s", "update_timeout_s"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= MAX_SECONDS:
                raise InputError(f"{name}: {v!r} must be a whole number of seconds from 0 "
                                 f"to {MAX_SECONDS} (a year)")
        if self.update_timeout_s < 1:
            raise InputError("update_timeout_s: must be 1 second or more")
        q = self.quorum_percent
        if not (math.isfinite(q) and 0 < q <= 100):
            raise InputError(f"quorum_percent: {q!r} is not above 0 and up to 100")
        for name in ("max_in_flight", "max_per_site"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise InputError(f"{name}: {v!r} must be 1 or more (or none)")
        self.budget.check()

    def to_json(self) -> dict[str, Any]:
        return {"waves": list(self.waves), "canary_wave": self.canary_wave,
                "soak_s": self.soak_s, "quorum_percent": self.quorum_percent,
                "max_in_flight": self.max_in_flight, "max_per_site": self.max_per_site,
                "update_timeout_s": self.update_timeout_s,
                "budget": {"max_failures": self.budget.max_failures,
                           "max_failure_percent": self.budget.max_failure_percent,
                           "min_sample": self.budget.min_sample}}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> RolloutSpec:
        """Raises: InputError: unknown fields, wrong types or values."""
        if not isinstance(d, Mapping):
            raise InputError("rollout spec: expected an object")
        known = set(cls().to_json())
        if unknown := sorted(set(d) - known):
            raise InputError(f"rollout spec: unknown field(s) {', '.join(unknown)}")
        b = d.get("budget", {})
        if not isinstance(b, Mapping):
            raise InputError("rollout spec: budget: expected an object")
        if bad := sorted(set(b) - {"max_failures", "max_failure_percent", "min_sample"}):
            raise InputError(f"rollout spec: budget: unknown field(s) {', '.join(bad)}")
        for key in ("max_failures", "min_sample"):
            v = b.get(key)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int)):
                raise InputError(f"rollout spec: budget: {key}: {v!r} is not a whole number")
        v = b.get("max_failure_percent")
        if v is not None and (isinstance(v, bool) or not isinstance(v, int | float)):
            raise InputError(f"rollout spec: budget: max_failure_percent: {v!r} is not a number")
        waves = d.get("waves", cls.waves)
        if isinstance(waves, str) or not isinstance(waves, Sequence):
            raise InputError("waves: expected a list of percentages")
        try:
            budget = FailureBudget(**{k: b[k] for k in b})
            spec = cls(waves=tuple(waves), budget=budget,
                       **{k: d[k] for k in d if k not in ("waves", "budget")})
        except TypeError as exc:
            raise InputError(f"rollout spec: {exc}") from None
        if not isinstance(spec.canary_wave, bool):
            raise InputError("canary_wave: expected true or false")
        for name in ("quorum_percent",):
            if isinstance(getattr(spec, name), bool) or not isinstance(
                    getattr(spec, name), int | float):
                raise InputError(f"{name}: expected a number")
        p = budget.max_failure_percent
        if p is not None and (isinstance(p, bool) or not isinstance(p, int | float)):
            raise InputError("failure budget: max failure percent must be a number")
        spec.check()
        return spec


# ---------------------------------------------------------------------------- the rollout


@dataclass(frozen=True)
class Selector:
    """The group: hosts of ``customer`` (None: any) whose labels include all of ``labels``."""

    customer: str | None = None
    labels: tuple[tuple[str, str], ...] = ()  # sorted (key, value) pairs: site, role, ...

    @classmethod
    def of(cls, customer: str | None = None, **labels: str) -> Selector:
        return cls(customer, tuple(sorted(labels.items())))

    def matches(self, customer: str | None, labels: Mapping[str, str]) -> bool:
        return ((self.customer is None or customer == self.customer)
                and all(labels.get(k) == v for k, v in self.labels))

    def describe(self) -> str:
        parts = ([f"customer={self.customer}"] if self.customer is not None else []) + [
            f"{k}={v}" for k, v in self.labels]
        return " ".join(parts) or "every host"


@dataclass(frozen=True)
class Member:
    """A host of the group when the rollout was created, with what places it in a wave."""

    host: str
    site: str | None = None
    canary: bool = False


@dataclass(frozen=True)
class Halt:
    """Why a rollout stopped: ``code`` ``failure-budget`` or ``unsigned`` (by the server),
    ``operator`` (halted) or ``aborted``; ``hosts``: the failing hosts of a budget halt."""

    code: str
    reason: str
    at: dt.datetime
    by: str  # "server" or the operator
    hosts: tuple[str, ...] = ()


@dataclass(frozen=True)
class Rollout:
    """A rollout as stored. ``wave``: waves ``0..wave`` of its plan have started."""

    id: str
    selector: Selector
    to_version: str
    spec: RolloutSpec
    members: tuple[Member, ...]  # sorted by host
    created: dt.datetime
    created_by: str = "server"
    from_version: str | None = None
    floors: tuple[str, ...] = ()  # oldest first
    dead_ends: frozenset[str] = frozenset()
    state: RolloutState = RolloutState.RUNNING
    wave: int = 0
    wave_started: dt.datetime = EPOCH
    halt: Halt | None = None
    ended: dt.datetime | None = None
    excused: frozenset[str] = frozenset()  # failures an operator accepted on resume

    @property
    def active(self) -> bool:
        """Running or halted: it still decides for its hosts."""
        return self.state in (RolloutState.RUNNING, RolloutState.HALTED)

    def to_json(self) -> dict[str, Any]:
        h = self.halt
        return {
            "id": self.id, "customer": self.selector.customer,
            "labels": dict(self.selector.labels), "from_version": self.from_version,
            "to_version": self.to_version, "spec": self.spec.to_json(),
            "floors": list(self.floors), "dead_ends": sorted(self.dead_ends),
            "members": [{"host": m.host, "site": m.site, "canary": m.canary}
                        for m in self.members],
            "created": iso(self.created), "created_by": self.created_by,
            "state": self.state.value, "wave": self.wave,
            "wave_started": iso(self.wave_started),
            "halt": None if h is None else {"code": h.code, "reason": h.reason,
                                            "at": iso(h.at), "by": h.by,
                                            "hosts": list(h.hosts)},
            "ended": iso(self.ended), "excused": sorted(self.excused),
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Rollout:
        """Raises: InputError: not a stored rollout."""
        try:
            h = d.get("halt")
            labels = d.get("labels") or {}
            return cls(
                id=str(d["id"]), selector=Selector(d.get("customer"),
                                                   tuple(sorted(labels.items()))),
                to_version=str(d["to_version"]), from_version=d.get("from_version"),
                spec=RolloutSpec.from_json(d["spec"]),
                floors=tuple(d.get("floors", ())), dead_ends=frozenset(d.get("dead_ends", ())),
                members=tuple(Member(str(m["host"]), m.get("site"), bool(m.get("canary")))
                              for m in d["members"]),
                created=_time(d["created"], "created"),
                created_by=str(d.get("created_by", "server")),
                state=RolloutState(d.get("state", "running")), wave=int(d.get("wave", 0)),
                wave_started=_time(d["wave_started"], "wave_started"),
                halt=None if h is None else Halt(str(h["code"]), str(h["reason"]),
                                                 _time(h["at"], "halt.at"), str(h["by"]),
                                                 tuple(h.get("hosts", ()))),
                ended=_opt_time(d.get("ended"), "ended"),
                excused=frozenset(d.get("excused", ())))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise InputError(f"not a stored rollout: {exc!r}") from None


@dataclass(frozen=True)
class VersionOrder:
    """The signed versions the control plane may choose among, oldest first.

    A version not in it cannot be placed: such a host is skipped, never moved
    (it may be newer than the control plane knows, and a host is never sent back).
    """

    versions: tuple[str, ...]
    channel: str | None = None  # the channel they are signed on (None: not compared)
    _rank: Mapping[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_rank", {v: i for i, v in enumerate(self.versions)})

    def rank(self, version: str | None) -> int | None:
        return None if version is None else self._rank.get(version)


# ---------------------------------------------------------------------------- hosts


@dataclass(frozen=True)
class HostFacts:
    """What the control plane knows of a host (its last check-in and the inventory).

    Attributes:
        host: the host id. customer, labels: set by operators (site, role, canary...).
        version: the booted version; pending: the one that boots next (applied), if other.
        committed: the booted deployment was marked good (boot-complete); False on trial.
        rolled_back_from, rollback_reason, rolled_back_at: the last boot rolled back from
            that version, why, when (None: unknown).
        failed_checks: required health checks failing now; unhealthy_apps: apps unhealthy now.
        apply_due: the host's own policy (the customer's apply, a window) would apply now.
        seen: its last check-in; lost: the inventory marked it lost.
        channel: the update channel the host follows (None: not reported).
    """

    host: str
    customer: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    version: str | None = None
    pending: str | None = None
    committed: bool = True
    rolled_back_from: str | None = None
    rollback_reason: str = ""
    rolled_back_at: dt.datetime | None = None
    failed_checks: tuple[str, ...] = ()
    unhealthy_apps: tuple[str, ...] = ()
    apply_due: bool = False
    seen: dt.datetime | None = None
    lost: bool = False
    channel: str | None = None


@dataclass(frozen=True)
class HostProgress:
    """One host's progress in one rollout (stored beside it).

    ``step`` is the version the current apply grant is for (a floor, or the target);
    ``started`` when the host first reported running it; ``unhealthy_before`` the apps
    already unhealthy at the grant (not blamed on the update). ``released`` (without a
    grant): when the rollout let the host download and prepare ``step`` while its own
    policy (the customer's apply, a window) decides when it applies; a move the host
    then makes by itself is judged as a granted one (rollback, checks, app health).
    """

    host: str
    step: str | None = None
    granted: dt.datetime | None = None
    started: dt.datetime | None = None
    outcome: Outcome | None = None
    failure: Failure | None = None
    detail: str = ""
    finished: dt.datetime | None = None
    unhealthy_before: frozenset[str] = frozenset()
    released: dt.datetime | None = None

    def failed(self, kind: Failure, detail: str, now: dt.datetime) -> HostProgress:
        return replace(self, outcome=Outcome.FAILED, failure=kind, detail=detail, finished=now)

    def to_json(self) -> dict[str, Any]:
        return {"host": self.host, "step": self.step, "granted": iso(self.granted),
                "started": iso(self.started),
                "outcome": None if self.outcome is None else self.outcome.value,
                "failure": None if self.failure is None else self.failure.value,
                "detail": self.detail, "finished": iso(self.finished),
                "unhealthy_before": sorted(self.unhealthy_before),
                "released": iso(self.released)}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> HostProgress:
        """Raises: InputError: not a stored progress."""
        try:
            return cls(str(d["host"]), d.get("step"), _opt_time(d.get("granted"), "granted"),
                       _opt_time(d.get("started"), "started"),
                       None if d.get("outcome") is None else Outcome(d["outcome"]),
                       None if d.get("failure") is None else Failure(d["failure"]),
                       str(d.get("detail", "")), _opt_time(d.get("finished"), "finished"),
                       frozenset(d.get("unhealthy_before", ())),
                       _opt_time(d.get("released"), "released"))
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"not a stored host progress: {exc!r}") from None

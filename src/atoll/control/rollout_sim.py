"""Rolling an update through a group with K reboot slots: simulation and load test.

Each simulated agent does what atolld does: check in with the rollout (may it
apply now?), ask for a slot (``pre-reboot``), reboot into the new version, run
its health checks, and release the slot (``steady-state``) only when healthy. A
host that fails health rolls back to the old version and **keeps its slot**.

What the rollout grants, and when it halts, are the control plane's own decisions
(:mod:`atoll.control.rollouts`, through :class:`RolloutLedger`): waves, canaries,
``max_in_flight`` and the failure budget as an operator writes them. The default
spec is one wave of the whole group whose first failure halts it: hosts that did
not get a slot yet do not try any more (the rollout is halted for an operator to
look), hosts already rebooting finish.

Two modes share the host logic and the report:

* ``simulate_rollout``: pure, in virtual time, over a ``FleetLockService``
  (an in-memory backend unless given one). Deterministic; for unit tests.
* ``run_rollout``: real agents in threads against a real FleetLock server over
  HTTP, with real (short) reboot times; for integration tests and the benchmark.

Both check the invariant "never more than K hosts hold a slot" at every grant,
and the rollout's own at every apply grant (running, in a started wave, no more than
``max_in_flight`` applying).

It lives in the control layer beside the decisions it drives, and uses the fleet
layer below it (the FleetLock service, server and client) like the control plane does.
"""

from __future__ import annotations

import datetime as dt
import enum
import heapq
import queue
import random
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace

from atoll.control import rollouts as ro
from atoll.control.rollouts import (
    FailureBudget,
    HostDecision,
    HostProgress,
    RolloutSpec,
    observe,
    phase_of,
)
from atoll.core.errors import InputError
from atoll.fleet.backends.memory import MemoryBackend
from atoll.fleet.client import FleetLockClient, FleetLockError
from atoll.fleet.config import FleetConfig
from atoll.fleet.protocol import ClientParams, ProtocolError
from atoll.fleet.service import FleetLockService

__all__ = ["HostState", "RolloutLedger", "RolloutReport", "default_spec", "host_ids",
           "run_rollout", "simulate_rollout"]

OLD, NEW = "old", "new"
START = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)  # virtual time 0
# decisions after which a host stops asking: the rollout will grant it nothing more
_STOP = ("halted", "failure-budget", "rollout-aborted", "rollout-finished", "failed")


class HostState(enum.Enum):
    """Where a host is in the wave."""

    PENDING = "pending"      # waiting for a slot
    REBOOTING = "rebooting"  # holds a slot, rebooting into the new version
    DONE = "done"            # on the new version, slot released
    FAILED = "failed"        # failed health, rolled back, still holds its slot
    HALTED = "halted"        # never rebooted: the wave stopped


@dataclass
class RolloutReport:
    """What happened to every host, and how long it took."""

    slots: int
    reboot_seconds: float
    states: dict[str, HostState] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    max_concurrent: int = 0
    total_seconds: float = 0.0
    lock_requests: int = 0
    refusals: int = 0
    violations: list[str] = field(default_factory=list)
    lock_ms: list[float] = field(default_factory=list)  # granted pre-reboots (real mode)
    unlock_ms: list[float] = field(default_factory=list)  # steady-states (real mode)
    rollout: dict[str, object] = field(default_factory=dict)  # RolloutLedger.summary()

    @property
    def ideal_seconds(self) -> float:
        """``ceil(hosts / K) x reboot time``: the wave with no overhead at all."""
        rounds = -(-len(self.states) // self.slots)
        return rounds * self.reboot_seconds

    @property
    def halted(self) -> bool:
        """Whether the rollout halted (by its failure budget)."""
        return self.rollout.get("state") == "halted"

    def count(self, state: HostState) -> int:
        """How many hosts ended in ``state``."""
        return sum(1 for s in self.states.values() if s is state)

    def summary(self) -> dict[str, object]:
        """A JSON-friendly summary."""
        return {
            "hosts": len(self.states), "slots": self.slots, "reboot_seconds": self.reboot_seconds,
            "total_seconds": round(self.total_seconds, 3),
            "ideal_seconds": round(self.ideal_seconds, 3),
            "overhead": round(self.total_seconds / self.ideal_seconds - 1, 4)
            if self.ideal_seconds else None,
            "max_concurrent": self.max_concurrent, "lock_requests": self.lock_requests,
            "refusals": self.refusals, "violations": len(self.violations),
            "states": {s.value: self.count(s) for s in HostState},
            "lock_ms_median": _median(self.lock_ms), "unlock_ms_median": _median(self.unlock_ms),
            "rollout": self.rollout,
        }


def default_spec() -> RolloutSpec:
    """One wave of the whole group, no soak, no limit of its own; the first failure halts."""
    return RolloutSpec(waves=(100.0,), canary_wave=False, soak_s=0,
                       budget=FailureBudget(max_failures=0))


class RolloutLedger:
    """One rollout over simulated hosts, moved by the control plane's decisions.

    Hosts go from ``old`` to ``new`` (the two signed versions). ``ask`` is a check-in
    of a host whose own policy would apply now; ``report`` is its check-in after the
    reboot (healthy on ``new``, or rolled back to ``old``). After each, the driver's
    :func:`~atoll.control.rollouts.assess` runs (advance, halt, finish). Every apply
    grant is checked against the rollout's promises; a broken one is a ``violation``.
    Not thread-safe: :func:`run_rollout` calls it under a lock.

    Raises:
        InputError: a bad spec (from ``create_rollout``).
    """

    def __init__(self, hosts: Iterable[str], spec: RolloutSpec, *,
                 canaries: Iterable[str] = (), sites: Mapping[str, str] | None = None,
                 rollout_id: str = "simulated", start: dt.datetime = START):
        self.order = ro.VersionOrder((OLD, NEW))
        tagged = set(canaries)
        sites = sites or {}
        self.facts = {h: ro.HostFacts(h, labels={
            **({"site": sites[h]} if h in sites else {}),
            **({"canary": "true"} if h in tagged else {})}, version=OLD) for h in hosts}
        self.rollout = ro.create_rollout(rollout_id, ro.Selector(), NEW, spec,
                                         self.facts.values(), self.order, start)
        self.plan = ro.plan_waves(self.rollout)
        self.progress = {h: ro.HostProgress(h) for h in self.facts}
        self.violations: list[str] = []
        self.events: list[tuple[dt.datetime, str, str]] = []  # (time, action, reason)
        self.max_in_flight = 0
        self._wake: dt.datetime | None = None  # assess again then, or when a phase changes
        self._rebuild()

    def _rebuild(self) -> None:
        self._dirty = True
        self._tally = ro.TallyBuilder(self.rollout, self.plan)
        for h, p in self.progress.items():
            self._tally.set(p, ro.phase_of(self.rollout, self.plan, p, self.facts[h],
                                           self.order))

    def _store(self, host: str, progress: HostProgress) -> None:
        phase = phase_of(self.rollout, self.plan, progress, self.facts[host], self.order)
        if progress != self.progress[host] or phase is not self._tally.phase(host):
            self._tally.set(progress, phase)
            self._dirty = True
        self.progress[host] = progress

    def ask(self, host: str, now: dt.datetime) -> HostDecision:
        """The host checks in, due to apply: may it?"""
        facts = self.facts[host] = replace(self.facts[host], apply_due=True, seen=now)
        self._store(host, ro.observe(self.rollout, self.progress[host], facts, now))
        decision = ro.decide_host(self.rollout, self.plan, self._tally.counts(),
                                  self.progress[host], facts, self.order, now)
        if decision.granted:
            self._check_grant(host, decision, now)
            self._store(host, decision.progress)
            self.max_in_flight = max(self.max_in_flight, self._tally.counts().in_flight)
        self.tick(now)
        return decision

    def applying(self, host: str) -> bool:
        """The host holds an apply grant of a running rollout: asking again would only
        say so (a host waiting for its reboot slot polls FleetLock, not the rollout)."""
        return self.progress[host].granted is not None and self.rollout.state == "running"

    def _check_grant(self, host: str, decision: HostDecision, now: dt.datetime) -> None:
        r, counts = self.rollout, self._tally.counts()
        wave = self.plan.wave_of(host)
        if r.state != "running":
            self.violations.append(f"rollout: {host} granted at {now} while {r.state.value}")
        if wave is None or wave > r.wave:
            self.violations.append(f"rollout: {host} of wave {wave} granted in wave {r.wave}")
        limit = r.spec.max_in_flight
        if limit is not None and counts.in_flight + 1 > limit:
            self.violations.append(f"rollout: {counts.in_flight + 1} applying, limit {limit}")
        if r.spec.budget.exceeded(counts.failed, counts.sample):
            self.violations.append(f"rollout: {host} granted beyond the failure budget")

    def report(self, host: str, healthy: bool, now: dt.datetime) -> None:
        """The host checks in after its reboot: on ``new`` and healthy, or rolled back."""
        facts = replace(self.facts[host], apply_due=False, seen=now)
        facts = replace(facts, version=NEW) if healthy else replace(
            facts, version=OLD, rolled_back_from=NEW, rolled_back_at=now,
            rollback_reason="health check failed after the reboot")
        self.facts[host] = facts

        self._store(host, observe(self.rollout, self.progress[host], facts, now))
        self.tick(now)

    def tick(self, now: dt.datetime) -> None:
        """The driver: advance, halt or finish the rollout when its decisions say so."""
        if not self._dirty and (self._wake is None or now < self._wake):
            return  # nothing changed since the last assessment
        for _ in range(len(self.plan.waves) + 2):  # an advance may make the next one due
            step = ro.assess(self.rollout, self.plan, self._tally.build(), self.order, now)
            self._dirty, self._wake = False, step.wake
            if step.action == "none":
                return
            self.rollout = ro.advance(self.rollout, step, now)
            self.events.append((now, step.action, step.reason))
            self._rebuild()

    def summary(self) -> dict[str, object]:
        """The rollout's end state: waves planned and achieved, the halt, the failures."""
        r, plan = self.rollout, self.plan
        halt = r.halt
        return {
            "state": r.state.value, "wave": r.wave, "waves": len(plan.waves),
            "planned_percent": [w.percent for w in plan.waves],
            "achieved_percent": [round(plan.achieved_percent(i), 3)
                                 for i in range(len(plan.waves))],
            "halt": None if halt is None else {"code": halt.code, "reason": halt.reason,
                                               "hosts": list(halt.hosts)},
            "max_in_flight": self.max_in_flight,
            "events": [(t.isoformat(), a, why) for t, a, why in self.events],
        }


def _median(values: list[float]) -> float | None:
    return round(sorted(values)[len(values) // 2], 2) if values else None


def host_ids(n: int, prefix: str = "host") -> list[str]:
    """``n`` distinct host ids."""
    return [f"{prefix}-{i:04d}" for i in range(n)]


def _check_args(hosts: list[str], slots: int, reboot_seconds: float, poll: float) -> None:
    if not hosts or len(set(hosts)) != len(hosts):
        raise InputError("a rollout needs one or more distinct host ids")
    if slots < 1 or reboot_seconds <= 0 or poll <= 0:
        raise InputError("slots must be >= 1, reboot and poll times > 0")


def simulate_rollout(
    hosts: Iterable[str],
    slots: int,
    *,
    reboot_seconds: float = 60.0,
    poll_seconds: float = 15.0,
    failing: Iterable[str] = (),
    group: str = "default",
    service: FleetLockService | None = None,
    max_events: int = 5_000_000,
    spec: RolloutSpec | None = None,
    canaries: Iterable[str] = (),
    sites: Mapping[str, str] | None = None,
) -> RolloutReport:
    """Roll ``hosts`` through ``group`` in virtual time over a FleetLock service.

    Each host checks in with the rollout (``spec``: :func:`default_spec` unless given;
    ``canaries`` and ``sites`` label hosts) as soon as it is due to apply, and again
    every ``poll_seconds`` while the rollout holds it back or its slot is refused. Hosts
    in ``failing`` fail their health check after rebooting and roll back.

    Raises:
        InputError: bad arguments or spec, or more than ``max_events`` steps (a bound,
            not a result).
    """
    ids = list(hosts)
    _check_args(ids, slots, reboot_seconds, poll_seconds)
    ledger = RolloutLedger(ids, spec or default_spec(), canaries=canaries, sites=sites)
    bad = set(failing)
    now = 0.0

    def clock() -> dt.datetime:
        return START + dt.timedelta(seconds=now)

    if service is None:
        service = FleetLockService(MemoryBackend(), FleetConfig({group: slots}), clock=clock)
    report = RolloutReport(slots, reboot_seconds)
    report.states = {h: HostState.PENDING for h in ids}
    report.versions = {h: OLD for h in ids}
    holding: set[str] = set()
    # (time, priority, seq, host): at equal times reboots finish (0) before hosts ask (1).
    events: list[tuple[float, int, int, str]] = [(0.0, 1, i, h) for i, h in enumerate(ids)]
    heapq.heapify(events)
    seq = len(ids)
    for _ in range(max_events):
        if not events:
            break
        now, prio, _, host = heapq.heappop(events)
        params = ClientParams(host, group)
        if prio == 1:  # the host checks in, due to apply, then asks for a slot
            decision = None if ledger.applying(host) else ledger.ask(host, clock())
            if decision is not None and not decision.apply:
                if decision.code in _STOP:
                    report.states[host] = HostState.HALTED
                else:  # its wave has not started, or too many hosts are applying
                    seq += 1
                    heapq.heappush(events, (now + poll_seconds, 1, seq, host))
                continue
            report.lock_requests += 1
            try:
                service.pre_reboot(params)
            except ProtocolError as exc:
                if exc.kind != "failed_lock_semaphore_full":
                    raise
                report.refusals += 1
                seq += 1
                heapq.heappush(events, (now + poll_seconds, 1, seq, host))
                continue
            holding.add(host)
            report.states[host] = HostState.REBOOTING
            report.max_concurrent = max(report.max_concurrent, len(holding))
            if len(holding) > slots:
                report.violations.append(f"t={now:g}s: {len(holding)} hosts hold slots")
            seq += 1
            heapq.heappush(events, (now + reboot_seconds, 0, seq, host))
        else:  # the reboot finished: health decides
            ledger.report(host, host not in bad, clock())
            if host in bad:
                report.states[host] = HostState.FAILED  # rolled back; keeps its slot
            else:
                report.versions[host] = NEW
                service.steady_state(params)
                holding.discard(host)
                report.states[host] = HostState.DONE
            report.total_seconds = now
    else:
        raise InputError(f"rollout simulation exceeded {max_events} steps")
    report.violations.extend(ledger.violations)
    report.rollout = ledger.summary()
    return report


def run_rollout(
    base_url: str,
    hosts: Iterable[str],
    slots: int,
    *,
    reboot_seconds: float = 0.05,
    poll_seconds: float = 0.01,
    workers: int = 32,
    failing: Iterable[str] = (),
    group: str = "default",
    deadline_seconds: float = 120.0,
    on_health: Callable[[str], None] | None = None,
    spec: RolloutSpec | None = None,
    canaries: Iterable[str] = (),
    sites: Mapping[str, str] | None = None,
) -> RolloutReport:
    """Roll ``hosts`` through a real FleetLock server at ``base_url`` with agent threads.

    ``workers`` threads each play one agent at a time (so at most ``workers``
    agents ask at once); an agent checks in with the rollout (``spec``, as in
    :func:`simulate_rollout`, in real time) before each slot request; a refused agent
    asks again after ``poll_seconds`` (with jitter); one the rollout holds back goes
    back in the queue. Everything stops at ``deadline_seconds``.

    Raises:
        InputError: bad arguments or spec.
        DownloadError, FleetLockError: the server failed in a way agents cannot retry.
    """
    ids = list(hosts)
    _check_args(ids, slots, reboot_seconds, poll_seconds)
    ledger = RolloutLedger(ids, spec or default_spec(), canaries=canaries, sites=sites,
                           start=dt.datetime.now(dt.UTC))
    bad = set(failing)
    report = RolloutReport(slots, reboot_seconds)
    report.states = {h: HostState.PENDING for h in ids}
    report.versions = {h: OLD for h in ids}
    todo: queue.SimpleQueue[str] = queue.SimpleQueue()
    for h in ids:
        todo.put(h)
    lock = threading.Lock()
    holding: set[str] = set()
    halted = threading.Event()
    errors: list[BaseException] = []
    t0 = time.monotonic()
    deadline = t0 + deadline_seconds

    def clock() -> dt.datetime:
        return ledger.rollout.created + dt.timedelta(seconds=time.monotonic() - t0)

    def agent(client: FleetLockClient, rng: random.Random, host: str) -> None:
        while True:
            if halted.is_set() or time.monotonic() > deadline:
                with lock:
                    report.states[host] = HostState.HALTED
                return
            with lock:
                decision = None if ledger.applying(host) else ledger.ask(host, clock())
            if decision is not None and not decision.apply:
                if decision.code in _STOP:
                    with lock:
                        report.states[host] = HostState.HALTED
                else:  # held back: its wave has not started, or too many are applying
                    time.sleep(poll_seconds * rng.uniform(0.5, 1.5))
                    todo.put(host)
                return
            try:
                with lock:
                    report.lock_requests += 1
                asked = time.perf_counter()
                client.pre_reboot(host, group)
                granted = (time.perf_counter() - asked) * 1000
                break
            except FleetLockError as exc:
                if not exc.slots_full:
                    raise
                with lock:
                    report.refusals += 1
                time.sleep(poll_seconds * rng.uniform(0.5, 1.5))
        with lock:
            report.lock_ms.append(granted)
            holding.add(host)
            report.states[host] = HostState.REBOOTING
            report.max_concurrent = max(report.max_concurrent, len(holding))
            if len(holding) > slots:
                report.violations.append(f"{len(holding)} hosts hold slots: {sorted(holding)}")
        time.sleep(reboot_seconds)  # the reboot
        if on_health is not None:
            on_health(host)
        with lock:
            ledger.report(host, host not in bad, clock())
        if host in bad:
            with lock:
                report.states[host] = HostState.FAILED  # rolled back; keeps its slot
            return
        with lock:
            report.versions[host] = NEW
            holding.discard(host)
        asked = time.perf_counter()
        client.steady_state(host, group)
        with lock:
            report.unlock_ms.append((time.perf_counter() - asked) * 1000)
            report.states[host] = HostState.DONE

    def worker(index: int) -> None:
        rng = random.Random(index)
        with FleetLockClient(base_url, timeout=10) as client:
            try:
                while True:
                    try:
                        host = todo.get_nowait()
                    except queue.Empty:
                        return
                    agent(client, rng, host)
            except BaseException as exc:  # reported to the caller below
                with lock:
                    errors.append(exc)
                halted.set()

    threads = [threading.Thread(target=worker, args=(i,), daemon=True)
               for i in range(max(1, min(workers, len(ids))))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=max(0.0, deadline - time.monotonic()) + 30)
    report.total_seconds = time.monotonic() - t0
    if errors:
        raise errors[0]
    report.violations.extend(ledger.violations)
    report.rollout = ledger.summary()
    return report

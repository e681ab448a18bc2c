"""Rolling an update through a group with K reboot slots: simulation and load test.

Each simulated agent does what atolld does: ask for a slot (``pre-reboot``),
reboot into the new version, run its health checks, and release the slot
(``steady-state``) only when healthy. A host that fails health rolls back to
the old version and **keeps its slot**; the wave stops: hosts that did not get
a slot yet do not try any more (the rollout is halted for an operator to look),
hosts already rebooting finish.

Two modes share the host logic and the report:

* ``simulate_rollout``: pure, in virtual time, over a ``FleetLockService``
  (an in-memory backend unless given one). Deterministic; for unit tests.
* ``run_rollout``: real agents in threads against a real FleetLock server over
  HTTP, with real (short) reboot times; for integration tests and the benchmark.

Both check the invariant "never more than K hosts hold a slot" at every grant.
"""

from __future__ import annotations

import datetime as dt
import enum
import heapq
import queue
import random
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from atoll.core.errors import InputError
from atoll.fleet.backends.memory import MemoryBackend
from atoll.fleet.client import FleetLockClient, FleetLockError
from atoll.fleet.config import FleetConfig
from atoll.fleet.protocol import ClientParams, ProtocolError
from atoll.fleet.service import FleetLockService

__all__ = ["HostState", "RolloutReport", "host_ids", "run_rollout", "simulate_rollout"]

OLD, NEW = "old", "new"


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

    @property
    def ideal_seconds(self) -> float:
        """``ceil(hosts / K) x reboot time``: the wave with no overhead at all."""
        rounds = -(-len(self.states) // self.slots)
        return rounds * self.reboot_seconds

    @property
    def halted(self) -> bool:
        """Whether a failed host stopped the wave."""
        return any(s is HostState.FAILED for s in self.states.values())

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
) -> RolloutReport:
    """Roll ``hosts`` through ``group`` in virtual time over a FleetLock service.

    A refused host asks again every ``poll_seconds``. Hosts in ``failing`` fail
    their health check after rebooting.

    Raises:
        InputError: bad arguments, or more than ``max_events`` steps (a bound, not a result).
    """
    ids = list(hosts)
    _check_args(ids, slots, reboot_seconds, poll_seconds)
    bad = set(failing)
    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    now = 0.0

    def clock() -> dt.datetime:
        return start + dt.timedelta(seconds=now)

    if service is None:
        service = FleetLockService(MemoryBackend(), FleetConfig({group: slots}), clock=clock)
    report = RolloutReport(slots, reboot_seconds)
    report.states = {h: HostState.PENDING for h in ids}
    report.versions = {h: OLD for h in ids}
    holding: set[str] = set()
    halted = False
    # (time, priority, seq, host): at equal times reboots finish (0) before hosts ask (1).
    events: list[tuple[float, int, int, str]] = [(0.0, 1, i, h) for i, h in enumerate(ids)]
    heapq.heapify(events)
    seq = len(ids)
    for _ in range(max_events):
        if not events:
            break
        now, prio, _, host = heapq.heappop(events)
        params = ClientParams(host, group)
        if prio == 1:  # the host asks for a slot
            if halted:
                report.states[host] = HostState.HALTED
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
            if host in bad:
                report.states[host] = HostState.FAILED  # rolled back; keeps its slot
                halted = True
            else:
                report.versions[host] = NEW
                service.steady_state(params)
                holding.discard(host)
                report.states[host] = HostState.DONE
            report.total_seconds = now
    else:
        raise InputError(f"rollout simulation exceeded {max_events} steps")
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
) -> RolloutReport:
    """Roll ``hosts`` through a real FleetLock server at ``base_url`` with agent threads.

    ``workers`` threads each play one agent at a time (so at most ``workers``
    agents ask at once); a refused agent asks again after ``poll_seconds``
    (with jitter). Everything stops at ``deadline_seconds``.

    Raises:
        InputError: bad arguments.
        DownloadError, FleetLockError: the server failed in a way agents cannot retry.
    """
    ids = list(hosts)
    _check_args(ids, slots, reboot_seconds, poll_seconds)
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

    def agent(client: FleetLockClient, rng: random.Random, host: str) -> None:
        while True:
            if halted.is_set() or time.monotonic() > deadline:
                with lock:
                    report.states[host] = HostState.HALTED
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
        if host in bad:
            with lock:
                report.states[host] = HostState.FAILED  # rolled back; keeps its slot
                halted.set()
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
    return report

"""Rollout semantics as properties over random fleets and failure sequences (Hypothesis).

A small model of the control plane drives the pure decisions in virtual time: hosts
check in every ``INTERVAL`` seconds (each at its own offset), apply when their own
policy is due and the rollout grants it, reboot a little later, and then succeed,
roll back, fail a required check or an app, or go silent. The rollout's driver ticks
every ``INTERVAL`` (its own offset): it times silent hosts out and runs ``assess``.
At random ticks the control plane "restarts": it reads the rollout and every host's
progress back from their stored JSON. An operator may resume a halted rollout.

Checked against an oracle kept apart from the code under test:

* no grant while halted (or over the budget), none outside a started wave (a dead end
  aside), never more than ``max_in_flight`` hosts applying;
* a budget exceeded at a tick halts the rollout at that tick: within one check-in
  interval of the report that exceeded it;
* a restart changes no wave membership and no decision;
* a rollout without failures finishes, every host on the target;
* wave sizes: within one host of ``ceil(N x percent / 100)``, so within 2 % of the
  plan for large groups, whatever the seeds.
"""

from __future__ import annotations

import datetime as dt
import heapq
import json
from dataclasses import dataclass, replace

from hypothesis import given, settings
from hypothesis import strategies as st

from atoll.control.rollouts import Counts as RolloutCounts
from atoll.control.rollouts import (
    FailureBudget,
    HostFacts,
    HostProgress,
    Outcome,
    Rollout,
    RolloutSpec,
    RolloutState,
    Selector,
    VersionOrder,
    advance,
    assess,
    create_rollout,
    decide_host,
    halt,
    observe,
    plan_waves,
    resume,
    tally,
    wave_count,
)

INTERVAL = 300  # seconds between a host's check-ins, and between the driver's ticks
T0 = dt.datetime(2026, 5, 1, tzinfo=dt.UTC)
ORDER = VersionOrder(("v1", "v2", "v3"))
FATES = ("ok", "rollback", "check", "app", "silent")


def at(t: int) -> dt.datetime:
    return T0 + dt.timedelta(seconds=t)


@dataclass
class SimHost:
    facts: HostFacts  # what it reports (seen and apply_due are set at each check-in)
    offset: int  # its check-ins: offset, offset + INTERVAL, ...
    due: int  # its own policy would apply from this time on
    fate: str  # what its first reboot into a new version does
    delay: int  # seconds from the apply grant to the reboot
    silent: bool = False


@dataclass
class Oracle:
    """Counts kept by the test, not by the code under test."""

    budget: FailureBudget
    limit: int | None
    in_flight: set[str]
    failed: set[str]
    outcomes: set[str]
    excused: frozenset[str] = frozenset()

    def store(self, p: HostProgress) -> None:
        for s in (self.in_flight, self.failed, self.outcomes):
            s.discard(p.host)
        if p.outcome is not None:
            self.outcomes.add(p.host)
            if p.outcome is Outcome.FAILED:
                self.failed.add(p.host)
        elif p.granted is not None:
            self.in_flight.add(p.host)

    def counts(self) -> RolloutCounts:
        return RolloutCounts(len(self.in_flight), len(self.failed - self.excused),
                             len(self.outcomes - self.excused))

    def exceeded(self) -> bool:
        c, b = self.counts(), self.budget
        return ((b.max_failures is not None and c.failed > b.max_failures)
                or (b.max_failure_percent is not None and c.sample >= b.min_sample
                    and c.failed * 100 > b.max_failure_percent * c.sample))


@st.composite
def scenarios(draw: st.DrawFn) -> dict[str, object]:
    n = draw(st.integers(1, 40))
    inner = sorted(draw(st.sets(st.integers(1, 99), max_size=3)))
    failures = draw(st.booleans())
    spec = RolloutSpec(
        waves=(*map(float, inner), 100.0), canary_wave=draw(st.booleans()),
        soak_s=draw(st.sampled_from((0, INTERVAL, 3 * INTERVAL))),
        quorum_percent=draw(st.sampled_from((50.0, 80.0, 100.0))),
        max_in_flight=draw(st.none() | st.integers(1, 5)),
        max_per_site=draw(st.none() | st.integers(1, 3)),
        update_timeout_s=draw(st.integers(2 * INTERVAL, 4 * INTERVAL)),
        budget=FailureBudget(draw(st.none() | st.integers(0, 3)),
                             draw(st.none() | st.sampled_from((5.0, 20.0, 50.0))),
                             draw(st.integers(1, 10))))
    hosts = []
    for i in range(n):
        site = draw(st.none() | st.integers(0, 3))
        labels = {**({"site": f"s{site}"} if site is not None else {}),
                  **({"canary": "true"} if draw(st.integers(0, 9)) == 0 else {})}
        fate = draw(st.sampled_from(FATES)) if failures and draw(st.booleans()) else "ok"
        version = draw(st.sampled_from(("v1", "v2", "v2", "v2", "v3")))
        hosts.append(SimHost(HostFacts(f"h{i:02d}", "acme", labels, version),
                             draw(st.integers(0, INTERVAL - 1)),
                             draw(st.integers(0, 10)) * INTERVAL, fate,
                             draw(st.integers(1, INTERVAL // 2))))
    return {"spec": spec, "hosts": hosts, "floors": draw(st.sampled_from(((), ("v2",)))),
            "dead_ends": draw(st.sampled_from(((), ("v1",)))),
            "tick": draw(st.integers(0, INTERVAL - 1)),
            "restarts": draw(st.sets(st.integers(0, 60), max_size=4)),
            "operator_halts": draw(st.sets(st.integers(0, 40), max_size=2)),
            "resumes": draw(st.integers(0, 2))}


def reboot(host: SimHost, step: str, t: int) -> None:
    """The host reboots into ``step``; what happens is its fate (the first time)."""
    fate, host.fate = host.fate, "ok"
    f = replace(host.facts, pending=None)
    if fate == "silent":
        host.silent = True
    elif fate == "rollback":
        f = replace(f, rolled_back_from=step, rolled_back_at=at(t),
                    rollback_reason="boot counter expired")
    elif fate == "check":
        f = replace(f, version=step, failed_checks=("db-writable",))
    elif fate == "app":
        f = replace(f, version=step, unhealthy_apps=("db",))
    else:
        f = replace(f, version=step)
    host.facts = f


Played = tuple[Rollout, dict[str, SimHost], dict[str, HostProgress], list[str]]


def play(sc: dict[str, object]) -> Played:
    """Run one scenario: the rollout, the hosts, their progress, the broken promises."""
    spec, hosts = sc["spec"], sc["hosts"]
    assert isinstance(spec, RolloutSpec) and isinstance(hosts, list)
    sim = {h.facts.host: h for h in hosts}
    r = create_rollout("r1", Selector.of("acme"), "v3", spec, [h.facts for h in hosts], ORDER,
                       T0, floors=sc["floors"], dead_ends=sc["dead_ends"])  # type: ignore[arg-type]
    plan = plan_waves(r)
    progress = {h: HostProgress(h) for h in sim}
    oracle = Oracle(spec.budget, spec.max_in_flight, set(), set(), set())
    broken: list[str] = []
    resumes, restarts, halts = sc["resumes"], sc["restarts"], sc["operator_halts"]
    assert isinstance(resumes, int) and isinstance(restarts, set) and isinstance(halts, set)
    events: list[tuple[int, int, str]] = [(h.offset, 1, name) for name, h in sim.items()]
    events.append((int(sc["tick"]), 2, ""))  # type: ignore[call-overload]
    heapq.heapify(events)
    ticks = 0
    while events:
        t, kind, name = heapq.heappop(events)
        if t > 200 * INTERVAL:
            break
        if kind == 0:  # a reboot
            reboot(sim[name], progress[name].step or "v3", t)
        elif kind == 1:  # a check-in
            host = sim[name]
            if host.silent:
                continue
            heapq.heappush(events, (t + INTERVAL, 1, name))
            facts = replace(host.facts, seen=at(t),
                            apply_due=t >= host.due and host.facts.version != "v3")
            host.facts = facts
            progress[name] = observe(r, progress[name], facts, at(t))
            oracle.store(progress[name])
            counts = oracle.counts()
            d = decide_host(r, plan, counts, progress[name], facts, ORDER, at(t))
            if d.granted:
                wave = plan.wave_of(name)
                wave = plan.last if wave is None else wave
                if r.state is not RolloutState.RUNNING:
                    broken.append(f"t={t}: {name} granted while {r.state}")
                if wave > r.wave and facts.version not in r.dead_ends:
                    broken.append(f"t={t}: {name} of wave {wave} granted in wave {r.wave}")
                if oracle.exceeded():
                    broken.append(f"t={t}: {name} granted over the failure budget")
                progress[name] = d.progress
                oracle.store(d.progress)
                if spec.max_in_flight is not None and len(oracle.in_flight) > spec.max_in_flight:
                    broken.append(f"t={t}: {len(oracle.in_flight)} in flight")
                host.facts = replace(host.facts, pending=d.target)
                heapq.heappush(events, (t + host.delay, 0, name))
        else:  # the driver's tick
            heapq.heappush(events, (t + INTERVAL, 2, ""))
            for h, p in progress.items():  # silent hosts time out
                progress[h] = observe(r, p, sim[h].facts, at(t))
                oracle.store(progress[h])
            state = tally(r, plan, [(progress[h], sim[h].facts) for h in sim], ORDER)
            if state.counts != oracle.counts():
                broken.append(f"t={t}: tally {state.counts} != oracle {oracle.counts()}")
            r = advance(r, assess(r, plan, state, ORDER, at(t)), at(t))
            if r.state is RolloutState.RUNNING and oracle.exceeded():
                broken.append(f"t={t}: the budget is exceeded and the rollout runs on")
            if r.state is RolloutState.HALTED and resumes > 0 and r.halt is not None \
                    and r.halt.at < at(t):  # an operator looks, then resumes a tick later
                resumes -= 1
                r = resume(r, "operator:test", at(t), excuse=r.halt.hosts)
                oracle.excused = r.excused
            elif r.state is RolloutState.RUNNING and ticks in halts:
                r = halt(r, "operator:test", "a look at the canaries", at(t))
            if ticks in restarts:
                r, progress, broken_now = restart(r, plan, progress, sim, t)
                broken += broken_now
            ticks += 1
            if not r.active or (r.state is RolloutState.HALTED and not oracle.in_flight
                                and resumes == 0):
                break
    return r, sim, progress, broken


def restart(r: Rollout, plan: object, progress: dict[str, HostProgress],
            sim: dict[str, SimHost], t: int) -> tuple[Rollout, dict[str, HostProgress],
                                                      list[str]]:
    """Read everything back from its stored JSON, as a restarted control plane does."""
    r2 = Rollout.from_json(json.loads(json.dumps(r.to_json())))
    p2 = {h: HostProgress.from_json(json.loads(json.dumps(p.to_json())))
          for h, p in progress.items()}
    broken = []
    plan2 = plan_waves(r2)
    if plan2 != plan or r2 != r or p2 != progress:
        broken.append(f"t={t}: the restart changed the plan, the rollout or a progress")
    counts = RolloutCounts()
    for h, host in sim.items():
        before = decide_host(r, plan_waves(r), counts, progress[h], host.facts, ORDER, at(t))
        after = decide_host(r2, plan2, counts, p2[h], host.facts, ORDER, at(t))
        if before != after:
            broken.append(f"t={t}: {h} decided {before.code} before the restart, "
                          f"{after.code} after")
    return r2, p2, broken


@settings(max_examples=150)
@given(scenarios())
def test_rollout_promises_hold_over_random_failures(sc: dict[str, object]) -> None:
    r, sim, progress, broken = play(sc)
    assert broken == []
    if r.state is RolloutState.FINISHED:  # every host moved, or failed within the budget
        for name, host in sim.items():
            assert host.facts.version == "v3" or progress[name].outcome is Outcome.FAILED, name


@settings(max_examples=60)
@given(scenarios().filter(lambda sc: all(h.fate == "ok" for h in sc["hosts"])))  # type: ignore[attr-defined, index]
def test_without_failures_every_host_reaches_the_target(sc: dict[str, object]) -> None:
    r, sim, _, broken = play(sc)
    assert broken == []
    if r.state is RolloutState.HALTED:  # only an operator halts it: they did not resume
        assert r.halt is not None and r.halt.code == "operator"
        return
    assert r.state is RolloutState.FINISHED, (r.state, r.wave)
    assert {h.facts.version for h in sim.values()} == {"v3"}


@settings(max_examples=100)
@given(n=st.integers(1000, 20_000), data=st.data())
def test_achieved_wave_percentages_for_large_groups(n: int, data: st.DataObject) -> None:
    inner = sorted(data.draw(st.sets(st.integers(1, 99).map(float), min_size=1, max_size=5)))
    canaries = data.draw(st.integers(0, 5))
    hosts = [HostFacts(f"h{i:05d}", "acme", {"canary": "true"} if i < canaries else {}, "v2")
             for i in range(n)]
    r = create_rollout(data.draw(st.text("abcdef0123", min_size=1, max_size=12)),
                       Selector.of("acme"), "v3", RolloutSpec(waves=(*inner, 100.0)), hosts,
                       ORDER, T0)
    plan = plan_waves(r)
    assert sum(len(w.hosts) for w in plan.waves) == n
    assert len({h for w in plan.waves for h in w.hosts}) == n
    for w in plan.waves:
        if w.canary:
            assert len(w.hosts) == canaries
            continue
        achieved = plan.achieved_percent(w.index)
        expected = wave_count(w.percent, n)
        assert plan.cumulative(w.index) == max(expected, canaries)
        if expected > canaries:
            assert abs(achieved - w.percent) <= 100 / n  # one host at most
            assert abs(achieved - w.percent) <= 0.02 * w.percent or w.percent * n < 5000


@settings(max_examples=100)
@given(data=st.data())
def test_membership_is_a_function_of_the_stored_rollout(data: st.DataObject) -> None:
    n = data.draw(st.integers(1, 300))
    sites = data.draw(st.integers(1, 5))
    hosts = [HostFacts(f"h{i:03d}", "acme", {"site": f"s{i % sites}"}, "v2") for i in range(n)]
    shuffled = data.draw(st.permutations(hosts))
    spec = RolloutSpec(waves=(10.0, 50.0, 100.0), max_per_site=data.draw(
        st.none() | st.integers(1, 10)))
    a = create_rollout("r", Selector.of("acme"), "v3", spec, hosts, ORDER, T0)
    b = create_rollout("r", Selector.of("acme"), "v3", spec, shuffled, ORDER, T0)
    assert a == b and plan_waves(a) == plan_waves(b)
    back = Rollout.from_json(json.loads(json.dumps(a.to_json())))
    assert plan_waves(back) == plan_waves(a)
    cap = spec.max_per_site
    for w in plan_waves(a).waves[:-1]:
        per_site: dict[str | None, int] = {}
        for h in w.hosts:
            site = hosts[int(h[1:])].labels.get("site")
            per_site[site] = per_site.get(site, 0) + 1
        assert cap is None or max(per_site.values()) <= cap

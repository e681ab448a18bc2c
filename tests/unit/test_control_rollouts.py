"""Rollouts as pure decisions: spec, waves, floors, grants, failures, halts."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import replace

import pytest

from atoll.control.rollouts import (
    Counts,
    Failure,
    FailureBudget,
    HostDecision,
    HostFacts,
    HostProgress,
    Outcome,
    Phase,
    Rollout,
    RolloutSpec,
    RolloutState,
    Selector,
    VersionOrder,
    abort,
    advance,
    assess,
    create_rollout,
    decide_host,
    halt,
    next_step,
    observe,
    phase_of,
    plan_waves,
    resume,
    seed,
    tally,
    wave_count,
)
from atoll.core.errors import InputError

T0 = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
ORDER = VersionOrder(("v1", "v2", "v3", "v4"))
MIN = dt.timedelta(minutes=1)


def fleet(n: int, *, customer: str = "acme", version: str = "v2", canaries: int = 0,
          sites: int = 0) -> list[HostFacts]:
    return [HostFacts(f"h{i:04d}", customer, {"tier": "db",
        **({"site": f"s{i % sites}"} if sites else {}),
        **({"canary": "true"} if i < canaries else {})}, version, seen=T0) for i in range(n)]


def rollout(hosts: list[HostFacts] | None = None, **spec: object) -> Rollout:
    kw: dict[str, object] = {"soak_s": 600, **spec}
    return create_rollout("r1", Selector.of("acme"), "v3", RolloutSpec(**kw),  # type: ignore[arg-type]
                          hosts if hosts is not None else fleet(20), ORDER, T0)


NO_COUNTS = Counts()


def decide(r: Rollout, facts: HostFacts, progress: HostProgress | None = None,
           counts: Counts = NO_COUNTS, now: dt.datetime = T0) -> HostDecision:
    return decide_host(r, plan_waves(r), counts, progress or HostProgress(facts.host), facts,
                       ORDER, now)


# -- spec ----------------------------------------------------------------------


@pytest.mark.parametrize(("spec", "message"), [
    ({"waves": ()}, "at least one"),
    ({"waves": (10.0, 5.0, 100.0)}, "do not increase"),
    ({"waves": (10.0, 50.0)}, "not 100"),
    ({"waves": (0.0, 100.0)}, "above 0"),
    ({"waves": (float("nan"), 100.0)}, "above 0"),
    ({"soak_s": -1}, "soak_s"),
    ({"soak_s": 365 * 86400 + 1}, "soak_s"),
    ({"update_timeout_s": 10**18}, "update_timeout_s"),
    ({"update_timeout_s": 0}, "update_timeout_s"),
    ({"quorum_percent": 0.0}, "quorum_percent"),
    ({"max_in_flight": 0}, "max_in_flight"),
    ({"max_per_site": -2}, "max_per_site"),
    ({"budget": FailureBudget(max_failures=-1)}, "max failures"),
    ({"budget": FailureBudget(max_failure_percent=101.0)}, "percent"),
    ({"budget": FailureBudget(min_sample=0)}, "min sample"),
])
def test_bad_specs_are_refused(spec: dict[str, object], message: str) -> None:
    with pytest.raises(InputError, match=message):
        RolloutSpec(**spec).check()  # type: ignore[arg-type]


def test_spec_json_round_trip_and_unknown_fields() -> None:
    spec = RolloutSpec(waves=(5.0, 50.0, 100.0), max_in_flight=3, max_per_site=2,
                       budget=FailureBudget(2, 5.0, 20))
    assert RolloutSpec.from_json(json.loads(json.dumps(spec.to_json()))) == spec
    with pytest.raises(InputError, match=r"unknown field.*wavez"):
        RolloutSpec.from_json({"wavez": [100]})
    with pytest.raises(InputError, match="budget: unknown"):
        RolloutSpec.from_json({"budget": {"max": 1}})
    with pytest.raises(InputError, match="list of percentages"):
        RolloutSpec.from_json({"waves": "100"})
    with pytest.raises(InputError, match="true or false"):
        RolloutSpec.from_json({"canary_wave": "yes"})


@pytest.mark.parametrize(("failed", "sample", "budget", "over"), [
    (0, 0, FailureBudget(), False),
    (1, 1, FailureBudget(), True),  # the default: the first failure halts
    (2, 50, FailureBudget(max_failures=2), False),
    (3, 50, FailureBudget(max_failures=2), True),
    (5, 9, FailureBudget(None, 10.0, 10), False),  # below the minimum sample
    (1, 10, FailureBudget(None, 10.0, 10), False),  # exactly 10 %: within
    (2, 10, FailureBudget(None, 10.0, 10), True),
    (100, 10_000, FailureBudget(None, 1.0, 10), False),
    (101, 10_000, FailureBudget(None, 1.0, 10), True),
])
def test_failure_budget(failed: int, sample: int, budget: FailureBudget, over: bool) -> None:
    assert (budget.exceeded(failed, sample) is not None) is over


# -- creation ------------------------------------------------------------------


def test_creation_refuses_what_cannot_be_rolled_out() -> None:
    hosts = fleet(3)

    def make(**kw: object) -> Rollout:
        args: dict[str, object] = {"rollout_id": "r1", "selector": Selector.of("acme"),
                                   "to_version": "v3", "spec": RolloutSpec(), "hosts": hosts,
                                   "order": ORDER, "now": T0, **kw}
        return create_rollout(**args)  # type: ignore[arg-type]

    with pytest.raises(InputError, match="not signed"):
        make(to_version="v9")
    with pytest.raises(InputError, match="dead end"):
        make(dead_ends=["v3"])
    with pytest.raises(InputError, match="floor 'v4' is not a signed version older"):
        make(floors=["v4"])
    with pytest.raises(InputError, match="floor 'v2' is a dead end"):
        make(floors=["v2"], dead_ends=["v2"])
    with pytest.raises(InputError, match="--from"):
        make(from_version="v3")
    with pytest.raises(InputError, match=r"no host matches the group \(customer=other"):
        make(selector=Selector.of("other"))
    with pytest.raises(InputError, match="rollout id"):
        make(rollout_id="a b")
    with pytest.raises(InputError, match="time zone"):
        make(now=dt.datetime(2026, 1, 1))
    r = make(floors=["v2", "v1", "v2"])
    assert r.floors == ("v1", "v2")
    assert r.state is RolloutState.RUNNING and r.wave == 0 and r.wave_started == T0


def test_the_group_is_chosen_by_customer_and_labels() -> None:
    hosts = [HostFacts("a", "acme", {"site": "x", "role": "db"}),
             HostFacts("b", "acme", {"site": "y", "role": "db"}),
             HostFacts("c", "other", {"site": "x", "role": "db"}),
             HostFacts("d", "acme", {"site": "x"})]
    r = create_rollout("r", Selector.of("acme", site="x", role="db"), "v3", RolloutSpec(),
                       hosts, ORDER, T0)
    assert [m.host for m in r.members] == ["a"]
    r = create_rollout("r", Selector.of(None, role="db"), "v3", RolloutSpec(), hosts, ORDER, T0)
    assert [m.host for m in r.members] == ["a", "b", "c"]


# -- waves ---------------------------------------------------------------------


def test_canaries_form_wave_zero_then_seed_order() -> None:
    r = rollout(fleet(200, canaries=3), waves=(10.0, 50.0, 100.0))
    plan = plan_waves(r)
    assert plan.waves[0].canary and set(plan.waves[0].hosts) == {"h0000", "h0001", "h0002"}
    assert [plan.cumulative(i) for i in range(len(plan.waves))] == [3, 20, 100, 200]
    # within a wave, hosts are in seed order: a hash of rollout and host id, nothing else
    wave1 = plan.waves[1].hosts
    assert list(wave1) == sorted(wave1, key=lambda h: seed("r1", h))
    assert seed("r1", "h0005") == seed("r1", "h0005") != seed("r2", "h0005")
    # another rollout over the same hosts orders them differently
    other = plan_waves(replace(r, id="r2"))
    assert set(other.waves[1].hosts) != set(wave1)


def test_without_a_canary_wave_canaries_still_go_first() -> None:
    plan = plan_waves(rollout(fleet(100, canaries=2), waves=(5.0, 100.0), canary_wave=False))
    assert plan.waves[0].hosts[:2] == ("h0000", "h0001") and len(plan.waves[0].hosts) == 5


@pytest.mark.parametrize(("n", "waves", "sizes"), [
    (5, (1.0, 10.0, 100.0), [1, 4]),  # ceil: 1 % and 10 % of 5 are both 1 host
    (1, (1.0, 50.0, 100.0), [1]),
    (30, (10.0, 100.0), [3, 27]),  # exact: 10 % of 30 is 3, not 4
    (1000, (1.0, 10.0, 100.0), [10, 90, 900]),
    (999, (33.3, 66.6, 100.0), [333, 333, 333]),
])
def test_wave_sizes_round_up_and_empty_waves_are_dropped(
        n: int, waves: tuple[float, ...], sizes: list[int]) -> None:
    plan = plan_waves(rollout(fleet(n), waves=waves))
    assert [len(w.hosts) for w in plan.waves] == sizes
    assert wave_count(10.0, 30) == 3 and wave_count(0.01, 10) == 1


def test_a_site_cap_spreads_a_wave_and_carries_the_rest() -> None:
    hosts = [HostFacts(f"a{i:02d}", "acme", {"site": "big"}, "v2") for i in range(40)] + [
        HostFacts(f"b{i:02d}", "acme", {"site": f"small{i}"}, "v2") for i in range(10)]
    plan = plan_waves(rollout(hosts, waves=(20.0, 40.0, 100.0), max_per_site=2))
    first, second, last = plan.waves
    assert sum(h.startswith("a") for h in first.hosts) <= 2
    assert sum(h.startswith("a") for h in second.hosts) <= 2
    # 10 hosts wanted: at most 2 from the big site, the rest from small sites
    assert len(first.hosts) == 10
    # the last wave is never capped: it takes everyone left
    assert plan.cumulative(2) == 50 and len(last.hosts) == 50 - plan.cumulative(1)


# -- floors, dead ends ---------------------------------------------------------


@pytest.mark.parametrize(("version", "floors", "expect"), [
    ("v1", ("v2",), ("v2", "floor")),
    ("v2", ("v2",), ("v3", "target")),
    ("v1", (), ("v3", "target")),
    ("v3", ("v2",), (None, "at-target")),
    ("v4", (), (None, "ahead")),
    ("v0", (), (None, "unknown-version")),
    (None, (), (None, "unknown-version")),
])
def test_next_step_passes_through_floors(version: str | None, floors: tuple[str, ...],
                                         expect: tuple[str | None, str]) -> None:
    r = replace(rollout(), floors=floors)
    assert next_step(r, version, ORDER)[:2] == expect


def test_a_host_on_another_channel_is_off_the_path() -> None:
    r = rollout()
    order = VersionOrder(ORDER.versions, "site/db")
    assert next_step(r, "v1", order, "site/web")[:2] == (None, "other-channel")
    assert next_step(r, "v1", order, "site/db")[1] == next_step(r, "v1", ORDER)[1]
    assert next_step(r, "v1", order, None)[1] == next_step(r, "v1", ORDER)[1]  # not reported
    assert next_step(r, "v1", ORDER, "site/web")[1] == next_step(r, "v1", ORDER)[1]


def test_a_target_no_longer_signed_holds_everyone() -> None:
    r = rollout()
    step, code, _ = next_step(r, "v2", VersionOrder(("v1", "v2")))
    assert (step, code) == (None, "unsigned")


# -- decisions on check-in -------------------------------------------------------


def test_a_host_in_a_started_wave_may_download_and_prepare_and_apply_when_due() -> None:
    r = rollout(fleet(20, canaries=1))
    canary = fleet(20, canaries=1)[0]
    d = decide(r, canary)
    assert (d.code, d.in_wave, d.target, d.download, d.prepare, d.apply) == (
        "waiting-for-host", True, "v3", True, True, False)
    assert "its own policy" in d.reason and not d.granted
    d = decide(r, replace(canary, apply_due=True))
    assert d.code == "apply-granted" and d.apply and d.granted
    assert d.progress.step == "v3" and d.progress.granted == T0
    # asked again while applying: still granted, nothing new
    d2 = decide(r, replace(canary, apply_due=True), d.progress, Counts(in_flight=1))
    assert d2.code == "applying" and d2.apply and not d2.granted


def test_a_move_the_customer_makes_after_the_release_is_judged() -> None:
    """Policy "prepare": the rollout lets the host download and prepare; the customer's
    own apply (between two check-ins) moves it. That move is judged as a granted one."""
    r = rollout(fleet(20, canaries=1))
    canary = replace(fleet(20, canaries=1)[0], unhealthy_apps=("batch",))
    d = decide(r, canary)
    assert d.code == "waiting-for-host" and not d.granted
    released = d.progress
    assert (released.step, released.released, released.granted) == ("v3", T0, None)
    assert released.unhealthy_before == frozenset({"batch"})
    # asked again: the release keeps its time
    assert decide(r, canary, released, now=T0 + MIN).progress == released
    on_target = replace(canary, version="v3", seen=T0 + 9 * MIN)
    ok = observe(r, released, on_target, T0 + 9 * MIN)
    assert ok.outcome is Outcome.SUCCEEDED and ok.finished == T0 + 9 * MIN
    sick = observe(r, released, replace(on_target, unhealthy_apps=("batch", "db")),
                   T0 + 9 * MIN)
    assert sick.failure is Failure.APP_HEALTH and sick.detail.endswith(": db")
    back = observe(r, released, replace(canary, rolled_back_from="v3",
                                        rolled_back_at=T0 + 5 * MIN, seen=T0 + 6 * MIN),
                   T0 + 6 * MIN)
    assert (back.outcome, back.failure) == (Outcome.FAILED, Failure.ROLLED_BACK)
    # a rollback from before the release is not this rollout's
    old = replace(canary, rolled_back_from="v3", rolled_back_at=T0 - MIN)
    assert observe(r, released, old, T0 + 6 * MIN) == released
    # stored and read back the same
    assert HostProgress.from_json(json.loads(json.dumps(released.to_json()))) == released
    # not moved yet: nothing decided, waiting in its wave
    assert observe(r, released, canary, T0 + 9 * MIN) == released
    plan = plan_waves(r)
    assert phase_of(r, plan, released, canary, ORDER) is Phase.WAITING
    # moved but still on trial (before boot-complete): in flight, not done, until
    # judged; a trial longer than the update timeout is a failure
    trial = observe(r, released, replace(on_target, committed=False), T0 + 9 * MIN)
    assert trial.outcome is None and trial.started == T0 + 9 * MIN
    assert phase_of(r, plan, trial, replace(on_target, committed=False),
                    ORDER) is Phase.IN_FLIGHT
    late = T0 + 9 * MIN + dt.timedelta(seconds=r.spec.update_timeout_s + 1)
    stuck = observe(r, trial, replace(on_target, committed=False), late)
    assert stuck.failure is Failure.TIMED_OUT
    assert observe(r, trial, on_target, T0 + 12 * MIN).outcome is Outcome.SUCCEEDED
    # then due to apply (a pending deployment): granted, the apps seen at the release kept
    g = decide(r, replace(canary, apply_due=True, unhealthy_apps=()), released)
    assert g.code == "apply-granted" and g.progress.unhealthy_before == frozenset({"batch"})


def test_a_host_whose_wave_has_not_started_stays_where_it_is() -> None:
    r = rollout(fleet(20, canaries=1))
    host = replace(fleet(20)[5], apply_due=True)
    d = decide(r, host)
    assert (d.code, d.in_wave, d.target, d.download, d.apply) == (
        "wave-not-started", False, None, False, False)
    assert d.wave is not None and d.wave > 0


def test_max_in_flight_bounds_grants() -> None:
    r = rollout(fleet(20), waves=(100.0,), max_in_flight=2)
    host = replace(fleet(20)[3], apply_due=True)
    assert decide(r, host, counts=Counts(in_flight=1)).granted
    d = decide(r, host, counts=Counts(in_flight=2))
    assert d.code == "max-in-flight" and not d.apply and d.download


def test_nothing_is_granted_while_halted_or_over_budget() -> None:
    r = rollout(fleet(20), waves=(100.0,))
    host = replace(fleet(20)[3], apply_due=True)
    halted = halt(r, "operator:ann", "looking", T0)
    d = decide(halted, host)
    assert d.code == "halted" and not (d.apply or d.download) and d.target is None
    assert "looking" in d.reason
    # a host already granted keeps its target (it is not sent back) but may not apply
    granted = HostProgress(host.host, "v3", T0)
    d = decide(halted, host, granted)
    assert d.code == "halted" and d.target == "v3" and not d.apply
    d = decide(r, host, counts=Counts(failed=1, sample=1))
    assert d.code == "failure-budget" and not d.apply


def test_a_host_on_a_dead_end_moves_before_its_wave() -> None:
    hosts = fleet(20, canaries=1)
    stuck = replace(hosts[7], version="v1", apply_due=True)
    r = create_rollout("r1", Selector.of("acme"), "v3", RolloutSpec(), [*hosts[:7], stuck,
                       *hosts[8:]], ORDER, T0, dead_ends=["v1"])
    assert plan_waves(r).wave_of(stuck.host) != 0
    d = decide(r, stuck)
    assert d.code == "apply-granted" and d.in_wave and "dead end" in d.reason


def test_hosts_that_left_or_joined_the_group() -> None:
    r = rollout(fleet(20), waves=(100.0,))
    left = replace(fleet(20)[2], labels={}, customer="other", apply_due=True)
    assert decide(r, left).code == "not-in-group"
    joined = HostFacts("new-host", "acme", {}, "v2", apply_due=True)
    d = decide(r, joined)
    assert d.wave == plan_waves(r).last and d.granted
    assert decide(r, HostFacts("x", "other")).code == "not-in-group"


def test_finished_and_aborted_rollouts_say_nothing() -> None:
    r = rollout()
    host = replace(fleet(20)[0], apply_due=True)
    for ended in (abort(r, "operator:ann", "", T0), replace(r, state=RolloutState.FINISHED)):
        d = decide(ended, host)
        assert d.code.startswith("rollout-") and d.target is None and not d.apply


# -- observing what hosts report ------------------------------------------------


def granted(host: str = "h0000", step: str = "v3", at: dt.datetime = T0,
            **kw: object) -> HostProgress:
    return HostProgress(host, step, at, **kw)  # type: ignore[arg-type]


def test_a_rollback_after_the_grant_is_a_failure() -> None:
    r = rollout()
    facts = HostFacts("h0000", "acme", {}, "v2", rolled_back_from="v3",
                      rolled_back_at=T0 + 5 * MIN, rollback_reason="boot counter expired",
                      seen=T0 + 6 * MIN)
    p = observe(r, granted(), facts, T0 + 6 * MIN)
    assert (p.outcome, p.failure, p.detail) == (Outcome.FAILED, Failure.ROLLED_BACK,
                                                 "boot counter expired")
    # a rollback from before the grant is not this rollout's failure
    old = replace(facts, rolled_back_at=T0 - 60 * MIN)
    assert observe(r, granted(), old, T0 + 6 * MIN).outcome is None
    # a failure is final
    assert observe(r, p, replace(facts, version="v3", rolled_back_from=None),
                   T0 + 9 * MIN) == p


def test_success_then_a_failing_check_or_app() -> None:
    r = rollout()
    on_target = HostFacts("h0000", "acme", {}, "v3", seen=T0 + 9 * MIN)
    p = observe(r, granted(unhealthy_before=frozenset({"batch"})),
                replace(on_target, unhealthy_apps=("batch",)), T0 + 9 * MIN)
    assert p.outcome is Outcome.SUCCEEDED and p.finished == T0 + 9 * MIN
    bad = observe(r, p, replace(on_target, unhealthy_apps=("batch", "db")), T0 + 20 * MIN)
    assert (bad.failure, bad.detail) == (Failure.APP_HEALTH,
                                         "apps unhealthy after the update: db")
    bad = observe(r, granted(), replace(on_target, failed_checks=("db-writable",)), T0)
    assert bad.failure is Failure.HEALTH_CHECK and "db-writable" in bad.detail
    # on trial (not yet marked good): not a success yet
    trial = observe(r, granted(), replace(on_target, committed=False), T0 + 9 * MIN)
    assert trial.outcome is None and trial.started == T0 + 9 * MIN


def test_timeouts_and_lapsed_grants() -> None:
    r = rollout(update_timeout_s=1800)
    waiting = HostFacts("h0000", "acme", {}, "v2", apply_due=True, seen=T0 + 10 * MIN)
    # waiting for its reboot slot, checking in: still in flight, however long
    assert observe(r, granted(), waiting, T0 + 10 * MIN).outcome is None
    # silent for longer than the timeout since its last check-in
    p = observe(r, granted(), waiting, T0 + 41 * MIN)
    assert p.failure is Failure.TIMED_OUT and "no check-in" in p.detail
    # booted the new version on trial and never finished
    trial = observe(r, granted(), replace(waiting, version="v3", committed=False,
                                          seen=T0 + 5 * MIN), T0 + 5 * MIN)
    p = observe(r, trial, replace(waiting, version="v3", committed=False,
                                  seen=T0 + 40 * MIN), T0 + 40 * MIN)
    assert p.failure is Failure.TIMED_OUT and "did not finish" in p.detail
    # checked in again, not applying and nothing due: the grant lapses
    lapsed = observe(r, granted(), replace(waiting, apply_due=False), T0 + 10 * MIN)
    assert lapsed == HostProgress("h0000")
    # ... unless it applied (boots the step next)
    kept = observe(r, granted(), replace(waiting, apply_due=False, pending="v3"), T0 + 10 * MIN)
    assert kept.granted == T0


def test_a_floor_reached_needs_a_new_grant_for_the_next_step() -> None:
    r = replace(rollout(), floors=("v2",))
    facts = HostFacts("h0000", "acme", {}, "v2", seen=T0 + 9 * MIN)
    p = observe(r, granted(step="v2"), facts, T0 + 9 * MIN)
    assert p == HostProgress("h0000")
    assert next_step(r, "v2", ORDER)[0] == "v3"


# -- the driver ----------------------------------------------------------------


def run(r: Rollout, progress: dict[str, HostProgress], facts: dict[str, HostFacts],
        now: dt.datetime) -> Rollout:
    t = tally(r, plan_waves(r), [(progress[h], facts[h]) for h in facts], ORDER)
    return advance(r, assess(r, plan_waves(r), t, ORDER, now), now)


def test_waves_advance_after_their_quorum_and_soak_then_finish() -> None:
    hosts = fleet(10, canaries=2)
    r = rollout(hosts, waves=(50.0, 100.0), soak_s=600)
    facts = {h.host: h for h in hosts}
    progress = {h.host: HostProgress(h.host) for h in hosts}
    assert run(r, progress, facts, T0).wave == 0  # nobody done
    for h in ("h0000", "h0001"):
        progress[h] = replace(granted(h), outcome=Outcome.SUCCEEDED, finished=T0 + 5 * MIN)
    assert run(r, progress, facts, T0 + 14 * MIN).wave == 0  # soaking until +15 min
    r = run(r, progress, facts, T0 + 15 * MIN)
    assert r.wave == 1 and r.wave_started == T0 + 15 * MIN
    plan = plan_waves(r)
    t = tally(r, plan, [(progress[h], facts[h]) for h in facts], ORDER)
    assert t.waves[1][Phase.WAITING] == 3 and t.live == 5 and t.done == 2
    for h in plan.waves[1].hosts + plan.waves[2].hosts:
        progress[h] = replace(granted(h), outcome=Outcome.SUCCEEDED, finished=T0 + 20 * MIN)
    r = run(r, progress, facts, T0 + 31 * MIN)
    assert r.wave == 2  # wave 1 soaked; its quorum was reached at +20 min
    r = run(r, progress, facts, T0 + 41 * MIN)
    assert r.state is RolloutState.FINISHED and r.ended == T0 + 41 * MIN


def test_a_quorum_below_100_lets_a_wave_advance_without_stragglers() -> None:
    hosts = fleet(10)
    r = rollout(hosts, waves=(50.0, 100.0), soak_s=0, quorum_percent=60.0)
    facts = {h.host: h for h in hosts}
    progress = {h.host: HostProgress(h.host) for h in hosts}
    first = plan_waves(r).waves[0].hosts
    for h in first[:2]:
        progress[h] = replace(granted(h), outcome=Outcome.SUCCEEDED, finished=T0)
    assert run(r, progress, facts, T0).wave == 0  # 2 of 5: ceil(60 % of 5) = 3 needed
    progress[first[2]] = replace(granted(first[2]), outcome=Outcome.SUCCEEDED, finished=T0)
    assert run(r, progress, facts, T0).wave == 1


def test_the_budget_halts_with_the_failing_hosts_and_resume_excuses_them() -> None:
    hosts = fleet(10)
    r = rollout(hosts, waves=(100.0,), budget=FailureBudget(max_failures=1))
    facts = {h.host: h for h in hosts}
    progress = {h.host: HostProgress(h.host) for h in hosts}
    progress["h0003"] = granted("h0003").failed(Failure.ROLLED_BACK, "x", T0)
    assert run(r, progress, facts, T0).state is RolloutState.RUNNING  # 1 is within
    progress["h0007"] = granted("h0007").failed(Failure.TIMED_OUT, "y", T0)
    r = run(r, progress, facts, T0 + MIN)
    assert r.state is RolloutState.HALTED and r.halt is not None
    assert (r.halt.code, r.halt.hosts, r.halt.by) == ("failure-budget", ("h0003", "h0007"),
                                                       "server")
    assert "2 failed hosts, more than the budget of 1" in r.halt.reason
    with pytest.raises(InputError, match="not running"):
        halt(r, "operator:ann", "", T0)
    r = resume(r, "operator:ann", T0 + 2 * MIN, excuse=r.halt.hosts)
    assert r.state is RolloutState.RUNNING and r.excused == {"h0003", "h0007"}
    assert run(r, progress, facts, T0 + 3 * MIN).state is RolloutState.RUNNING
    d = decide(r, replace(facts["h0003"], apply_due=True), progress["h0003"])
    assert d.code == "failed" and not d.apply  # excused, not retried
    with pytest.raises(InputError, match="not halted"):
        resume(r, "operator:ann", T0)
    r = abort(r, "operator:ann", "enough", T0 + 4 * MIN)
    assert r.state is RolloutState.ABORTED and r.halt is not None and r.halt.code == "aborted"
    with pytest.raises(InputError, match="already aborted"):
        abort(r, "operator:ann", "", T0)


def test_an_unsigned_target_halts() -> None:
    r = rollout()
    plan = plan_waves(r)
    t = tally(r, plan, [], ORDER)
    step = assess(r, plan, t, VersionOrder(("v1", "v2")), T0)
    assert (step.action, step.code) == ("halt", "unsigned")


def test_phases() -> None:
    r = rollout(fleet(20, canaries=1))
    plan = plan_waves(r)
    base = fleet(20)[10]
    p = HostProgress(base.host)
    assert phase_of(r, plan, p, base, ORDER) is Phase.QUEUED
    assert phase_of(r, plan, p, replace(base, version="v3"), ORDER) is Phase.AT_TARGET
    assert phase_of(r, plan, p, replace(base, version="v9"), ORDER) is Phase.SKIPPED
    assert phase_of(r, plan, p, replace(base, lost=True), ORDER) is Phase.LOST
    assert phase_of(r, plan, p, replace(base, labels={}, customer="x"), ORDER) is Phase.EXCLUDED
    assert phase_of(r, plan, granted(base.host), base, ORDER) is Phase.IN_FLIGHT


# -- stored forms --------------------------------------------------------------


def test_a_stored_rollout_and_progress_read_back_the_same() -> None:
    r = create_rollout("r-7", Selector.of("acme", tier="db"), "v3",
                       RolloutSpec(max_per_site=1), fleet(30, sites=3, canaries=2), ORDER, T0,
                       floors=["v2"], dead_ends=["v1"], from_version="v2",
                       created_by="operator:ann")
    r = halt(advance(r, assess(r, plan_waves(r), tally(r, plan_waves(r), [], ORDER), ORDER,
                                T0), T0), "operator:ann", "why", T0)
    back = Rollout.from_json(json.loads(json.dumps(r.to_json())))
    assert back == r and plan_waves(back) == plan_waves(r)
    p = granted(unhealthy_before=frozenset({"a"})).failed(Failure.APP_HEALTH, "db", T0)
    assert HostProgress.from_json(json.loads(json.dumps(p.to_json()))) == p
    with pytest.raises(InputError, match="not a stored rollout"):
        Rollout.from_json({"id": "x"})
    with pytest.raises(InputError, match="not a stored host progress"):
        HostProgress.from_json({"host": "h", "outcome": "maybe"})

"""Rollout waves simulated in virtual time over the FleetLock service (in-memory backend)."""

from __future__ import annotations

import pytest

from atoll.control.rollout_sim import HostState, host_ids, simulate_rollout
from atoll.core.errors import InputError
from atoll.fleet.backends.memory import MemoryBackend
from atoll.fleet.config import FleetConfig
from atoll.fleet.service import FleetLockService


@pytest.mark.parametrize(("hosts", "slots"), [(1, 1), (7, 3), (300, 1), (500, 7), (400, 400)])
def test_every_host_updates_never_more_than_k(hosts: int, slots: int) -> None:
    report = simulate_rollout(host_ids(hosts), slots, reboot_seconds=60, poll_seconds=15)
    assert report.count(HostState.DONE) == hosts
    assert set(report.versions.values()) == {"new"}
    assert report.max_concurrent == min(slots, hosts)  # the slots were all used...
    assert report.violations == []  # ...and never more
    assert report.total_seconds == report.ideal_seconds  # polls line up with reboot ends


def test_polling_slower_than_reboots_costs_time() -> None:
    report = simulate_rollout(host_ids(100), 10, reboot_seconds=60, poll_seconds=45)
    assert report.count(HostState.DONE) == 100 and report.violations == []
    assert report.ideal_seconds < report.total_seconds <= report.ideal_seconds * 1.75


def test_a_failing_host_keeps_its_slot_and_stops_the_wave() -> None:
    backend = MemoryBackend()
    svc = FleetLockService(backend, FleetConfig({"db": 4}))
    hosts = host_ids(200)
    report = simulate_rollout(hosts, 4, group="db", failing={"host-0041"}, service=svc,
                              reboot_seconds=60, poll_seconds=15)
    assert report.states["host-0041"] is HostState.FAILED
    assert report.versions["host-0041"] == "old"
    # the host still holds its slot on the server, for operators to see
    db = next(g for g in svc.status() if g.group == "db")
    assert [h.id for h in db.holders] == ["host-0041"]
    # hosts already rebooting with it finished; nobody started after it failed
    assert report.count(HostState.HALTED) > 0
    assert report.count(HostState.PENDING) == report.count(HostState.REBOOTING) == 0
    done = [h for h in hosts if report.states[h] is HostState.DONE]
    assert all(report.versions[h] == "new" for h in done)
    assert all(report.versions[h] == "old" for h in hosts if report.states[h] is HostState.HALTED)
    assert len(done) + 1 + report.count(HostState.HALTED) == 200
    assert report.halted and report.violations == []


def test_one_slot_failure_blocks_everyone_after() -> None:
    report = simulate_rollout(host_ids(50), 1, failing={"host-0000"})
    assert report.states["host-0000"] is HostState.FAILED
    assert report.count(HostState.HALTED) == 49 and report.count(HostState.DONE) == 0


def test_the_invariant_check_catches_a_server_with_too_many_slots() -> None:
    # a server that hands out 5 slots while the rollout promises 3: the check must fire
    svc = FleetLockService(MemoryBackend(), FleetConfig({"default": 5}))
    report = simulate_rollout(host_ids(30), 3, service=svc)
    assert report.max_concurrent == 5 and report.violations


def test_bad_arguments() -> None:
    with pytest.raises(InputError):
        simulate_rollout([], 1)
    with pytest.raises(InputError):
        simulate_rollout(["a", "a"], 1)
    with pytest.raises(InputError):
        simulate_rollout(["a"], 0)
    with pytest.raises(InputError, match="exceeded 10 steps"):
        simulate_rollout(host_ids(20), 1, max_events=10)


def test_the_simulation_follows_the_control_planes_waves_and_budget() -> None:
    # the same decisions as `atoll fleet serve` (atoll.control.rollouts): canaries first,
    # cumulative waves, max_in_flight below the reboot slots, a budget of one failure
    from atoll.control.rollouts import FailureBudget, RolloutSpec

    hosts = host_ids(100)
    spec = RolloutSpec(waves=(10.0, 50.0, 100.0), soak_s=0, max_in_flight=3,
                       budget=FailureBudget(max_failures=0))
    report = simulate_rollout(hosts, 5, spec=spec, canaries=hosts[:2])
    assert report.count(HostState.DONE) == 100 and report.violations == []
    summary = report.rollout
    assert summary["state"] == "finished" and summary["waves"] == 4
    assert summary["achieved_percent"] == [2.0, 10.0, 50.0, 100.0]
    assert report.max_concurrent <= 3 and summary["max_in_flight"] == 3

    # a failing canary halts it in wave 0: nobody else is granted anything
    failed = simulate_rollout(hosts, 5, spec=spec, canaries=hosts[:2], failing={hosts[0]})
    assert failed.halted and failed.violations == []
    assert failed.states[hosts[0]] is HostState.FAILED
    assert failed.rollout["halt"]["hosts"] == [hosts[0]]  # type: ignore[index]
    assert all(failed.states[h] is HostState.HALTED for h in hosts[2:])

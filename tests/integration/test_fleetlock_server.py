"""The FleetLock server over real etcd and over the embedded backend, on 127.0.0.1.

Every test runs against both backends (``fleet_backend`` is parametrized).
"""

from __future__ import annotations

import http.client
import json
import threading
import urllib.parse
from collections.abc import Callable

import pytest

from atoll.control.rollout_sim import HostState, host_ids, run_rollout
from atoll.core.errors import DownloadError, InputError, StoreError
from atoll.fleet.backends import Backend
from atoll.fleet.client import FleetLockClient, FleetLockError
from atoll.fleet.protocol import ClientParams, ProtocolError
from atoll.fleet.semaphore import LockOutcome
from atoll.fleet.server import FleetLockServer
from atoll.fleet.service import FleetLockService
from tests.integration import fleet_fixtures
from tests.services import free_port

# the shared fixtures (real etcd once per session; both backends; a server per test)
fleet_etcd = fleet_fixtures.fleet_etcd
fleet_backend = fleet_fixtures.fleet_backend
fleet_server = fleet_fixtures.fleet_server

# the rollouts below take a few seconds; this is only where a stuck one fails
ROLLOUT_DEADLINE = 300.0


def raw_post(server: FleetLockServer, path: str, body: bytes,
             headers: dict[str, str]) -> tuple[int, str, bytes]:
    url = urllib.parse.urlsplit(server.url)
    conn = http.client.HTTPConnection(url.hostname or "", url.port, timeout=10)
    try:
        conn.request("POST", path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.getheader("Content-Type") or "", resp.read()
    finally:
        conn.close()


def holders(backend: Backend, group: str) -> list[str]:
    sem, _ = backend.load(group)
    return [h.id for h in sem.holders] if sem else []


def test_two_clients_race_for_the_last_slot(fleet_server: FleetLockServer,
                                            fleet_backend: Backend) -> None:
    FleetLockClient(fleet_server.url).pre_reboot("holder", "db")  # 1 of 2 slots taken
    for round_ in range(15):
        barrier = threading.Barrier(2)
        results: dict[str, str] = {}

        def race(cid: str, barrier: threading.Barrier = barrier,
                 results: dict[str, str] = results) -> None:
            with FleetLockClient(fleet_server.url) as client:
                barrier.wait(timeout=10)
                try:
                    client.pre_reboot(cid, "db")
                    results[cid] = "won"
                except FleetLockError as exc:
                    results[cid] = f"{exc.status} {exc.kind}"

        names = [f"b{round_}", f"c{round_}"]
        threads = [threading.Thread(target=race, args=(n,)) for n in names]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        assert sorted(results.values()) == ["500 failed_lock_semaphore_full", "won"], results
        winner = next(n for n in names if results[n] == "won")
        assert holders(fleet_backend, "db") == sorted(["holder", winner])
        FleetLockClient(fleet_server.url).steady_state(winner, "db")


def test_lock_twice_is_idempotent_and_unlock_when_not_held_is_ok(
        fleet_server: FleetLockServer, fleet_backend: Backend) -> None:
    client = FleetLockClient(fleet_server.url)
    client.steady_state("never-held")  # unlocking nothing: 200
    client.pre_reboot("node-a")
    client.pre_reboot("node-a")  # again: still 200, still one slot
    assert holders(fleet_backend, "default") == ["node-a"]
    with pytest.raises(FleetLockError) as err:
        client.pre_reboot("node-b")
    assert (err.value.status, err.value.kind, err.value.slots_full) == (
        500, "failed_lock_semaphore_full", True)
    assert "semaphore currently full" in err.value.value
    client.steady_state("node-a")
    client.steady_state("node-a")  # twice: fine
    assert holders(fleet_backend, "default") == []
    client.pre_reboot("node-b")


@pytest.mark.parametrize("path", ["/v1/pre-reboot", "/v1/steady-state"])
def test_protocol_errors_exact(fleet_server: FleetLockServer, fleet_backend: Backend,
                               path: str) -> None:
    good = {"fleet-lock-protocol": "true"}
    ok = b'{"client_params": {"id": "n1", "group": "default"}}'
    cases = [
        ({}, ok, 400, {"kind": "invalid_client_identity",
                       "value": "failed to validate client identity: "
                                "wrong 'fleet-lock-protocol' header"}),
        ({"fleet-lock-protocol": "false"}, ok, 400, {
            "kind": "invalid_client_identity",
            "value": "failed to validate client identity: wrong 'fleet-lock-protocol' header"}),
        (good, b'{"client_params": {"id": "", "group": "default"}}', 400, {
            "kind": "invalid_client_identity",
            "value": "failed to validate client identity: empty client ID"}),
        (good, b'{"client_params": {"id": "n1", "group": ""}}', 400, {
            "kind": "invalid_client_identity",
            "value": "failed to validate client identity: empty client group"}),
        (good, b'{"client_params": {"id": "n1", "group": "nope"}}', 400, {
            "kind": "unknown_group", "value": "unknown group 'nope'"}),
        # a lone surrogate was a 500 "internal error" once the store tried to encode it
        (good, b'{"client_params": {"id": "\\ud800", "group": "default"}}', 400, {
            "kind": "invalid_client_identity",
            "value": "failed to validate client identity: client ID is not valid Unicode"}),
    ]
    for headers, body, status, error in cases:
        got_status, ctype, got = raw_post(fleet_server, path, body, headers)
        assert (got_status, json.loads(got)) == (status, error)
        assert ctype == "application/json"
    # nothing above changed any state
    assert fleet_backend.groups() == []
    assert raw_post(fleet_server, path, ok, good)[:1] == (200,)


def test_client_errors(fleet_server: FleetLockServer) -> None:
    with pytest.raises(FleetLockError, match="unknown group 'nope'") as err:
        FleetLockClient(fleet_server.url).pre_reboot("x", "nope")
    assert err.value.status == 400 and not err.value.slots_full
    with pytest.raises(DownloadError, match="unreachable"):
        FleetLockClient(f"http://127.0.0.1:{free_port()}").pre_reboot("x")
    with pytest.raises(InputError):
        FleetLockClient("lock.example:8080")
    # a base URL with a path prefix, as Zincati allows: the server has no such prefix
    with pytest.raises(FleetLockError) as err:
        FleetLockClient(fleet_server.url + "/base/").pre_reboot("x")
    assert (err.value.status, err.value.kind) == (404, "not_found")


def watch_pre_reboot(server: FleetLockServer, monkeypatch: pytest.MonkeyPatch,
                     on_grant: Callable[[str], None] = lambda cid: None) -> threading.Event:
    """Call ``on_grant(id)`` for each slot the server grants; the event: it refused one."""
    refused = threading.Event()
    pre_reboot = server.service.pre_reboot

    def watched(params: ClientParams) -> LockOutcome:
        try:
            outcome = pre_reboot(params)
        except ProtocolError as exc:
            if exc.kind == "failed_lock_semaphore_full":
                refused.set()
            raise
        on_grant(params.id)
        return outcome

    monkeypatch.setattr(server.service, "pre_reboot", watched)
    return refused


def test_hundreds_of_agents_roll_through_k_slots(fleet_server: FleetLockServer,
                                                 fleet_backend: Backend,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    refused = watch_pre_reboot(fleet_server, monkeypatch)
    # The first four hosts keep their slots until all four hold one at once and the server
    # has refused another agent a fifth: the wave fills its slots and agents contend for
    # them however the threads are scheduled (events, not the luck of timing).
    first_four = threading.Barrier(4, timeout=120)
    arrived: list[str] = []
    lock = threading.Lock()

    def on_health(host: str) -> None:
        with lock:
            arrived.append(host)
            first = len(arrived) <= 4
        if first:
            first_four.wait()
            assert refused.wait(120), "no agent was refused while all four slots were held"

    report = run_rollout(fleet_server.url, host_ids(240), 4, group="wave",
                         reboot_seconds=0.03, poll_seconds=0.01, workers=24,
                         deadline_seconds=ROLLOUT_DEADLINE, on_health=on_health)
    assert report.violations == [] and report.max_concurrent == 4
    assert report.count(HostState.DONE) == 240
    assert set(report.versions.values()) == {"new"}
    assert report.refusals > 0  # agents really contended for the slots
    assert holders(fleet_backend, "wave") == []


def test_failed_host_keeps_slot_stops_wave_and_operator_releases(
        fleet_server: FleetLockServer, fleet_backend: Backend,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # As many agents as slots, so host-0030 gets one as soon as its turn comes (with more,
    # it could lose the race for a free slot again and again until the wave is nearly
    # through); once it holds one, the other holders wait (holding theirs) until it has
    # failed. The hosts not yet started are then sure to be halted, however the threads
    # are scheduled. (Agents contending for slots: the test above.)
    granted, failed = threading.Event(), threading.Event()
    watch_pre_reboot(fleet_server, monkeypatch,
                     lambda cid: granted.set() if cid == "host-0030" else None)

    def on_health(host: str) -> None:
        if host == "host-0030":
            failed.set()  # its health check fails: the wave stops as this returns
        elif granted.is_set():
            assert failed.wait(120), "host-0030 never reached its health check"

    report = run_rollout(fleet_server.url, host_ids(120), 4, group="wave",
                         reboot_seconds=0.03, poll_seconds=0.01, workers=4,
                         failing={"host-0030"}, deadline_seconds=ROLLOUT_DEADLINE,
                         on_health=on_health)
    assert report.states["host-0030"] is HostState.FAILED
    assert report.violations == [] and report.count(HostState.HALTED) > 0
    assert report.count(HostState.PENDING) == report.count(HostState.REBOOTING) == 0
    assert holders(fleet_backend, "wave") == ["host-0030"]
    # the operator sees the dead host and frees its slot
    service = FleetLockService(fleet_backend, fleet_server.service.config)
    wave = next(g for g in service.status() if g.group == "wave")
    assert [h.id for h in wave.holders] == ["host-0030"]
    service.release("wave", "host-0030")
    assert holders(fleet_backend, "wave") == []


def test_corrupt_state_is_a_clear_500_and_is_left_alone(fleet_server: FleetLockServer,
                                                        fleet_backend: Backend) -> None:
    if fleet_backend.kind == "etcd":
        import etcd3gw

        from atoll.fleet.backends.etcd import semaphore_key

        url = urllib.parse.urlsplit(fleet_backend.describe().removeprefix("etcd at "))
        etcd3gw.Etcd3Client(host=url.hostname or "", port=url.port or 2379).put(
            semaphore_key("default"), "not json")
    else:
        import sqlite3

        db = sqlite3.connect(getattr(fleet_backend, "path"))  # noqa: B009 - embedded only
        with db:
            db.execute("INSERT INTO semaphore VALUES ('default', 'not json', 7)")
        db.close()
    with pytest.raises(FleetLockError) as err:
        FleetLockClient(fleet_server.url).pre_reboot("n1")
    assert (err.value.status, err.value.kind) == (500, "failed_lock")
    assert "is not a semaphore" in err.value.value
    with pytest.raises(FleetLockError, match="is not a semaphore"):
        FleetLockClient(fleet_server.url).steady_state("n1")
    with pytest.raises(StoreError):  # nothing overwrote the bad value: an operator looks at it
        fleet_backend.load("default")

"""The FleetLock semaphore, its stored form (airlock's) and the backend CAS loop (in memory)."""

from __future__ import annotations

import datetime as dt
import threading
import time

import pytest

from atoll.core.errors import InputError, RuntimeBackendError, StoreError
from atoll.fleet.backends import Backend, open_backend
from atoll.fleet.backends.memory import MemoryBackend
from atoll.fleet.semaphore import (
    Holder,
    LockOutcome,
    Semaphore,
    merge,
    recursive_lock,
    unlock_if_held,
)
from tests.conftest import ROOT

T0 = dt.datetime(2026, 11, 26, 12, 0, tzinfo=dt.UTC)
DATA = ROOT / "tests/data/airlock"


def test_lock_is_recursive_and_counting() -> None:
    sem = Semaphore(2)
    sem, out = recursive_lock(sem, "b", T0)
    assert out is LockOutcome.ACQUIRED
    again, out = recursive_lock(sem, "b", T0 + dt.timedelta(hours=1))
    assert out is LockOutcome.ALREADY_HELD and again == sem  # unchanged, since kept
    sem, out = recursive_lock(sem, "a", T0)
    assert out is LockOutcome.ACQUIRED
    assert [h.id for h in sem.holders] == ["a", "b"]
    full, out = recursive_lock(sem, "c", T0)
    assert out is LockOutcome.FULL and full == sem and sem.free == 0
    # a holder still gets its "yes" when the semaphore is full
    assert recursive_lock(sem, "a", T0)[1] is LockOutcome.ALREADY_HELD


def test_zero_slots_freeze_a_group() -> None:
    # airlock accepts slots = 0: nobody new gets a slot; holders still release
    sem = Semaphore(0, (Holder("a", T0),))
    assert recursive_lock(sem, "b", T0)[1] is LockOutcome.FULL
    assert recursive_lock(sem, "a", T0)[1] is LockOutcome.ALREADY_HELD
    assert unlock_if_held(sem, "a") == (Semaphore(0), True)


def test_unlock_if_held() -> None:
    sem, _ = recursive_lock(Semaphore(1), "a", T0)
    same, held = unlock_if_held(sem, "zz")
    assert not held and same == sem
    empty, held = unlock_if_held(sem, "a")
    assert held and empty.holders == () and empty.free == 1


def test_lowered_slots_keep_holders_but_refuse_new() -> None:
    sem, _ = recursive_lock(Semaphore(2), "a", T0)
    sem, _ = recursive_lock(sem, "b", T0)
    sem = sem.with_slots(1)
    assert sem.free == 0 and len(sem.holders) == 2
    assert recursive_lock(sem, "c", T0)[1] is LockOutcome.FULL
    sem, _ = unlock_if_held(sem, "a")
    assert recursive_lock(sem, "c", T0)[1] is LockOutcome.FULL  # b still fills the one slot


def test_json_round_trip_and_layout() -> None:
    # airlock's form (struct order, compact, holders sorted), with atoll's since beside it
    sem, _ = recursive_lock(Semaphore(3), "node-1", T0)
    sem, _ = recursive_lock(sem, "node-0", T0 + dt.timedelta(seconds=5))
    raw = sem.to_json()
    assert raw == (b'{"total_slots":3,"holders":["node-0","node-1"],"atoll_since":'
                   b'{"node-0":"2026-11-26T12:00:05Z","node-1":"2026-11-26T12:00:00Z"}}')
    assert Semaphore.from_json(raw, where="k") == sem


def test_airlock_value_is_read_and_written_byte_exact() -> None:
    airlock = (DATA / "semaphore.json").read_bytes()
    sem = Semaphore.from_json(airlock, where="k")
    assert sem == Semaphore(2, (Holder("a"), Holder("b")))  # since unknown
    assert sem.to_json() == airlock  # nothing atoll adds when it knows no since
    assert Semaphore(2).to_json() == b'{"total_slots":2,"holders":[]}'
    # what airlock writes after its own changes: atoll_since dropped; null holders (Go nil)
    assert Semaphore.from_json(b'{"total_slots":1,"holders":null}', where="k") == Semaphore(1)
    # airlock ignores unknown fields; so does atoll (beyond its own)
    assert Semaphore.from_json(b'{"holders":["b","a","a"],"total_slots":2,"x":1}',
                               where="k") == sem  # sorted, one slot per id
    # an unreadable atoll_since entry is an unknown since, never a broken group
    assert Semaphore.from_json(b'{"total_slots":2,"holders":["a","b"],"atoll_since":'
                               b'{"a":"yesterday","b":7,"gone":"2026-11-26T12:00:00Z"}}',
                               where="k") == sem


def test_atoll_old_form_is_still_read() -> None:
    old = b'{"holders":[{"id":"node-1","since":"2026-11-26T12:00:00Z"}],"total_slots":3}'
    sem = Semaphore.from_json(old, where="k")
    assert sem == Semaphore(3, (Holder("node-1", T0),))
    assert sem.to_json() == (b'{"total_slots":3,"holders":["node-1"],'
                             b'"atoll_since":{"node-1":"2026-11-26T12:00:00Z"}}')


def test_merge_keeps_every_holder() -> None:
    new = Semaphore(2, (Holder("air"), Holder("both")))
    old = Semaphore(5, (Holder("both", T0), Holder("old", T0)))
    assert merge(new, old) == Semaphore(2, (Holder("air"), Holder("both", T0),
                                            Holder("old", T0)))


@pytest.mark.parametrize("raw", [b"", b"[]", b"null", b'{"total_slots": -1, "holders": []}',
                                 b'{"total_slots": 1, "holders": [{"id": "a"}]}',
                                 b'{"total_slots": true, "holders": []}',
                                 b'{"total_slots": 2.0, "holders": []}',
                                 b'{"total_slots": 18446744073709551616, "holders": []}',
                                 b'{"total_slots": 1, "holders": [1]}',
                                 b'{"total_slots": 1, "holders": "a"}',
                                 b'{"total_slots": 1}', b"[" * 5000])
def test_corrupt_state_is_a_store_error(raw: bytes) -> None:
    with pytest.raises(StoreError, match="at /atoll/x is not a semaphore"):
        Semaphore.from_json(raw, where="/atoll/x")


class _Conflicting(MemoryBackend):
    """Loses the first ``n`` compare-and-swaps, as if another server wrote in between."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n = n

    def store(self, group: str, sem: Semaphore, version: int) -> int | None:
        if self.n > 0:
            self.n -= 1
            stored, _ = self.load(group)
            base = stored if stored is not None else Semaphore(sem.total_slots)
            other, _ = recursive_lock(base, f"other-{self.n}", T0)
            assert super().store(group, other, version)  # the other writer wins this round
            return None
        return super().store(group, sem, version)


def test_update_retries_on_conflict_and_rereads() -> None:
    backend = _Conflicting(2)
    out = backend.update("g", 5, lambda s: recursive_lock(s, "me", T0))
    assert out is LockOutcome.ACQUIRED
    sem, _ = backend.load("g")
    assert sem is not None and {h.id for h in sem.holders} == {"me", "other-1", "other-0"}


def test_update_gives_up_when_conflicts_never_end(monkeypatch: pytest.MonkeyPatch) -> None:
    import atoll.fleet.backends as backends

    monkeypatch.setattr(backends, "MAX_ATTEMPTS", 5)
    backend = _Conflicting(10**6)
    with pytest.raises(RuntimeBackendError, match="too many concurrent changes"):
        backend.update("g", 100, lambda s: recursive_lock(s, "me", T0))
    sem, _ = backend.load("g")
    assert sem is not None and not sem.holds("me") and len(sem.holders) == 5


def test_update_writes_nothing_when_nothing_changes() -> None:
    backend = MemoryBackend()
    backend.update("g", 1, lambda s: recursive_lock(s, "a", T0))
    writes = backend.writes
    backend.update("g", 1, lambda s: recursive_lock(s, "a", T0))  # idempotent lock
    backend.update("g", 1, lambda s: recursive_lock(s, "b", T0))  # full
    backend.update("g", 1, lambda s: unlock_if_held(s, "zz"))  # not held
    assert backend.writes == writes


def test_registry() -> None:
    backend = open_backend("memory")
    assert isinstance(backend, Backend) and backend.kind == "memory"
    with pytest.raises(InputError, match="unknown fleet lock backend 'zookeeper'"):
        open_backend("zookeeper", "x")
    with pytest.raises(InputError, match="directory does not exist"):
        open_backend("embedded", "/nonexistent-dir/locks.db")
    with pytest.raises(InputError, match="not an http"):
        open_backend("etcd", "127.0.0.1")  # no scheme and no port: clientv3 cannot dial it
    with pytest.raises(InputError, match="not an http"):  # every endpoint of a list
        open_backend("etcd", "http://127.0.0.1:2379,ftp://127.0.0.1:2380")
    with pytest.raises(InputError, match="no etcd endpoint given"):
        open_backend("etcd", " , ")
    with pytest.raises(InputError, match=r"etcd client certificate /nonexistent\.pem: cannot load"):
        open_backend("etcd", "https://127.0.0.1:1", client_cert="/nonexistent.pem",
                     client_key="/nonexistent.key")  # refused before any connection


class _GatedStore(MemoryBackend):
    """Writes wait until ``gate`` opens, like a slow fsync: changes pile up behind one."""

    def __init__(self) -> None:
        super().__init__()
        self.writing = threading.Event()  # a write has started
        self.gate = threading.Event()

    def store(self, group: str, sem: Semaphore, version: int) -> int | None:
        self.writing.set()
        self.gate.wait(60)  # a deadline only: the test opens it
        return super().store(group, sem, version)


def test_concurrent_changes_share_transactions_and_all_apply() -> None:
    backend = _GatedStore()
    results: dict[str, LockOutcome] = {}

    def take(cid: str) -> None:
        results[cid] = backend.update("g", 25, lambda s: recursive_lock(s, cid, T0))

    first = threading.Thread(target=take, args=("h00",))
    first.start()
    assert backend.writing.wait(30), "the first change was not written"
    # 39 more arrive while that transaction is in flight; wait (polling the commit
    # queue, not sleeping) until all of them are queued behind it, then let it finish
    others = [threading.Thread(target=take, args=(f"h{i:02d}",)) for i in range(1, 40)]
    for t in others:
        t.start()
    try:
        deadline = time.monotonic() + 30
        while len(backend._queues.get("g", [])) < 39:
            assert time.monotonic() < deadline, "the changes did not all queue within 30 s"
            time.sleep(0.01)
    finally:
        backend.gate.set()
    for t in [first, *others]:
        t.join(timeout=60)
    outcomes = sorted(o.value for o in results.values())
    assert outcomes.count("acquired") == 25 and outcomes.count("full") == 15
    assert results["h00"] is LockOutcome.ACQUIRED
    sem, _ = backend.load("g")
    assert sem is not None and len(sem.holders) == 25
    assert {h.id for h in sem.holders} == {c for c, o in results.items() if o.value == "acquired"}
    # group commit: the first change's transaction, then one for the 39 queued behind it
    assert backend.writes == 2


def test_a_write_by_another_process_is_never_missed() -> None:
    # this process remembers what it last wrote; another process (a second server, or
    # `atoll fleetlock release`) writes behind its back; the next changes must see it
    backend = MemoryBackend()
    backend.update("g", 2, lambda s: recursive_lock(s, "a", T0))
    sem, version = backend.load("g")
    assert sem is not None
    theirs, _ = recursive_lock(sem, "x", T0)
    assert MemoryBackend.store(backend, "g", theirs, version)  # the other process's write
    # a release of x through this process releases it (no stale "x holds nothing")
    assert backend.update("g", 2, lambda s: unlock_if_held(s, "x"), read_first=False) is True
    # and a lock through this process does not overwrite the other write
    sem, version = backend.load("g")
    assert sem is not None
    theirs, _ = recursive_lock(sem, "y", T0)
    assert MemoryBackend.store(backend, "g", theirs, version)
    assert backend.update("g", 2, lambda s: recursive_lock(s, "z", T0),
                          read_first=False) is LockOutcome.FULL
    sem, _ = backend.load("g")
    assert sem is not None and [h.id for h in sem.holders] == ["a", "y"]


@pytest.mark.parametrize(("location", "name", "tls"), [
    ("http://127.0.0.1:2379", "http://127.0.0.1:2379", False),
    ("https://etcd.example:2379", "https://etcd.example:2379", True),
    ("http://127.0.0.1", "http://127.0.0.1:2379", False),
    # no scheme: airlock's etcd client (clientv3 3.5) dials HOST:PORT with the TLS config
    # airlock always gives it (transport.TLSInfo.ClientConfig() is never nil)
    ("127.0.0.1:2379", "https://127.0.0.1:2379", True),
    ("etcd-1.example:2379", "https://etcd-1.example:2379", True),
    ("[::1]:2379", "https://::1:2379", True),
])
def test_etcd_endpoints_as_airlocks_etcd_client_reads_them(location: str, name: str,
                                                           tls: bool) -> None:
    from atoll.fleet.etcdv3 import _Endpoint, uses_tls

    ep = _Endpoint(location)
    assert (ep.name, ep.scheme == "https", uses_tls(location)) == (name, tls, tls)


@pytest.mark.parametrize(("location", "why"), [
    ("unix:///run/etcd.sock", "unix socket"), ("unixs://etcd.sock:0", "unix socket"),
    ("127.0.0.1", "not an http"), ("127.0.0.1:2379/x", "not an http"),
    ("127.0.0.1:99999", "out of range"), ("ftp://h:1", "not an http"),
])
def test_etcd_endpoints_atoll_cannot_use_are_clear_errors(location: str, why: str) -> None:
    from atoll.fleet.etcdv3 import _Endpoint

    with pytest.raises(InputError, match=why):
        _Endpoint(location)

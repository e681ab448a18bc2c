"""The FleetLock semaphore, its config and the backend CAS loop (pure, in memory)."""

from __future__ import annotations

import datetime as dt
import threading
import time

import pytest

from atoll.core.errors import InputError, RuntimeBackendError, SpecError, StoreError
from atoll.fleet.backends import Backend, open_backend
from atoll.fleet.backends.memory import MemoryBackend
from atoll.fleet.config import FleetConfig, load_config, parse_config
from atoll.fleet.semaphore import (
    LockOutcome,
    Semaphore,
    recursive_lock,
    unlock_if_held,
)

T0 = dt.datetime(2026, 11, 26, 12, 0, tzinfo=dt.UTC)


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
    sem, _ = recursive_lock(Semaphore(3), "node-1", T0)
    raw = sem.to_json()
    assert raw == b'{"holders":[{"id":"node-1","since":"2026-11-26T12:00:00Z"}],"total_slots":3}'
    assert Semaphore.from_json(raw, where="k") == sem


@pytest.mark.parametrize("raw", [b"", b"[]", b'{"total_slots": -1, "holders": []}',
                                 b'{"total_slots": 1, "holders": [{"id": "a"}]}',
                                 b'{"total_slots": true, "holders": []}'])
def test_corrupt_state_is_a_store_error(raw: bytes) -> None:
    with pytest.raises(StoreError, match="at /atoll/x is not a semaphore"):
        Semaphore.from_json(raw, where="/atoll/x")


def test_config_default_and_airlock_format(tmp_path: object) -> None:
    assert load_config(None).groups == {"default": 1}
    cfg = parse_config({"lock": {"default_slots": 2, "groups": [
        {"name": "workers"}, {"name": "controllers", "slots": 1}]}}, "f.toml")
    assert cfg.groups == {"default": 2, "workers": 2, "controllers": 1}
    assert cfg.slots("nope") is None


def test_config_file(tmp_path: pytest.TempPathFactory) -> None:
    from pathlib import Path

    path = Path(str(tmp_path)) / "fleetlock.toml"
    path.write_text('[lock]\ndefault_group_name = "db"\n[[lock.groups]]\nname = "web"\nslots = 5\n')
    assert load_config(path) == FleetConfig({"db": 1, "web": 5})
    path.write_text("[lock\n")
    with pytest.raises(InputError, match="not valid TOML"):
        load_config(path)
    with pytest.raises(InputError, match="cannot read"):
        load_config(path.with_name("missing.toml"))


def test_config_errors_say_where() -> None:
    with pytest.raises(SpecError) as err:
        parse_config({"service": {}, "lock": {"default_slots": 0, "bogus": 1, "groups": [
            {"name": "bad/name"}, {"slots": 2}, {"name": "default"}]}}, "f.toml")
    problems = err.value.problems
    assert "f.toml: service: unknown table; only [lock] is read" in problems
    assert "f.toml: lock.bogus: unknown setting" in problems
    assert any(p.startswith("f.toml: lock.default_slots: must be an integer") for p in problems)
    assert any(p.startswith("f.toml: lock.groups[0].name: must match") for p in problems)
    assert "f.toml: lock.groups[1].name: missing" in problems
    assert "f.toml: lock.groups[2].name: group 'default' defined twice" in problems


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
        open_backend("etcd", "127.0.0.1:2379")


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

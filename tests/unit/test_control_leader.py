"""The election's decisions over a fake etcd (atoll.control.leader): one leader at a
time, a term shorter than the lease, resignation, etcd unreachable."""

from __future__ import annotations

from typing import Any

import pytest

from atoll.control.leader import Election
from atoll.core.errors import RuntimeBackendError
from atoll.fleet.etcdv3 import b64


class FakeEtcd:
    """Leases and one key, as etcd keeps them (expiry by the test's clock)."""

    def __init__(self, clock: list[float]) -> None:
        self.clock = clock
        self.leases: dict[int, float] = {}  # id -> expiry
        self.key: tuple[bytes, int] | None = None  # value, lease
        self.next = 1
        self.down = False

    def _expire(self) -> None:
        if self.down:
            raise RuntimeBackendError("etcd at fake: unreachable")
        for lease, until in list(self.leases.items()):
            if until <= self.clock[0]:
                del self.leases[lease]
                if self.key and self.key[1] == lease:
                    self.key = None

    def lease_grant(self, ttl: int) -> tuple[int, int]:
        self._expire()
        lease, self.next = self.next, self.next + 1
        self.leases[lease] = self.clock[0] + ttl
        return lease, ttl

    def lease_keepalive(self, lease: int) -> int:
        self._expire()
        if lease not in self.leases:
            return 0
        self.leases[lease] = self.clock[0] + 10
        return 10

    def lease_revoke(self, lease: int) -> None:
        self._expire()
        self.leases.pop(lease, None)
        if self.key and self.key[1] == lease:
            self.key = None

    def txn(self, compare: Any, success: Any, failure: Any) -> tuple[bool, dict[str, Any]]:
        self._expire()
        if self.key is None:
            put = success[0]["request_put"]
            import base64

            self.key = (base64.b64decode(put["value"]), int(put["lease"]))
            return True, {}
        kv = {"key": b64("k"), "value": b64(self.key[0]), "lease": str(self.key[1])}
        return False, {"responses": [{"response_range": {"kvs": [kv]}}]}


def test_one_leader_then_a_takeover_after_the_lease() -> None:
    clock = [0.0]
    etcd = FakeEtcd(clock)
    a, b = (Election(etcd, name, ttl_s=10, clock=lambda: clock[0])  # type: ignore[arg-type]
            for name in ("a", "b"))
    assert a.step() and a.leading()
    assert not b.step() and not b.leading() and b.leader() == "a"
    for _ in range(10):  # a renews every ttl/3: it stays the only leader
        clock[0] += 3
        assert a.step() and not b.step()
    clock[0] += 5  # a is silent: its term (ttl/2) ends before etcd could expire it
    assert not a.leading()
    assert not b.step()  # a's lease (renewed 5 s ago) still holds the key
    clock[0] += 5.1
    assert b.step() and b.leading()  # a's lease expired
    assert not a.step() and a.leader() == "b"


def test_resigning_hands_over_at_once_and_etcd_away_ends_the_term() -> None:
    clock = [0.0]
    etcd = FakeEtcd(clock)
    a, b = (Election(etcd, name, ttl_s=10, clock=lambda: clock[0])  # type: ignore[arg-type]
            for name in ("a", "b"))
    assert a.step()
    a.resign()
    assert not a.leading() and b.step()
    etcd.down = True
    with pytest.raises(RuntimeBackendError):
        b.step()
    assert b.leading()  # until its term runs out
    clock[0] += 5
    assert not b.leading() and b.leader() is None
    with pytest.raises(ValueError):
        Election(etcd, "c", ttl_s=1)  # type: ignore[arg-type]

"""Which ``atoll fleet serve`` instance drives rollouts: an election in etcd.

Several instances may serve one PostgreSQL database. Every one answers check-ins and
operators; the rollout driver (advance waves after their soak, time out silent hosts,
finish) and the event retention run on one of them, the *leader*, chosen in etcd
(``atoll fleet serve --etcd URL``) as etcd's own ``concurrency/election`` does it:

    /atoll/control/leader   the leader's identity (HOST:PID:PORT), under its lease

* **campaign**: each instance holds a lease of ``ttl_s`` seconds (default 10) and tries
  ``txn(if create_revision(key) == 0 then put(key, me, lease))``: the key exists at most
  once, so at most one instance wins;
* **term**: the leader renews its lease every ``ttl_s / 3`` and checks the key is still
  under its lease; it counts itself leader only until ``ttl_s / 2`` after the last
  renewal it *sent*, so it stops driving before etcd could expire its lease and let
  another win (it stops when etcd is unreachable, too);
* **handover**: a leader that stops cleanly revokes its lease (the key goes at once);
  one that dies loses the key when its lease expires, at most ``ttl_s`` later, and a
  standby wins at its next campaign (every ``ttl_s / 3``).

The election saves duplicated work; it is not what keeps rollouts correct: each
driver step still locks its rollout's row in the database, so even two drivers at
once (a paused leader waking up) take turns. Without ``--etcd`` every instance
drives, one rollout at a time by that row lock (the behaviour before elections).
Inventory and history never go into etcd; only this key does. Client: the project's
own etcd v3 gateway client (:mod:`atoll.fleet.etcdv3`, as FleetLock and service
discovery use).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from atoll.core.errors import RuntimeBackendError
from atoll.fleet.etcdv3 import EtcdClient, KeyValue, b64

__all__ = ["LEADER_KEY", "Election"]

log = logging.getLogger("atoll.control")
LEADER_KEY = "/atoll/control/leader"


class Election:
    """One instance's side of the election; :meth:`step` every ``ttl_s / 3`` seconds
    (a thread of the server), :meth:`leading` before each driver tick.

    Args:
        client: an etcd client (its requests time out; every failure is a
            :class:`RuntimeBackendError`).
        identity: this instance (shown as the key's value).
        ttl_s: the lease's TTL, 2..300 seconds.
        clock: monotonic seconds (tests).
    """

    def __init__(self, client: EtcdClient, identity: str, *, ttl_s: int = 10,
                 key: str = LEADER_KEY, clock: Callable[[], float] = time.monotonic) -> None:
        if not 2 <= ttl_s <= 300:
            raise ValueError("the election's lease TTL is 2..300 s")
        self.client, self.identity, self.ttl_s, self.key = client, identity, ttl_s, key
        self.clock = clock
        self._lease = 0
        self._until = 0.0  # leading until this (monotonic), if leading
        self._leader: str | None = None
        self._lock = threading.Lock()

    @property
    def every_s(self) -> float:
        return self.ttl_s / 3

    def leading(self) -> bool:
        """Whether this instance is the leader now (and for at least a moment more)."""
        with self._lock:
            return self.clock() < self._until

    def leader(self) -> str | None:
        """The leader's identity as last seen (None: none, or etcd unreachable)."""
        with self._lock:
            return self._leader

    def step(self) -> bool:
        """Renew or campaign once; whether this instance leads now.

        Raises:
            RuntimeBackendError: etcd cannot be reached (this instance then no longer
                counts itself leader once its term runs out).
        """
        sent = self.clock()
        try:
            if self._lease and self.client.lease_keepalive(self._lease) == 0:
                self._lease = 0  # expired (etcd restarted, or we were away too long)
            if not self._lease:
                self._lease, _ = self.client.lease_grant(self.ttl_s)
            won, resp = self.client.txn(
                [{"key": b64(self.key), "result": "EQUAL", "target": "CREATE",
                  "create_revision": "0"}],
                [{"request_put": {"key": b64(self.key), "value": b64(self.identity),
                                  "lease": str(self._lease)}}],
                [{"request_range": {"key": b64(self.key)}}])
        except RuntimeBackendError:
            with self._lock:
                self._leader = None
            raise
        holder, lease = self.identity, self._lease
        if not won:
            kvs = (((resp.get("responses") or [{}])[0]).get("response_range") or {}).get(
                "kvs") or []
            if kvs:
                kv = KeyValue.from_json(kvs[0])
                holder, lease = kv.value.decode(errors="replace"), kv.lease
            else:  # gone between the compare and the range: campaign again next step
                holder, lease = "", 0
        mine = lease == self._lease
        with self._lock:
            was = self.clock() < self._until
            self._until = sent + self.ttl_s / 2 if mine else 0.0
            self._leader = holder or None
        if mine and not was:
            log.info("rollout driver: this instance (%s) leads (etcd %s)", self.identity,
                     self.key)
        elif was and not mine:
            log.warning("rollout driver: this instance no longer leads (%s does)", holder)
        return mine

    def resign(self) -> None:
        """Give the leadership up now (the lease revoked: its key goes with it)."""
        with self._lock:
            self._until = 0.0
        lease, self._lease = self._lease, 0
        if lease:
            try:
                self.client.lease_revoke(lease)
            except RuntimeBackendError as exc:
                log.warning("rollout driver: could not resign in etcd (%s); the lease "
                            "expires by itself in %d s", exc, self.ttl_s)

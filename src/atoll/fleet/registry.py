"""Service discovery in etcd: a host's registration under its lease; reading and watching.

:class:`Registrar` is the host side (the agent): it holds one lease and keeps
every key of its host attached to it (layout in :mod:`atoll.fleet.discovery`).

* **Register**: grant a lease; read the host's keys; claim the host key in one
  transaction (``If(host key absent | its mod_revision as read) Then(Put every
  desired key with the lease, Delete stale keys)``). A host key held by another
  machine (another ``machine_id``, under a live lease) is a name conflict:
  nothing is written, :class:`HostStateError`. The same machine's older
  registration (the agent restarted before its lease expired) is taken over,
  and its old lease revoked afterwards.
* **Sync**: only what changed, in one transaction guarded by
  ``If(lease(host key) == ours)``; when that fails the registration was lost
  (expired while etcd was unreachable, deleted by an operator) and is made again.
* **Keep alive**: ``keepalive()`` renews the lease; a lease etcd no longer
  knows (TTL 0) means register again. ``reconcile()`` reads the host's keys back
  and repairs what an operator changed by hand.
* **Close**: revoke the lease, so a host shut down cleanly disappears at once.

:func:`read_services` and :func:`watch_services` are the readers
(``atoll fleet services``, the Prometheus SD endpoint).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator, Mapping
from typing import Any

from atoll.core.errors import HostStateError, RuntimeBackendError
from atoll.fleet.discovery import (
    PREFIX,
    Change,
    Entry,
    HostEntry,
    Services,
    changes,
    collect,
    host_key,
    host_prefix,
    parse_entry,
    plan_sync,
)
from atoll.fleet.etcdv3 import EtcdClient, KeyValue, b64

__all__ = ["Registrar", "read_services", "watch_services"]

log = logging.getLogger("atoll.fleet")


def _put(key: str, value: bytes, lease: int) -> dict[str, Any]:
    return {"request_put": {"key": b64(key), "value": b64(value), "lease": str(lease)}}


def _delete(key: str) -> dict[str, Any]:
    return {"request_delete_range": {"key": b64(key)}}


class Registrar:
    """One host's registration (its keys under one lease of ``ttl`` seconds).

    Not thread-safe: one thread (the agent's discovery loop) drives it.
    """

    def __init__(self, client: EtcdClient, customer: str, host: str, machine_id: str,
                 ttl: int) -> None:
        self.client = client
        self.customer, self.host, self.machine_id = customer, host, machine_id
        self.ttl = ttl
        self.lease = 0
        self.published: dict[str, bytes] = {}
        self.host_key = host_key(customer, host)
        self.prefix = host_prefix(customer, host)

    @property
    def registered(self) -> bool:
        return self.lease != 0

    def sync(self, desired: Mapping[str, bytes]) -> bool:
        """Make the host's keys ``desired`` (key -> value; the host key among them).

        Returns whether anything was written.

        Raises:
            RuntimeBackendError: etcd failed (nothing is assumed written; call again).
            HostStateError: another machine holds this host name (nothing written).
        """
        if self.host_key not in desired:
            raise ValueError("the host's own key must be among the desired keys")
        if not self.lease:
            self._register(desired)
            return True
        puts, deletes = plan_sync(self.published, desired)
        if not puts and not deletes:
            return False
        ok, _ = self.client.txn(
            [{"key": b64(self.host_key), "target": "LEASE", "result": "EQUAL",
              "lease": str(self.lease)}],
            [_put(k, v, self.lease) for k, v in puts.items()] + [_delete(k) for k in deletes])
        if ok:
            self.published = dict(desired)
            return True
        log.info("service discovery: %s/%s: the registration was lost (lease expired or keys "
                 "deleted); registering again", self.customer, self.host)
        self._forget()
        self._register(desired)
        return True

    def _forget(self) -> None:
        self.lease, self.published = 0, {}

    def _register(self, desired: Mapping[str, bytes]) -> None:
        lease, _ = self.client.lease_grant(self.ttl)
        try:
            kvs, _ = self.client.get_prefix(self.prefix)
            current = {kv.key: kv for kv in kvs}
            mine = current.get(self.host_key)
            if mine is not None:
                self._check_owner(mine)
                compare = {"key": b64(self.host_key), "target": "MOD", "result": "EQUAL",
                           "mod_revision": str(mine.mod_revision)}
            else:
                compare = {"key": b64(self.host_key), "target": "CREATE", "result": "EQUAL",
                           "create_revision": "0"}
            ops = [_put(k, v, lease) for k, v in sorted(desired.items())]
            ops += [_delete(k) for k in sorted(current) if k not in desired]
            ok, _ = self.client.txn([compare], ops)
            if not ok:
                raise RuntimeBackendError(
                    f"service discovery: {self.host_key} changed while registering; "
                    "will try again")
        except BaseException:
            with contextlib.suppress(RuntimeBackendError):  # else it expires by itself
                self.client.lease_revoke(lease)
            raise
        self.lease, self.published = lease, dict(desired)
        if mine is not None and mine.lease and mine.lease != lease:
            # the previous registration's lease: nothing is attached to it any more
            with contextlib.suppress(RuntimeBackendError):
                self.client.lease_revoke(mine.lease)

    def _check_owner(self, kv: KeyValue) -> None:
        try:
            entry = parse_entry(kv.key, kv.value)
        except ValueError:
            log.warning("service discovery: %s holds no valid host entry; replacing it", kv.key)
            return
        other = entry.machine_id if isinstance(entry, HostEntry) else ""
        if other != self.machine_id and kv.lease:
            raise HostStateError(
                f"service discovery: host name {self.host!r} of customer {self.customer!r} is "
                f"registered by another machine (machine id {other})",
                resolution="give each host its own name ([discovery] host in "
                           "/etc/atoll/fleet.toml); this host registers once the other's "
                           "lease expires")

    def keepalive(self) -> bool:
        """Renew the lease; False when etcd no longer knows it (the next sync registers).

        Raises:
            RuntimeBackendError: etcd failed (the lease may still be alive: try again).
        """
        if not self.lease:
            return False
        if self.client.lease_keepalive(self.lease) > 0:
            return True
        log.info("service discovery: %s/%s: lease %x expired; registering again",
                 self.customer, self.host, self.lease)
        self._forget()
        return False

    def reconcile(self) -> None:
        """Read the host's keys back, so that the next sync repairs what differs.

        Raises:
            RuntimeBackendError: etcd failed.
        """
        if not self.lease:
            return
        kvs, _ = self.client.get_prefix(self.prefix)
        current = {kv.key: kv for kv in kvs}
        mine = current.get(self.host_key)
        if mine is None or mine.lease != self.lease:
            self._forget()
            return
        self.published = {k: (kv.value if kv.lease == self.lease else b"") for k, kv in
                          current.items()}

    def close(self, *, revoke: bool = True) -> None:
        """Give the registration up: revoke the lease (every key goes at once) unless not
        ``revoke`` (then the keys go when the lease expires)."""
        lease, self.lease, self.published = self.lease, 0, {}
        if lease and revoke:
            try:
                self.client.lease_revoke(lease)
            except RuntimeBackendError as exc:
                log.debug("service discovery: revoking the lease failed: %s", exc.brief)


def read_services(client: EtcdClient) -> tuple[Services, int]:
    """Every entry under the prefix, and the etcd revision they are from.

    Raises:
        RuntimeBackendError: etcd failed.
    """
    kvs, revision = client.get_prefix(PREFIX)
    return collect((kv.key, kv.value) for kv in kvs), revision


def watch_services(client: EtcdClient, *, stop: threading.Event | None = None,
                   retry_seconds: float = 2.0, idle_timeout: float = 60.0
                   ) -> Iterator[list[Change]]:
    """The current entries (as ``ADDED``), then every change, until ``stop`` is set.

    Each etcd revision yields one list of changes. When the watch ends (etcd
    restarted or went away, a compaction, ``idle_timeout`` seconds without
    news) the prefix is read again and only what differs is reported, so no
    change is lost and none is reported twice; an unreachable etcd is retried
    every ``retry_seconds`` (the first read's failure is raised).

    Raises:
        RuntimeBackendError: etcd could not be read at the start.
    """
    stop = stop or threading.Event()
    services, revision = read_services(client)
    known: dict[str, Entry] = services.entries()
    first = changes({}, known)
    if first:
        yield first
    catch_up = False
    while not stop.is_set():
        try:
            if catch_up:  # the watch ended, or etcd failed: read everything again
                services, revision = read_services(client)
                now = services.entries()
                found = changes(known, now)
                known, catch_up = now, False
                if found:
                    yield found
            for events in client.watch_prefix(PREFIX, revision + 1, idle_timeout=idle_timeout):
                now = dict(known)
                for ev in events:
                    revision = max(revision, ev.kv.mod_revision)
                    if ev.type == "DELETE":
                        now.pop(ev.kv.key, None)
                        continue
                    try:
                        now[ev.kv.key] = parse_entry(ev.kv.key, ev.kv.value)
                    except ValueError:
                        now.pop(ev.kv.key, None)
                found = changes(known, now)
                known = now
                if found:
                    yield found
                if stop.is_set():
                    return
            catch_up = True
        except RuntimeBackendError as exc:
            log.debug("service discovery: watch: %s; retrying", exc.brief)
            catch_up = True
            stop.wait(retry_seconds)

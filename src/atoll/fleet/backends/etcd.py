"""FleetLock state in etcd v3, through its JSON gateway (``/v3/kv/...`` over HTTP).

Key layout: airlock's (``internal/lock/lock.go``), one key per group, so that
airlock servers and atoll servers on one etcd share the same slots::

    com.coreos.airlock/groups/<url.QueryEscape(group)>/v1/semaphore
        {"total_slots":2,"holders":["<client id>",...],"atoll_since":{"<client id>":"..."}}

    /atoll/fleetlock/<group>/semaphore        atoll's old key (before it used airlock's
                                              layout): read, merged, deleted by the next write

The value is ``Semaphore.to_json`` (airlock's JSON; airlock ignores
``atoll_since``). Every change is one etcd transaction::

    If(mod_revision(key) == seen          # create_revision == 0 for a group's first write
       and <the old key as seen>)         # absent, or its mod_revision when it was there
    Then(Put(key, new) [, Delete(old key)])

airlock compares the key's ``version`` instead of its ``mod_revision``; both
change on every write, so each side's compare-and-swap fails whenever the other
wrote, and neither loses an update. A change that changes nothing writes nothing.
"""

from __future__ import annotations

import base64
import urllib.parse
from typing import Any

from atoll.fleet.backends import Backend
from atoll.fleet.etcdv3 import EtcdClient, b64
from atoll.fleet.semaphore import Semaphore, merge

__all__ = ["KEY_PREFIX", "KEY_TEMPLATE", "LEGACY_PREFIX", "EtcdBackend", "legacy_key",
           "query_escape", "semaphore_key"]

KEY_TEMPLATE = "com.coreos.airlock/groups/{}/v1/semaphore"
KEY_PREFIX = "com.coreos.airlock/groups/"
LEGACY_PREFIX = "/atoll/fleetlock/"
_REV_BITS = 64  # a version packs the key's mod_revision and the old key's (etcd: int64)


def query_escape(group: str) -> str:
    """Go's ``url.QueryEscape``: bytes outside ``A-Za-z0-9-_.~`` as ``%XX``, space as ``+``."""
    return urllib.parse.quote_plus(group, safe="")


def semaphore_key(group: str) -> str:
    """The etcd key of a group's semaphore (airlock's)."""
    return KEY_TEMPLATE.format(query_escape(group))


def legacy_key(group: str) -> str:
    """atoll's old key of a group's semaphore (still read, deleted on the next write)."""
    return f"{LEGACY_PREFIX}{group}/semaphore"


def _pack(rev: int, legacy_rev: int) -> int:
    return rev | (legacy_rev << _REV_BITS)


def _unpack(version: int) -> tuple[int, int]:
    return version & ((1 << _REV_BITS) - 1), version >> _REV_BITS


class EtcdBackend(Backend):
    """Semaphores in etcd (3.3+), one key per group, compare-and-swap by mod_revision.

    Speaks etcd's v3 JSON gateway through :class:`atoll.fleet.etcdv3.EtcdClient`
    (kept-alive connections, lighter than a general HTTP library, which matters
    when hundreds of hosts hand slots over at once). ``location`` is one URL or
    several separated by commas (an etcd cluster's members): requests go to one
    member and move to the next when it cannot be reached.
    """

    kind = "etcd"

    def __init__(self, location: str, *, timeout: float | None = None,
                 client_cert: str | None = None, client_key: str | None = None) -> None:
        super().__init__()
        # an unreachable etcd fails here, early
        self._etcd = EtcdClient(location, timeout=timeout, client_cert=client_cert,
                                client_key=client_key)
        self._where = self._etcd.where

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._etcd.post(path, body)

    def load(self, group: str) -> tuple[Semaphore | None, int]:
        key, old = semaphore_key(group), legacy_key(group)
        # both keys in one read-only transaction: one round trip, one consistent revision
        resp = self._post("/kv/txn", {"success": [{"request_range": {"key": b64(key)}},
                                                  {"request_range": {"key": b64(old)}}]})
        found: list[tuple[Semaphore | None, int]] = []
        for name, part in zip((key, old), resp.get("responses") or [{}, {}], strict=True):
            kvs = (part.get("response_range") or {}).get("kvs") or []
            if not kvs:
                found.append((None, 0))
                continue
            value = base64.b64decode(kvs[0].get("value", ""))
            found.append((Semaphore.from_json(value, where=f"{self._where} key {name}"),
                          int(kvs[0]["mod_revision"])))
        (sem, rev), (old_sem, old_rev) = found
        if old_sem is not None:
            sem = old_sem if sem is None else merge(sem, old_sem)
        return sem, _pack(rev, old_rev)

    def store(self, group: str, sem: Semaphore, version: int) -> int | None:
        rev, old_rev = _unpack(version)
        key, old = b64(semaphore_key(group)), b64(legacy_key(group))
        if rev == 0:
            compare = [{"key": key, "result": "EQUAL", "target": "CREATE", "create_revision": "0"}]
        else:
            compare = [{"key": key, "result": "EQUAL", "target": "MOD", "mod_revision": str(rev)}]
        success: list[dict[str, Any]] = [{"request_put": {"key": key,
                                                          "value": b64(sem.to_json())}}]
        if old_rev == 0:
            compare.append({"key": old, "result": "EQUAL", "target": "CREATE",
                            "create_revision": "0"})
        else:  # the old key is merged into this write and goes away with it
            compare.append({"key": old, "result": "EQUAL", "target": "MOD",
                            "mod_revision": str(old_rev)})
            success.append({"request_delete_range": {"key": old}})
        resp = self._post("/kv/txn", {"compare": compare, "success": success, "failure": []})
        if not resp.get("succeeded", False):  # proto3 JSON leaves out a false bool
            return None
        return int(resp["header"]["revision"])  # the put's revision: the key's mod_revision

    def _keys(self, prefix: str) -> list[str]:
        return [kv.key for kv in self._etcd.get_prefix(prefix, keys_only=True)[0]]

    def groups(self) -> list[str]:
        found = set()
        for key in self._keys(KEY_PREFIX):
            escaped, _, leaf = key[len(KEY_PREFIX):].partition("/")
            if leaf == "v1/semaphore":
                found.add(urllib.parse.unquote_plus(escaped))
        for key in self._keys(LEGACY_PREFIX):
            group, _, leaf = key[len(LEGACY_PREFIX):].partition("/")
            if leaf == "semaphore":
                found.add(group)
        return sorted(found)

    def describe(self) -> str:
        return self._where

    def close(self) -> None:
        self._etcd.close()

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
import http.client
import json
import ssl
import threading
import urllib.parse
from typing import Any

from atoll.core.errors import InputError, RuntimeBackendError
from atoll.fleet.backends import Backend
from atoll.fleet.semaphore import Semaphore, merge

__all__ = ["KEY_PREFIX", "KEY_TEMPLATE", "LEGACY_PREFIX", "EtcdBackend", "legacy_key",
           "query_escape", "semaphore_key"]

KEY_TEMPLATE = "com.coreos.airlock/groups/{}/v1/semaphore"
KEY_PREFIX = "com.coreos.airlock/groups/"
LEGACY_PREFIX = "/atoll/fleetlock/"
TIMEOUT = 5.0
POOL_SIZE = 16
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


def _b64(text: str | bytes) -> str:
    raw = text.encode() if isinstance(text, str) else text
    return base64.b64encode(raw).decode()


def _prefix_end(prefix: str) -> str:
    raw = bytearray(prefix.encode())
    raw[-1] += 1
    return _b64(bytes(raw))


def _pack(rev: int, legacy_rev: int) -> int:
    return rev | (legacy_rev << _REV_BITS)


def _unpack(version: int) -> tuple[int, int]:
    return version & ((1 << _REV_BITS) - 1), version >> _REV_BITS


class _Endpoint:
    def __init__(self, location: str) -> None:
        url = urllib.parse.urlsplit(location)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise InputError(f"etcd endpoint {location!r} is not an http(s) URL",
                             resolution="give it as http://HOST:PORT, e.g. http://127.0.0.1:2379")
        try:
            port = url.port or 2379
        except ValueError as exc:
            raise InputError(f"etcd endpoint {location!r}: {exc}") from exc
        self.scheme, self.host, self.port = url.scheme, url.hostname, port
        self.name = f"{url.scheme}://{url.hostname}:{port}"


class EtcdBackend(Backend):
    """Semaphores in etcd (3.3+), one key per group, compare-and-swap by mod_revision.

    Speaks etcd's v3 JSON gateway over a small pool of kept-alive HTTP
    connections (lighter than a general HTTP library, which matters when
    hundreds of hosts hand slots over at once). ``location`` is one URL or
    several separated by commas (an etcd cluster's members): requests go to one
    member and move to the next when it cannot be reached.
    """

    kind = "etcd"

    def __init__(self, location: str, *, timeout: float | None = None,
                 client_cert: str | None = None, client_key: str | None = None) -> None:
        super().__init__()
        self._endpoints = [_Endpoint(u.strip()) for u in location.split(",") if u.strip()]
        if not self._endpoints:
            raise InputError("no etcd endpoint given",
                             resolution="give it as http://HOST:PORT, e.g. http://127.0.0.1:2379")
        self._timeout = timeout or TIMEOUT
        self._tls = ssl.create_default_context()
        if client_cert:
            try:
                self._tls.load_cert_chain(client_cert, client_key)
            except (OSError, ssl.SSLError) as exc:
                raise InputError(f"etcd client certificate {client_cert}: cannot load it",
                                 details=str(exc)) from exc
        self._current = 0
        self._where = "etcd at " + ", ".join(e.name for e in self._endpoints)
        # kept-alive connections (endpoint index, connection), at most POOL_SIZE
        self._idle: list[tuple[int, http.client.HTTPConnection]] = []
        self._pool_lock = threading.Lock()
        self._closed = False
        self._api = self._discover_api()  # an unreachable etcd fails here, early

    def _new_conn(self, ep: _Endpoint) -> http.client.HTTPConnection:
        if ep.scheme == "https":
            return http.client.HTTPSConnection(ep.host, ep.port, timeout=self._timeout,
                                               context=self._tls)
        return http.client.HTTPConnection(ep.host, ep.port, timeout=self._timeout)

    def _request(self, method: str, path: str, body: bytes | None) -> Any:
        error: BaseException | None = None
        for _ in self._endpoints:  # each member once, starting with the one that worked last
            with self._pool_lock:
                index = self._current
            try:
                return self._request_on(index, method, path, body)
            except (OSError, http.client.HTTPException) as exc:
                error = exc
                with self._pool_lock:  # that member is unreachable: the next one
                    if self._current == index:
                        self._current = (index + 1) % len(self._endpoints)
        assert error is not None
        raise self._fail(error) from error

    def _request_on(self, index: int, method: str, path: str, body: bytes | None) -> Any:
        for attempt in (1, 2):  # a pooled connection etcd closed meanwhile: retry on a new one
            conn = None
            with self._pool_lock:
                for i in range(len(self._idle) - 1, -1, -1):  # the most recently used first
                    if self._idle[i][0] == index:
                        conn = self._idle.pop(i)[1]
                        break
            fresh = conn is None
            conn = conn or self._new_conn(self._endpoints[index])
            try:
                conn.request(method, path, body=body,
                             headers={"Content-Type": "application/json"})
                resp = conn.getresponse()
                raw = resp.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                conn.close()
                if fresh or attempt == 2:
                    raise
                continue
            except (OSError, http.client.HTTPException):
                conn.close()
                raise
            with self._pool_lock:
                if len(self._idle) < POOL_SIZE and not resp.will_close and not self._closed:
                    self._idle.append((index, conn))
                else:
                    conn.close()
            break
        if resp.status != 200:
            raise RuntimeBackendError(
                f"{self._where} answered HTTP {resp.status} to {path}",
                details=raw[:2000].decode(errors="replace"),
                resolution="check etcd's health and log (etcdctl endpoint health)")
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise RuntimeBackendError(f"{self._where} answered {path} with no JSON",
                                      details=raw[:500].decode(errors="replace")) from exc

    def _fail(self, exc: BaseException) -> RuntimeBackendError:
        return RuntimeBackendError(
            f"{self._where} failed: {type(exc).__name__}",
            details=str(exc)[:2000],
            resolution="check that etcd is running and healthy (etcdctl endpoint health)",
        )

    def _discover_api(self) -> str:
        info = self._request("GET", "/version", None)
        try:
            major, minor = (int(x) for x in str(info["etcdserver"]).split(".")[:2])
        except (KeyError, ValueError, TypeError) as exc:
            raise RuntimeBackendError(f"{self._where}: cannot tell its version",
                                      details=str(info)[:500]) from exc
        if (major, minor) >= (3, 4):
            return "/v3/"
        if (major, minor) == (3, 3):
            return "/v3beta/"
        raise RuntimeBackendError(f"{self._where} runs etcd {major}.{minor}; 3.3 or later needed",
                                  resolution="upgrade etcd (Debian 12: etcd-server 3.4)")

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = self._request("POST", self._api + path.lstrip("/"),
                                               json.dumps(body).encode())
        return result

    def load(self, group: str) -> tuple[Semaphore | None, int]:
        key, old = semaphore_key(group), legacy_key(group)
        # both keys in one read-only transaction: one round trip, one consistent revision
        resp = self._post("/kv/txn", {"success": [{"request_range": {"key": _b64(key)}},
                                                  {"request_range": {"key": _b64(old)}}]})
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
        key, old = _b64(semaphore_key(group)), _b64(legacy_key(group))
        if rev == 0:
            compare = [{"key": key, "result": "EQUAL", "target": "CREATE", "create_revision": "0"}]
        else:
            compare = [{"key": key, "result": "EQUAL", "target": "MOD", "mod_revision": str(rev)}]
        success: list[dict[str, Any]] = [{"request_put": {"key": key,
                                                          "value": _b64(sem.to_json())}}]
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
        resp = self._post("/kv/range", {"key": _b64(prefix), "range_end": _prefix_end(prefix),
                                        "keys_only": True})
        return [base64.b64decode(kv["key"]).decode(errors="replace")
                for kv in resp.get("kvs") or []]

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
        with self._pool_lock:
            self._closed = True
            for _, conn in self._idle:
                conn.close()
            self._idle.clear()

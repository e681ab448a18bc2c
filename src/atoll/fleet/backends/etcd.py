"""FleetLock state in etcd v3, through its JSON gateway (``/v3/kv/...`` over HTTP).

Key layout (one key per group; the value is the semaphore's canonical JSON)::

    /atoll/fleetlock/<group>/semaphore
        {"holders":[{"id":"<client id>","since":"2026-11-26T15:00:00Z"},...],
         "total_slots":2}

Every change is one etcd transaction: ``If(mod_revision(key) == seen)
Then(Put(key, new))`` (``create_revision == 0`` for a group's first write), so
two servers, or a server and ``atoll fleetlock release``, never lose an update:
the loser of a race re-reads and tries again. Group names match
``^[a-zA-Z0-9.-]+$``, so they are safe path segments.
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
from atoll.fleet.semaphore import Semaphore

__all__ = ["KEY_PREFIX", "EtcdBackend", "semaphore_key"]

KEY_PREFIX = "/atoll/fleetlock/"
TIMEOUT = 5.0
POOL_SIZE = 16


def semaphore_key(group: str) -> str:
    """The etcd key of a group's semaphore."""
    return f"{KEY_PREFIX}{group}/semaphore"


def _b64(text: str | bytes) -> str:
    raw = text.encode() if isinstance(text, str) else text
    return base64.b64encode(raw).decode()


def _prefix_end(prefix: str) -> str:
    raw = bytearray(prefix.encode())
    raw[-1] += 1
    return _b64(bytes(raw))


class EtcdBackend(Backend):
    """Semaphores in etcd (3.3+), one key per group, compare-and-swap by mod_revision.

    Speaks etcd's v3 JSON gateway over a small pool of kept-alive HTTP
    connections (lighter than a general HTTP library, which matters when
    hundreds of hosts hand slots over at once).
    """

    kind = "etcd"

    def __init__(self, location: str) -> None:
        super().__init__()
        url = urllib.parse.urlsplit(location)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise InputError(f"etcd endpoint {location!r} is not an http(s) URL",
                             resolution="give it as http://HOST:PORT, e.g. http://127.0.0.1:2379")
        self._host, self._scheme = url.hostname, url.scheme
        self._port = url.port or 2379
        self._where = f"etcd at {url.scheme}://{url.hostname}:{self._port}"
        self._idle: list[http.client.HTTPConnection] = []  # kept-alive, at most POOL_SIZE
        self._pool_lock = threading.Lock()
        self._closed = False
        self._api = self._discover_api()  # an unreachable etcd fails here, early

    def _new_conn(self) -> http.client.HTTPConnection:
        if self._scheme == "https":
            return http.client.HTTPSConnection(self._host, self._port, timeout=TIMEOUT,
                                               context=ssl.create_default_context())
        return http.client.HTTPConnection(self._host, self._port, timeout=TIMEOUT)

    def _request(self, method: str, path: str, body: bytes | None) -> Any:
        for attempt in (1, 2):  # a pooled connection etcd closed meanwhile: retry on a new one
            with self._pool_lock:
                conn = self._idle.pop() if self._idle else None
            fresh = conn is None
            conn = conn or self._new_conn()
            try:
                conn.request(method, path, body=body,
                             headers={"Content-Type": "application/json"})
                resp = conn.getresponse()
                raw = resp.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as exc:
                conn.close()
                if fresh or attempt == 2:
                    raise self._fail(exc) from exc
                continue
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                raise self._fail(exc) from exc
            with self._pool_lock:
                if len(self._idle) < POOL_SIZE and not resp.will_close and not self._closed:
                    self._idle.append(conn)
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
        key = semaphore_key(group)
        resp = self._post("/kv/range", {"key": _b64(key)})
        kvs = resp.get("kvs") or []
        if not kvs:
            return None, 0
        value = base64.b64decode(kvs[0].get("value", ""))
        return Semaphore.from_json(value, where=f"{self._where} key {key}"), int(
            kvs[0]["mod_revision"]
        )

    def store(self, group: str, sem: Semaphore, version: int) -> int | None:
        key = _b64(semaphore_key(group))
        if version == 0:
            compare = {"key": key, "result": "EQUAL", "target": "CREATE", "create_revision": "0"}
        else:
            compare = {"key": key, "result": "EQUAL", "target": "MOD",
                       "mod_revision": str(version)}
        txn = {"compare": [compare],
               "success": [{"request_put": {"key": key, "value": _b64(sem.to_json())}}],
               "failure": []}
        resp = self._post("/kv/txn", txn)
        if not resp.get("succeeded", False):  # proto3 JSON leaves out a false bool
            return None
        return int(resp["header"]["revision"])  # the put's revision: the key's mod_revision

    def groups(self) -> list[str]:
        resp = self._post("/kv/range", {"key": _b64(KEY_PREFIX),
                                        "range_end": _prefix_end(KEY_PREFIX), "keys_only": True})
        found = set()
        for kv in resp.get("kvs") or []:
            key = base64.b64decode(kv["key"]).decode()
            rest = key[len(KEY_PREFIX):]
            group, _, leaf = rest.partition("/")
            if leaf == "semaphore":
                found.add(group)
        return sorted(found)

    def describe(self) -> str:
        return self._where

    def close(self) -> None:
        with self._pool_lock:
            self._closed = True
            for conn in self._idle:
                conn.close()
            self._idle.clear()

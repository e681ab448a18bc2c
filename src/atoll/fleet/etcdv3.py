"""A small etcd v3 client over etcd's JSON gateway (``/v3/...`` over HTTP/1.1).

The one way atoll talks to etcd: FleetLock's semaphores
(``backends/etcd.py``) and service discovery (``registry.py``) both go through
:class:`EtcdClient`. It speaks the gateway that every etcd since 3.3 serves on
its client port (``/v3beta/`` on 3.3, ``/v3/`` from 3.4), over a small pool of
kept-alive connections with the standard library only: lighter than a gRPC
stack, which matters in the host agent and when hundreds of hosts talk to one
etcd at once.

Keys and values travel base64-encoded, 64-bit integers as strings, and proto3
leaves out fields at their default (a false ``succeeded``, a zero ``TTL``, a
``PUT`` event's ``type``). Sources: etcd's ``api/etcdserverpb/rpc.proto`` and
"gRPC gateway" (etcd.io/docs/v3.4/dev-guide/api_grpc_gateway/).

``location`` is one URL or several separated by commas (an etcd cluster's
members): a request goes to one member and moves to the next when it cannot be
reached. Every failure is a :class:`RuntimeBackendError` naming the members.
"""

from __future__ import annotations

import base64
import http.client
import json
import ssl
import threading
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from atoll.core.errors import InputError, RuntimeBackendError

__all__ = ["TIMEOUT", "EtcdClient", "KeyValue", "WatchEvent", "b64", "prefix_end", "uses_tls"]

TIMEOUT = 5.0
POOL_SIZE = 16
_NOT_FOUND = 404  # the gateway's status for gRPC NotFound (a lease that is gone)


def b64(text: str | bytes) -> str:
    """``text`` (UTF-8 when a str) in base64, as the gateway wants keys and values."""
    raw = text.encode() if isinstance(text, str) else text
    return base64.b64encode(raw).decode()


def prefix_end(prefix: str) -> str:
    """The base64 ``range_end`` that makes a range cover every key under ``prefix``."""
    raw = bytearray(prefix.encode())
    raw[-1] += 1
    return b64(bytes(raw))


@dataclass(frozen=True)
class KeyValue:
    """One key as etcd stores it (``mvccpb.KeyValue``); ``lease`` 0: none."""

    key: str
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int

    @classmethod
    def from_json(cls, kv: dict[str, Any]) -> KeyValue:
        return cls(key=base64.b64decode(kv.get("key", "")).decode(errors="replace"),
                   value=base64.b64decode(kv.get("value", "")),
                   create_revision=int(kv.get("create_revision", 0)),
                   mod_revision=int(kv.get("mod_revision", 0)),
                   version=int(kv.get("version", 0)), lease=int(kv.get("lease", 0)))


@dataclass(frozen=True)
class WatchEvent:
    """A change seen by a watch: ``type`` ``PUT`` or ``DELETE``; ``kv.value`` empty on DELETE."""

    type: str
    kv: KeyValue


class _Endpoint:
    """One etcd member, written as airlock's etcd client (clientv3 3.5,
    ``client/v3/internal/endpoint``) reads it: ``http://HOST:PORT`` (plain),
    ``https://HOST:PORT`` (TLS), or ``HOST:PORT`` without a scheme. clientv3 dials a
    scheme-less endpoint with the client's TLS configuration when it has one, and airlock
    always gives it one (``transport.TLSInfo.ClientConfig()`` is never nil), so airlock
    speaks TLS to it: atoll does the same. A ``unix://`` socket (which clientv3 also
    takes) is refused with a clear error: atoll reaches etcd's HTTP gateway over TCP."""

    def __init__(self, location: str) -> None:
        self.bare = "://" not in location
        if location.startswith(("unix:", "unixs:")):
            raise InputError(f"etcd endpoint {location!r}: atoll does not reach etcd over a "
                             "unix socket", resolution="give the member's client URL, e.g. "
                             "https://127.0.0.1:2379 (or http:// for a plain etcd)")
        try:
            url = urllib.parse.urlsplit("https://" + location if self.bare else location)
            port = url.port
        except ValueError as exc:
            raise InputError(f"etcd endpoint {location!r}: {exc}") from exc
        if url.scheme not in ("http", "https") or not url.hostname or (
                self.bare and (port is None or url.path or url.query or url.fragment)):
            raise InputError(f"etcd endpoint {location!r} is not an http(s) URL or HOST:PORT",
                             resolution="give it as http://HOST:PORT (plain), https://HOST:PORT "
                             "or HOST:PORT (TLS, as airlock), e.g. http://127.0.0.1:2379")
        self.scheme, self.host, self.port = url.scheme, url.hostname, port or 2379
        self.name = f"{url.scheme}://{url.hostname}:{self.port}"


def uses_tls(location: str) -> bool:
    """Whether atoll (as airlock) speaks TLS to an etcd endpoint: ``https://`` or no scheme."""
    location = location.strip()
    return location.startswith("https://") or "://" not in location


class EtcdClient:
    """etcd v3 (3.3+) through its JSON gateway.

    Args:
        location: ``http(s)://HOST:PORT``, or several separated by commas.
        timeout: seconds each request may take (default 5).
        client_cert, client_key: a TLS client certificate for ``https://`` members.
        connect: ask etcd its version now, so that an unreachable etcd fails here.

    Raises:
        InputError: a location is not an http(s) URL; the certificate does not load.
        RuntimeBackendError: (``connect``) etcd cannot be reached or is older than 3.3.
    """

    def __init__(self, location: str, *, timeout: float | None = None,
                 client_cert: str | None = None, client_key: str | None = None,
                 connect: bool = True) -> None:
        self._endpoints = [_Endpoint(u.strip()) for u in location.split(",") if u.strip()]
        if not self._endpoints:
            raise InputError("no etcd endpoint given",
                             resolution="give it as http://HOST:PORT, e.g. http://127.0.0.1:2379")
        self.timeout = timeout or TIMEOUT
        self._tls = ssl.create_default_context()
        if client_cert:
            try:
                self._tls.load_cert_chain(client_cert, client_key)
            except (OSError, ssl.SSLError) as exc:
                raise InputError(f"etcd client certificate {client_cert}: cannot load it",
                                 details=str(exc)) from exc
        self._current = 0
        self.where = "etcd at " + ", ".join(e.name for e in self._endpoints)
        # kept-alive connections (endpoint index, connection), at most POOL_SIZE
        self._idle: list[tuple[int, http.client.HTTPConnection]] = []
        self._pool_lock = threading.Lock()
        self._closed = False
        self._api: str | None = None
        if connect:
            self._api = self._discover_api()

    @property
    def endpoints(self) -> list[str]:
        """The members' URLs, as given."""
        return [e.name for e in self._endpoints]

    # -- transport -----------------------------------------------------------

    def _new_conn(self, ep: _Endpoint, timeout: float | None) -> http.client.HTTPConnection:
        if ep.scheme == "https":
            return http.client.HTTPSConnection(ep.host, ep.port, timeout=timeout,
                                               context=self._tls)
        return http.client.HTTPConnection(ep.host, ep.port, timeout=timeout)

    def _request(self, method: str, path: str, body: bytes | None, *,
                 missing_ok: bool = False) -> Any:
        error: BaseException | None = None
        for _ in self._endpoints:  # each member once, starting with the one that worked last
            with self._pool_lock:
                index = self._current
            try:
                return self._request_on(index, method, path, body, missing_ok)
            except (OSError, http.client.HTTPException) as exc:
                error = exc
                with self._pool_lock:  # that member is unreachable: the next one
                    if self._current == index:
                        self._current = (index + 1) % len(self._endpoints)
        assert error is not None
        raise self._fail(error) from error

    def _request_on(self, index: int, method: str, path: str, body: bytes | None,
                    missing_ok: bool) -> Any:
        for attempt in (1, 2):  # a pooled connection etcd closed meanwhile: retry on a new one
            conn = None
            with self._pool_lock:
                for i in range(len(self._idle) - 1, -1, -1):  # the most recently used first
                    if self._idle[i][0] == index:
                        conn = self._idle.pop(i)[1]
                        break
            fresh = conn is None
            conn = conn or self._new_conn(self._endpoints[index], self.timeout)
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
        if resp.status == _NOT_FOUND and missing_ok:
            return {}
        if resp.status != 200:
            raise RuntimeBackendError(
                f"{self.where} answered HTTP {resp.status} to {path}",
                details=raw[:2000].decode(errors="replace"),
                resolution="check etcd's health and log (etcdctl endpoint health)")
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise RuntimeBackendError(f"{self.where} answered {path} with no JSON",
                                      details=raw[:500].decode(errors="replace")) from exc

    def _fail(self, exc: BaseException) -> RuntimeBackendError:
        hint = "check that etcd is running and healthy (etcdctl endpoint health)"
        # a TLS handshake with a plain etcd fails as an SSL error, or (depending on when
        # etcd gives up on the ClientHello) as a reset connection
        tls_refused = isinstance(exc, ssl.SSLError | ConnectionResetError |
                                 ConnectionAbortedError)
        if tls_refused and any(e.bare for e in self._endpoints):
            hint += ("; an endpoint without a scheme is used with TLS, as airlock uses it: "
                     "write http://HOST:PORT for an etcd without TLS")
        return RuntimeBackendError(f"{self.where} failed: {type(exc).__name__}",
                                   details=str(exc)[:2000], resolution=hint)

    def _discover_api(self) -> str:
        info = self._request("GET", "/version", None)
        try:
            major, minor = (int(x) for x in str(info["etcdserver"]).split(".")[:2])
        except (KeyError, ValueError, TypeError) as exc:
            raise RuntimeBackendError(f"{self.where}: cannot tell its version",
                                      details=str(info)[:500]) from exc
        if (major, minor) >= (3, 4):
            return "/v3/"
        if (major, minor) == (3, 3):
            return "/v3beta/"
        raise RuntimeBackendError(f"{self.where} runs etcd {major}.{minor}; 3.3 or later needed",
                                  resolution="upgrade etcd (Debian 12: etcd-server 3.4)")

    @property
    def api(self) -> str:
        """The gateway's path prefix (``/v3/``), asked from etcd on first use."""
        if self._api is None:
            self._api = self._discover_api()
        return self._api

    def post(self, path: str, body: dict[str, Any], *, missing_ok: bool = False
             ) -> dict[str, Any]:
        """POST ``body`` to the gateway's ``path`` (``/kv/txn``...); its JSON answer.

        Raises:
            RuntimeBackendError: no member answered, or it answered an error
                (``missing_ok``: a 404, "not found", is answered ``{}`` instead).
        """
        result: dict[str, Any] = self._request("POST", self.api + path.lstrip("/"),
                                               json.dumps(body).encode(), missing_ok=missing_ok)
        return result

    # -- keys ----------------------------------------------------------------

    def get(self, key: str) -> KeyValue | None:
        """The key, or None when it does not exist."""
        kvs = self.post("/kv/range", {"key": b64(key)}).get("kvs") or []
        return KeyValue.from_json(kvs[0]) if kvs else None

    def get_prefix(self, prefix: str, *, keys_only: bool = False
                   ) -> tuple[list[KeyValue], int]:
        """Every key under ``prefix``, sorted by key, and the store's revision they are from."""
        resp = self.post("/kv/range", {"key": b64(prefix), "range_end": prefix_end(prefix),
                                       "keys_only": keys_only})
        kvs = [KeyValue.from_json(kv) for kv in resp.get("kvs") or []]
        return kvs, int(resp.get("header", {}).get("revision", 0))

    def put(self, key: str, value: str | bytes, *, lease: int = 0) -> int:
        """Write ``key``; the store's revision after the write."""
        body: dict[str, Any] = {"key": b64(key), "value": b64(value)}
        if lease:
            body["lease"] = str(lease)
        return int(self.post("/kv/put", body).get("header", {}).get("revision", 0))

    def delete(self, key: str, *, prefix: bool = False) -> int:
        """Delete ``key`` (``prefix``: every key under it); how many were deleted."""
        body: dict[str, Any] = {"key": b64(key)}
        if prefix:
            body["range_end"] = prefix_end(key)
        return int(self.post("/kv/deleterange", body).get("deleted", 0))

    def txn(self, compare: list[dict[str, Any]], success: list[dict[str, Any]],
            failure: list[dict[str, Any]] | None = None) -> tuple[bool, dict[str, Any]]:
        """One transaction (compare entries and operations in the gateway's JSON form);
        whether the compare held, and etcd's whole answer."""
        resp = self.post("/kv/txn", {"compare": compare, "success": success,
                                     "failure": failure or []})
        return bool(resp.get("succeeded", False)), resp  # proto3 JSON leaves out a false bool

    # -- leases --------------------------------------------------------------

    def lease_grant(self, ttl: int) -> tuple[int, int]:
        """A new lease of ``ttl`` seconds: (its id, the TTL etcd granted)."""
        resp = self.post("/lease/grant", {"TTL": str(ttl)})
        if resp.get("error"):
            raise RuntimeBackendError(f"{self.where} refused a lease: {resp['error']}")
        return int(resp["ID"]), int(resp.get("TTL", ttl))

    def lease_keepalive(self, lease: int) -> int:
        """Renew ``lease`` once; the TTL it has again, 0 when it is gone (expired, revoked)."""
        resp = self.post("/lease/keepalive", {"ID": str(lease)})
        return max(0, int((resp.get("result") or {}).get("TTL", 0)))

    def lease_revoke(self, lease: int) -> None:
        """Revoke ``lease``: every key attached to it is deleted. A lease already gone is fine."""
        self.post("/lease/revoke", {"ID": str(lease)}, missing_ok=True)

    # -- watch ---------------------------------------------------------------

    def watch_prefix(self, prefix: str, start_revision: int, *, idle_timeout: float = 60.0
                     ) -> Iterator[list[WatchEvent]]:
        """Changes under ``prefix`` from ``start_revision`` on, a batch a revision.

        The watch holds its own connection (not pooled). It ends (the generator
        returns) when etcd closes the stream, cancels the watch (a compacted
        ``start_revision``), or sends nothing for ``idle_timeout`` seconds: the
        caller reads the keys again and watches from there.

        Raises:
            RuntimeBackendError: no member could be reached.
        """
        body = json.dumps({"create_request": {
            "key": b64(prefix), "range_end": prefix_end(prefix),
            "start_revision": str(start_revision)}}).encode()
        conn: http.client.HTTPConnection | None = None
        error: BaseException | None = None
        for i in range(len(self._endpoints)):
            ep = self._endpoints[(self._current + i) % len(self._endpoints)]
            conn = self._new_conn(ep, self.timeout)
            try:
                conn.request("POST", self.api + "watch", body=body,
                             headers={"Content-Type": "application/json"})
                resp = conn.getresponse()
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                conn, error = None, exc
                continue
            break
        if conn is None:
            assert error is not None
            raise self._fail(error) from error
        try:
            if resp.status != 200:
                raise RuntimeBackendError(f"{self.where} answered HTTP {resp.status} to watch",
                                          details=resp.read(2000).decode(errors="replace"))
            if conn.sock is not None:
                conn.sock.settimeout(idle_timeout)
            while True:
                try:
                    line = resp.readline()
                except (OSError, http.client.HTTPException):
                    return  # idle too long, or the member went away
                if not line:
                    return
                try:
                    msg = json.loads(line).get("result") or {}
                except ValueError:
                    return
                if msg.get("canceled") or msg.get("compact_revision"):
                    return
                events = [WatchEvent(e.get("type", "PUT"), KeyValue.from_json(e.get("kv", {})))
                          for e in msg.get("events") or []]
                if events:
                    yield events
        finally:
            conn.close()

    def close(self) -> None:
        """Close the kept-alive connections; the client is not used afterwards."""
        with self._pool_lock:
            self._closed = True
            for _, conn in self._idle:
                conn.close()
            self._idle.clear()

    def __enter__(self) -> EtcdClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

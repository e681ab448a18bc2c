"""A FleetLock client, as the host agent uses it (and as Zincati behaves).

    client = FleetLockClient("https://lock.example/")
    client.pre_reboot("4c1f...", "db")     # returns: the slot is ours, reboot
    ...                                     # reboot, health checks, mark good
    client.steady_state("4c1f...", "db")   # release the slot

Errors:

* ``FleetLockError`` (a ``RuntimeBackendError``): the server answered with an
  error; ``status``, ``kind`` and ``value`` carry the protocol's answer, and
  ``slots_full`` says whether it is just "wait and try again".
* ``DownloadError``: the server could not be reached or answered nonsense.

One client keeps one HTTP/1.1 connection alive; it is safe across threads
(calls are serialized), but each thread of a load test should use its own.
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import threading
import urllib.parse

from atoll.core.errors import DownloadError, RuntimeBackendError
from atoll.core.urls import check_http_url
from atoll.fleet.protocol import HEADER, PRE_REBOOT, STEADY_STATE, ClientParams

__all__ = ["FleetLockClient", "FleetLockError"]


class FleetLockError(RuntimeBackendError):
    """The FleetLock server refused: ``status``, ``kind``, ``value`` as it sent them."""

    def __init__(self, url: str, status: int, kind: str, value: str):
        full = kind == "failed_lock_semaphore_full"
        super().__init__(
            f"FleetLock server {url} refused: {value or f'HTTP {status}'}",
            details=f"HTTP {status}, kind {kind!r}",
            resolution=("all reboot slots of the group are held: wait and retry, or see "
                        "`atoll fleetlock status`" if full else
                        "check the client's group and id, and the server's log"),
        )
        self.status = status
        self.kind = kind
        self.value = value

    @property
    def slots_full(self) -> bool:
        """True when the only problem is that every slot is taken (retry later)."""
        return self.kind == "failed_lock_semaphore_full"


class FleetLockClient:
    """Talks the FleetLock protocol to one server."""

    def __init__(self, base_url: str, *, timeout: float = 30.0) -> None:
        """Raises: InputError: not an http(s) base URL (:func:`atoll.core.urls.check_http_url`:
        no query, fragment or credentials)."""
        url = urllib.parse.urlsplit(check_http_url(
            base_url, "FleetLock URL", example="e.g. --fleet-lock https://lock.example/"))
        assert url.hostname is not None
        self.base_url = base_url
        self._scheme, self._host, self._port = url.scheme, url.hostname, url.port
        self._prefix = url.path.rstrip("/")
        self._timeout = timeout
        self._conn: http.client.HTTPConnection | None = None
        self._lock = threading.Lock()

    def _connect(self) -> http.client.HTTPConnection:
        if self._conn is None:
            if self._scheme == "https":
                self._conn = http.client.HTTPSConnection(
                    self._host, self._port, timeout=self._timeout,
                    context=ssl.create_default_context())
            else:
                self._conn = http.client.HTTPConnection(self._host, self._port,
                                                        timeout=self._timeout)
        return self._conn

    def _post(self, endpoint: str, params: ClientParams) -> None:
        body = params.to_body()
        headers = {HEADER: "true", "Content-Type": "application/json"}
        with self._lock:
            for attempt in (1, 2):  # a kept-alive connection the server closed: reconnect once
                conn = self._connect()
                try:
                    conn.request("POST", self._prefix + endpoint, body=body, headers=headers)
                    resp = conn.getresponse()
                    data = resp.read()
                    break
                except (http.client.RemoteDisconnected, ConnectionResetError,
                        BrokenPipeError) as exc:
                    self.close()
                    if attempt == 2:
                        raise self._unreachable(exc) from exc
                except (OSError, http.client.HTTPException) as exc:
                    self.close()
                    raise self._unreachable(exc) from exc
            if resp.will_close:
                self.close()
        if resp.status == 200:
            return
        try:
            err = json.loads(data)
            kind, value = str(err["kind"]), str(err["value"])
        except (ValueError, KeyError, TypeError):
            kind, value = "", data[:200].decode(errors="replace").strip()
        raise FleetLockError(self.base_url, resp.status, kind, value)

    def _unreachable(self, exc: BaseException) -> DownloadError:
        what = "timed out" if isinstance(exc, socket.timeout | TimeoutError) else "unreachable"
        return DownloadError(f"FleetLock server {self.base_url} {what}",
                             details=f"{type(exc).__name__}: {exc}",
                             resolution="check the URL, the network, and that the server runs")

    def pre_reboot(self, client_id: str, group: str = "default") -> None:
        """Take (or confirm) a reboot slot; returns only when the slot is ours.

        Raises:
            FleetLockError: refused (``slots_full`` when all slots are taken).
            DownloadError: the server is unreachable.
        """
        self._post(PRE_REBOOT, ClientParams(client_id, group))

    def steady_state(self, client_id: str, group: str = "default") -> None:
        """Release our reboot slot (fine when we hold none).

        Raises:
            FleetLockError: refused.
            DownloadError: the server is unreachable.
        """
        self._post(STEADY_STATE, ClientParams(client_id, group))

    def close(self) -> None:
        """Close the kept-alive connection."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> FleetLockClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

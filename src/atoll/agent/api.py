"""The agent's local API: HTTP + JSON on a root-only Unix socket.

    <sysroot>/run/atoll/agent.sock      mode 0600, owner root; peers must be uid 0

    GET  /v1/status          policy, agent state (decisions, request, fleet slot), host status
    POST /v1/check           check for updates now
    POST /v1/download        download (and verify) now
    POST /v1/apply           {"kind": "now"|"at"|"window", "at": ISO-8601, "reboot": bool}
    POST /v1/apply/cancel    cancel a scheduled apply
    GET  /v1/policy          the update policy
    PUT  /v1/policy          replace the update policy (validated)

Errors are JSON ``{"error", "brief", "details", "resolution"}`` with status 4xx/5xx.
The CLI, Ansible/Salt modules and dashboards use it (``call``).
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Any

from atoll.core.errors import AtollError, RuntimeBackendError, error_class

if TYPE_CHECKING:
    import http.client

__all__ = ["call", "running", "socket_path"]


def socket_path(sysroot: Path) -> Path:
    return Path(sysroot) / "run" / "atoll" / "agent.sock"


def _connection(path: Path, timeout: float) -> http.client.HTTPConnection:
    """An HTTP connection over the Unix socket ``path`` (http.client is loaded only
    when the agent is asked: `update apply` with no agent running never loads it)."""
    import http.client

    class UnixConnection(http.client.HTTPConnection):
        def connect(self) -> None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(self.timeout)
            sock.connect(str(path))
            self.sock = sock

    return UnixConnection("localhost", timeout=timeout)


def running(sysroot: Path) -> bool:
    """True when an agent answers on the sysroot's socket."""
    path = socket_path(sysroot)
    if not path.exists():
        return False
    try:
        call(sysroot, "GET", "/v1/policy", timeout=2)
    except (OSError, AtollError):
        return False
    return True


def call(sysroot: Path, method: str, path: str, body: dict[str, Any] | None = None,
         *, timeout: float = 600) -> Any:
    """One request to the agent; raises the agent's error as an AtollError."""
    conn = _connection(socket_path(sysroot), timeout)
    try:
        data = json.dumps(body).encode() if body is not None else None
        conn.request(method, path, body=data,
                     headers={"Content-Type": "application/json"} if data else {})
        resp = conn.getresponse()
        payload = json.loads(resp.read() or b"null")
    except (OSError, ValueError) as exc:
        raise RuntimeBackendError(
            f"atolld: no answer on {socket_path(sysroot)}: {exc}",
            resolution="is atolld running? `systemctl status atolld`",
        ) from exc
    finally:
        conn.close()
    if resp.status >= 400:
        cls = error_class(str(payload.get("error", "")))
        raise cls(payload.get("brief", f"atolld: HTTP {resp.status}"),
                  details=payload.get("details"), resolution=payload.get("resolution"))
    return payload

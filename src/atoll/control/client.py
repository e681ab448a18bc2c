"""The operators' HTTP client for the control plane (the CLI, Ansible, Salt).

Where it finds the server and the token (``from_env``; docs/control-plane.md):

==========  =================================================================
server      ``--server URL``, else ``$ATOLL_FLEET_SERVER``, else
            ``http://127.0.0.1:8470``
token       ``--token-file FILE``, else ``$ATOLL_FLEET_TOKEN_FILE``, else
            ``$ATOLL_FLEET_TOKEN`` (the token itself, for CI), else
            ``~/.config/atoll/fleet-token``; a file must not be readable by
            group or others (as ssh's keys), and a token is never an argument
==========  =================================================================

Errors the server answers come back as the atoll error class it names (so the
CLI exits with the usual code); an unreachable server is a ``DownloadError``.
"""

from __future__ import annotations

import http.client
import json
import os
import urllib.parse
from pathlib import Path
from typing import Any

from atoll.core.errors import DownloadError, InputError, error_class
from atoll.core.urls import check_http_url

__all__ = ["DEFAULT_SERVER", "ControlClient", "read_token_file"]

DEFAULT_SERVER = "http://127.0.0.1:8470"
MAX_ANSWER = 64 * 1024 * 1024


def read_token_file(path: Path) -> str:
    """The token in ``path`` (first line).

    Raises:
        InputError: missing, readable by group or others, or not one token.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError as exc:
        raise InputError(f"token file {path}: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if st.st_mode & 0o077:
            raise InputError(f"token file {path} is readable by others "
                             f"(mode {st.st_mode & 0o777:04o})",
                             resolution=f"chmod 600 {path}")
        data = os.read(fd, 4096)
    finally:
        os.close(fd)
    lines = data.decode("utf-8", "replace").strip().splitlines()
    if len(lines) != 1 or not lines[0].strip() or " " in lines[0].strip():
        raise InputError(f"token file {path} does not hold one token")
    return lines[0].strip()


class ControlClient:
    """Requests to the control plane with an operator token."""

    def __init__(self, url: str, token: str | None, *, timeout: float = 60.0) -> None:
        """Raises: InputError: not an http(s) URL."""
        check_http_url(url, "control plane URL", example="http://127.0.0.1:8470")
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout

    @classmethod
    def from_env(cls, server: str | None, token_file: Path | None,
                 env: dict[str, str] | None = None) -> ControlClient:
        """The client as the CLI finds its server and token (see the module's table).

        Raises:
            InputError: no token anywhere, or a token file that cannot be used.
        """
        env = dict(os.environ) if env is None else env
        url = server or env.get("ATOLL_FLEET_SERVER") or DEFAULT_SERVER
        token: str | None = None
        if token_file is not None:
            token = read_token_file(token_file)
        elif env.get("ATOLL_FLEET_TOKEN_FILE"):
            token = read_token_file(Path(env["ATOLL_FLEET_TOKEN_FILE"]))
        elif env.get("ATOLL_FLEET_TOKEN"):
            token = env["ATOLL_FLEET_TOKEN"].strip()
        else:
            default = Path(env.get("HOME", "/root")) / ".config/atoll/fleet-token"
            if default.exists():
                token = read_token_file(default)
        if not token:
            raise InputError("no operator token",
                             resolution="give --token-file FILE (or ATOLL_FLEET_TOKEN_FILE); "
                             "an admin makes one with `atoll fleet tokens create`")
        return cls(url, token)

    def call(self, method: str, path: str, body: Any = None,
             query: dict[str, Any] | None = None) -> Any:
        """One request; the decoded JSON answer.

        Raises:
            AtollError: the server's error, as the class it names.
            DownloadError: the server cannot be reached, or does not answer JSON.
        """
        parts = urllib.parse.urlsplit(self.url)
        conn_cls = (http.client.HTTPSConnection if parts.scheme == "https"
                    else http.client.HTTPConnection)
        conn = conn_cls(parts.hostname or "", parts.port, timeout=self.timeout)
        target = parts.path.rstrip("/") + path
        if query:
            pairs = [(k, v) for k, vs in query.items() if vs is not None
                     for v in (vs if isinstance(vs, list) else [vs])]
            target += "?" + urllib.parse.urlencode(
                [(k, str(v).lower() if isinstance(v, bool) else str(v)) for k, v in pairs])
        headers = {"Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        try:
            conn.request(method, target, body=data, headers=headers)
            resp = conn.getresponse()
            raw = resp.read(MAX_ANSWER + 1)
        except OSError as exc:
            raise DownloadError(f"the control plane {self.url} cannot be reached: {exc}",
                                resolution="check --server (or ATOLL_FLEET_SERVER) and that "
                                "`atoll fleet serve` runs") from None
        finally:
            conn.close()
        try:
            payload = json.loads(raw) if raw else None
        except ValueError:
            raise DownloadError(f"the control plane {self.url} answered HTTP {resp.status} "
                                "without JSON") from None
        if resp.status >= 400:
            doc = payload if isinstance(payload, dict) else {}
            cls = error_class(str(doc.get("error", "")))
            raise cls(str(doc.get("brief") or f"control plane: HTTP {resp.status}"),
                      details=doc.get("details"), resolution=doc.get("resolution"))
        return payload

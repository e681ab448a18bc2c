"""A real HTTP server on 127.0.0.1 serving a published ``www/``, which can misbehave.

Supports ``Range`` (206) like any CDN. ``server.faults`` maps a path suffix to
a fault: ``("truncate", n)`` closes the connection after n bytes, ``("endless",)``
streams zeros until the client hangs up (or ``ENDLESS_CAP`` bytes, which a
client that bounds its downloads never reads; ``srv.endless_sent`` counts what
went out), ``("tamper",)`` flips a byte, ``("replace", data)`` serves other
bytes, ``("hang",)`` never answers (until the server stops, or
``srv.hang_seconds``), ``("hook", fn)`` calls ``fn()`` before serving normally
(to fill a disk mid-download, or hold a download until the test releases it),
``("norange",)`` ignores ``Range`` (200, the whole file), ``("bad206",)`` answers a
range 206 with the Content-Range asked for but the whole file from byte 0, and
``("206from0",)`` a 206 whose Content-Range says the whole file.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

__all__ = ["ENDLESS_CAP", "Published", "WwwServer", "serve_www"]

ENDLESS_CAP = 1 << 30  # bytes; far beyond any signed length and the socket buffers


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        srv = self.server
        rel = self.path.split("?", 1)[0].lstrip("/")
        srv.requests.append((rel, self.headers.get("Range")))
        fault = next((f for suffix, f in srv.faults.items() if rel.endswith(suffix)), None)
        if fault and fault[0] == "hang":
            srv.stopping.wait(srv.hang_seconds)
            return
        if fault and fault[0] == "hook":
            fault[1]()
        path = (srv.root / rel).resolve()
        if not path.is_relative_to(srv.root.resolve()) or not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        if fault and fault[0] == "replace":
            data = fault[1]
        if fault and fault[0] == "tamper":
            b = bytearray(data)
            b[len(b) // 2] ^= 0x40
            data = bytes(b)
        start, end, status = 0, len(data) - 1, 200
        rng = self.headers.get("Range")
        if fault and fault[0] == "norange":
            rng = None  # a server that ignores Range: 200 and the whole file
        if rng and rng.startswith("bytes="):
            a, _, b_ = rng[6:].partition("-")
            start = int(a) if a else 0
            end = min(int(b_), len(data) - 1) if b_ else len(data) - 1
            status = 206
        body = data[start:end + 1]
        content_range = f"bytes {start}-{end}/{len(data)}"
        if fault and fault[0] == "bad206" and status == 206:
            body = data  # claims the range asked for, sends the whole file from byte 0
        if fault and fault[0] == "206from0" and status == 206:
            body, content_range = data, f"bytes 0-{len(data) - 1}/{len(data)}"
        self.send_response(status)
        if fault and fault[0] == "endless":
            self.send_header("Content-Type", "application/octet-stream")
            self.end_headers()
            # a byte cap, not a time limit: however slow the machine, a client that
            # reads without bound is caught reading all of it
            chunk = b"\0" * 65536
            with contextlib.suppress(OSError):
                while srv.endless_sent.get(rel, 0) < ENDLESS_CAP:
                    self.wfile.write(chunk)
                    with srv.lock:
                        srv.endless_sent[rel] = srv.endless_sent.get(rel, 0) + len(chunk)
            return
        self.send_header("Content-Length", str(len(body)))
        if status == 206:
            self.send_header("Content-Range", content_range)
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        if fault and fault[0] == "truncate":
            body = body[:fault[1]]
            self.close_connection = True
        with contextlib.suppress(OSError):
            self.wfile.write(body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, root: Path):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.root = root
        self.faults: dict[str, tuple[Any, ...]] = {}
        self.requests: list[tuple[str, str | None]] = []
        self.hang_seconds = 600.0  # a deadline only: serve_www's end releases every hang
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.endless_sent: dict[str, int] = {}  # path -> bytes of endless data sent


@dataclass
class WwwServer:
    """Handle on a running server."""

    srv: _Server
    url: str

    @property
    def faults(self) -> dict[str, tuple[Any, ...]]:
        return self.srv.faults

    @property
    def requests(self) -> list[tuple[str, str | None]]:
        return self.srv.requests


@contextlib.contextmanager
def serve_www(root: Path) -> Iterator[WwwServer]:
    """Serve ``root`` on 127.0.0.1 (a free port) until the block ends."""
    srv = _Server(root)
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    t.start()
    try:
        yield WwwServer(srv, f"http://127.0.0.1:{srv.server_address[1]}/")
    finally:
        srv.stopping.set()
        srv.shutdown()
        srv.server_close()
        t.join(timeout=5)


@dataclass
class Published:
    """A publisher's store, keys and www/ (paths), with the commits published so far."""

    repo_dir: Path
    keys: Path
    www: Path
    commits: list[str] = field(default_factory=list)
    hooks: list[Callable[[], None]] = field(default_factory=list)


def snapshot_dirs(root: Path, subs: tuple[str, ...] = ("atoll/repo", "atoll/state")) -> dict[
        str, tuple[int, int, bytes | str]]:
    """Every path under ``root/<sub>`` with its mode, size and content (to compare)."""
    import os

    out: dict[str, tuple[int, int, bytes | str]] = {}
    for sub in subs:
        for dirpath, dirs, files in os.walk(root / sub):
            for name in dirs + files:
                p = Path(dirpath) / name
                st = os.lstat(p)
                if p.is_symlink():
                    content: bytes | str = os.readlink(p)
                elif p.is_file():
                    content = p.read_bytes()
                else:
                    content = b""
                out[str(p.relative_to(root))] = (st.st_mode, st.st_size, content)
    return out


def snapshot_host(sysroot: Path) -> dict[str, tuple[int, int, bytes | str]]:
    """Every path under atoll/repo and atoll/state with its mode, size and content, but
    the trusted TUF metadata: TUF keeps each role as soon as it verifies, even when the
    operation fails later (``trusted_versions`` says which roles a test expects)."""
    return {k: v for k, v in snapshot_dirs(sysroot).items()
            if "/metadata" not in k.partition("atoll/state/remotes/")[2]
            and not k.endswith("/lock")}  # lock files are not state (atoll.core.lock)


def trusted_versions(sysroot: Path, remote: str = "origin") -> dict[str, int]:
    """The version of each role the host trusts for ``remote`` (absent roles left out)."""
    from tuf.api.metadata import Metadata

    d = sysroot / "atoll/state/remotes" / remote / "metadata"
    out = {}
    for role in ("root", "timestamp", "snapshot", "targets"):
        p = d / f"{role}.json"
        if p.exists():
            out[role] = int(Metadata.from_bytes(p.read_bytes()).signed.version)
    return out

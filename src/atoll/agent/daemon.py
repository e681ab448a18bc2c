"""``atolld``: the host agent's loop and its local API server.

The loop asks :func:`atoll.agent.policy.decide` what to do, does it through
:class:`atoll.agent.host.Host`, logs and records the decision, and sleeps until
the decision's wake time (plus jitter for scheduled checks) or until an API
request wakes it. It never applies anything that was not verified: downloads
go through the TUF client, stages re-hash every object.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import logging
import os
import random
import signal
import socket
import socketserver
import struct
import sys
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

from atoll.agent.api import socket_path
from atoll.agent.control import Control
from atoll.agent.host import Host
from atoll.agent.policy import (
    ApplyRequest,
    Decision,
    Policy,
    apply_noop,
    check_apply_request,
    decide,
)
from atoll.core import progress
from atoll.core.errors import AtollError, InputError
from atoll.core.log import setup_logging

__all__ = ["Agent", "main", "serve_api"]

log = logging.getLogger("atoll.agent")
Clock = Callable[[], dt.datetime]


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Agent:
    def __init__(self, sysroot: Path, *, host: Host | None = None, clock: Clock = _utcnow):
        self.sysroot = Path(sysroot)
        self.host = host or Host(self.sysroot)
        self.files = self.host.files
        self.clock = clock
        self.lock = threading.RLock()
        self.wakeup = threading.Event()
        self.control = Control(self)  # the fleet control plane, when the host has one

    def tick(self) -> Decision:
        """Decide once and act once."""
        with self.lock:
            now = self.clock()
            try:
                policy = self.files.policy()
                st = self.host.state(strict=False)
            except AtollError as exc:  # a damaged state file: say so, look again later
                d = Decision("wait", f"cannot read the host's state: {exc.brief}",
                             now + dt.timedelta(seconds=300))
                log.warning("%s%s", d.reason, f"; {exc.resolution}" if exc.resolution else "")
                return d
            try:
                self.host.release_slot_if_good()
            except AtollError as exc:
                log.warning("fleet slot release failed, will retry: %s", exc.brief)
            d = self.control.gate(decide(policy, st, now), st, now)
            self.files.record(d, now)
            try:
                version = self.control.wanted_version(now)  # a directive's signed target
                if d.action == "check":
                    self.host.check(policy, now, version=version)
                elif d.action == "download":
                    self.host.download(policy, version=version)
                elif d.action == "prepare":
                    assert st.downloaded is not None
                    self.host.prepare(st.downloaded)
                elif d.action == "apply":
                    req = st.request
                    self.host.apply(policy, reboot=req.reboot if req else True)
            except AtollError as exc:
                slots_full = getattr(exc, "slots_full", False)
                reason = ("no fleet reboot slot free; retrying" if slots_full
                          else f"{d.action} failed: {exc.brief}")
                retry = 60 if slots_full else min(300, policy.check_interval_s)
                wait = Decision("wait", reason, now + dt.timedelta(seconds=retry))
                self.files.record(wait, now)
                log.warning("%s%s", reason, f"\n{exc.details}" if exc.details else "")
                return wait
            return d

    def sleep_seconds(self, d: Decision, policy: Policy) -> float:
        now = self.clock()
        if d.action in ("check", "download", "prepare"):
            return 0.0  # follow through at once
        wake = d.wake or now + dt.timedelta(seconds=policy.check_interval_s)
        jitter = random.uniform(0, policy.jitter_s) if d.action != "wait" or d.at is None else 0
        return max(1.0, (wake - now).total_seconds() + jitter)

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            d = self.tick()
            try:
                policy = self.files.policy()
            except AtollError:  # damaged: tick said so; the defaults pace the retries
                policy = Policy()
            delay = self.sleep_seconds(d, policy)
            if delay:
                self.wakeup.wait(delay)
                self.wakeup.clear()

    # -- API operations --------------------------------------------------

    def request_apply(self, kind: str, at: str | None, reboot: bool) -> dict[str, Any]:
        now = self.clock()
        if kind not in ("now", "at", "window"):
            raise InputError(f"apply: kind must be now, at or window, not {kind!r}")
        when = None
        if kind == "at":
            if not at:
                raise InputError("apply at: give a time")
            when = dt.datetime.fromisoformat(at)
            if when.tzinfo is None:
                raise InputError("apply at: the time needs a UTC offset or zone")
        with self.lock:
            policy, st = self.files.policy(), self.host.state()
            check_apply_request(policy, kind, when, now)
            noop = apply_noop(st, kind, reboot=reboot and policy.reboot)
            if noop is not None:
                return {"request": None, "changed": False, "note": noop,
                        "decision": Decision("none", noop).to_json()}
            self.files.set_request(ApplyRequest(kind, now, when, reboot))  # type: ignore[arg-type]
            d = decide(policy, self.host.state(), now)
            self.files.record(d, now)
        self.wakeup.set()
        return {"request": self.files.load().get("request"), "decision": d.to_json(),
                "changed": True}

    def cancel_apply(self) -> dict[str, Any]:
        with self.lock:
            had = self.files.request()
            self.files.set_request(None)
            self.files.record(Decision("none", "scheduled apply cancelled by the operator"),
                              self.clock())
        return {"cancelled": had.to_json() if had else None}

    def status(self) -> dict[str, Any]:
        from atoll.deploy.status import host_status

        return {"policy": self.files.policy().to_json(), "agent": self.files.load(),
                "host": host_status(self.sysroot)}


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    agent: Agent


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def address_string(self) -> str:
        return "unix"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("api: " + format, *args)

    def _peer_is_root(self) -> bool:
        creds = self.request.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                        struct.calcsize("3i"))
        _pid, uid, _gid = struct.unpack("3i", creds)
        return bool(uid == 0)

    def _send(self, status: int, body: Any) -> None:
        data = json.dumps(body, sort_keys=True, default=str).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> dict[str, Any]:
        n = int(self.headers.get("Content-Length") or 0)
        if n > 1 << 20:
            raise InputError("request body too large")
        raw = self.rfile.read(n) if n else b"{}"
        try:
            value = json.loads(raw or b"{}")
        except ValueError as exc:
            raise InputError(f"request body is not JSON: {exc}") from exc
        if not isinstance(value, dict):
            raise InputError("request body must be a JSON object")
        return value

    def _dispatch(self, method: str) -> None:
        if not self._peer_is_root():
            self._send(403, {"error": "HostStateError", "brief": "atolld: root only"})
            return
        agent = self.server.agent
        policy = agent.files.policy
        try:
            route = (method, self.path)
            if route == ("GET", "/v1/status"):
                self._send(200, agent.status())
            elif route == ("GET", "/v1/policy"):
                self._send(200, policy().to_json())
            elif route == ("PUT", "/v1/policy"):
                try:
                    new = Policy.from_json(self._body())
                except ValueError as exc:
                    raise InputError(f"policy: {exc}") from exc
                agent.files.save_policy(new)
                agent.wakeup.set()
                self._send(200, new.to_json())
            elif route == ("POST", "/v1/check"):
                with agent.lock:
                    self._send(200, agent.host.check(policy(), agent.clock()))
            elif route == ("POST", "/v1/download"):
                with agent.lock:
                    self._send(200, agent.host.download(policy()))
            elif route == ("POST", "/v1/apply"):
                b = self._body()
                self._send(200, agent.request_apply(b.get("kind", "now"), b.get("at"),
                                                    bool(b.get("reboot", True))))
            elif route == ("POST", "/v1/apply/cancel"):
                self._send(200, agent.cancel_apply())
            else:
                self._send(404, {"error": "InputError", "brief": f"no such endpoint {route}"})
        except AtollError as exc:
            status = 400 if isinstance(exc, InputError) else 409
            self._send(status, exc.to_dict())

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")


def serve_api(agent: Agent) -> _Server:
    """Listen on the sysroot's agent socket (0600) in a background thread."""
    path = socket_path(agent.sysroot)
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    old = os.umask(0o077)
    try:
        server = _Server(str(path), _Handler)
    finally:
        os.umask(old)
    os.chmod(path, 0o600)
    server.agent = agent
    threading.Thread(target=server.serve_forever, name="atolld-api", daemon=True).start()
    return server


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="atolld", description="the atoll host agent")
    ap.add_argument("--sysroot", type=Path, default=Path("/"))
    ap.add_argument("--once", action="store_true", help="decide and act once, then exit")
    ap.add_argument("--debug", action="store_true")
    args = ap.parse_args(argv)
    setup_logging(debug=args.debug)
    progress.enable_log()  # the journal: a line per tenth of a download, verify...
    agent = Agent(args.sysroot)
    if args.once:
        d = agent.tick()
        print(json.dumps(d.to_json(), sort_keys=True))
        return 0
    stop = threading.Event()

    def _stop(*_: Any) -> None:
        stop.set()
        agent.wakeup.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    server = serve_api(agent)
    threading.Thread(target=agent.control.run, args=(stop,), name="atolld-checkin",
                     daemon=True).start()
    log.info("atolld: listening on %s (policy mode %s)", socket_path(agent.sysroot),
             agent.files.policy().mode)
    # service discovery (docs/control-plane.md): its own thread; idle unless fleet.toml names etcd
    from atoll.agent.discovery import start_discovery

    discovery = start_discovery(agent.sysroot)
    try:
        agent.run(stop)
    finally:
        discovery.stop()  # a clean shutdown: the host's entries go at once
        server.shutdown()
        with contextlib.suppress(FileNotFoundError):
            socket_path(agent.sysroot).unlink()
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

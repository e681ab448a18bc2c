"""``atoll fleetlock``: serve FleetLock, show slot holders, release a dead host's slot."""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from atoll.cli import emit
from atoll.core.errors import DownloadError, InputError
from atoll.fleet.backends import Backend, open_backend
from atoll.fleet.config import load_config
from atoll.fleet.semaphore import utcnow
from atoll.fleet.server import FleetLockServer, parse_listen
from atoll.fleet.service import STATUS_PATH, FleetLockService

__all__ = ["register"]


def _store_args(parser: argparse.ArgumentParser, *, server: bool = False) -> None:
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--etcd", metavar="URL", help="etcd client URL, e.g. http://127.0.0.1:2379")
    where.add_argument("--embedded", metavar="FILE", type=Path,
                       help="sqlite file of the embedded backend (one site without etcd)")
    if server:
        where.add_argument("--server", metavar="URL",
                           help="ask a running FleetLock server (read-only)")
    parser.add_argument("--config", type=Path, metavar="TOML",
                        help="groups and slots (default: group 'default', 1 slot)")


def _backend(args: argparse.Namespace) -> Backend:
    if args.etcd:
        return open_backend("etcd", args.etcd)
    return open_backend("embedded", str(args.embedded))


def _serve(args: argparse.Namespace) -> int:
    host, port = parse_listen(args.listen)
    config = load_config(args.config)
    with _backend(args) as backend:
        server = FleetLockServer(FleetLockService(backend, config), host, port)
        stop = threading.Event()

        def _term(signum: int, frame: object) -> None:
            if not stop.is_set():
                stop.set()
                threading.Thread(target=server.shutdown, daemon=True).start()

        signal.signal(signal.SIGTERM, _term)
        with contextlib.suppress(KeyboardInterrupt):
            server.serve_forever()
        server.stop()
    return 0


def _fetch_status(url: str) -> list[dict[str, Any]]:
    try:
        with urllib.request.urlopen(url.rstrip("/") + STATUS_PATH, timeout=10) as resp:
            groups: list[dict[str, Any]] = json.load(resp)["groups"]
            return groups
    except (OSError, ValueError, KeyError) as exc:
        raise DownloadError(f"cannot read status from FleetLock server {url}", details=str(exc),
                            resolution="check the URL and that the server runs") from exc


def _human(groups: list[dict[str, Any]]) -> Callable[[], str]:
    def render() -> str:
        lines = []
        for g in groups:
            note = "" if g["configured"] else "  (not in config)"
            lines.append(f"group {g['group']}: {len(g['holders'])}/{g['total_slots']} slots held"
                         f"{note}")
            for h in g["holders"]:
                lines.append(f"  {h['id']}  since {h['since']}  ({h['held_seconds']}s)")
        return "\n".join(lines)
    return render


def _status(args: argparse.Namespace) -> int:
    if args.server:
        if args.config:
            raise InputError("--config is for --etcd/--embedded; the server has its own")
        groups = _fetch_status(args.server)
    else:
        with _backend(args) as backend:
            service = FleetLockService(backend, load_config(args.config))
            now = utcnow()
            groups = [g.to_dict(now) for g in service.status()]
    emit(args, {"groups": groups}, _human(groups))
    return 0


def _release(args: argparse.Namespace) -> int:
    with _backend(args) as backend:
        holder = FleetLockService(backend, load_config(args.config)).release(args.group, args.id)
    data = {"group": args.group, "released": holder.to_dict()}
    emit(args, data, f"released {args.id}'s slot in group {args.group} "
                     f"(held since {data['released']['since']})")
    return 0


def register(sub: Any, common: Callable[[argparse.ArgumentParser], None]) -> None:
    """Add ``atoll fleetlock serve|status|release``."""
    parser = sub.add_parser("fleetlock", help="FleetLock server for fleet reboot slots",
                            description="Coordinate fleet reboots: FleetLock (Zincati/airlock).")
    cmds = parser.add_subparsers(dest="fleetlock_command", metavar="COMMAND")
    cmds.required = True

    serve = cmds.add_parser("serve", help="serve the FleetLock protocol")
    serve.add_argument("--listen", default="127.0.0.1:8080", metavar="HOST:PORT",
                       help="address to listen on (default 127.0.0.1:8080)")
    _store_args(serve)
    common(serve)
    serve.set_defaults(handler=_serve)

    status = cmds.add_parser("status", help="show reboot slot holders per group")
    _store_args(status, server=True)
    common(status)
    status.set_defaults(handler=_status)

    release = cmds.add_parser("release", help="free a (dead) host's reboot slot")
    release.add_argument("--group", required=True, help="the host's reboot group")
    release.add_argument("--id", required=True, help="the host's FleetLock client id")
    _store_args(release)
    common(release)
    release.set_defaults(handler=_release)

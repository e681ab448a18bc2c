"""``atoll fleetlock``: serve FleetLock, show slot holders, release a dead host's slot."""

from __future__ import annotations

import argparse
import json
import logging
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from atoll.cli import emit
from atoll.cli._serve import serve_until_signalled
from atoll.core.errors import DownloadError, InputError
from atoll.fleet.backends import Backend, open_backend
from atoll.fleet.config import FleetConfig, load_config
from atoll.fleet.semaphore import utcnow
from atoll.fleet.service import STATUS_PATH, FleetLockService

__all__ = ["register"]

log = logging.getLogger("atoll.fleet")
DEFAULT_LISTEN = ("127.0.0.1", 8080)


def _store_args(parser: argparse.ArgumentParser, *, server: bool = False) -> None:
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--etcd", metavar="URL[,URL...]",
                       help="etcd client URL(s), e.g. http://127.0.0.1:2379 "
                            "(default: [etcd3] endpoints of --config)")
    where.add_argument("--embedded", metavar="FILE", type=Path,
                       help="sqlite file of the embedded backend (one site without etcd)")
    if server:
        where.add_argument("--server", metavar="URL",
                           help="ask a running FleetLock server (read-only)")
    parser.add_argument("--config", type=Path, metavar="TOML",
                        help="airlock's config.toml: groups and slots, etcd, listen address "
                             "(default: group 'default', 1 slot)")


def _config(args: argparse.Namespace) -> FleetConfig:
    config = load_config(args.config)
    for warning in config.warnings:
        log.warning("%s", warning)
    return config


def _backend(args: argparse.Namespace, config: FleetConfig) -> Backend:
    """The store: --etcd or --embedded, else airlock's [etcd3] endpoints from the config."""
    etcd = config.etcd
    options: dict[str, Any] = {}
    if etcd is not None:
        options = {"timeout": etcd.timeout_seconds, "client_cert": etcd.client_cert,
                   "client_key": etcd.client_key}
        if etcd.endpoints and (args.etcd or args.embedded):
            given = "--etcd" if args.etcd else "--embedded"
            log.warning("%s: etcd3.endpoints not used: %s given on the command line",
                        args.config, given)
    if args.embedded:
        return open_backend("embedded", str(args.embedded))
    location = args.etcd or (",".join(etcd.endpoints) if etcd is not None else "")
    if not location:
        raise InputError("no FleetLock store given",
                         resolution="give --etcd URL or --embedded FILE, or [etcd3] endpoints "
                                    "in the --config file")
    from atoll.fleet.etcdv3 import uses_tls

    if etcd is not None and etcd.client_cert and not any(
            uses_tls(u) for u in location.split(",") if u.strip()):
        log.warning("%s: etcd3.client_cert_pub_path not used: the etcd endpoints are http://",
                    args.config)
    return open_backend("etcd", location, **options)


def _listen(args: argparse.Namespace, config: FleetConfig) -> tuple[str, int]:
    """--listen, else airlock's [service] address and port, else 127.0.0.1:8080."""
    from atoll.fleet.server import parse_listen

    if args.listen is not None:
        if config.listen is not None:
            log.info("%s: service address and port not used: --listen given", args.config)
        return parse_listen(args.listen)
    return config.listen or DEFAULT_LISTEN


def _serve(args: argparse.Namespace) -> int:
    from atoll.fleet.server import FleetLockServer  # the HTTP stack only where it serves

    config = _config(args)
    host, port = _listen(args, config)
    with _backend(args, config) as backend:
        server = FleetLockServer(FleetLockService(backend, config), host, port)
        serve_until_signalled(server)
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


def _shown(text: str) -> str:
    """A name as typed, or quoted with escapes when it holds control characters."""
    return text if text.isprintable() else repr(text)


def _human(groups: list[dict[str, Any]]) -> Callable[[], str]:
    def render() -> str:
        lines = []
        for g in groups:
            note = "" if g["configured"] else "  (not in config)"
            lines.append(f"group {_shown(g['group'])}: {len(g['holders'])}/{g['total_slots']} "
                         f"slots held{note}")
            for h in g["holders"]:
                since = (f"since {h['since']}  ({h['held_seconds']}s)" if h["since"]
                         else "since unknown (written by airlock)")
                lines.append(f"  {_shown(h['id'])}  {since}")
        return "\n".join(lines)
    return render


def _status(args: argparse.Namespace) -> int:
    if args.server:
        if args.config:
            raise InputError("--config is for --etcd/--embedded; the server has its own")
        groups = _fetch_status(args.server)
    else:
        config = _config(args)
        with _backend(args, config) as backend:
            service = FleetLockService(backend, config)
            now = utcnow()
            groups = [g.to_dict(now) for g in service.status()]
    emit(args, {"groups": groups}, _human(groups))
    return 0


def _release(args: argparse.Namespace) -> int:
    config = _config(args)
    with _backend(args, config) as backend:
        holder = FleetLockService(backend, config).release(args.group, args.id)
    data = {"group": args.group, "released": holder.to_dict()}
    emit(args, data, f"released {_shown(args.id)}'s slot in group {_shown(args.group)} "
                     f"(held since {data['released']['since'] or 'an unknown time'})")
    return 0


def register(sub: Any, common: Callable[[argparse.ArgumentParser], None]) -> None:
    """Add ``atoll fleetlock serve|status|release``."""
    parser = sub.add_parser("fleetlock", help="FleetLock server for fleet reboot slots",
                            description="Coordinate fleet reboots: FleetLock (Zincati/airlock).")
    cmds = parser.add_subparsers(dest="fleetlock_command", metavar="COMMAND")
    cmds.required = True

    serve = cmds.add_parser("serve", help="serve the FleetLock protocol")
    serve.add_argument("--listen", metavar="HOST:PORT",
                       help="address to listen on (default: [service] of --config, "
                            "else 127.0.0.1:8080)")
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

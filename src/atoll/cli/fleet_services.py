"""``atoll fleet services`` and ``atoll fleet sd``: service discovery, read from etcd (thin).

The ``fleet`` command group is shared with the control plane's commands
(``fleet serve``, ``fleet hosts``...): whichever CLI module registers first
creates it, the others add their subcommands to it (:func:`fleet_commands`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import signal
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from atoll.cli import emit
from atoll.cli._serve import serve_until_signalled
from atoll.core.errors import InputError
from atoll.core.text import terminal_safe

if TYPE_CHECKING:
    from atoll.fleet.discovery import AppEntry, Change, HostEntry, Services
    from atoll.fleet.etcdv3 import EtcdClient

__all__ = ["fleet_commands", "register"]

log = logging.getLogger("atoll.fleet")
DEFAULT_SD_LISTEN = "127.0.0.1:9135"


def fleet_commands(sub: Any) -> Any:
    """The subcommands of ``atoll fleet``, creating the group when no module has yet."""
    parser = sub.choices.get("fleet")
    if parser is None:
        parser = sub.add_parser(
            "fleet", help="the fleet: service discovery (and the control plane)",
            description="Fleet-wide views and services: what runs where (service "
                        "discovery in etcd), Prometheus service discovery.")
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    cmds = parser.add_subparsers(dest="fleet_command", metavar="COMMAND")
    cmds.required = True
    return cmds


def _etcd_args(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--etcd", metavar="URL[,URL...]",
                       help="etcd client URL(s), e.g. http://127.0.0.1:2379")
    where.add_argument("--config", type=Path, metavar="TOML",
                       help="a TOML file with an [etcd3] table, as airlock's config.toml "
                            "names etcd: endpoints, transaction_timeout_ms, client_cert_* "
                            "(default: the host's /etc/atoll/fleet.toml when it exists)")


def _client(args: argparse.Namespace) -> EtcdClient:
    """etcd from --etcd, else [etcd3] of --config, else of the sysroot's fleet.toml."""
    from atoll.agent.discovery import CONFIG_PATH
    from atoll.fleet.config import parse_config
    from atoll.fleet.etcdv3 import EtcdClient

    if args.etcd:
        return EtcdClient(args.etcd)
    path = args.config
    if path is None and (Path(args.sysroot) / CONFIG_PATH).is_file():
        path = Path(args.sysroot) / CONFIG_PATH
    if path is None:
        raise InputError("no etcd given",
                         resolution="give --etcd URL, or --config FILE with [etcd3] endpoints "
                                    "(on a host: /etc/atoll/fleet.toml)")
    from atoll.core.userfile import read_user_file

    raw_text = read_user_file(path, 1 << 20, "config")
    try:
        raw = tomllib.loads(raw_text.decode())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not valid TOML: {exc}") from exc
    etcd = parse_config({"etcd3": raw.get("etcd3", {})}, str(path)).etcd
    if etcd is None or not etcd.endpoints:
        raise InputError(f"{path}: no [etcd3] endpoints",
                         resolution='add [etcd3] endpoints = ["http://HOST:2379"], or give '
                                    "--etcd URL")
    return EtcdClient(",".join(etcd.endpoints), timeout=etcd.timeout_seconds,
                      client_cert=etcd.client_cert, client_key=etcd.client_key)


def _customers(args: argparse.Namespace) -> list[str] | None:
    from atoll.fleet.discovery import check_name

    return [check_name(c, "--customer") for c in args.customer] if args.customer else None


def _check_app(app: str | None) -> None:
    from atoll.fleet.discovery import APP_RE

    if app is not None and not APP_RE.match(app):
        raise InputError(f"--app {app!r} is not an app name")


def _endpoints(a: AppEntry) -> str:
    return " ".join(f"{e.address}:{e.port}/{e.protocol}" for e in a.endpoints) or "-"


def _app_line(a: AppEntry) -> str:
    health = "" if a.health == "none" else f" {a.health}"
    repl = f" {a.replication_role}" if a.replication_role else ""
    return f"{a.app}  {a.role}{repl}  {a.state}{health}  {_endpoints(a)}"


def _host_line(h: HostEntry) -> str:
    labels = " ".join(f"{k}={v}" for k, v in h.labels.items())
    return (f"{h.customer}/{h.host}  {h.address}  metrics {h.metrics or '-'}"
            + (f"  ({labels})" if labels else ""))


def _human(services: Services) -> str:
    lines = []
    apps: dict[tuple[str, str], list[AppEntry]] = {}
    for a in services.apps.values():
        apps.setdefault((a.customer, a.host), []).append(a)
    for h in sorted(services.hosts.values(), key=lambda h: (h.customer, h.host)):
        lines.append(_host_line(h))
        lines += [f"  {_app_line(a)}" for a in sorted(apps.pop((h.customer, h.host), []),
                                                      key=lambda a: a.app)]
    for (customer, host), rest in sorted(apps.items()):
        lines.append(f"{customer}/{host}  (no host entry)")
        lines += [f"  {_app_line(a)}" for a in sorted(rest, key=lambda a: a.app)]
    for key, why in sorted(services.invalid.items()):
        lines.append(f"invalid entry {key}: {why}")
    return "\n".join(lines) if lines else "no hosts registered"


def _change_line(c: Change) -> str:
    from atoll.fleet.discovery import AppEntry

    mark = {"ADDED": "+", "MODIFIED": "~", "DELETED": "-"}[c.type]
    e = c.entry
    if isinstance(e, AppEntry):
        return f"{mark} {e.customer}/{e.host}/{_app_line(e)}"
    return f"{mark} {_host_line(e)}"


def _services(args: argparse.Namespace) -> int:
    from atoll.fleet.registry import read_services, watch_services

    customers, app = _customers(args), args.app
    _check_app(app)
    with contextlib.closing(_client(args)) as client:
        if not args.watch:
            found, _ = read_services(client)
            shown = found.select(customers=customers, app=app)
            emit(args, shown.to_json(), lambda: _human(shown))
            return 0
        as_json = getattr(args, "json", False)

        def _term(signum: int, frame: object) -> None:
            raise KeyboardInterrupt

        old = signal.signal(signal.SIGTERM, _term)
        try:  # until interrupted (Ctrl-C, SIGTERM): the normal end of a watch, exit 0
            for batch in watch_services(client):
                for change in batch:
                    e = change.entry
                    if customers is not None and e.customer not in customers:
                        continue
                    if app is not None and getattr(e, "app", None) != app:
                        continue
                    # entries are anyone-with-etcd-access's text: no escapes reach the terminal
                    line = json.dumps(change.to_json(), sort_keys=True) if as_json \
                        else terminal_safe(_change_line(change))
                    print(line, flush=True)
        except KeyboardInterrupt:
            pass
        finally:
            signal.signal(signal.SIGTERM, old)
    return 0


def _sd_targets(args: argparse.Namespace) -> int:
    from atoll.fleet.discovery import sd_document
    from atoll.fleet.registry import read_services

    with contextlib.closing(_client(args)) as client:
        found, _ = read_services(client)
    print(json.dumps(sd_document(found.select(customers=_customers(args))), indent=2,
                     sort_keys=True))
    return 0


def _sd_serve(args: argparse.Namespace) -> int:
    from atoll.fleet.registry import read_services
    from atoll.fleet.sd_http import load_token, serve_entries
    from atoll.fleet.server import parse_listen

    host, port = parse_listen(args.listen)
    if not args.cache_seconds >= 0:
        raise InputError("--cache-seconds must be 0 or more")
    token = load_token(args.token_file)  # bad input first: nothing is contacted
    client = _client(args)
    try:
        server = serve_entries(lambda: read_services(client)[0], token, host, port,
                               cache_seconds=args.cache_seconds)
        try:
            serve_until_signalled(server)
        finally:
            server.stop()
    finally:
        client.close()
    return 0


def register(sub: Any, common: Callable[[argparse.ArgumentParser], None]) -> None:
    """Add ``atoll fleet services`` and ``atoll fleet sd targets|serve``."""
    cmds = fleet_commands(sub)
    services = cmds.add_parser(
        "services", help="what runs where: hosts and apps registered in etcd",
        description="Hosts and their apps as the hosts' agents registered them in etcd "
                    "(service discovery; docs/control-plane.md). A host whose agent stopped "
                    "renewing its lease is gone after the lease's TTL.")
    services.add_argument("--app", metavar="APP", help="only this app (and its hosts)")
    services.add_argument("--customer", metavar="NAME", action="append",
                          help="only this customer (repeatable)")
    services.add_argument("--watch", action="store_true",
                          help="print the entries, then every change as it happens "
                               "(+ added, ~ modified, - deleted; --json: one Kubernetes-style "
                               "watch event a line) until interrupted")
    _etcd_args(services)
    common(services)
    services.set_defaults(handler=_services)

    sd = cmds.add_parser("sd", help="Prometheus service discovery of the fleet's metrics",
                         description="Prometheus HTTP service discovery: every registered "
                                     "host's metrics endpoint (docs/control-plane.md).")
    sd_cmds = sd.add_subparsers(dest="sd_command", metavar="COMMAND")
    sd_cmds.required = True
    targets = sd_cmds.add_parser("targets", help="print the SD document (a JSON list of "
                                                 "targets and labels; also a file_sd file)")
    targets.add_argument("--customer", metavar="NAME", action="append",
                         help="only this customer (repeatable)")
    _etcd_args(targets)
    common(targets)
    targets.set_defaults(handler=_sd_targets)

    serve = sd_cmds.add_parser("serve", help="serve the SD document over HTTP for "
                                             "Prometheus' http_sd_configs")
    serve.add_argument("--listen", default=DEFAULT_SD_LISTEN, metavar="HOST:PORT",
                       help=f"address to listen on (default {DEFAULT_SD_LISTEN})")
    serve.add_argument("--token-file", type=Path, required=True, metavar="FILE",
                       help="the bearer token Prometheus must send (one line, mode 0600)")
    serve.add_argument("--cache-seconds", type=float, default=5.0, metavar="S",
                       help="read etcd at most this often (default 5)")
    _etcd_args(serve)
    common(serve)
    serve.set_defaults(handler=_sd_serve)




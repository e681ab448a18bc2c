"""``atoll fleet``: the control plane's server, and operators' commands against it.

    atoll fleet serve --listen HOST:PORT --db URL         the server (docs/control-plane.md)
    atoll fleet db upgrade|status|init --db URL           its database
    atoll fleet hosts | host NAME | events | label | request | prune
    atoll fleet rollout create|status|halt|resume|abort   (atoll.cli.fleet_rollouts)
    atoll fleet customers add|list | tokens create|list|revoke | enrol-token create|list|revoke

Every command but ``serve`` and ``db`` talks to a running server over HTTP with an
operator token (:mod:`atoll.control.client`: ``--server``, ``--token-file``, or
``ATOLL_FLEET_SERVER`` / ``ATOLL_FLEET_TOKEN_FILE`` / ``ATOLL_FLEET_TOKEN``).
Modules ``atoll.cli.fleet_*`` that define ``register_fleet(commands, common)`` add
subcommands under ``atoll fleet`` (rollouts).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib
import logging
import os
import pkgutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from atoll.cli import emit
from atoll.cli._serve import serve_until_signalled
from atoll.core.errors import InputError

__all__ = ["register"]

log = logging.getLogger("atoll.control")
DEFAULT_LISTEN = "127.0.0.1:8470"
DEFAULT_DB = "sqlite:////var/lib/atoll/control/control.db"
Common = Callable[[argparse.ArgumentParser], None]


MAX_DURATION_S = 36500 * 86400.0  # 100 years: beyond it a date overflows (year 9999)


def _seconds(text: str, what: str) -> float:
    """Seconds in a duration option, at most :data:`MAX_DURATION_S`.

    Raises:
        InputError: not a duration, or longer than 100 years.
    """
    from atoll.apps.spec import parse_duration

    try:
        value = parse_duration(text)
    except ValueError as exc:
        raise InputError(f"{what}: {exc}") from None
    if value > MAX_DURATION_S:
        raise InputError(f"{what}: {text!r} is longer than 100 years (36500d)",
                         resolution="give a shorter duration (`forever` where the option "
                         "offers it)")
    return value


def _pairs(items: list[str] | None, what: str) -> dict[str, str]:
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InputError(f"{what} {item!r}: give KEY=VALUE")
        out[key] = value
    return out


def _client(args: argparse.Namespace) -> Any:
    from atoll.control.client import ControlClient

    return ControlClient.from_env(args.server, args.token_file)


def _write_secret(path: Path, secret: str) -> None:
    """A new file, 0600 from its creation (never readable by others, even for a moment)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(secret + "\n")


def _shown_secret(args: argparse.Namespace, doc: dict[str, Any]) -> str:
    """Where the new secret went: a file (--out), else this output (shown once)."""
    if args.out is not None:
        try:
            _write_secret(args.out, doc["token"])
        except FileExistsError:
            raise InputError(f"{args.out} exists; the token is not written over a file",
                             resolution="the token was created: revoke it, or give another "
                             "--out path") from None
        doc["token"] = None
        doc["token_file"] = str(args.out)
        return f"written to {args.out} (mode 0600)"
    return f"{doc['token']}\n(shown once: keep it now)"


# -- serve and db -------------------------------------------------------------


def _database(args: argparse.Namespace) -> Any:
    from atoll.control.db import Database

    return Database(args.db or os.environ.get("ATOLL_FLEET_DB") or DEFAULT_DB)


def _fleetlock(args: argparse.Namespace, stack: contextlib.ExitStack) -> Any:
    if not (args.fleetlock_embedded or args.fleetlock_etcd):
        return None
    from atoll.fleet.backends import open_backend
    from atoll.fleet.config import load_config
    from atoll.fleet.server import build_app
    from atoll.fleet.service import FleetLockService

    config = load_config(args.fleetlock_config)
    backend = (open_backend("embedded", str(args.fleetlock_embedded))
               if args.fleetlock_embedded else open_backend("etcd", args.fleetlock_etcd))
    stack.enter_context(backend)
    return build_app(FleetLockService(backend, config))


def _election(args: argparse.Namespace, stack: contextlib.ExitStack,
              port: int) -> Any:
    """``--etcd``: this instance's side of the rollout driver's election (or None)."""
    if not args.etcd:
        return None
    import socket

    from atoll.control.leader import Election
    from atoll.fleet.etcdv3 import EtcdClient

    ttl = _seconds(args.etcd_lease, "--etcd-lease")
    if not 2 <= ttl <= 300:
        raise InputError("--etcd-lease: between 2s and 300s")
    client = EtcdClient(args.etcd)
    stack.callback(client.close)
    return Election(client, f"{socket.gethostname()}:{os.getpid()}:{port}", ttl_s=int(ttl))


def _serve(args: argparse.Namespace) -> int:
    import datetime as dt

    from atoll.control.app import Settings
    from atoll.control.limits import Bucket
    from atoll.control.retention import MIN_RETENTION
    from atoll.control.server import ControlServer
    from atoll.fleet.server import parse_listen

    host, port = parse_listen(args.listen)
    limits = {}
    for what, text in (("--checkin-limit", args.checkin_limit),
                       ("--event-limit", args.event_limit)):
        try:
            limits[what] = Bucket.parse(text)
        except ValueError as exc:
            raise InputError(f"{what}: {exc}") from None
    retention = None
    if args.event_retention != "forever":
        retention = dt.timedelta(seconds=_seconds(args.event_retention, "--event-retention"))
        if retention < MIN_RETENTION:
            raise InputError(f"--event-retention: at least {MIN_RETENTION.days}d (the "
                             "database refuses to delete younger events), or forever")
    settings = Settings(
        lost_after=dt.timedelta(seconds=_seconds(args.lost_after, "--lost-after")),
        directive_ttl=dt.timedelta(seconds=_seconds(args.directive_ttl, "--directive-ttl")),
        checkin_limit=limits["--checkin-limit"], event_limit=limits["--event-limit"],
        event_retention=retention)
    tick = _seconds(args.rollout_tick, "--rollout-tick")
    if not 0.1 <= tick <= 86400:
        raise InputError("--rollout-tick: between 0.1s and 1d")
    db = _database(args)
    if args.no_upgrade:
        db.require_current()
    else:
        db.upgrade()
    with contextlib.ExitStack() as stack:
        stack.callback(db.close)
        from atoll.control.releases import open_source

        releases = stack.enter_context(open_source(args.repo, args.repo_root))
        settings = dataclasses.replace(settings, releases=releases)
        from atoll.control.audit import audit_dir_for

        server = ControlServer(db, host, port, settings=settings,
                               fleetlock=_fleetlock(args, stack),
                               drive_s=tick, election=_election(args, stack, port),
                               audit_dir=audit_dir_for(db, args.audit_dir))
        log.info("control plane on %s, database %s", server.url, db.shown)
        log.info("web console on %s/console/ (users: atoll fleet users add)", server.url)
        serve_until_signalled(server)
        server.stop()
    return 0


def _db(args: argparse.Namespace) -> int:
    db = _database(args)
    try:
        if args.db_command == "upgrade":
            applied = db.upgrade()
            state = db.schema() | {"applied": applied}
            emit(args, state, f"applied {', '.join(applied)}" if applied
                 else f"already at {state['current']}")
        elif args.db_command == "status":
            state = db.schema()
            emit(args, state, f"schema {state['current'] or '(empty)'}; this atoll: "
                 f"{state['head']}" + ("" if state["up_to_date"] else
                                       " (run `atoll fleet db upgrade`)"))
        else:
            _bootstrap(args, db)
    finally:
        db.close()
    return 0


def _bootstrap(args: argparse.Namespace, db: Any) -> None:
    """``db init``: the schema, and the first admin token (only while there is none)."""
    import datetime as dt

    from sqlalchemy import select

    from atoll.control import operations
    from atoll.control.models import OperatorToken

    if args.token_file.exists():
        raise InputError(f"{args.token_file} exists; the token is not written over a file")
    # ~/.config/atoll on a fresh machine: made private (0700), as the token file is
    args.token_file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    db.upgrade()
    with db.write() as s:
        if s.scalar(select(OperatorToken.id).where(OperatorToken.role == "admin",
                                                   OperatorToken.revoked_at.is_(None))):
            raise InputError("the database has an admin token already",
                             resolution="create more with `atoll fleet tokens create` "
                             "(with an admin token)")
        doc = operations.create_token(s, None, args.name, "admin", None,
                                      dt.datetime.now(dt.UTC))
        _write_secret(args.token_file, doc["token"])
    doc["token"] = None
    emit(args, doc | {"token_file": str(args.token_file)},
         f"admin token {args.name!r} written to {args.token_file} (mode 0600)")


# -- operators' commands ------------------------------------------------------


def _ago(value: str | None) -> str:
    return value.replace("+00:00", "Z") if value else "-"


def _hosts(args: argparse.Namespace) -> int:
    rows = _client(args).call("GET", "/v1/hosts", query={
        "customer": args.customer, "label": [f"{k}={v}" for k, v in
                                             _pairs(args.label, "--label").items()],
        "lost": True if args.lost else None, "cve_at_least": args.cve_at_least})

    def human() -> str:
        if not rows:
            return "no hosts"
        lines = [f"{'NAME':20} {'CUSTOMER':14} {'VERSION':12} {'UPDATE':11} {'LAST BOOT':12} "
                 f"{'LAST SEEN':25} CVES"]
        for h in rows:
            seen = "LOST " + _ago(h["last_seen"]) if h["lost"] else _ago(h["last_seen"])
            version = (h["booted_version"] or "-") + (f"+{len(h['hotfixes'])}hf"
                                                      if h.get("hotfixes") else "")
            lines.append(f"{h['name']:20} {h['customer']:14} {version:12} "
                         f"{h['update_state'] or '-':11} {h['last_boot']['result'] or '-':12} "
                         f"{seen:25} {_cve_cell(h.get('cves'))}")
        return "\n".join(lines)

    emit(args, rows, human)
    return 0


def _cve_cell(c: dict[str, Any] | None) -> str:
    """The most urgent open CVEs of a host, for `fleet hosts`: "2 high", "none",
    "unknown" (no tracker data), "-" (not reported); "STALE" when the data expired."""
    if c is None or c["source"] == "unreported":
        return "-"
    if c["source"] != "tracker" or c["open"] is None:
        return "unknown"
    top = next((f"{c['open'][u]} {u}" for u in ("high", "medium", "low", "unimportant")
                if c["open"].get(u)), "none")
    return top + (" STALE" if c.get("stale") else "")


def _cve_lines(c: dict[str, Any] | None) -> list[str]:
    """The host's CVE facts (atoll.control.cves.brief) for `fleet host`."""
    from atoll.cli.fleet_cves import counts_text
    from atoll.core.text import printable  # the host wrote these strings

    if c is None or c["source"] == "unreported":
        return ["  cves        not reported (an agent without CVE reporting)"]
    if c["source"] != "tracker":
        head = ("no CVE report kept" if c["source"] == "none"
                else "open CVEs unknown (published without tracker data)")
    else:
        head = "open " + counts_text(c["open"])
    if c.get("expires"):
        head += f"; data expires {printable(str(c['expires']))}" + (
            "  STALE" if c.get("stale") else "")
    lines = [f"  cves        {head}"]
    upd = c.get("update")
    if upd and upd.get("fixes") is not None:
        lines.append(f"  update      fixes {upd.get('fixes_total') or 0} CVE(s): "
                     f"{counts_text(upd['fixes'])} [{printable(str(upd.get('source')))}]")
    return lines


def _hotfix_lines(hotfixes: list[dict[str, Any]] | None) -> list[str]:
    """The booted deployment's hotfix packages for `fleet host` (docs/hotfix.md)."""
    from atoll.core.text import printable  # the host wrote these strings

    return [f"  hotfix      {printable(str(p.get('name')))} {printable(str(p.get('version')))}"
            f" ({printable(str(p.get('kind')))}"
            + (f", expires {printable(str(p['expires']))}" if p.get("expires") else "") + ")"
            for p in hotfixes or []]


def _host(args: argparse.Namespace) -> int:
    h = _client(args).call("GET", f"/v1/hosts/{_path(args.name)}",
                           query={"customer": args.customer,
                                  "packages": True if args.packages else None})

    def human() -> str:
        labels = ", ".join(f"{k}={v}" for k, v in sorted(h["labels"].items())) or "-"
        lines = [f"{h['name']}  ({h['id']})", f"  customer    {h['customer']}",
                 f"  labels      {labels}",
                 f"  last seen   {_ago(h['last_seen'])}" + ("  LOST" if h["lost"] else ""),
                 f"  booted      {h['booted_version'] or '-'}  {(h['booted_commit'] or '')[:12]}",
                 *_hotfix_lines(h.get("hotfixes")),
                 f"  update      {h['update_state'] or '-'}"
                 + (f" ({h['pending_version']})" if h["pending_version"] else ""),
                 f"  last boot   {h['last_boot']['result'] or '-'} "
                 f"{_ago(h['last_boot']['time'])}",
                 f"  rollbacks   {h['rollback_events']}", *_cve_lines(h.get("cves"))]
        for app in (h.get("report") or {}).get("apps") or []:
            db = app.get("database") or {}
            role = f" {db.get('role')}" + (f" lag {db['lag_s']:g}s" if db.get("lag_s")
                                           is not None else "") if db else ""
            state = (app.get("container") or {}).get("health") or \
                (app.get("container") or {}).get("state") or app.get("error") or "-"
            lines.append(f"  app         {app['name']}: {state}{role}")
        for r in h["requests"][:5]:
            lines.append(f"  request     #{r['id']} {r['kind']} {r['state']}"
                         + (f": {r['message']}" if r.get("message") else ""))
        return "\n".join(lines)

    emit(args, h, human)
    return 0


def _path(text: str) -> str:
    import urllib.parse

    return urllib.parse.quote(text, safe="")


def _events(args: argparse.Namespace) -> int:
    rows = _client(args).call("GET", "/v1/events", query={
        "host": args.host, "customer": args.customer, "since": args.since,
        "kind": args.kind, "limit": args.limit})

    def human() -> str:
        return "\n".join(f"{_ago(e['time'])}  {e['host_name'] or '-':20} {e['kind']:16} "
                         f"{e['actor']}  {_data(e['data'])}" for e in rows) or "no events"

    emit(args, rows, human)
    return 0


def _data(data: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in sorted(data.items()) if v not in (None, "", []))


def _label(args: argparse.Namespace) -> int:
    out = _client(args).call("POST", f"/v1/hosts/{_path(args.name)}/labels",
                             {"set": _pairs(args.pairs, "label"), "remove": args.remove or []},
                             query={"customer": args.customer})
    emit(args, out, lambda: f"{out['name']}: " + (", ".join(
        f"{k}={v}" for k, v in sorted(out["labels"].items())) or "no labels"))
    return 0


def _request(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"kind": args.kind, "args": {}}
    if args.kind == "pin":
        body["args"] = {"deployment": args.deployment or "booted", "pinned": not args.unpin}
    elif args.deployment or args.unpin:
        raise InputError("--deployment and --unpin are for `request HOST pin`")
    out = _client(args).call("POST", f"/v1/hosts/{_path(args.name)}/requests", body,
                             query={"customer": args.customer})
    emit(args, out, f"request #{out['id']} ({out['kind']}) queued for {args.name}: sent at "
         "its next check-in")
    return 0


def _prune(args: argparse.Namespace) -> int:
    seconds = int(_seconds(args.lost_for, "--lost-for"))
    out = _client(args).call("POST", "/v1/prune", {"lost_for_s": seconds})
    emit(args, out, lambda: "\n".join(f"pruned {h['name']} ({h['customer']}), last seen "
                                      f"{_ago(h['last_seen'])}" for h in out["pruned"])
         or "nothing to prune")
    return 0


def _customers(args: argparse.Namespace) -> int:
    client = _client(args)
    if args.customers_command == "add":
        out = client.call("POST", "/v1/customers", {"name": args.name})
        emit(args, out, f"customer {out['name']} added")
    else:
        rows = client.call("GET", "/v1/customers")
        emit(args, rows, lambda: "\n".join(f"{c['name']:20} {c['hosts']} host(s)"
                                           for c in rows) or "no customers")
    return 0


def _tokens(args: argparse.Namespace) -> int:
    client = _client(args)
    if args.tokens_command == "create":
        body: dict[str, Any] = {"name": args.name, "role": args.role,
                                "customers": args.customer or None}
        if args.expires:
            body["expires_in_s"] = int(_seconds(args.expires, "--expires"))
        out = client.call("POST", "/v1/tokens", body)
        where = _shown_secret(args, out)
        emit(args, out, f"token {out['name']} ({out['role']}, "
             f"{', '.join(out['customers'] or ['every customer'])}): {where}")
    elif args.tokens_command == "revoke":
        out = client.call("POST", f"/v1/tokens/{_path(args.name)}/revoke")
        emit(args, out, f"token {args.name} " + ("revoked" if out["changed"]
                                                 else "was revoked already"))
    else:
        rows = client.call("GET", "/v1/tokens")
        emit(args, rows, lambda: "\n".join(
            f"{t['name']:20} {t['role']:9} {','.join(t['customers'] or ['*']):20} "
            + ("revoked " + _ago(t["revoked_at"]) if t["revoked_at"] else "active")
            for t in rows) or "no tokens")
    return 0


def _enrol_token(args: argparse.Namespace) -> int:
    if args.enrol_command == "list":
        rows = _client(args).call("GET", "/v1/enrol-tokens", query={
            "customer": args.customer, "valid": True if args.valid else None})
        emit(args, rows, lambda: "\n".join(
            f"{t['id']:>6} {t['customer']:16} {t['host_name'] or '*':16} {t['state']:8} "
            + {"spent": f"by {t['host_id']} {_ago(t['used_at'])}",
               "revoked": _ago(t["revoked_at"])}.get(t["state"],
                                                     f"expires {_ago(t['expires_at'])}")
            for t in rows) or "no enrolment tokens")
        return 0
    if args.enrol_command == "revoke":
        out = _client(args).call("POST", f"/v1/enrol-tokens/{args.id}/revoke")
        emit(args, out, f"enrolment token {args.id} " + (
            "revoked" if out["changed"] else f"left as it was ({out['state']})"))
        return 0
    body = {"customer": args.customer, "host_name": args.host,
            "labels": _pairs(args.label, "--label"),
            "expires_in_s": int(_seconds(args.expires, "--expires"))}
    out = _client(args).call("POST", "/v1/enrol-tokens", body)
    where = _shown_secret(args, out)
    emit(args, out, f"enrolment token for customer {out['customer']}"
         + (f", host {out['host_name']}" if out["host_name"] else "")
         + f", valid until {_ago(out['expires_at'])}: {where}")
    return 0


# -- the parser ----------------------------------------------------------------


def _server_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--server", metavar="URL",
                   help="the control plane (default: $ATOLL_FLEET_SERVER, else "
                   "http://127.0.0.1:8470)")
    p.add_argument("--token-file", type=Path, metavar="FILE",
                   help="a file (mode 0600) holding an operator token (default: "
                   "$ATOLL_FLEET_TOKEN_FILE, $ATOLL_FLEET_TOKEN, ~/.config/atoll/fleet-token)")


def _db_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--db", metavar="URL",
                   help="sqlite:///PATH or postgresql://USER@HOST/DB (default: "
                   f"$ATOLL_FLEET_DB, else {DEFAULT_DB}); a password belongs in ~/.pgpass "
                   "or PGPASSFILE, not in the URL")


def _add(cmds: Any, common: Common, name: str, handler: Callable[[argparse.Namespace], int],
         help_: str, *, server: bool = True) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = cmds.add_parser(name, help=help_, description=help_)
    if server:
        _server_args(p)
    common(p)
    p.set_defaults(handler=handler)
    return p


def register(sub: Any, common: Common) -> None:
    """Add ``atoll fleet ...``."""
    parser = sub.add_parser("fleet", help="the fleet control plane: inventory, history, "
                            "access", description="The fleet control plane "
                            "(docs/control-plane.md).")
    cmds = parser.add_subparsers(dest="fleet_command", metavar="COMMAND")
    cmds.required = True

    serve = _add(cmds, common, "serve", _serve, "serve the control plane API", server=False)
    serve.add_argument("--listen", default=DEFAULT_LISTEN, metavar="HOST:PORT",
                       help=f"address to listen on (default: {DEFAULT_LISTEN})")
    _db_arg(serve)
    serve.add_argument("--no-upgrade", action="store_true",
                       help="refuse to start on an older schema instead of upgrading it")
    serve.add_argument("--lost-after", default="1h", metavar="DURATION",
                       help="a host not seen this long is marked lost (default: 1h)")
    serve.add_argument("--directive-ttl", default="1d", metavar="DURATION",
                       help="how long a host holds itself to an answer when it cannot check "
                       "in again (default: 1d)")
    serve.add_argument("--rollout-tick", default="30s", metavar="DURATION",
                       help="how often the rollout driver advances waves after their soak "
                       "and finds timeouts (default: 30s)")
    serve.add_argument("--etcd", metavar="URL[,URL...]",
                       help="several instances: elect in this etcd the one that drives "
                       "rollouts (default: every instance drives, one rollout at a time)")
    serve.add_argument("--etcd-lease", default="10s", metavar="DURATION",
                       help="the election's lease: a dead leader is replaced within about "
                       "this (2s..300s, default 10s)")
    serve.add_argument("--checkin-limit", default="30/2", metavar="BURST/SECONDS",
                       help="check-ins per host: BURST at once, then one every SECONDS; "
                       "faster ones get 429 (default: 30/2; off: no limit)")
    serve.add_argument("--event-limit", default="200/10", metavar="BURST/SECONDS",
                       help="host events per host (boot, version, app health...): over it "
                       "they are counted in one events-dropped event (default: 200/10)")
    serve.add_argument("--event-retention", default="400d", metavar="DURATION",
                       help="events older than this are deleted, hourly (default: 400d; at "
                       "least 30d; forever: never)")
    serve.add_argument("--repo", metavar="URL|DIR",
                       help="the update repository hosts follow: rollouts choose among its "
                       "signed versions only (GET /v1/releases); needs --repo-root")
    serve.add_argument("--repo-root", type=Path, metavar="FILE",
                       help="the repository's root.json (as `remote add --root`)")
    fl = serve.add_mutually_exclusive_group()
    fl.add_argument("--fleetlock-embedded", type=Path, metavar="FILE",
                    help="also serve FleetLock at /fleetlock, slots in this sqlite file")
    fl.add_argument("--fleetlock-etcd", metavar="URL[,URL...]",
                    help="also serve FleetLock at /fleetlock, slots in etcd")
    serve.add_argument("--fleetlock-config", type=Path, metavar="TOML",
                       help="FleetLock groups and slots (airlock's config.toml)")
    serve.add_argument("--audit-dir", type=Path, metavar="DIR",
                       help="sign the audit chain's head into this directory at start, "
                       "every minute when it grew and at stop (default: DIR/audit beside "
                       "an SQLite database, else /var/lib/atoll/control/audit/HOST-PORT-DATABASE)")

    db = cmds.add_parser("db", help="the control plane's database schema")
    dbc = db.add_subparsers(dest="db_command", metavar="COMMAND")
    dbc.required = True
    for name, help_ in (("upgrade", "apply the schema migrations the database lacks"),
                        ("status", "the database's schema revision and this atoll's")):
        _db_arg(_add(dbc, common, name, _db, help_, server=False))
    init = _add(dbc, common, "init", _db, "upgrade, and create the first admin token",
                server=False)
    _db_arg(init)
    init.add_argument("--token-file", type=Path, required=True, metavar="FILE",
                      help="write the admin token here (a new file, mode 0600)")
    init.add_argument("--name", default="admin", help="the token's name (default: admin)")

    hosts = _add(cmds, common, "hosts", _hosts, "list hosts")
    hosts.add_argument("--customer", metavar="NAME", help="only this customer's hosts")
    hosts.add_argument("--label", action="append", metavar="KEY=VALUE",
                       help="only hosts with this label (repeatable: all must match)")
    hosts.add_argument("--lost", action="store_true", help="only hosts marked lost")
    hosts.add_argument("--cve-at-least", metavar="URGENCY",
                       choices=["unimportant", "low", "medium", "high"],
                       help="only hosts with an open CVE this urgent or more (unimportant, "
                       "low, medium, high)")

    host = _add(cmds, common, "host", _host, "one host: inventory, apps, requests")
    host.add_argument("name", help="the host's name or id")
    host.add_argument("--customer", metavar="NAME", help="when several customers have the name")
    host.add_argument("--packages", action="store_true", help="add its package manifest")

    events = _add(cmds, common, "events", _events, "history: host events, operator actions")
    events.add_argument("--host", metavar="NAME", help="only this host's events")
    events.add_argument("--customer", metavar="NAME", help="only this customer's events")
    events.add_argument("--since", metavar="TIME", help="ISO 8601, e.g. 2026-12-01T00:00Z")
    events.add_argument("--kind", metavar="KIND", help="e.g. rollback, version, lost")
    events.add_argument("--limit", type=int, default=100,
                        help="at most this many events, 1 to 1000 (default: 100)")

    label = _add(cmds, common, "label", _label, "set or remove a host's labels")
    label.add_argument("name", help="the host's name or id")
    label.add_argument("pairs", nargs="*", metavar="KEY=VALUE", help="labels to set")
    label.add_argument("--remove", action="append", metavar="KEY",
                       help="remove this label (repeatable)")
    label.add_argument("--customer", metavar="NAME", help="when several customers have the name")

    req = _add(cmds, common, "request", _request, "queue a request for a host (sent at its "
               "next check-in)")
    req.add_argument("name", help="the host's name or id")
    req.add_argument("kind", choices=["cancel", "pin", "ack-rollback", "apply"],
                     help="cancel its scheduled apply, pin a deployment, acknowledge a "
                     "rollback, apply in its next window (when its policy allows)")
    req.add_argument("--deployment", metavar="ID|booted|rollback|pending",
                     help="pin: which deployment (default: booted)")
    req.add_argument("--unpin", action="store_true", help="pin: unpin instead")
    req.add_argument("--customer", metavar="NAME", help="when several customers have the name")

    prune = _add(cmds, common, "prune", _prune, "remove hosts lost for longer than DURATION")
    prune.add_argument("--lost-for", required=True, metavar="DURATION", help="e.g. 30d")

    cust = cmds.add_parser("customers", help="customers (tenants)")
    cc = cust.add_subparsers(dest="customers_command", metavar="COMMAND")
    cc.required = True
    _add(cc, common, "add", _customers, "add a customer").add_argument(
        "name", help="the customer's name (lower case letters, digits, '-')")
    _add(cc, common, "list", _customers, "list customers")

    tok = cmds.add_parser("tokens", help="operator tokens (admin)")
    tc = tok.add_subparsers(dest="tokens_command", metavar="COMMAND")
    tc.required = True
    create = _add(tc, common, "create", _tokens, "create an operator token (shown once)")
    create.add_argument("name", help="the token's name (lower case letters, digits, '-')")
    create.add_argument("--role", required=True, choices=["viewer", "operator", "admin"],
                        help="viewer reads; operator also labels hosts, queues requests and "
                        "creates enrolment tokens; admin also prunes and manages customers "
                        "and tokens")
    create.add_argument("--customer", action="append", metavar="NAME",
                        help="limit it to this customer (repeatable; default: every customer)")
    create.add_argument("--expires", metavar="DURATION", help="e.g. 90d (default: never)")
    create.add_argument("--out", type=Path, metavar="FILE",
                        help="write the token to a new file (0600) instead of printing it")
    _add(tc, common, "list", _tokens, "list operator tokens")
    _add(tc, common, "revoke", _tokens, "revoke an operator token").add_argument(
        "name", help="the token's name")

    enrol = cmds.add_parser("enrol-token", help="one-time tokens that enrol hosts")
    ec = enrol.add_subparsers(dest="enrol_command", metavar="COMMAND")
    ec.required = True
    ecreate = _add(ec, common, "create", _enrol_token, "create an enrolment token for a "
                   "customer's host (for its host config's control.enrol_token)")
    ecreate.add_argument("--customer", required=True, metavar="NAME",
                         help="the customer the host is bound to")
    ecreate.add_argument("--host", metavar="NAME", help="only for a host of this name")
    ecreate.add_argument("--label", action="append", metavar="KEY=VALUE",
                         help="labels the host gets (repeatable)")
    ecreate.add_argument("--expires", default="7d", metavar="DURATION",
                         help="default 7d, at most 30d")
    ecreate.add_argument("--out", type=Path, metavar="FILE",
                         help="write the token to a new file (0600) instead of printing it")
    elist = _add(ec, common, "list", _enrol_token, "list enrolment tokens (never their "
                 "secrets): valid, spent (by which host), expired or revoked")
    elist.add_argument("--customer", metavar="NAME", help="only this customer's")
    elist.add_argument("--valid", action="store_true", help="only those still usable")
    _add(ec, common, "revoke", _enrol_token, "revoke an enrolment token not yet spent "
         "(a leaked one)").add_argument("id", type=int, help="the token's id (enrol-token list)")

    import atoll.cli as pkg

    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda m: m.name):
        if info.name.startswith("fleet_"):
            more = getattr(importlib.import_module(f"atoll.cli.{info.name}"),
                           "register_fleet", None)
            if more is not None:
                more(cmds, common)


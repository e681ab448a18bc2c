"""`atoll policy set|show`, `atoll update apply`, `atoll agent status`.

When atolld runs, these go through its local API (so the agent's view and
locks stay the one truth); without it they act on the sysroot directly.
"""

from __future__ import annotations

import argparse
import datetime as dt
from collections.abc import Callable
from typing import Any

from atoll.agent import api
from atoll.agent.host import Host
from atoll.agent.policy import (
    MIN_INTERVAL_S,
    MODES,
    ApplyRequest,
    Policy,
    apply_noop,
    check_apply_request,
)
from atoll.agent.state import AgentFiles
from atoll.agent.windows import parse_window
from atoll.cli import emit
from atoll.cli.update import add_update_subcommand
from atoll.core.errors import HostStateError, InputError
from atoll.core.text import printable


def _parse_at(text: str) -> dt.datetime:
    """'2026-12-05 02:30' (host's local time zone) or ISO-8601 with an offset.

    Raises: InputError: empty, or not a time.
    """
    if not text.strip():
        raise InputError("--at: give a time, e.g. '2026-12-05 02:30'")
    try:
        when = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise InputError(f"--at {text!r}: expected 'YYYY-MM-DD HH:MM' or ISO-8601") from None
    if when.tzinfo is None:
        when = when.astimezone()  # the host's local time zone
    return when


def cmd_policy_set(args: argparse.Namespace) -> None:
    files = AgentFiles(args.sysroot)
    cur = Policy().to_json() | files.raw_policy()  # a damaged one is replaced whole
    if args.mode:
        cur["mode"] = args.mode
    if args.clear_windows or not isinstance(cur.get("windows"), list):
        cur["windows"] = []
    for w in args.window or []:
        try:
            parse_window(w)
        except ValueError as exc:
            raise InputError(f"--window {w!r}: {exc}") from None
        cur["windows"] = [*cur["windows"], w]
    for key in ("fleet_lock", "group", "remote"):
        if getattr(args, key) is not None:
            cur[key] = getattr(args, key) or None if key == "fleet_lock" else getattr(args, key)
    if args.interval is not None:
        cur["check_interval_s"] = args.interval
    if args.no_reboot:
        cur["reboot"] = False
    if args.reboot:
        cur["reboot"] = True
    if args.operator_apply is not None:
        cur["operator_apply"] = args.operator_apply == "yes"
    for key in ("updates", "security_threshold", "unassigned_as"):
        if getattr(args, key) is not None:
            cur[key] = getattr(args, key)
    try:
        policy = Policy.from_json(cur)
    except ValueError as exc:
        raise InputError(f"policy: {exc}", resolution="nothing was changed; see "
                         "`atoll policy set --help`") from None
    if args.remote is not None:
        from atoll.repo.remotes import load_remote

        load_remote(args.sysroot, args.remote)  # an unknown remote is refused here
    if api.running(args.sysroot):
        api.call(args.sysroot, "PUT", "/v1/policy", policy.to_json())
    else:
        files.save_policy(policy)
    emit(args, policy.to_json(), lambda: _render_policy(policy.to_json()))


def _render_policy(p: dict[str, Any]) -> str:
    lines = [f"mode        {p['mode']}", f"remote      {printable(p['remote'])}",
             f"interval    {p['check_interval_s']} s (+ up to {p['jitter_s']} s jitter)",
             f"fleet lock  {printable(p['fleet_lock'] or '-')} (group {printable(p['group'])})",
             f"reboot      {'yes' if p['reboot'] else 'no'}",
             f"updates     {p.get('updates', 'all')}" + (
                 f" (fixes of urgency {p['security_threshold']} or above; 'not yet "
                 f"assigned' counts as {p['unassigned_as']})"
                 if p.get("updates") == "security-only" else ""),
             f"operators   {'may' if p.get('operator_apply') else 'may not'} schedule "
             "the apply (control plane)"]
    lines += [f"window      {printable(w)}" for w in p["windows"]] or [
        "window      (none: any time)"]
    return "\n".join(lines)


def cmd_policy_show(args: argparse.Namespace) -> None:
    p = AgentFiles(args.sysroot).policy().to_json()
    emit(args, p, lambda: _render_policy(p))


def cmd_apply(args: argparse.Namespace) -> None:
    files = AgentFiles(args.sysroot)
    through_agent = api.running(args.sysroot)
    if args.cancel:
        if through_agent:
            out = api.call(args.sysroot, "POST", "/v1/apply/cancel")
        else:
            had = files.request()
            files.set_request(None)
            out = {"cancelled": had.to_json() if had else None}
        emit(args, out, "scheduled apply cancelled" if out["cancelled"] else
             "no apply was scheduled")
        return
    if args.at is not None or args.window:
        _schedule(args, files, through_agent)
        return
    # now: make the downloaded update the next boot; reboot only when asked
    if through_agent:
        out = api.call(args.sysroot, "POST", "/v1/apply", {"kind": "now", "reboot": args.reboot})
        emit(args, out, out.get("note") or f"apply: {out['decision']['reason']}")
        return
    host = Host(args.sysroot)
    st = host.state()
    policy = files.policy()
    noop = apply_noop(st, "now", reboot=args.reboot and policy.reboot)
    if noop is not None:
        if args.reboot and not policy.reboot:
            noop += " (the update policy says not to reboot: `atoll policy set --reboot`)"
        emit(args, {"changed": False, "note": noop}, noop)
        return
    if host.sr.prepared() is None:
        newer = st.downloaded is not None and st.downloaded not in (st.booted, st.pending)
        if newer:
            assert st.downloaded is not None
            host.prepare(st.downloaded)
        elif not (args.reboot and st.pending is not None and st.pending != st.booted):
            what = ("no update is known: this host has not checked for one"
                    if st.available is None else
                    f"update {st.available[:12]} is not downloaded yet")
            raise HostStateError(what, resolution="run `atoll update download` first (it "
                                 "checks too; atolld does it by itself in modes download, "
                                 "prepare and apply)")
    out = host.apply(policy, reboot=args.reboot)
    dep = out["deployment"]
    emit(args, out | {"changed": True},
         f"{dep['id']} (version {printable(dep['version'])}) boots next"
         + ("; rebooting" if args.reboot and policy.reboot else
            "; not rebooting: the update policy says not to (`atoll policy set --reboot`)"
            if args.reboot else "; reboot when it suits you"))


def cmd_prepare(args: argparse.Namespace) -> None:
    """`update prepare`: check out and verify the downloaded update, outside the boot order
    (what atolld does in mode prepare); `update apply` then makes it the next boot."""
    host = Host(args.sysroot)
    st = host.state()
    prepared = host.sr.prepared()
    if st.downloaded is None or st.downloaded in (st.booted, st.pending):
        if st.available is not None and st.downloaded is None:
            raise HostStateError(f"update {st.available[:12]} is not downloaded yet",
                                 resolution="run `atoll update download` first")
        note = ("already prepared: " + prepared.id if prepared is not None else
                "nothing to prepare: no downloaded update the host does not run or boot next")
        emit(args, {"changed": False, "note": note,
                    "prepared": prepared.to_json() if prepared else None}, note)
        return
    if prepared is not None and st.prepared == st.downloaded:
        note = f"already prepared: {prepared.id}"
        emit(args, {"changed": False, "note": note, "prepared": prepared.to_json()}, note)
        return
    dep = host.prepare(st.downloaded)
    emit(args, {"changed": True, "prepared": dep},
         f"prepared {dep['id']} (version {printable(dep['version'])}): `atoll update apply` "
         "makes it the next boot")


def _setup_prepare(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                   help="machine-readable output on stdout")
    p.set_defaults(handler=cmd_prepare)


def _schedule(args: argparse.Namespace, files: AgentFiles, through_agent: bool) -> None:
    """`update apply --at TIME | --window`: apply (or, applied already, reboot) then."""
    kind = "at" if args.at is not None else "window"
    at = _parse_at(args.at) if args.at is not None else None
    if through_agent:
        out = api.call(args.sysroot, "POST", "/v1/apply",
                       {"kind": kind, "at": at.isoformat() if at else None, "reboot": True})
    else:
        policy = files.policy()
        check_apply_request(policy, kind, at)
        noop = apply_noop(Host(args.sysroot).state(), kind, reboot=policy.reboot)
        if noop is not None:
            if not policy.reboot:
                noop += " (the update policy says not to reboot: `atoll policy set --reboot`)"
            emit(args, {"request": None, "changed": False, "note": noop}, noop)
            return
        req = ApplyRequest(kind, dt.datetime.now(dt.UTC), at, True)  # type: ignore[arg-type]
        files.set_request(req)
        out = {"request": req.to_json(), "decision": None, "changed": True,
               "note": "atolld is not running: it carries this out when it starts"}
    if not out.get("changed", True):
        emit(args, out, out["note"])
        return
    when = f"for {at.isoformat()}" if at else "for the next maintenance window"
    emit(args, out, lambda: f"apply scheduled {when}"
         + (f": {out['decision']['reason']}" if out.get("decision") else
            f"; {out.get('note', '')}"))


def cmd_agent_status(args: argparse.Namespace) -> None:
    if api.running(args.sysroot):
        out = api.call(args.sysroot, "GET", "/v1/status")
        out["running"] = True
    else:
        files = AgentFiles(args.sysroot)
        out = {"policy": files.policy().to_json(), "agent": files.load(), "running": False}
    emit(args, out, lambda: _render_agent(out))


def _render_agent(out: dict[str, Any]) -> str:
    a = out["agent"]
    lines = [f"atolld: {'running' if out['running'] else 'not running'}",
             _render_policy(out["policy"])]
    if a.get("request"):
        r = a["request"]
        lines.append(f"apply requested: {r['kind']}" + (f" at {r['at']}" if r.get("at") else ""))
    if a.get("lock_held"):
        lines.append(f"fleet slot held since {a['lock_held']['since']} "
                     f"(group {a['lock_held']['group']})")
    for d in a.get("decisions", [])[-5:]:
        lines.append(f"{d['time']}  {d['action']:<8} {d['reason']}")
    return "\n".join(lines)


def _setup_apply(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--at", metavar="TIME",
                   help="apply (and reboot) at this time, e.g. '2026-12-05 02:30' (the host's "
                   "zone, or give an offset); an update applied already: reboot into it then")
    g.add_argument("--window", action="store_true",
                   help="apply (and reboot) in the next maintenance window; an update applied "
                   "already: reboot into it then")
    g.add_argument("--cancel", action="store_true", help="cancel a scheduled apply")
    p.add_argument("--reboot", action="store_true",
                   help="reboot now into the update (also into one applied before)")
    p.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                   help="machine-readable output on stdout")
    p.set_defaults(handler=cmd_apply)


add_update_subcommand("prepare", _setup_prepare,
                      "check out and verify the downloaded update; not yet the next boot")
add_update_subcommand("apply", _setup_apply,
                      "make the downloaded update the next boot (now, --at, --window)")


def register(sub: Any, common: Callable[[argparse.ArgumentParser], None]) -> None:
    p = sub.add_parser("policy", help="when updates are checked, downloaded and applied")
    ps = p.add_subparsers(dest="policy_command", metavar="ACTION", required=True)
    s = ps.add_parser("set", help="change the update policy")
    s.add_argument("--mode", choices=MODES,
                   help="off | check | download | prepare | apply (docs/agent.md)")
    s.add_argument("--window", action="append",
                   help="maintenance window 'DAYS HH:MM-HH:MM ZONE' (repeatable)")
    s.add_argument("--clear-windows", action="store_true", help="remove every window")
    s.add_argument("--fleet-lock", help="FleetLock server URL ('' to remove)")
    s.add_argument("--group", help="fleet group (FleetLock reboot group)")
    s.add_argument("--remote", help="remote to follow (one of `atoll remote list`)")
    s.add_argument("--interval", type=int,
                   help=f"seconds between checks ({MIN_INTERVAL_S} s to 7 days)")
    g = s.add_mutually_exclusive_group()
    g.add_argument("--no-reboot", action="store_true",
                   help="apply without rebooting (the customer reboots)")
    g.add_argument("--reboot", action="store_true", help="reboot after applying (default)")
    s.add_argument("--updates", choices=["all", "security-only"],
                   help="which updates the agent takes on its own: all, or only those that "
                   "fix an open CVE at or above --security-threshold (docs/security.md)")
    s.add_argument("--security-threshold", choices=["unimportant", "low", "medium", "high"],
                   help="the Debian security tracker's urgency a fix must have under "
                   "security-only (default high)")
    s.add_argument("--unassigned-as", choices=["unimportant", "low", "medium", "high"],
                   help="what the tracker's 'not yet assigned' urgency counts as (default "
                   "medium)")
    s.add_argument("--operator-apply", choices=["yes", "no"],
                   help="may the control plane's operators schedule the apply in the next "
                   "maintenance window (default: no: only the customer's own trigger)")
    common(s)
    s.set_defaults(handler=cmd_policy_set)
    s = ps.add_parser("show", help="show the update policy")
    common(s)
    s.set_defaults(handler=cmd_policy_show)
    a = sub.add_parser("agent", help="the host agent (atolld)")
    asub = a.add_subparsers(dest="agent_command", metavar="ACTION", required=True)
    s = asub.add_parser("status", help="policy, scheduled apply, recent decisions")
    common(s)
    s.set_defaults(handler=cmd_agent_status)

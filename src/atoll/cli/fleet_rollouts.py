"""``atoll fleet rollout create|status|halt|resume|abort``: rollouts on the control plane
(thin: the server decides; docs/control-plane.md, "Rollouts")."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from atoll.cli import emit
from atoll.cli.fleet import Common, _add, _client, _pairs, _seconds
from atoll.core.errors import InputError

__all__ = ["register_fleet"]


def _versions(items: list[str]) -> list[dict[str, str]]:
    out = []
    for item in items:
        version, sep, commit = item.partition("=")
        if not sep or not version or not commit:
            raise InputError(f"--version {item!r}: give VERSION=COMMIT (the commit TUF "
                             "signs for that version)")
        out.append({"version": version, "commit": commit})
    return out


def _spec(args: argparse.Namespace) -> dict[str, Any]:
    spec: dict[str, Any] = {}
    if args.spec is not None:
        try:
            loaded = json.loads(Path(args.spec).read_text())
        except (OSError, ValueError) as exc:
            raise InputError(f"--spec {args.spec}: cannot read it as JSON: {exc}") from None
        if not isinstance(loaded, dict):
            raise InputError(f"--spec {args.spec}: expected a JSON object")
        spec.update(loaded)
    if args.waves is not None:
        try:
            spec["waves"] = [float(w) for w in args.waves.split(",")]
        except ValueError:
            raise InputError(f"--waves {args.waves!r}: give percentages, e.g. 1,10,100") \
                from None
    for name, value in (("soak_s", args.soak), ("update_timeout_s", args.update_timeout)):
        if value is not None:
            spec[name] = int(_seconds(value, "--" + name[:-2].replace("_", "-")))
    for name in ("max_in_flight", "max_per_site"):
        if getattr(args, name) is not None:
            spec[name] = getattr(args, name)
    budget = dict(spec.get("budget") or {})
    if args.max_failures is not None:
        budget["max_failures"] = args.max_failures
    if args.max_failure_percent is not None:
        budget["max_failure_percent"] = args.max_failure_percent
    if args.min_sample is not None:
        budget["min_sample"] = args.min_sample
    if budget:
        spec["budget"] = budget
    if args.no_canary_wave:
        spec["canary_wave"] = False
    return spec


def _human(doc: dict[str, Any]) -> str:
    halt = doc.get("halt")
    lines = [f"rollout {doc['id']}: {doc['state']}, {doc.get('from_version') or 'any'} -> "
             f"{doc['to_version']} on {doc['channel']}, {doc['members']} members",
             " ".join([f"  group     customer={doc['customer'] or '*'}", *(
                 f"{k}={v}" for k, v in sorted(doc["labels"].items()))])]
    if halt:
        lines.append(f"  halt      {halt['code']}: {halt['reason']} (by {halt['by']})"
                     + (f"; failing: {', '.join(halt['hosts'])}" if halt.get("hosts") else ""))
    for w in doc.get("waves", []):
        phases = ", ".join(f"{k} {n}" for k, n in w["phases"].items()) or "-"
        lines.append(f"  wave {w['index']}{' (canary)' if w['canary'] else ''}  "
                     f"{w['hosts']} hosts, {'started' if w['started'] else 'queued'}: "
                     f"{phases}")
    if "next" in doc:
        lines.append(f"  next      {doc['next']['action']}: {doc['next']['reason']}")
    for h in doc.get("hosts", []):
        lines.append(f"    {h['name'] or h['host']:24} wave {h['wave']}  {h['phase']}")
    return "\n".join(lines)


def _rollout(args: argparse.Namespace) -> int:
    client = _client(args)
    what = args.rollout_command
    if what == "create":
        body = {"id": args.id, "customer": args.customer,
                "labels": _pairs(args.label, "--label"), "channel": args.channel,
                "versions": _versions(args.version or []), "to_version": args.to,
                "from_version": args.from_version, "floors": args.floor or [],
                "dead_ends": args.dead_end or [], "spec": _spec(args)}
        doc = client.call("POST", "/v1/rollouts", body)
    elif what == "status" and args.id is None:
        rows = client.call("GET", "/v1/rollouts", query={"state": args.state})
        emit(args, rows, lambda: "\n".join(
            f"{r['id']:24} {r['state']:9} {r['to_version']:14} wave {r['wave']}  "
            f"{r['members']} members" for r in rows) or "no rollouts")
        return 0
    elif what == "status":
        doc = client.call("GET", f"/v1/rollouts/{args.id}",
                          query={"hosts": True if args.hosts else None})
    elif what == "resume":
        doc = client.call("POST", f"/v1/rollouts/{args.id}/resume",
                          {"excuse": not args.no_excuse, "reason": args.reason})
    else:
        doc = client.call("POST", f"/v1/rollouts/{args.id}/{what}", {"reason": args.reason})
    emit(args, doc, lambda: _human(doc))
    return 0


def register_fleet(cmds: Any, common: Common) -> None:
    """Add ``atoll fleet rollout ...``."""
    parser = cmds.add_parser("rollout", help="rollouts: move a group to a signed version in "
                             "waves, halting by itself on failures")
    rc = parser.add_subparsers(dest="rollout_command", metavar="COMMAND")
    rc.required = True

    create = _add(rc, common, "create", _rollout, "start a rollout over the hosts its group "
                  "matches now (operator)")
    create.add_argument("id", help="the rollout's id (letters, digits, '.', '_', '-')")
    create.add_argument("--to", required=True, metavar="VERSION",
                        help="the signed version to move the group to")
    create.add_argument("--channel", required=True, metavar="CHANNEL",
                        help="the channel its versions are signed on, e.g. site/db")
    create.add_argument("--version", action="append", metavar="VERSION=COMMIT",
                        help="a signed version the rollout chooses among, oldest first "
                        "(repeatable; hosts on other versions are skipped; default: every "
                        "signed version, when the server reads the repository)")
    create.add_argument("--customer", metavar="NAME",
                        help="the group's customer (default: every customer; needs a token "
                        "of every customer)")
    create.add_argument("--label", action="append", metavar="KEY=VALUE",
                        help="the group: hosts with this label (repeatable: all must match)")
    create.add_argument("--from", dest="from_version", metavar="VERSION",
                        help="the version the group moves from (informational; older than "
                        "--to)")
    create.add_argument("--floor", action="append", metavar="VERSION",
                        help="a version every host below it passes through first (repeatable)")
    create.add_argument("--dead-end", action="append", metavar="VERSION",
                        help="a version no host is moved to; hosts on it move first "
                        "(repeatable)")
    create.add_argument("--spec", type=Path, metavar="JSON",
                        help="a RolloutSpec file (docs/control-plane.md); options below "
                        "override its fields")
    create.add_argument("--waves", metavar="P,P,...",
                        help="cumulative percentages, the last 100 (default: 1,10,100)")
    create.add_argument("--no-canary-wave", action="store_true",
                        help="canary=true hosts go first, not in a wave of their own")
    create.add_argument("--soak", metavar="DURATION",
                        help="watch each wave this long before the next (default: 1h)")
    create.add_argument("--update-timeout", metavar="DURATION",
                        help="an update not finished this long is a failure (default: 1h)")
    create.add_argument("--max-in-flight", type=int, metavar="N",
                        help="hosts applying at once (default: no limit)")
    create.add_argument("--max-per-site", type=int, metavar="N",
                        help="new hosts of one site per wave (default: no cap)")
    create.add_argument("--max-failures", type=int, metavar="N",
                        help="halt when more hosts than this failed (default: 0)")
    create.add_argument("--max-failure-percent", type=float, metavar="P",
                        help="halt when more than P %% of the outcomes failed (default: none)")
    create.add_argument("--min-sample", type=int, metavar="N",
                        help="outcomes needed before the percentage counts (default: 10)")

    status = _add(rc, common, "status", _rollout, "one rollout's waves and hosts, or the list "
                  "of rollouts")
    status.add_argument("id", nargs="?", help="the rollout (default: list them all)")
    status.add_argument("--hosts", action="store_true", help="add every host's wave and phase")
    status.add_argument("--state", choices=["running", "halted", "finished", "aborted"],
                        help="the list: only rollouts in this state")

    for name, help_ in (("halt", "halt a running rollout: nothing more is granted (operator)"),
                        ("abort", "end a rollout: no host is moved back, its hosts "
                         "follow their own policy again (operator)")):
        p = _add(rc, common, name, _rollout, help_)
        p.add_argument("id", help="the rollout")
        p.add_argument("--reason", default="", help="why (recorded in its events)")
    resume = _add(rc, common, "resume", _rollout, "resume a halted rollout (operator)")
    resume.add_argument("id", help="the rollout")
    resume.add_argument("--no-excuse", action="store_true",
                        help="keep counting the failures seen so far (default: they are "
                        "excused; those hosts stay where they are)")
    resume.add_argument("--reason", default="", help="why (recorded in its events)")

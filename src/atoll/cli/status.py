"""`atoll status [-v]` (as rpm-ostree and bootc show it) and `atoll db diff`.

The human form is rendered from the ``atoll/v1 HostStatus`` document that
``--json`` prints (``atoll.deploy.status``), so both always agree.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from atoll.cli import emit
from atoll.core.text import printable

__all__ = ["method_word", "register", "render_packages", "render_status"]

_ROLE = {"booted": "booted", "pending": "pending: boots next", "rollback": "rollback",
         "other": "kept", "prepared": "prepared: waits for `atoll update apply`"}
_KEY = 15  # the width keys are right-aligned to, as rpm-ostree does


def _kv(key: str, value: str) -> str:
    return f"{key + ':':>{_KEY}} {value}"


def render_packages(changes: dict[str, Any], indent: str = "  ") -> list[str]:
    """Package changes (``atoll.store.packages`` shape) as lines: counts, then each."""
    if changes.get("no_manifest"):
        sides = " and ".join(changes["no_manifest"])
        return [f"{indent}package changes unknown: no package manifest in the {sides} commit "
                "(its tree had no dpkg database)"]
    counts = ", ".join(f"{len(changes.get(k, []))} {k}" for k in
                       ("upgraded", "downgraded", "added", "removed") if changes.get(k))
    lines = [f"{indent}{counts or 'no package changes'}"]
    lines += [f"{indent}  ~ {p['name']} {p['old']} -> {p['new']}"
              for p in changes.get("upgraded", []) + changes.get("downgraded", [])]
    lines += [f"{indent}  + {p['name']} {p['version']}" for p in changes.get("added", [])]
    lines += [f"{indent}  - {p['name']} {p['version']}" for p in changes.get("removed", [])]
    return lines


def _deployment(d: dict[str, Any], verbose: bool) -> list[str]:
    mark = "●" if d["role"] == "booted" else " "
    origin = printable(d.get("origin") or "(no origin: deployed by commit id)")
    lines = [f"{mark} {origin}  ({_ROLE.get(d['role'], d['role'])})"]
    when = f" ({d['timestamp']})" if d.get("timestamp") else ""
    lines.append(_kv("Version", f"{printable(d['version'] or '-')}{when}"))
    lines.append(_kv("Commit", f"{d['commit'][:12]}.{d['serial']}"))
    hf = d.get("hotfix")
    if hf:  # rpm-ostree's "LocalPackages": a local derivation of the base (docs/hotfix.md)
        lines.append(_kv("Base", f"{printable(hf['base_version'] or '-')} "
                             f"({hf['base'][:12]})"))
        lines.append(_kv("Hotfixes", ", ".join(
            f"{printable(p['name'])} {printable(p['version'])} ({p['kind']})"
            for p in hf["packages"])))
    if d["index"] >= 0:
        lines.append(_kv("Index", str(d["index"])))
    if d.get("pinned"):
        lines.append(_kv("Pinned", "yes"))
    if verbose:
        lines.append(_kv("Deployed", d.get("created") or "-"))
        lines.append(_kv("Kernel", d.get("kernel") or "-"))
        lines.append(_kv("Deployment", d["id"]))
    if d.get("etc_conflicts"):
        lines.append(_kv("/etc conflicts", ", ".join(printable(p) for p in d["etc_conflicts"])))
    if verbose and d.get("packages") is not None:
        lines.append(_kv("Packages", "against the booted deployment:"))
        lines += render_packages(d["packages"], " " * (_KEY + 1))
    return lines


def _name(dep_id: str | None, st: dict[str, Any]) -> str:
    """A deployment as people name it: version and short id."""
    if not dep_id:
        return "?"
    known = [d for d in [*st["deployments"], st.get("prepared")] if d and d["id"] == dep_id]
    commit, _, serial = dep_id.partition(".")
    short = f"{commit[:12]}.{serial}" if serial else printable(dep_id[:16])
    return f"{printable(known[0]['version'])}, {short}" if known else short


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _last_boot(lb: dict[str, Any], st: dict[str, Any]) -> list[str]:
    who = _name(lb.get("deployment"), st)
    when = lb.get("time") or "?"
    if lb["result"] == "rolled-back":
        text = [f"Last boot: ROLLED BACK at {when} (from {who}): {printable(lb['reason'])}"]
        if not lb.get("acknowledged"):
            text.append("           acknowledge it with `atoll rollback ack`")
        return text
    checks = lb.get("checks") or []
    failed = [c for c in checks if not c.get("ok", True)]
    summary = f"{_plural(len(checks), 'health check')} passed" if not failed else \
        f"{len(failed)} of {_plural(len(checks), 'health check')} failed: " \
        f"{printable(lb['reason'])}"
    return [f"Last boot: {lb['result']} at {when} ({who}); {summary}"]


def _update(up: dict[str, Any]) -> str:
    state = up.get("state", "unknown")
    where = f"{up['remote']}:{up['channel']}" if up.get("remote") and up.get("channel") else ""
    if state == "up-to-date":
        text = "up to date"
    else:
        text = f"{state} {printable(up.get('version') or '?')}"
        if state == "available" and up.get("download_bytes"):
            text += (f" ({_size(int(up['download_bytes']))} to download, "
                     f"{method_word(str(up.get('method')))})")
    text += f" from {where}" if where else ""
    if up.get("since") and state != "up-to-date":
        text += f", since {up['since']}"
    if up.get("last_check"):
        text += f"; last check {up['last_check']}"
    return f"Update: {text}"


# How an update is downloaded, in the words `update check` and `status` both use.
_METHODS = {"delta": "delta", "chunks": "missing objects", "pack": "whole image",
            "none": "nothing to download"}


def method_word(method: str) -> str:
    return _METHODS.get(method, printable(method))


def _size(n: int) -> str:
    """Bytes for people: 312.4 MB (decimal units, as download sizes are usually given)."""
    value = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{n} B"


def render_status(st: dict[str, Any], *, verbose: bool = False) -> str:
    """The human form of an ``atoll/v1 HostStatus`` document."""
    lines: list[str] = []
    unknown = any(p["file"].endswith("deployments.json") for p in st.get("problems") or [])
    if unknown:
        lines.append("Deployments: unknown (the boot order does not read: see below)")
    elif not st["deployments"]:
        lines.append("Deployments: none (deploy a commit: atoll deploy REV)")
    else:
        lines.append("Deployments:")
        for d in st["deployments"]:
            lines += _deployment(d, verbose)
    if st.get("prepared"):
        lines.append("Prepared:")
        lines += _deployment(st["prepared"], verbose)
    if st.get("last_boot"):
        lines += _last_boot(st["last_boot"], st)
    if st.get("update"):
        lines.append(_update(st["update"]))
    for p in st.get("problems") or []:
        lines.append(f"Damaged: {printable(p['problem'])}")
        if p.get("resolution"):
            lines.append(f"         {printable(p['resolution'])}")
    return "\n".join(lines)


def cmd_status(args: argparse.Namespace) -> None:
    from atoll.deploy.status import host_status

    st = host_status(args.sysroot, packages=args.verbose)
    emit(args, st, lambda: render_status(st, verbose=args.verbose))


def cmd_db_diff(args: argparse.Namespace) -> int:
    """Package changes between two deployments or revisions (booted -> pending by default)."""
    from atoll.cli import NOTHING_NEW
    from atoll.core.errors import InputError
    from atoll.deploy.sysroot import Sysroot
    from atoll.store.ops import package_changes

    sr = Sysroot(args.sysroot)
    deps = sr.deployments()
    booted = next((d for d in deps if d.id == sr.booted_id()), None)
    repo = sr.repo
    if args.from_rev is None:
        if booted is None:
            why = ("this sysroot has not booted" if sr.booted_id() is None else
                   "the booted deployment is not in the boot order")
            emit(args, {"from": None, "to": None, "packages": None},
                 f"nothing to compare: no booted deployment ({why}); name both: "
                 "atoll db diff FROM TO")
            return int(NOTHING_NEW)
        if deps[0].id == booted.id:
            prepared = sr.prepared()
            if prepared is None:
                emit(args, {"from": None, "to": None, "packages": None},
                     "nothing to compare: no pending or prepared deployment")
                return int(NOTHING_NEW)
            old, new = booted.commit, prepared.commit
        else:
            old, new = booted.commit, deps[0].commit
    else:
        old = repo.resolve(args.from_rev)
        if args.to_rev is None:
            if booted is None:
                raise InputError("no booted deployment to compare with",
                                 resolution="give both: atoll db diff FROM TO")
            new = booted.commit
        else:
            new = repo.resolve(args.to_rev)
    changes = package_changes(repo.read_commit(old), repo.read_commit(new))
    data = {"from": old, "to": new, "packages": changes}
    emit(args, data, lambda: "\n".join(
        [f"{old[:12]} -> {new[:12]}", *render_packages(changes, "")]))
    return 0


def register(sub: Any, common: Callable[[argparse.ArgumentParser], None]) -> None:
    p = sub.add_parser("status", help="deployments (booted, pending, rollback, prepared), "
                       "last boot, update state",
                       description="The host's deployments and update state, as rpm-ostree "
                       "status shows them; --json prints the versioned atoll/v1 HostStatus "
                       "document (docs/status.schema.json).")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="also each deployment's kernel, full id and package changes against "
                   "the booted one")
    common(p)
    p.set_defaults(handler=cmd_status)
    db = sub.add_parser("db", help="package databases of deployments")
    dsub = db.add_subparsers(dest="db_command", metavar="ACTION", required=True)
    p = dsub.add_parser("diff", help="package changes between two revisions (default: the "
                        "booted deployment and the pending or prepared one)")
    p.add_argument("from_rev", nargs="?", metavar="FROM",
                   help="a ref, commit or REMOTE:CHANNEL (default: the booted deployment)")
    p.add_argument("to_rev", nargs="?", metavar="TO",
                   help="the revision to compare with (default: the booted deployment)")
    common(p)
    p.set_defaults(handler=cmd_db_diff)

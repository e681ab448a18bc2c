"""`atoll init | deploy | status | rollback | undeploy | pin | cleanup` on a sysroot."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from atoll.cli import emit
from atoll.core.text import printable
from atoll.deploy.status import host_status
from atoll.deploy.sysroot import Sysroot
from atoll.store.repo import Repo


def cmd_init(args: argparse.Namespace) -> None:
    sr = Sysroot(args.sysroot)
    sr.init(bootloader=args.bootloader)
    emit(args, {"sysroot": str(sr.root)}, f"initialised sysroot {sr.root}")


def cmd_deploy(args: argparse.Namespace) -> None:
    sr = Sysroot(args.sysroot)
    repo = Repo.open(args.repo) if args.repo else None
    dep = sr.deploy(args.rev, repo=repo)
    lines = [f"deployed {dep.id} (version {dep.version}): boots next"]
    if dep.etc_conflicts:
        lines.append("/etc conflicts (host's version kept; image default in /usr/etc):")
        lines += [f"  {printable(p)}" for p in dep.etc_conflicts]
    emit(args, dep.to_json(), "\n".join(lines))


def render_status(st: dict[str, Any]) -> str:
    lines = []
    if not st["deployments"]:
        return "no deployments"
    for d in st["deployments"]:
        mark = {"booted": "*", "pending": ">"}.get(d["role"], " ")
        pin = " (pinned)" if d["pinned"] else ""
        lines.append(f"{mark} {d['index']}: {d['id'][:20]}…  version {d['version']}  "
                     f"[{d['role']}]{pin}")
        lines.append(f"      ref {d['ref'] or '-'}  created {d['created']}")
        if d["etc_conflicts"]:
            lines.append("      /etc conflicts: "
                         + ", ".join(printable(p) for p in d["etc_conflicts"]))
    lb = st.get("last_boot")
    if lb:
        lines.append(f"last boot: {lb['result']} ({lb['deployment'] or '?'}) {lb['reason']}")
    up = st.get("update")
    if up:
        lines.append(f"update: {up.get('state')} {up.get('version', '')}")
    return "\n".join(lines)


def cmd_status(args: argparse.Namespace) -> None:
    st = host_status(args.sysroot)
    emit(args, st, lambda: render_status(st))


def cmd_rollback(args: argparse.Namespace) -> None:
    order = Sysroot(args.sysroot).rollback()
    emit(args, [d.to_json() for d in order],
         f"next boot: {order[0].id} (version {order[0].version})"
         + ("; rebooting" if args.reboot else ""))
    if args.reboot:
        from atoll.boot.complete import systemctl_reboot

        systemctl_reboot()  # apps are stopped cleanly by their unit on the way down


def cmd_undeploy(args: argparse.Namespace) -> None:
    dep = Sysroot(args.sysroot).undeploy(args.index)
    emit(args, dep.to_json(), f"removed deployment {dep.id}")


def cmd_pin(args: argparse.Namespace) -> None:
    dep = Sysroot(args.sysroot).pin(args.index, not args.unpin)
    emit(args, dep.to_json(), f"{'unpinned' if args.unpin else 'pinned'} {dep.id}")


def cmd_cleanup(args: argparse.Namespace) -> None:
    removed = Sysroot(args.sysroot).cleanup()
    emit(args, {"removed": removed}, f"removed {len(removed)} leftover(s)")


def register(sub: Any, common: Callable[[argparse.ArgumentParser], None]) -> None:
    def add(name: str, fn: Callable[[argparse.Namespace], int | None], help: str
            ) -> argparse.ArgumentParser:
        sp: argparse.ArgumentParser = sub.add_parser(name, help=help)
        common(sp)
        sp.set_defaults(handler=fn)
        return sp

    sp = add("init", cmd_init, "create an empty atoll sysroot")
    sp.add_argument("--bootloader", choices=["grub"], help="render boot entries for it")
    sp = add("deploy", cmd_deploy, "deploy a ref or commit as the next boot")
    sp.add_argument("rev", help="ref or commit id (prefix of >= 8 hex digits)")
    sp.add_argument("--repo", type=Path, help="import from this repo (default: the sysroot's)")
    add("status", cmd_status, "booted, pending and rollback deployments")
    sp = add("rollback", cmd_rollback, "make the previous deployment the next boot")
    sp.add_argument("--reboot", action="store_true", help="reboot into it now")
    sp = add("undeploy", cmd_undeploy, "remove deployment N (see status)")
    sp.add_argument("index", type=int)
    sp = add("pin", cmd_pin, "keep deployment N whatever is deployed later")
    sp.add_argument("index", type=int)
    sp.add_argument("--unpin", action="store_true")
    add("cleanup", cmd_cleanup, "remove leftovers of an interrupted deploy")

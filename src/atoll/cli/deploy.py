"""`atoll init | deploy | rollback [ack] | undeploy | pin | cleanup` on a sysroot."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from atoll.cli import emit
from atoll.core.errors import InputError
from atoll.core.text import printable
from atoll.deploy.sysroot import Sysroot
from atoll.store.repo import Repo


def cmd_init(args: argparse.Namespace) -> None:
    sr = Sysroot(args.sysroot)
    sr.init(bootloader=args.bootloader)
    emit(args, {"sysroot": str(sr.root)}, f"initialised sysroot {sr.root}")


def cmd_deploy(args: argparse.Namespace) -> None:
    sr = Sysroot(args.sysroot)
    repo = Repo.open(args.repo) if args.repo else None
    before = sr.deployments()
    dep = sr.deploy(args.rev, repo=repo, redeploy=args.redeploy)
    if not dep.changed:
        moved = bool(before) and before[0].id == dep.id and before[0].origin != dep.origin
        emit(args, dep.to_json() | {"changed": moved},
             f"{dep.id} (version {printable(dep.version)}) already boots next"
             + (f"; it now follows {printable(dep.origin or '-')}" if moved else
                ": nothing to do (--redeploy makes a fresh one)"))
        return
    lines = [f"deployed {dep.id} (version {printable(dep.version)}): boots next"]
    if dep.etc_conflicts:
        lines.append("/etc conflicts (host's version kept; image default in /usr/etc):")
        lines += [f"  {printable(p)}" for p in dep.etc_conflicts]
    emit(args, dep.to_json() | {"changed": True}, "\n".join(lines))


def cmd_rollback(args: argparse.Namespace) -> None:
    sr = Sysroot(args.sysroot)
    if args.action == "ack":
        if args.reboot:
            raise InputError("`rollback ack` records an acknowledgement; it does not reboot")
        acked = sr.acknowledge_rollback()
        emit(args, {"acknowledged": acked, "changed": acked is not None},
             (f"acknowledged the rollback of {printable(str(acked.get('time')))} "
              f"({printable(str(acked.get('reason') or 'no reason given'))})"
              if acked else "no unacknowledged rollback"))
        return
    order = sr.rollback()
    emit(args, [d.to_json() for d in order],
         f"next boot: {order[0].id} (version {printable(order[0].version)})"
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
    sr = Sysroot(args.sysroot)
    out: dict[str, Any] = {}
    lines = []
    if args.pending:
        gone, next_boot = sr.remove_pending()
        out["pending"] = [d.id for d in gone]
        out["next_boot"] = next_boot
        lines.append(f"removed {len(gone)} pending/prepared deployment(s); {next_boot}")
    if args.rollback:
        gone = sr.remove_rollback()
        out["rollback"] = [d.id for d in gone]
        lines.append(f"removed {len(gone)} rollback deployment(s)")
    if args.metadata:
        import shutil

        cache = sr.atoll / "cache" / "downloads"
        out["metadata"] = cache.exists()
        with sr.lock.exclusive():
            shutil.rmtree(cache, ignore_errors=True)
        lines.append("removed the download cache")
    removed = sr.cleanup()
    out["leftovers"] = removed
    lines.append(f"removed {len(removed)} leftover(s) of interrupted deploys")
    staged = sr.repo.clean_tmp()  # what killed commits, pulls and hotfixes left in tmp/
    out["store_tmp"] = staged
    lines.append(f"removed {staged} leftover(s) of interrupted store writes")
    if args.prune:
        from atoll.store import ops

        res = ops.gc(sr.repo)
        out["prune"] = res
        lines.append(f"store: removed {res['removed']} objects, freed {res['freed_bytes']} "
                     "bytes")
    emit(args, out, "\n".join(lines))


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
    sp.add_argument("rev", help="a ref, REMOTE:CHANNEL, commit id (or a prefix of >= 8 hex "
                    "digits), REV~N for an ancestor")
    sp.add_argument("--repo", type=Path, help="import from this repo (default: the sysroot's)")
    sp.add_argument("--redeploy", action="store_true",
                    help="make a fresh deployment even when this commit already boots next")
    sp = add("rollback", cmd_rollback, "make the previous deployment the next boot; "
             "`rollback ack` acknowledges an automatic rollback")
    sp.add_argument("action", nargs="?", choices=["ack"],
                    help="ack: acknowledge the last boot's automatic rollback (monitoring "
                    "returns to OK); nothing else changes")
    sp.add_argument("--reboot", action="store_true", help="reboot into it now")
    sp = add("undeploy", cmd_undeploy, "remove deployment N (see status)")
    sp.add_argument("index", type=int, help="the deployment's index (`atoll status`)")
    sp = add("pin", cmd_pin, "keep deployment N whatever is deployed later")
    sp.add_argument("index", type=int, help="the deployment's index (`atoll status`)")
    sp.add_argument("--unpin", action="store_true", help="let it go again")
    sp = add("cleanup", cmd_cleanup, "remove leftovers of interrupted deploys; with options, "
             "also deployments, the download cache, unreferenced objects")
    sp.add_argument("-p", "--pending", action="store_true",
                    help="remove the pending and prepared deployments (the booted one boots "
                    "next)")
    sp.add_argument("-r", "--rollback", action="store_true",
                    help="remove the rollback deployment (unless pinned)")
    sp.add_argument("-m", "--metadata", action="store_true",
                    help="remove the download cache (partial downloads; the trusted TUF "
                    "metadata stays)")
    sp.add_argument("--prune", action="store_true",
                    help="then delete objects nothing references (`store gc`)")

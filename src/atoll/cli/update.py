"""``atoll remote add`` and ``atoll update check|download``.

Other layers add ``update`` actions (``apply``) with :func:`add_update_subcommand`
from their own CLI module's ``register``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from atoll.cli import emit

__all__ = ["add_update_subcommand", "register"]

Setup = Callable[[argparse.ArgumentParser], None]
_extra: dict[str, tuple[str, Setup]] = {}


def add_update_subcommand(name: str, setup_fn: Setup, help: str = "") -> None:
    """Add ``atoll update NAME`` (call at import time of the providing CLI module);
    ``setup_fn(parser)`` adds arguments and ``set_defaults``. Every parser built
    afterwards has it."""
    _extra[name] = (help, setup_fn)


def _remote_add(args: argparse.Namespace) -> int:
    from atoll.repo.client import add_remote

    r = add_remote(args.sysroot, args.name, args.url, args.root, channel=args.channel)
    emit(args, r.to_json(), f"remote {r.name}: {r.url}" + (
        f" (channel {r.channel})" if r.channel else ""))
    return 0


def _human_check(v: dict[str, Any]) -> str:
    t = v["target"]
    lines = [f"{v['remote']} {v['channel']}: {t['version'] or '-'} ({t['commit'][:12]})"]
    if v["up_to_date"]:
        lines.append("up to date")
    elif v["downloaded"]:
        lines.append("downloaded, ready to apply")
    else:
        how = {"delta": f"delta from {str(v['delta_from'])[:12]}", "chunks": "missing objects",
               "pack": "full image"}.get(v["method"], v["method"])
        lines.append(f"to download: {v['download_bytes']} bytes ({how})")
    pk = v["packages"]
    for p in pk["upgraded"] + pk.get("downgraded", []):
        lines.append(f"  ~ {p['name']} {p['old']} -> {p['new']}")
    for p in pk["added"]:
        lines.append(f"  + {p['name']} {p['version']}")
    for p in pk["removed"]:
        lines.append(f"  - {p['name']} {p['version']}")
    lines.append(f"metadata expires {v['metadata_expires']}")
    return "\n".join(lines)


def _check(args: argparse.Namespace) -> int:
    from atoll.repo.client import UpdateClient

    view = UpdateClient(args.sysroot, args.remote).check()
    emit(args, view, lambda: _human_check(view))
    return 0


def _download(args: argparse.Namespace) -> int:
    from atoll.repo.client import UpdateClient

    out = UpdateClient(args.sysroot, args.remote).download()
    emit(args, out, lambda: f"downloaded {out['target']['commit'][:12]} "
                            f"({out['download_bytes']} bytes, {out['method']}) -> {out['ref']}")
    return 0


def register(sub: Any, common: Callable[[argparse.ArgumentParser], None]) -> None:
    remote = sub.add_parser("remote", help="update servers this host trusts")
    rsub = remote.add_subparsers(dest="remote_command", metavar="ACTION", required=True)
    p = rsub.add_parser("add", help="add an update server and its trusted root.json")
    p.add_argument("name")
    p.add_argument("url")
    p.add_argument("--root", type=Path, required=True, help="the repository's root.json")
    p.add_argument("--channel", help="ref to follow (default: the server's only channel)")
    common(p)
    p.set_defaults(handler=_remote_add)

    update = sub.add_parser("update", help="check for and download updates")
    usub = update.add_subparsers(dest="update_command", metavar="ACTION", required=True)
    for name, fn, text in (("check", _check, "what an update would bring"),
                           ("download", _download, "verified, resumable pull into the store")):
        p = usub.add_parser(name, help=text)
        p.add_argument("--remote", default="origin")
        common(p)
        p.set_defaults(handler=fn)
    for n, (h, fn2) in sorted(_extra.items()):
        fn2(usub.add_parser(n, help=h))

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
    from atoll.repo.remotes import add_remote

    r = add_remote(args.sysroot, args.name, args.url, args.root, channel=args.channel,
                   metadata_url=args.metadata_url, targets_url=args.targets_url)
    emit(args, r.to_json(), f"remote {r.name}: {r.url}" + (
        f" (channel {r.channel})" if r.channel else ""))
    return 0


def _remote_list(args: argparse.Namespace) -> int:
    from atoll.repo.remotes import list_remotes

    remotes = [r.to_json() for r in list_remotes(args.sysroot)]
    emit(args, remotes, lambda: "\n".join(
        f"{r['name']}\t{r['url']}\t{r['channel'] or '(the only channel)'}" for r in remotes)
        or "no remotes")
    return 0


def _remote_show(args: argparse.Namespace) -> int:
    from atoll.repo.client import trusted_metadata
    from atoll.repo.remotes import load_remote

    r = load_remote(args.sysroot, args.name)
    data = r.to_json() | {"metadata_base": r.metadata_base, "targets_base": r.targets_base,
                          "trusted": trusted_metadata(r)}
    emit(args, data, lambda: "\n".join(
        [f"name      {r.name}", f"url       {r.url}", f"channel   {r.channel or '-'}",
         f"metadata  {r.metadata_base}", f"targets   {r.targets_base}"]
        + [f"trusted   {role} v{m['version']}, expires {m['expires']}"
           for role, m in data["trusted"].items()]))
    return 0


def _remote_remove(args: argparse.Namespace) -> int:
    from atoll.repo.remotes import remove_remote

    r = remove_remote(args.sysroot, args.name)
    emit(args, {"removed": r.name}, f"removed remote {r.name} (what it downloaded stays in the "
         f"store: `atoll store refs --delete remotes/{r.name}/...` then `atoll store gc`)")
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
    p.add_argument("name", help="a name for it, e.g. origin")
    p.add_argument("url", help="the repository's base URL (metadata/ and targets/ below it)")
    p.add_argument("--root", type=Path, required=True, help="the repository's root.json")
    p.add_argument("--channel", help="ref to follow (default: the server's only channel)")
    p.add_argument("--metadata-url", help="where the TUF metadata is (default: URL/metadata/)")
    p.add_argument("--targets-url",
                   help="where the targets are, e.g. a CDN (default: URL/targets/)")
    common(p)
    p.set_defaults(handler=_remote_add)
    p = rsub.add_parser("list", help="the remotes this host trusts")
    common(p)
    p.set_defaults(handler=_remote_list)
    p = rsub.add_parser("show", help="one remote: URLs, channel, trusted metadata versions")
    p.add_argument("name")
    common(p)
    p.set_defaults(handler=_remote_show)
    p = rsub.add_parser("remove", help="forget a remote and its trusted metadata")
    p.add_argument("name")
    common(p)
    p.set_defaults(handler=_remote_remove)

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

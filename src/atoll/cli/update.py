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
    from atoll.cli.status import _size, render_packages

    t = v["target"]
    where = f"{v['remote']}:{v['channel']}"
    frm = v.get("current_version") or (str(v["current"])[:12] if v.get("current") else "-")
    to = t["version"] or t["commit"][:12]
    if v["up_to_date"]:
        return f"{where}: up to date ({to}); metadata expires {v['metadata_expires']}"
    if v.get("applied"):
        head = f"{where}: {frm} -> {to} is applied: it boots at the next reboot"
    elif v["downloaded"]:
        head = f"{where}: {frm} -> {to}, downloaded: apply it with `atoll update apply`"
    else:
        how = {"delta": "delta", "chunks": "missing objects", "pack": "whole image"}.get(
            v["method"], v["method"])
        head = f"{where}: {frm} -> {to}, {_size(int(v['download_bytes']))} ({how})"
    lines = [head, *render_packages(v["packages"])]
    lines.append(f"metadata expires {v['metadata_expires']}")
    return "\n".join(lines)


def _check(args: argparse.Namespace) -> int:
    """Exit 77 (NOTHING_NEW) when the host runs, or has applied, the newest version."""
    from atoll.cli import NOTHING_NEW
    from atoll.repo.client import UpdateClient

    view = UpdateClient(args.sysroot, args.remote).check()
    emit(args, view, lambda: _human_check(view))
    return int(NOTHING_NEW) if view["up_to_date"] or view.get("applied") else 0


def _download(args: argparse.Namespace) -> int:
    from atoll.repo.client import UpdateClient

    out = UpdateClient(args.sysroot, args.remote).download()
    changed = out["method"] != "none"
    out["changed"] = changed
    if out["up_to_date"]:
        human = f"already up to date ({out['target']['version'] or out['target']['commit'][:12]})"
    elif not changed:
        human = (f"already downloaded: {out['target']['commit'][:12]} "
                 f"(version {out['target']['version']}) -> {out['ref']}")
    else:
        human = (f"downloaded {out['target']['commit'][:12]} ({out['download_bytes']} bytes, "
                 f"{out['method']}) -> {out['ref']}")
    emit(args, out, human)
    return 0


def _rebase(args: argparse.Namespace) -> int:
    """Move the host to another channel (of the same or another remote), as `rpm-ostree
    rebase`: the channel is checked on the remote first (signed), then followed; with
    --download its newest version is downloaded and prepared at once."""
    from atoll.agent.state import AgentFiles
    from atoll.deploy.sysroot import Sysroot
    from atoll.repo.client import UpdateClient
    from atoll.repo.remotes import load_remote, set_channel

    files = AgentFiles(args.sysroot)
    policy = files.policy()
    remote, sep, channel = args.target.rpartition(":")
    remote = remote if sep else policy.remote
    old = load_remote(args.sysroot, remote)
    view = UpdateClient(args.sysroot, remote, channel=channel).check()  # refuses unknown ones
    set_channel(args.sysroot, remote, channel)
    if policy.remote != remote:
        files.save_policy(type(policy).from_json(policy.to_json() | {"remote": remote}))
    sr = Sysroot(args.sysroot)
    sr.record_event("rebase", remote=remote, channel=channel, previous=old.channel,
                    previous_remote=policy.remote)
    out: dict[str, Any] = {"remote": remote, "channel": channel, "previous": old.channel,
                           "target": view["target"], "changed": old.channel != channel}
    lines = [f"{remote}: following {channel} (was {old.channel or 'the only channel'}); "
             f"newest: {view['target']['version'] or view['target']['commit'][:12]}"]
    if args.download:
        dl = UpdateClient(args.sysroot, remote).download()
        dep = sr.prepare(dl["target"]["commit"])
        out["prepared"] = dep.to_json()
        lines.append(f"downloaded and prepared {dep.id}: `atoll update apply` to boot it")
    else:
        lines.append("`atoll update download` (or atolld) fetches it; `atoll update apply` "
                     "boots it")
    emit(args, out, "\n".join(lines))
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
    p.add_argument("name", help="the remote's name")
    common(p)
    p.set_defaults(handler=_remote_show)
    p = rsub.add_parser("remove", help="forget a remote and its trusted metadata")
    p.add_argument("name", help="the remote's name")
    common(p)
    p.set_defaults(handler=_remote_remove)

    p = sub.add_parser("rebase", help="follow another channel (REMOTE:CHANNEL or CHANNEL)",
                       description="Move this host to another channel of a remote, as "
                       "rpm-ostree rebase does: the channel must be signed on the remote. The "
                       "update itself is applied as any other (atoll update apply).")
    p.add_argument("target", metavar="[REMOTE:]CHANNEL",
                   help="the channel to follow, e.g. origin:site/db-lts (default remote: the "
                   "policy's)")
    p.add_argument("--download", action="store_true",
                   help="download and prepare its newest version now")
    common(p)
    p.set_defaults(handler=_rebase)

    update = sub.add_parser("update", help="check for and download updates")
    usub = update.add_subparsers(dest="update_command", metavar="ACTION", required=True)
    for name, fn, text in (("check", _check, "what an update would bring"),
                           ("download", _download, "verified, resumable pull into the store")):
        p = usub.add_parser(name, help=text)
        p.add_argument("--remote", default="origin",
                       help="the remote to ask (default origin)")
        common(p)
        p.set_defaults(handler=fn)
    for n, (h, fn2) in sorted(_extra.items()):
        fn2(usub.add_parser(n, help=h))

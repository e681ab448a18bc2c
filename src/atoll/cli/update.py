"""``atoll remote add`` and ``atoll update check|download``.

Other layers add ``update`` actions (``apply``) with :func:`add_update_subcommand`
from their own CLI module's ``register``.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from atoll.cli import emit
from atoll.core.errors import DamagedStateError, InputError
from atoll.core.text import printable

__all__ = ["add_update_subcommand", "register"]

Setup = Callable[[argparse.ArgumentParser], None]
_extra: dict[str, tuple[str, Setup]] = {}


def add_update_subcommand(name: str, setup_fn: Setup, help: str = "") -> None:
    """Add ``atoll update NAME`` (call at import time of the providing CLI module);
    ``setup_fn(parser)`` adds arguments and ``set_defaults``. Every parser built
    afterwards has it."""
    _extra[name] = (help, setup_fn)


def followed_remote(sysroot: Path) -> str:
    """The remote the update policy follows (``atoll policy set --remote``, ``atoll
    rebase``): what `update check`, `update download` and atolld ask by default."""
    from atoll.agent.state import AgentFiles

    return AgentFiles(sysroot).policy().remote


def _remote_add(args: argparse.Namespace) -> int:
    from atoll.repo.remotes import add_remote

    r = add_remote(args.sysroot, args.name, args.url, args.root, channel=args.channel,
                   metadata_url=args.metadata_url, targets_url=args.targets_url)
    emit(args, r.to_json(), f"remote {printable(r.name)}: {printable(r.url)}" + (
        f" (channel {printable(r.channel)})" if r.channel else ""))
    return 0


def _remote_list(args: argparse.Namespace) -> int:
    from atoll.repo.remotes import list_remotes

    remotes = [r.to_json() for r in list_remotes(args.sysroot)]
    emit(args, remotes, lambda: "\n".join(
        f"{printable(r['name'])}\t{printable(r['url'])}\t"
        f"{printable(r['channel'] or '(the only channel)')}" for r in remotes)
        or "no remotes")
    return 0


def _remote_show(args: argparse.Namespace) -> int:
    from atoll.repo.client import trusted_metadata
    from atoll.repo.remotes import load_remote

    r = load_remote(args.sysroot, args.name)
    data = r.to_json() | {"metadata_base": r.metadata_base, "targets_base": r.targets_base,
                          "trusted": trusted_metadata(r)}
    emit(args, data, lambda: "\n".join(
        [f"name      {printable(r.name)}", f"url       {printable(r.url)}",
         f"channel   {printable(r.channel or '-')}",
         f"metadata  {printable(r.metadata_base)}", f"targets   {printable(r.targets_base)}"]
        + [f"trusted   {role} v{m['version']}, expires {m['expires']}"
           for role, m in data["trusted"].items()]))
    return 0


def _remote_remove(args: argparse.Namespace) -> int:
    """Forget a remote. The one the update policy follows is refused (updates would stop
    with "no remote"), unless --force: to replace it (add it again at once)."""
    from atoll.repo.remotes import load_remote, remove_remote

    with contextlib.suppress(DamagedStateError):  # removing it is the way to replace it
        load_remote(args.sysroot, args.name)  # an unknown one: that error first
    if followed_remote(args.sysroot) == args.name and not args.force:
        raise InputError(
            f"the update policy follows remote {printable(args.name)}: removing it stops "
            "updates", resolution="follow another one first (`atoll rebase OTHER:CHANNEL` or "
            "`atoll policy set --remote OTHER`); to replace it, `atoll remote remove --force "
            f"{printable(args.name)}` and add it again at once")
    r = remove_remote(args.sysroot, args.name)
    refs: list[str] = []
    store = Path(args.sysroot) / "atoll" / "repo"
    if (store / "config.json").is_file():
        from atoll.store.repo import Repo

        refs = [":".join(n.split("/", 1)) for n in Repo(store).refs("remotes")
                if n.split("/", 1)[0] == r.name]
    out = {"removed": r.name, "refs": refs, "changed": True}
    emit(args, out, f"removed remote {printable(r.name)}" + (
        f"; what it downloaded stays in the store: `atoll store refs --delete {' '.join(refs)}`"
        " then `atoll store gc` frees it" if refs else ""))
    return 0


def _human_check(v: dict[str, Any]) -> str:
    from atoll.cli.status import _size, method_word, render_packages

    t = v["target"]
    where = printable(f"{v['remote']}:{v['channel']}")
    frm = printable(v.get("current_version") or (str(v["current"])[:12] if v.get("current")
                                                 else "-"))
    to = printable(t["version"] or t["commit"][:12])
    if v["up_to_date"]:
        return f"{where}: up to date ({to}); metadata expires {v['metadata_expires']}"
    if v.get("applied"):
        head = f"{where}: {frm} → {to} is applied: it boots at the next reboot"
    elif v["downloaded"]:
        head = f"{where}: {frm} → {to}, downloaded: apply it with `atoll update apply`"
    else:
        head = (f"{where}: {frm} → {to}, {_size(int(v['download_bytes']))}, "
                f"{method_word(v['method'])}")
    lines = [head, *render_packages(v["packages"])]
    if v.get("cves"):  # the signed CVE report's summary (docs/security.md)
        lines.append(f"{v['cves']} (`atoll cve list`)")
    if v.get("requested_version") and v.get("head_version") != t["version"]:
        lines.append(f"signed version {to} asked for; the channel's newest is "
                     f"{printable(str(v.get('head_version')))}"
                     + (" (older than what runs: --allow-downgrade)" if v.get("downgrade")
                        else ""))
    lines.append(f"metadata expires {v['metadata_expires']}")
    return "\n".join(lines)


def _client(args: argparse.Namespace) -> Any:
    from atoll.repo.client import UpdateClient

    return UpdateClient(args.sysroot, args.remote or followed_remote(args.sysroot),
                        version=args.version, allow_downgrade=args.allow_downgrade)


def _check(args: argparse.Namespace) -> int:
    """Exit 77 (NOTHING_NEW) when the host runs, or has applied, the newest version."""
    from atoll.cli import NOTHING_NEW

    view = _client(args).check()
    emit(args, view, lambda: _human_check(view))
    return int(NOTHING_NEW) if view["up_to_date"] or view.get("applied") else 0


def _download(args: argparse.Namespace) -> int:
    from atoll.cli.status import _size, method_word

    out = _client(args).download()
    changed = out["method"] != "none"
    out["changed"] = changed
    version = printable(out["target"]["version"] or out["target"]["commit"][:12])
    if out["up_to_date"]:
        human = f"already up to date ({version})"
    elif not changed:
        human = (f"already downloaded: {out['target']['commit'][:12]} "
                 f"(version {version}) -> {printable(out['ref'])}")
    else:
        human = (f"downloaded {out['target']['commit'][:12]} (version {version}, "
                 f"{_size(int(out['download_bytes']))}, {method_word(out['method'])}) -> "
                 f"{printable(out['ref'])}")
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
    changed = old.channel != channel or policy.remote != remote
    sr = Sysroot(args.sysroot)
    if changed:
        set_channel(args.sysroot, remote, channel)
        if policy.remote != remote:
            files.save_policy(type(policy).from_json(policy.to_json() | {"remote": remote}))
        sr.record_event("rebase", remote=remote, channel=channel, previous=old.channel,
                        previous_remote=policy.remote)
    out: dict[str, Any] = {"remote": remote, "channel": channel, "previous": old.channel,
                           "previous_remote": policy.remote, "target": view["target"],
                           "changed": changed}
    newest = printable(view["target"]["version"] or view["target"]["commit"][:12])
    was = (f"{printable(policy.remote)}:{printable(old.channel or '(the only channel)')}"
           if policy.remote != remote else printable(old.channel or "the only channel"))
    lines = [f"{printable(remote)}: following {printable(channel)} (was {was}); newest: {newest}"
             if changed else f"{printable(remote)}: already following {printable(channel)}; "
             f"newest: {newest}"]
    if args.download:
        from atoll.deploy.hotfix import rebase_hotfixes

        dl = UpdateClient(args.sysroot, remote).download()
        with sr.lock.exclusive(), sr.repo.lock.shared():  # hotfixes: as for any update
            target, _ = rebase_hotfixes(sr, dl["target"]["commit"])
            dep = sr.prepare(target, origin=f"{remote}:{dl['channel']}")
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
    p.add_argument("--force", action="store_true",
                   help="remove it even when the update policy follows it (to replace it: "
                   "add it again at once)")
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
        p.add_argument("--remote",
                       help="the remote to ask (default: the one the update policy follows, "
                       "`atoll policy show`)")
        p.add_argument("--version", metavar="V",
                       help="this signed version of the channel (a version or commit its "
                       "head lists) instead of the newest")
        p.add_argument("--allow-downgrade", action="store_true",
                       help="take --version even when it is older than what the host runs")
        common(p)
        p.set_defaults(handler=fn)
    for n, (h, fn2) in sorted(_extra.items()):
        fn2(usub.add_parser(n, help=h))

"""`atoll store ...`: the content-addressed store."""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import Any

from atoll.cli import emit
from atoll.core.errors import CorruptObjectError, InputError
from atoll.core.text import printable
from atoll.store import ops
from atoll.store.repo import Repo


def _ts(t: int) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def repo_path(args: argparse.Namespace) -> Path:
    """``--repo``, else the store of an initialised sysroot (never created by accident
    under a mistyped ``--sysroot``).

    Raises:
        HostStateError: no ``--repo`` and the sysroot is not an atoll sysroot.
    """
    if args.repo:
        return Path(args.repo)
    from atoll.deploy.sysroot import Sysroot

    sr = Sysroot(args.sysroot)
    sr.check()
    return sr.atoll / "repo"


def _open(args: argparse.Namespace) -> Repo:
    return Repo.open(repo_path(args))


def cmd_init(args: argparse.Namespace) -> None:
    repo = Repo.create(repo_path(args))
    emit(args, {"repo": str(repo.path)}, f"initialised repo {repo.path}")


def cmd_commit(args: argparse.Namespace) -> None:
    Repo.check_ref(args.ref)  # before anything is read or written
    repo = Repo.open(repo_path(args))  # as `ostree commit`: `store init` creates one
    cid = repo.commit_dir(args.tree, ref=args.ref, version=args.version or "",
                          subject=args.subject or f"commit {args.tree}")
    emit(args, {"commit": cid, "ref": args.ref}, f"{cid}  ({args.ref})")


def _commit_json(cid: str, c: Any) -> dict[str, Any]:
    return {"commit": cid, "parent": c.parent, "version": c.version, "timestamp": c.timestamp,
            "subject": c.subject, "packages": len(c.manifest), "metadata": c.metadata}


def cmd_log(args: argparse.Namespace) -> None:
    repo = _open(args)
    entries = ops.log(repo, repo.resolve(args.rev), limit=args.limit)
    data = [_commit_json(cid, c) for cid, c in entries]
    emit(args, data, lambda: "\n\n".join(
        f"commit {cid}\nVersion: {c.version}\nDate:    {_ts(c.timestamp)}\n\n    {c.subject}"
        for cid, c in entries))


def cmd_show(args: argparse.Namespace) -> None:
    repo = _open(args)
    cid = repo.resolve(args.rev)
    c = repo.read_commit(cid)
    data = _commit_json(cid, c) | {"tree": c.tree, "manifest": list(c.manifest)}

    def human() -> str:
        lines = [f"commit   {cid}", f"parent   {c.parent or '-'}", f"version  {c.version}",
                 f"date     {_ts(c.timestamp)}", f"subject  {c.subject}",
                 "packages " + (str(len(c.manifest)) if c.manifest else
                                "none recorded (the tree had no dpkg database)")]
        lines += [f"{k:<8} {v}" for k, v in sorted(c.metadata.items())]
        if args.packages:
            lines += [f"  {p['name']} {p['version']} {p['architecture']}" for p in c.manifest]
        return "\n".join(lines)

    emit(args, data, human)


def _ref_to_delete(repo: Repo, name: str) -> tuple[str, str]:
    """A ref as `store refs --delete` takes it -> (namespace, name in it).

    Raises:
        InputError: a deployment's ref, or no such ref.
    """
    ns, _, rest = name.partition("/")
    if ":" in name:  # REMOTE:CHANNEL
        remote, _, channel = name.partition(":")
        namespace, ref = "remotes", f"{remote}/{channel}"
    elif ns in ("heads", "remotes", "deploy") and rest:
        namespace, ref = ns, rest
    else:
        namespace, ref = "heads", name
    if namespace == "deploy":
        raise InputError(f"{printable(name)}: deployment refs go with their deployment",
                         resolution="remove the deployment: atoll undeploy N")
    if ref not in repo.refs(namespace):
        raise InputError(f"{printable(name)}: no such ref", resolution="list them with "
                         "`atoll store refs --all` (a remote's: REMOTE:CHANNEL)")
    return namespace, ref


def cmd_refs(args: argparse.Namespace) -> None:
    repo = _open(args)
    if args.delete:
        if not args.refs:
            raise InputError("--delete: name the refs to delete",
                             resolution="atoll store refs --delete REF... (a branch, or "
                             "REMOTE:CHANNEL)")
        # every name is checked before any ref goes: all or nothing
        targets = [_ref_to_delete(repo, name) for name in dict.fromkeys(args.refs)]
        for namespace, ref in targets:
            repo.set_ref(ref, None, namespace=namespace)
        deleted = list(dict.fromkeys(args.refs))
        emit(args, {"deleted": deleted}, "\n".join(f"deleted {printable(n)}" for n in deleted)
             + "\n(objects only they reached are freed by `atoll store gc`)")
        return
    refs = repo.all_refs() if args.all else repo.refs()
    if args.refs:  # prefixes, as `ostree refs PREFIX`
        refs = {n: c for n, c in refs.items()
                if any(n == p or n.startswith(p.rstrip("/") + "/") for p in args.refs)}
    emit(args, refs, lambda: "\n".join(f"{cid}  {printable(name)}"
                                       for name, cid in refs.items()))


def render_diff(d: dict[str, Any]) -> str:
    from atoll.cli.status import render_packages

    f = d["files"]
    lines = [f"files: {len(f['added'])} added, {len(f['removed'])} removed, "
             f"{len(f['changed'])} changed", "packages:"]
    return "\n".join(lines + render_packages(d["packages"]))


def cmd_diff(args: argparse.Namespace) -> None:
    repo = _open(args)
    d = ops.diff(repo, repo.resolve(args.old), repo.resolve(args.new))

    def human() -> str:
        text = render_diff(d)
        if args.files:
            f = d["files"]
            text += "\n" + "\n".join(
                [f"A {printable(x)}" for x in f["added"]]
                + [f"D {printable(x)}" for x in f["removed"]]
                + [f"M {printable(x)}" for x in f["changed"]])
        return text

    emit(args, d, human)


def _record_fsck(args: argparse.Namespace, repo: Repo, found: ops.FsckReport,
                 report: ops.FsckReport, repaired: int) -> None:
    """Write the host store's result to state/fsck.json (monitored: Checkmk's "atoll
    store fsck", ``atoll status``); other stores' results are not recorded."""
    own = (Path(args.sysroot) / "atoll" / "repo").resolve()
    if repo.path.resolve() != own:
        return
    from atoll.core.fsutil import atomic_write_json
    from atoll.deploy.sysroot import Sysroot

    with contextlib.suppress(PermissionError):  # a read-only look as another user
        atomic_write_json(Sysroot(args.sysroot).state / "fsck.json", {
            "format": 1, "time": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "ok": report.ok, "checked": found.checked, "corrupt": len(found.corrupt),
            "missing": len(report.missing), "repaired": repaired, "verity": report.verity})


def cmd_fsck(args: argparse.Namespace) -> int:
    repo = _open(args)
    found = report = ops.fsck(repo)
    _record_fsck(args, repo, found, report, 0)  # kept even if the repair fails
    notes: list[str] = []
    repaired: list[str] = []
    if args.repair and report.incomplete:
        own = (Path(args.sysroot) / "atoll" / "repo").resolve()
        if repo.path.resolve() == own:
            from atoll.repo.client import repair_from_remotes

            repaired, notes = repair_from_remotes(Path(args.sysroot), report.incomplete)
            if repaired:
                report = ops.fsck(repo)
                _record_fsck(args, repo, found, report, len(repaired))
        else:
            notes = [f"{ref}: commit {cid[:12]}: commit or compose the tree again"
                     for ref, cid in sorted(report.incomplete.items())]
    data = report.to_json()
    if args.repair:
        data |= {"found": found.to_json(), "repaired": repaired, "unrepaired": notes}

    def human() -> str:
        lines = [f"checked {found.checked} objects"]
        lines += [f"corrupt (quarantined): {x}" for x in found.corrupt]
        lines += [f"missing: {x}" for x in found.missing]
        lines += [f"repaired: commit {c[:12]} (fetched again)" for c in repaired]
        if repaired:
            lines += [f"still missing: {x}" for x in report.missing]
        lines += [f"not repaired: {x}" for x in notes]
        if report.verity:
            lines.append("every file object is sealed with fs-verity")
        return "\n".join(lines + (["ok"] if report.ok else []))

    emit(args, data, human)
    if not report.ok:
        if not getattr(args, "json", False):
            raise CorruptObjectError(
                f"fsck: {len(report.corrupt)} corrupt, {len(report.missing)} missing object(s)",
                resolution="on a host: `atoll store fsck --repair` fetches what a remote still "
                "serves; in a build repository: commit or compose the tree again")
        return 3
    return 0


def cmd_gc(args: argparse.Namespace) -> None:
    repo = _open(args)
    res = ops.gc(repo, dry_run=args.dry_run)
    emit(args, res, f"removed {res['removed']} objects, freed {res['freed_bytes']} bytes, "
         f"emptied the quarantine ({res['quarantine_emptied']})"
         + (" (dry run)" if args.dry_run else ""))


def register(sub: Any, common: Callable[[argparse.ArgumentParser], None]) -> None:
    p = sub.add_parser("store", help="the content-addressed store: commit, log, diff, fsck, gc")
    ss = p.add_subparsers(dest="store_command", metavar="SUBCOMMAND")
    ss.required = True

    def add(name: str, fn: Callable[[argparse.Namespace], int | None], help: str
            ) -> argparse.ArgumentParser:
        sp: argparse.ArgumentParser = ss.add_parser(name, help=help)
        sp.add_argument("--repo", type=Path,
                        help="repository directory (default: the sysroot's store, "
                        "SYSROOT/atoll/repo)")
        common(sp)
        sp.set_defaults(handler=fn)
        return sp

    add("init", cmd_init, "create an empty repository")
    sp = add("commit", cmd_commit, "commit a directory tree built by any tool")
    sp.add_argument("tree", type=Path, help="the directory tree to commit")
    sp.add_argument("--ref", required=True, help="the branch to move to the new commit")
    sp.add_argument("--version", help="the commit's version string")
    sp.add_argument("--subject", help="the commit's subject (default: commit TREE)")
    sp = add("log", cmd_log, "a commit and its ancestors")
    sp.add_argument("rev", help="the commit to start from (REV)")
    sp.add_argument("--limit", type=int, default=20,
                    help="at most this many commits (default 20)")
    sp = add("show", cmd_show, "one commit: version, metadata, packages")
    sp.add_argument("rev", help="the commit (REV)")
    sp.add_argument("--packages", action="store_true", help="list the package manifest")
    sp = add("refs", cmd_refs, "list refs, or delete them")
    sp.add_argument("refs", nargs="*", metavar="REF",
                    help="with --delete: the refs to delete; else: list only the refs under "
                    "these prefixes")
    sp.add_argument("--all", action="store_true",
                    help="include remote and deployment refs (prefixed remotes/, deploy/)")
    sp.add_argument("--delete", action="store_true",
                    help="delete the REFs (a branch, or REMOTE:CHANNEL, or remotes/R/CH), all "
                    "or none; `store gc` then frees what only they reached")
    sp = add("diff", cmd_diff, "files and packages changed between two commits")
    sp.add_argument("old", help="the commit to compare from (REV)")
    sp.add_argument("new", help="the commit to compare to (REV)")
    sp.add_argument("--files", action="store_true", help="list every changed file")
    sp = add("fsck", cmd_fsck, "re-hash every object; quarantine damaged ones, report missing ones")
    sp.add_argument("--repair", action="store_true",
                    help="fetch what incomplete commits lack from the host's remotes")
    sp = add("gc", cmd_gc, "delete objects no ref or deployment reaches")
    sp.add_argument("--dry-run", action="store_true",
                    help="report what would be deleted; delete nothing")

"""Store operations over whole commits: log, diff, fsck, gc."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from atoll.core.errors import StoreError
from atoll.core.progress import progress, track
from atoll.store.objects import Commit, DirEntry
from atoll.store.packages import package_view
from atoll.store.repo import WORKERS, Repo

__all__ = ["FsckReport", "TreeDiff", "diff", "fsck", "gc", "log", "package_changes"]

logger = logging.getLogger("atoll.store")


def log(repo: Repo, commit: str, limit: int = 50) -> list[tuple[str, Commit]]:
    """The commit and its ancestors present in the store, newest first.

    Raises:
        StoreError: ``commit`` itself is missing (or CorruptObjectError: damaged).
    """
    out: list[tuple[str, Commit]] = [(commit, repo.read_commit(commit))]
    cid: str | None = out[0][1].parent
    while cid and len(out) < limit and repo.has(cid, "commit"):
        c = repo.read_commit(cid)
        out.append((cid, c))
        cid = c.parent
    return out


def package_changes(old: Commit, new: Commit) -> dict[str, Any]:
    """Added / removed / upgraded / downgraded packages between two commits (pure; the
    shape of :func:`atoll.store.packages.package_view`). A commit of a tree without a
    dpkg database has no manifest (an empty one): the changes are then unknown, not
    "everything added" or "none", and ``no_manifest`` names the side(s) (old, new)."""
    view = package_view([dict(p) for p in old.manifest], [dict(p) for p in new.manifest])
    missing = [side for side, c in (("old", old), ("new", new)) if not c.manifest]
    if missing:
        view = {k: [] for k in view} | {"no_manifest": missing}
    return view


@dataclass
class TreeDiff:
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, list[str]]:
        return {"added": self.added, "removed": self.removed, "changed": self.changed}


def _entries(repo: Repo, tree: str | None) -> dict[str, DirEntry]:
    return {} if tree is None else {e.name: e for e in repo.read_dirtree(tree)}


def _diff_trees(repo: Repo, a: str | None, b: str | None, prefix: str, out: TreeDiff) -> None:
    if a == b:
        return
    ea, eb = _entries(repo, a), _entries(repo, b)
    for name in sorted(ea.keys() | eb.keys()):
        path = prefix + name
        x, y = ea.get(name), eb.get(name)
        if x is None and y is not None:
            out.added.append(path + ("/" if y.is_dir else ""))
            if y.is_dir:
                _diff_trees(repo, None, y.id, path + "/", out)
        elif y is None and x is not None:
            out.removed.append(path + ("/" if x.is_dir else ""))
            if x.is_dir:
                _diff_trees(repo, x.id, None, path + "/", out)
        elif x is not None and y is not None:
            if x.is_dir and y.is_dir:
                if x.meta != y.meta:
                    out.changed.append(path + "/")
                _diff_trees(repo, x.id, y.id, path + "/", out)
            elif x.is_dir != y.is_dir:
                out.removed.append(path + ("/" if x.is_dir else ""))
                out.added.append(path + ("/" if y.is_dir else ""))
            elif x.id != y.id:
                out.changed.append(path)


def diff(repo: Repo, old: str, new: str) -> dict[str, Any]:
    """Files added/removed/changed and package changes between two commits."""
    a, b = repo.read_commit(old), repo.read_commit(new)
    td = TreeDiff()
    _diff_trees(repo, a.tree, b.tree, "/", td)
    return {"old": old, "new": new, "files": td.to_json(), "packages": package_changes(a, b)}


@dataclass
class FsckReport:
    checked: int = 0
    corrupt: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    incomplete: dict[str, str] = field(default_factory=dict)  # ref -> commit
    quarantined: int = 0
    unsealed: int = 0    # whole regular file objects without fs-verity on a store that can
    verity: bool = False  # every file object sealed: deploy now demands it

    @property
    def ok(self) -> bool:
        return not self.corrupt and not self.missing

    def to_json(self) -> dict[str, Any]:
        return {"checked": self.checked, "corrupt": self.corrupt, "missing": self.missing,
                "incomplete_refs": self.incomplete, "quarantined": self.quarantined,
                "verity": self.verity, "ok": self.ok}


def fsck(repo: Repo) -> FsckReport:
    """Re-hash every object; check that every ref's commit is complete.

    Whole file objects are sealed where they are not (seal mtime; fs-verity where
    the filesystem can: objects from before sealing, or from a disk image built
    on a machine without fs-verity). Once every file object of a store that can
    carries fs-verity, the store is marked sealing (``"verity": true``) and
    deploy from then on re-hashes any object without it.

    Damaged objects are moved to quarantine (the next pull or commit that needs
    them writes them again; ``store fsck --repair`` fetches them on a host).
    """
    report = FsckReport()
    with repo.lock.shared():
        objs = list(repo.iter_objects())
        files = [oid for oid, kind in objs if kind == "file"]
        with progress("fsck", len(objs), unit="objects") as step:
            for oid, kind in objs:
                if kind == "file":
                    continue
                report.checked += 1
                step.advance()
                try:
                    data = repo.raw_meta_object(oid, kind)
                except StoreError:
                    continue  # removed meanwhile (quarantined by a reader)
                if hashlib.sha256(data).hexdigest() != oid:
                    report.corrupt.append(f"{kind} {oid}")
                    repo.quarantine(oid, kind, "content does not match its id")
            with ThreadPoolExecutor(WORKERS) as pool:
                for oid, ok in zip(files, pool.map(repo.reverify, files, chunksize=64),
                                   strict=True):
                    report.checked += 1
                    step.advance()
                    if not ok:
                        report.corrupt.append(f"file {oid}")
                        repo.quarantine(oid, "file", "content does not match its id")
                    elif repo.can_seal and not repo.has_verity(oid) and \
                            not repo.object_path(oid, "file").is_symlink():
                        report.unsealed += 1
        quarantined = {n.split(".")[0] for n in repo.quarantined()}
        for name, cid in repo.all_refs().items():
            gaps = repo.gaps(cid)
            if gaps:
                report.incomplete[name] = cid
            report.missing += [
                f"{kind} {oid} (ref {name}): "
                + ("damaged (quarantined)" if why == "missing" and oid in quarantined else why)
                for oid, kind, why in gaps]
        report.quarantined = len(repo.quarantined())
        report.verity = bool(repo.can_seal) and report.ok and not report.unsealed
        if report.verity != repo.sealing and (report.verity or repo.can_seal is False):
            repo.set_sealing(report.verity)  # from now on deploy demands fs-verity
    report.corrupt.sort()
    return report


def _gc_hint(ref: str) -> str:
    """What repairs a ref whose commit is not whole, by kind of ref."""
    ns, _, name = ref.partition("/")
    if ns == "deploy":
        return ("a deployment's commit: on a host `atoll store fsck --repair` fetches it when a "
                "remote still serves it; else deploy another commit and remove this "
                "deployment (`atoll undeploy N`, `atoll status` shows N)")
    if ns == "remotes":
        return ("`atoll store fsck --repair` or `atoll update download` fetches it again; or "
                f"drop the ref: atoll store refs --delete {ref}")
    return (f"compose or commit the tree again (`--ref {name}`), or drop the ref: "
            f"atoll store refs --delete {name}")


def _history(repo: Repo, commit: str) -> set[tuple[str, str]]:
    """Objects of the commits behind ``commit`` (its parents), as far as they can be read.

    History is kept when it is whole; a damaged parent (its dirtree quarantined) is
    history gc cannot read: what lies below it is not protected. The ref's own commit
    always is (gc refuses when it is not whole).
    """
    out: set[tuple[str, str]] = set()
    seen = {commit}
    nxt = repo.read_commit(commit).parent
    while nxt and nxt not in seen and repo.has(nxt, "commit"):
        current: str = nxt
        seen.add(current)
        try:
            out |= repo.reachable(current, parents=False)
            nxt = repo.read_commit(current).parent
        except StoreError as exc:
            logger.warning("gc: history commit %s is not whole (%s): its objects are not kept",
                           current[:12], exc.brief)
            out.add((current, "commit"))
            break
    return out


def gc(repo: Repo, *, dry_run: bool = False) -> dict[str, int]:
    """Delete every object that no ref (heads, remotes, deployments) reaches, the
    quarantine, and unlocked staging leftovers. Holds the repository exclusively.

    Raises:
        CorruptObjectError / StoreError: a reachable dirtree or commit is damaged or
            missing (what lies below it is unknown): nothing is deleted.
        BusyError: a writer holds the repository for longer than the lock wait.
    """
    with repo.lock.exclusive():
        keep: set[tuple[str, str]] = set()
        for name, cid in track(repo.all_refs().items(), "gc: mark", unit="refs"):
            try:  # what the ref needs (to deploy, to roll back): it must be whole
                if not repo.has(cid, "commit"):
                    raise StoreError(f"commit object {cid} is missing")
                keep |= repo.reachable(cid, parents=False)
            except StoreError as exc:
                raise type(exc)(
                    f"gc: ref {name} reaches a damaged or missing object; nothing was deleted",
                    details=exc.brief, resolution=_gc_hint(name)) from exc
            keep |= _history(repo, cid)
        removed = freed = 0
        doomed = []
        for oid, kind in track(list(repo.iter_objects()), "gc: sweep", unit="objects"):
            if (oid, kind) in keep:
                continue
            try:
                st = os.lstat(repo.object_path(oid, kind))
            except FileNotFoundError:
                continue
            doomed.append((oid, kind))
            removed += 1
            if st.st_nlink <= 1:
                freed += st.st_size
        quarantined = repo.quarantined()
        if not dry_run:
            repo.remove_objects(track(doomed, "gc: delete", unit="objects"))
            for name in quarantined:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(repo.quarantine_dir / name)
        leftovers = 0 if dry_run else repo.clean_tmp()
    return {"removed": removed, "freed_bytes": freed, "kept": len(keep),
            "tmp_cleaned": leftovers, "quarantine_emptied": len(quarantined)}

"""Test and benchmark helpers: a composed boot tree, a store holding it, sysroots.

This is what compose + deploy do for a real image, cut down to what the boot
tests need and cached per inputs:

* :func:`cached_tree`: mmdebstrap (bookworm minbase + the ``boot``
  feature's packages), the ``boot`` feature, compose's atoll layout;
* :func:`cached_repo`: that tree committed as versions 1..N of one store
  (same files, different commits, so each version gets its own deployment
  and kernel directory);
* :func:`make_sysroot`: a sysroot made with the deploy layer
  (``Sysroot.init(bootloader="grub")`` + ``Sysroot.deploy``), which calls the
  grub writer for every loader it writes.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import atoll
from atoll.boot import state
from atoll.boot.feature import PACKAGES, install
from atoll.core.errors import HostStateError
from atoll.core.run import run

__all__ = [
    "cached_base",
    "cached_repo",
    "cached_tree",
    "compose_tree",
    "kernel_version",
    "make_sysroot",
    "prune_cache",
]

SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


PRUNE_AFTER_S = 3 * 3600  # a cache entry unused this long belongs to no running test


def prune_cache(cache: Path, pattern: str, keep: Path) -> None:
    """Remove the entries of ``cache`` matching the glob ``pattern``, other than ``keep``,
    that no test run used for :data:`PRUNE_AFTER_S`.

    Runs of different sources (a clone for CI, one for the quickstart) may share one
    cache, and each keys its entries by its own sources: every use of an entry touches
    it, so an entry older than this is one no running test holds.
    """
    now = time.time()
    for old in cache.glob(pattern):
        if old == keep or now - old.stat().st_mtime < PRUNE_AFTER_S:
            continue
        if old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink(missing_ok=True)


def _source_hash() -> str:
    h = hashlib.sha256()
    root = Path(atoll.__file__).resolve().parent
    for p in sorted(root.rglob("*.py")):
        h.update(str(p.relative_to(root)).encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()


def kernel_version(tree: Path) -> str:
    """The kernel version of an atoll-layout tree."""
    found = sorted(p.parent.name for p in (tree / "usr/lib/modules").glob("*/vmlinuz"))
    if not found:
        raise HostStateError(f"no kernel in {tree}/usr/lib/modules")
    return found[-1]


def cached_base(cache: Path) -> tuple[Path, str]:
    """The mmdebstrap tarball for the boot feature's packages; (path, key)."""
    key = hashlib.sha256(repr((SUITE, MIRROR, sorted(PACKAGES))).encode()).hexdigest()[:16]
    base = cache / f"boot-base-{key}.tar"
    with _lock(cache / "boot-base.lock"):
        if not base.exists():
            prune_cache(cache, "boot-base-*.tar", base)
            tmp = base.with_suffix(".tmp.tar")
            run(["mmdebstrap", "--variant=minbase", "--include=" + ",".join(PACKAGES),
                 SUITE, tmp, MIRROR], what="mmdebstrap the boot test tree", timeout=1800)
            tmp.rename(base)
        os.utime(base)
    return base, key


def compose_tree(base_tar: Path, tree: Path, *, layout: bool = True) -> None:
    """Extract an mmdebstrap tarball, apply the boot feature, convert to the atoll layout."""
    tree.mkdir(parents=True)
    run(["tar", "-C", tree, "--numeric-owner", "-xf", base_tar], what="extract the rootfs")
    install(tree)
    if layout:
        from atoll.compose.layout import to_atoll_layout

        to_atoll_layout(tree)


def cached_tree(cache: Path) -> tuple[Path, str]:
    """A composed boot tree (atoll layout), built once per inputs; (tree, kver)."""
    base, base_key = cached_base(cache)
    key = hashlib.sha256((base_key + _source_hash()).encode()).hexdigest()[:16]
    tree = cache / f"boot-tree-{key}"
    with _lock(cache / "boot-tree.lock"):
        if not (tree / ".atoll-done").exists():
            prune_cache(cache, "boot-tree-*", tree)  # trees of older sources (~750 MB each)
            compose_tree(base, tree)
            (tree / ".atoll-done").write_text("")
        os.utime(tree)  # in use: not pruned by a run of other sources
    return tree, kernel_version(tree)


def cached_repo(cache: Path, versions: int = 4) -> tuple[Path, dict[str, str]]:
    """A store with the boot tree committed as refs ``test/v1``..``test/vN``.

    Returns (repo path, {version: commit}).
    """
    from atoll.store import Repo

    tree, _ = cached_tree(cache)
    repo_path = cache / f"boot-repo-{tree.name.removeprefix('boot-tree-')}-{versions}"
    index = repo_path.with_suffix(".json")
    with _lock(cache / "boot-repo.lock"):
        if not index.exists():
            prune_cache(cache, "boot-repo-*", repo_path)
            repo = Repo.create(repo_path)
            commits = {}
            for n in range(1, versions + 1):
                commits[str(n)] = repo.commit_dir(
                    tree, ref=f"test/v{n}", version=str(n), subject=f"boot test v{n}",
                    timestamp=1764170000 + n, skip=frozenset({".atoll-done"}))
            index.write_text(json.dumps(commits))
        os.utime(repo_path)
        os.utime(index)
    return repo_path, json.loads(index.read_text())


def make_sysroot(sysroot: Path, repo: Path, revs: Sequence[str],
                 good: Sequence[str] = ()) -> list[str]:
    """Create ``sysroot`` and deploy ``revs`` in order (the last one boots next).

    Versions named in ``good`` are marked good right after their deploy (as
    if they had booted and passed boot-complete). Returns the deployment ids
    in boot order (``deployments.json``).
    """
    from atoll.deploy import Sysroot
    from atoll.store import Repo

    src = Repo.open(repo)
    sr = Sysroot(sysroot)
    sr.init(bootloader="grub")
    for rev in revs:
        dep = sr.deploy(rev, repo=src)
        if rev in good:
            state.add_good(sysroot, dep.id)
    return [d.id for d in sr.deployments()]

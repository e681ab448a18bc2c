"""Composed Debian trees shared by every test of a run (built once, ~20 s each).

``composed(cache)`` returns a repo holding the quickstart's v1 and v2 commits
(examples/base.yaml, examples/base-v2.yaml); ``composed_boot(cache)`` the
boot feature's image (tests/data/compose/boot.yaml, ~2 min). Keyed by the
treefiles, atoll's source and the day (the archive moves), so a developer's
second run reuses them; entries no run used for three hours are pruned
(:func:`atoll.boot.devsysroot.prune_cache`). Every compose of a run shares one
package cache (:func:`deb_cache`), as composes on a build machine do.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import hashlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from atoll.boot.devsysroot import _source_hash, prune_cache
from atoll.compose.build import compose
from atoll.compose.debcache import DebCache
from atoll.compose.treefile import load_treefile
from atoll.store.repo import Repo
from tests.conftest import ROOT

EXAMPLES = ROOT / "examples"
BOOT_TREEFILE = ROOT / "tests/data/compose/boot.yaml"


def deb_cache(cache: Path) -> DebCache:
    """The package cache the tests' composes share (under the artifact cache)."""
    return DebCache(cache / "debs")


def _key(*files: Path) -> str:
    h = hashlib.sha256()
    for f in files:
        h.update(f.read_bytes())
    h.update(dt.date.today().isoformat().encode())
    h.update(_source_hash().encode())  # compose's code is an input too (e.g. the treefile model)
    return h.hexdigest()[:16]


@dataclass(frozen=True)
class Composed:
    repo: Repo
    v1: str
    v2: str


def composed(cache: Path) -> Composed:
    files = [EXAMPLES / "base.yaml", EXAMPLES / "base-v2.yaml"]
    base = cache / f"composed-{_key(*files)}"
    lock = cache / "composed.lock"
    with open(lock, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        done = base / "done"
        if not done.exists():
            prune_cache(cache, "composed-" + "?" * 16, base)  # not composed-boot-*
            shutil.rmtree(base, ignore_errors=True)
            repo = Repo.create(base / "repo")
            ids = []
            for f in files:
                res = compose(load_treefile(f), EXAMPLES, repo, deb_cache=deb_cache(cache))
                ids.append(res.commit)
            done.write_text(" ".join(ids))
        os.utime(base)
        v1, v2 = done.read_text().split()
        return Composed(Repo.open(base / "repo"), v1, v2)


@dataclass(frozen=True)
class ComposedBoot:
    repo: Repo
    commit: str


def composed_boot(cache: Path) -> ComposedBoot:
    """tests/data/compose/boot.yaml composed once per inputs (ref ``test/boot``)."""
    base = cache / f"composed-boot-{_key(BOOT_TREEFILE)}"
    with open(cache / "composed-boot.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        done = base / "done"
        if not done.exists():
            prune_cache(cache, "composed-boot-*", base)  # ~700 MB each
            shutil.rmtree(base, ignore_errors=True)
            repo = Repo.create(base / "repo")
            res = compose(load_treefile(BOOT_TREEFILE), BOOT_TREEFILE.parent, repo,
                          deb_cache=deb_cache(cache))
            done.write_text(res.commit)
        os.utime(base)
        return ComposedBoot(Repo.open(base / "repo"), done.read_text().strip())

"""Composed Debian trees shared by every test of a run (built once, ~20 s each).

``composed(cache)`` returns a repo holding the quickstart's v1 and v2 commits
(examples/base.yaml, examples/base-v2.yaml). Keyed by the treefiles, atoll's
source and the day (the archive moves), so a developer's second run reuses
it; CI starts clean.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import hashlib
import shutil
from dataclasses import dataclass
from pathlib import Path

from atoll.boot.devsysroot import _source_hash
from atoll.compose.build import compose
from atoll.compose.treefile import load_treefile
from atoll.store.repo import Repo
from tests.conftest import ROOT

EXAMPLES = ROOT / "examples"


@dataclass(frozen=True)
class Composed:
    repo: Repo
    v1: str
    v2: str


def composed(cache: Path) -> Composed:
    files = [EXAMPLES / "base.yaml", EXAMPLES / "base-v2.yaml"]
    h = hashlib.sha256()
    for f in files:
        h.update(f.read_bytes())
    h.update(dt.date.today().isoformat().encode())
    h.update(_source_hash().encode())  # compose's code is an input too (e.g. the treefile model)
    base = cache / f"composed-{h.hexdigest()[:16]}"
    lock = cache / "composed.lock"
    with open(lock, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        done = base / "done"
        if not done.exists():
            shutil.rmtree(base, ignore_errors=True)
            repo = Repo.create(base / "repo")
            ids = []
            for f in files:
                res = compose(load_treefile(f), EXAMPLES, repo)
                ids.append(res.commit)
            done.write_text(" ".join(ids))
        v1, v2 = done.read_text().split()
        return Composed(Repo.open(base / "repo"), v1, v2)

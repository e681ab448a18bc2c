"""Hotfix benchmark: `atoll hotfix add` vs the plain way, on the same base and package.

    .venv/bin/python bench/bench_hotfix.py [--runs 3] [--image db|quickstart]

The base is the database host's image (``--image db``: the tests' composed
``site/db``, 17,001 files, 1.3 GiB; composed first if the tests' cache lacks it)
or the quickstart's v1. The package is a small .deb with a postinst. Reported,
as medians of N runs:

- atoll: `hotfix add` on a host sysroot with the base deployed (checkout as
  hardlinks, dpkg on an overlay, fold, commit reusing the base's objects, and the
  deploy of the result, which the anchor does not do);
- anchor: what a derivation without the overlay costs: a hardlink checkout, a
  private copy of it (`cp -a`, so that dpkg cannot write into the store), `dpkg
  --root --install` on the copy, and a commit of the copy (every file hashed);
- the ratio atoll/anchor, and the bytes each wrote under the store's tmp/.

Both derivations produce a commit; the bench asserts that the trees are the same.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from atoll.compose.layout import SLIM_DPKG_OPTS, TMPFILES_NAME, to_atoll_layout
from atoll.deploy import hotfix
from atoll.deploy.sysroot import Sysroot
from atoll.store.checkout import checkout
from atoll.store.repo import Repo

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the images are the tests' (their cache, their fixtures)
CACHE = Path("/var/tmp/atoll-test-cache")


def _base(image: str) -> tuple[Repo, str]:
    if image == "db":
        from tests.vm.dbhost import composed_dbhost

        return composed_dbhost(CACHE)
    from tests.compose_fixtures import composed

    trees = composed(CACHE)
    return trees.repo, trees.v1


def _deb(work: Path) -> tuple[Path, str]:
    src = work / "pkg"
    (src / "DEBIAN").mkdir(parents=True)
    (src / "DEBIAN/control").write_text(
        "Package: atoll-bench-hotfix\nVersion: 1.0\nArchitecture: all\n"
        "Maintainer: atoll bench <bench@example.org>\nDescription: a bench package\n")
    (src / "DEBIAN/postinst").write_text("#!/bin/sh\nset -e\necho ran > /usr/share/bench-ran\n")
    os.chmod(src / "DEBIAN/postinst", 0o755)
    (src / "usr/share/atoll-bench").mkdir(parents=True)
    (src / "usr/share/atoll-bench/fix.txt").write_text("fixed\n")
    deb = work / "atoll-bench-hotfix_1.0_all.deb"
    subprocess.run(["dpkg-deb", "--build", "--root-owner-group", src, deb], check=True,
                   capture_output=True)
    return deb, hashlib.sha256(deb.read_bytes()).hexdigest()


def _tmp_bytes(repo: Repo) -> int:
    out = subprocess.run(["du", "-s", "--block-size=1", repo.tmp], capture_output=True,
                         text=True, check=True).stdout
    return int(out.split()[0])


def atoll_run(src: Repo, base: str, deb: Path, sha: str, host: Path
              ) -> tuple[float, str, Repo]:
    shutil.rmtree(host, ignore_errors=True)
    sr = Sysroot(host)
    sr.init()
    dep = sr.deploy(base, repo=src)
    (host / "run/atoll").mkdir(parents=True, exist_ok=True)
    (host / "run/atoll/booted").write_text(dep.id + "\n")
    subprocess.run(["sync"], check=True)
    t = time.monotonic()
    res = hotfix.add(sr, deb, sha)
    took = time.monotonic() - t
    return took, sr.repo.read_commit(res.deployment.commit).tree, sr.repo


def anchor_run(src: Repo, base: str, deb: Path, host: Path
               ) -> tuple[float, str, Repo, int]:
    shutil.rmtree(host, ignore_errors=True)
    repo = Repo.create(host / "repo")
    repo.pull_local(src, base)
    subprocess.run(["sync"], check=True)
    t = time.monotonic()
    with repo.staging_dir("anchor-") as staging:
        co, root = staging / "checkout", staging / "root"
        checkout(repo, base, co, verify=True)
        subprocess.run(["cp", "-a", co, root], check=True)
        shutil.rmtree(co)
        # the same steps atoll's derivation takes around dpkg (its private helpers)
        image_tmpfiles = hotfix._to_debian_layout(root)
        env = {"PATH": os.environ["PATH"], "DEBIAN_FRONTEND": "noninteractive"}
        dpkg = ["unshare", "--mount", "--pid", "--fork", "--", "dpkg", f"--root={root}",
                "--force-confold"]
        subprocess.run([*dpkg, "--no-triggers", *[f"--{o}" for o in SLIM_DPKG_OPTS],
                        "--install", deb], check=True, capture_output=True, env=env)
        subprocess.run([*dpkg, "--triggers-only", "--pending"], check=True,
                       capture_output=True, env=env)
        wrote = _tmp_bytes(repo)
        to_atoll_layout(root)
        tmpfiles = root / TMPFILES_NAME
        lines = tmpfiles.read_text().splitlines()
        tmpfiles.write_text(lines[0] + "\n" + "\n".join(sorted(set(lines[1:])
                                                               | set(image_tmpfiles))) + "\n")
        commit = repo.commit_dir(root, parent=base, link=True)
    took = time.monotonic() - t
    return took, repo.read_commit(commit).tree, repo, wrote


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--image", choices=("db", "quickstart"), default="db")
    args = ap.parse_args()
    src, base = _base(args.image)
    work = Path(tempfile.mkdtemp(prefix="atoll-bench-hotfix-", dir="/var/tmp"))
    try:
        deb, sha = _deb(work)
        ours: list[float] = []
        theirs: list[float] = []
        trees: dict[str, Repo] = {}
        wrote = 0
        for _ in range(args.runs):
            took, tree, repo = atoll_run(src, base, deb, sha, work / "host")
            ours.append(took)
            trees[tree] = repo
            took, tree, repo, wrote = anchor_run(src, base, deb, work / "anchor")
            theirs.append(took)
            trees[tree] = repo
        a, b = statistics.median(ours), statistics.median(theirs)
        print(f"image {args.image}, {args.runs} runs (medians)")
        print(f"  atoll hotfix add             {a:6.1f} s   {[round(x, 1) for x in ours]}")
        print(f"  anchor cp -a + dpkg + commit {b:6.1f} s   {[round(x, 1) for x in theirs]}")
        print(f"  ratio atoll/anchor          {a / b:7.2f}x")
        print(f"  anchor's copy under tmp/    {wrote / 2**20:7.0f} MiB")
        if len(trees) != 1:
            walk = [{p: (e.id, e.meta) for p, e in r.walk(t)} for t, r in trees.items()]
            diff = sorted(p for p in walk[0].keys() | walk[1].keys()
                          if walk[0].get(p) != walk[1].get(p))
            raise SystemExit(f"the derivations differ: trees {sorted(trees)}: {diff[:10]}")
        print("  same tree both ways: yes")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

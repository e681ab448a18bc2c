"""Store benchmark: atoll vs OSTree on the same Debian minbase tree, in one run.

    .venv/bin/python bench/bench_store.py [--runs 5]

Reports medians of N runs and the ratios atoll/ostree for:
- commit of the tree into an empty repo (atoll vs `ostree commit`, bare repo)
- checkout with hardlinks (atoll store checkout vs `ostree checkout -H`); and
  what `atoll deploy` does: the integrity check (each object's seal) + checkout,
  target <= 1.0x; for reference, a checkout after re-hashing every object (what
  deploy did before objects were sealed, and what `store fsck` does)
- store size for two similar commits (quickstart v1 and v2) in each store
- compose time of the quickstart image (examples/base.yaml)
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from atoll.compose.build import compose
from atoll.compose.treefile import load_treefile
from atoll.store.checkout import bad_objects, checkout
from atoll.store.repo import Repo

ROOT = Path(__file__).resolve().parent.parent


def du(path: Path) -> int:
    out = subprocess.run(["du", "-s", "--block-size=1", str(path)], capture_output=True,
                         text=True, check=True).stdout
    return int(out.split()[0])


def timed(fn: object) -> float:
    t = time.monotonic()
    fn()  # type: ignore[operator]
    return time.monotonic() - t


def drop_caches() -> None:
    subprocess.run(["sync"], check=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="atoll-bench-", dir="/var/tmp"))
    try:
        # quickstart compose time (also gives us v1, v2)
        repo = Repo.create(work / "composed")
        t_compose = timed(lambda: compose(load_treefile(ROOT / "examples/base.yaml"),
                                          ROOT / "examples", repo))
        compose(load_treefile(ROOT / "examples/base-v2.yaml"), ROOT / "examples", repo)
        heads = repo.refs()
        v2 = heads["quickstart/base"]
        v1 = repo.read_commit(v2).parent
        assert v1 is not None
        trees = {}
        for name, cid in (("v1", v1), ("v2", v2)):
            co = work / f"co-{name}"
            checkout(repo, cid, co, verify=False)
            plain = work / f"tree-{name}"
            subprocess.run(["cp", "-a", str(co), str(plain)], check=True)  # not hardlinked
            shutil.rmtree(co)
            trees[name] = plain
        files = sum(len(f) for _, _, f in os.walk(trees["v1"]))
        res: dict[str, list[float]] = {k: [] for k in
                                       ("atoll_commit", "ostree_commit", "atoll_checkout",
                                        "atoll_checkout_verify", "atoll_checkout_rehash",
                                        "ostree_checkout")}
        for i in range(args.runs):
            ar, orp = work / f"a{i}", work / f"o{i}"
            a = Repo.create(ar)
            subprocess.run(["ostree", "init", f"--repo={orp}", "--mode=bare"], check=True)
            drop_caches()
            res["atoll_commit"].append(timed(lambda a=a: a.commit_dir(trees["v1"], ref="b")))
            drop_caches()
            res["ostree_commit"].append(timed(lambda orp=orp: subprocess.run(
                ["ostree", "commit", f"--repo={orp}", "-b", "b",
                 f"--tree=dir={trees['v1']}"], check=True, capture_output=True)))
            cid = a.refs()["b"]
            res["atoll_checkout"].append(timed(
                lambda a=a, cid=cid, i=i: checkout(a, cid, work / f"ac{i}", verify=False)))
            res["atoll_checkout_verify"].append(timed(
                lambda a=a, cid=cid, i=i: checkout(a, cid, work / f"acv{i}", verify=True)))
            res["atoll_checkout_rehash"].append(timed(
                lambda a=a, cid=cid, i=i: (bad_objects(a, cid, full=True),
                                           checkout(a, cid, work / f"acr{i}", verify=False))))
            res["ostree_checkout"].append(timed(lambda orp=orp, i=i: subprocess.run(
                ["ostree", "checkout", f"--repo={orp}", "-H", "b", str(work / f"oc{i}")],
                check=True)))
            for d in (f"ac{i}", f"acv{i}", f"acr{i}", f"oc{i}"):
                shutil.rmtree(work / d)
            if i:  # keep one pair of repos for the size figures
                shutil.rmtree(ar)
                shutil.rmtree(orp)
        med = {k: statistics.median(v) for k, v in res.items()}
        # store size for two similar commits
        a0, o0 = Repo(work / "a0"), work / "o0"
        size1_a, size1_o = du(a0.path), du(o0)
        a0.commit_dir(trees["v2"], ref="b")
        subprocess.run(["ostree", "commit", f"--repo={o0}", "-b", "b",
                        f"--tree=dir={trees['v2']}"], check=True, capture_output=True)
        size2_a, size2_o = du(a0.path), du(o0)
        print(f"tree: Debian bookworm minbase (quickstart v1), {files} files, "
              f"{du(trees['v1']) / 1e6:.0f} MB; {args.runs} runs, medians; {os.cpu_count()} cores")
        print(f"compose quickstart image:       {t_compose:6.1f} s")
        print(f"commit    atoll {med['atoll_commit']:6.2f} s   ostree {med['ostree_commit']:6.2f} s"
              f"   ratio {med['atoll_commit'] / med['ostree_commit']:.2f}x  (target <= 1.5x)")
        print(f"checkout  atoll {med['atoll_checkout']:6.2f} s   ostree "
              f"{med['ostree_checkout']:6.2f} s   ratio "
              f"{med['atoll_checkout'] / med['ostree_checkout']:.2f}x  (target <= 1.5x)")
        print(f"deploy's check + checkout  atoll {med['atoll_checkout_verify']:6.2f} s   ratio "
              f"{med['atoll_checkout_verify'] / med['ostree_checkout']:.2f}x  (target <= 1.0x; "
              "each object's seal checked)")
        print(f"re-hash all + checkout     atoll {med['atoll_checkout_rehash']:6.2f} s   ratio "
              f"{med['atoll_checkout_rehash'] / med['ostree_checkout']:.2f}x  (what deploy did "
              "before objects were sealed; fsck's cost)")
        print(f"store size v1:     atoll {size1_a / 1e6:6.1f} MB   ostree {size1_o / 1e6:6.1f} MB")
        print(f"store size v1+v2:  atoll {size2_a / 1e6:6.1f} MB   ostree {size2_o / 1e6:6.1f} MB"
              f"   (v2 adds {(size2_a - size1_a) / 1e6:.1f} MB"
              f" / {(size2_o - size1_o) / 1e6:.1f} MB)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

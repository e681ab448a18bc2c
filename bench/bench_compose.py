"""Compose benchmark: atoll vs plain mmdebstrap of the same packages, in one run.

    .venv/bin/python bench/bench_compose.py [--treefile examples/db-host.yaml]
        [--v2 examples/db-host-v2.yaml] [--no-plain] [--json]

With a fresh package cache (so v1 starts cold, as on a new build machine):

1. atoll compose v1 (the cache fills);
2. atoll compose v2 (from the cache: only what changed is downloaded);
3. atoll compose v1 again, into a new store on the same ref: the same commit id?
   (reproducibility; what differs is named when not);
4. plain mmdebstrap of v1's and of v2's package set (the host packages, then each
   app image's packages as a tar, like compose's), each downloading everything;
5. sizes: atoll's v1 tree vs the plain v1 rootfs plus the same app image archives.

Prints each time, where compose's time went (from its log), and the ratios:
atoll v2 / atoll v1 (target <= 0.5), atoll / plain, image size atoll / plain
(target <= 1.05).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from atoll.compose import features
from atoll.compose.build import compose
from atoll.compose.debcache import DebCache
from atoll.compose.treefile import Treefile, load_treefile
from atoll.store.checkout import checkout
from atoll.store.repo import Repo

ROOT = Path(__file__).resolve().parent.parent


class PhaseLog(logging.Handler):
    """Times of compose's log lines ("compose REF: mmdebstrap", "feature boot"...)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[tuple[float, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append((time.monotonic(), record.getMessage()))

    def phases(self, start: float, end: float) -> list[tuple[str, float]]:
        marks = [(t, m) for t, m in self.lines if start <= t <= end]
        out = []
        for i, (t, m) in enumerate(marks):
            nxt = marks[i + 1][0] if i + 1 < len(marks) else end
            out.append((m.split(": ", 1)[-1][:60], nxt - t))
        return out


def du(path: Path, apparent: bool) -> int:
    argv = ["du", "-s", "--block-size=1", *(["--apparent-size"] if apparent else []), str(path)]
    return int(subprocess.run(argv, capture_output=True, text=True, check=True).stdout.split()[0])


def timed_compose(tf: Path, repo: Repo, cache: DebCache, log: PhaseLog,
                  ref: str | None = None) -> dict[str, Any]:
    t = time.monotonic()
    res = compose(load_treefile(tf), tf.parent, repo, ref=ref, deb_cache=cache)
    end = time.monotonic()
    return {"seconds": end - t, "commit": res.commit, "packages": res.packages,
            "phases": log.phases(t, end)}


def plain_packages(tf: Treefile) -> list[str]:
    pkgs = list(tf.packages)
    for name in features.expand(tf.features):
        pkgs.extend(features.get(name).packages)
    return sorted(set(pkgs))


def plain_mmdebstrap(tf: Treefile, out: Path) -> float:
    """mmdebstrap of the treefile's packages (features' included), as Debian ships them."""
    t = time.monotonic()
    subprocess.run(["mmdebstrap", "--mode=root", "--format=directory", "--quiet",
                    f"--variant={tf.variant}", f"--components={','.join(tf.components)}",
                    f"--include={','.join(plain_packages(tf))}", tf.suite, str(out),
                    *tf.apt_sources()],
                   check=True, env={**os.environ, "SOURCE_DATE_EPOCH": str(tf.source_date_epoch)})
    for name in tf.app_images:
        from atoll.apps.image import _sources, recipe

        subprocess.run(["mmdebstrap", "--variant=minbase", "--format=tar", "--quiet",
                        f"--include={','.join(recipe(name).packages)}", tf.suite,
                        str(out.parent / f"{out.name}-{name}.tar"), *_sources(tf.suite, tf.mirror)],
                       check=True,
                       env={**os.environ, "SOURCE_DATE_EPOCH": str(tf.source_date_epoch)})
    return time.monotonic() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--treefile", type=Path, default=ROOT / "examples/db-host.yaml")
    ap.add_argument("--v2", type=Path, default=ROOT / "examples/db-host-v2.yaml")
    ap.add_argument("--no-plain", action="store_true", help="skip the plain mmdebstrap anchor")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    log = PhaseLog()
    for name in ("atoll.compose", "atoll.apps"):
        logging.getLogger(name).addHandler(log)
        logging.getLogger(name).setLevel(logging.INFO)
    work = Path(tempfile.mkdtemp(prefix="atoll-bench-compose-", dir="/var/tmp"))
    out: dict[str, Any] = {"treefile": str(args.treefile), "v2": str(args.v2)}
    try:
        cache = DebCache(work / "debs")
        repo = Repo.create(work / "repo")
        out["v1"] = timed_compose(args.treefile, repo, cache, log)
        out["cache_after_v1_bytes"] = cache.size()
        out["v2"] = timed_compose(args.v2, repo, cache, log)
        # into a new store, on the same ref (the ref is an input: the subject names it)
        again = Repo.create(work / "repo-again")
        out["v1_again"] = timed_compose(args.treefile, again, cache, log)
        same = out["v1_again"]["commit"] == out["v1"]["commit"]
        out["reproducible"] = same
        if not same:
            c1 = repo.read_commit(out["v1"]["commit"])
            c2 = again.read_commit(out["v1_again"]["commit"])
            out["differs"] = {"tree": c1.tree != c2.tree, "metadata": c1.metadata != c2.metadata,
                              "packages": c1.packages() != c2.packages()}
        shutil.rmtree(again.path)
        tree = work / "tree-v1"
        checkout(repo, out["v1"]["commit"], tree, verify=False)
        out["atoll_size"] = {"apparent": du(tree, True), "disk": du(tree, False)}
        sizes = {}
        for sub in ("usr/lib/atoll/python", "usr/share/atoll/app-images"):
            if (tree / sub).exists():
                sizes[sub] = du(tree / sub, True)
        out["atoll_parts"] = sizes
        shutil.rmtree(tree)
        if not args.no_plain:
            tf1, tf2 = load_treefile(args.treefile), load_treefile(args.v2)
            out["plain_v1_seconds"] = plain_mmdebstrap(tf1, work / "plain-v1")
            rootfs = work / "plain-v1"
            apps = sum(p.stat().st_size for p in work.glob("plain-v1-*.tar"))
            out["plain_size"] = {"apparent": du(rootfs, True), "disk": du(rootfs, False),
                                 "app_image_archives": apps}
            shutil.rmtree(rootfs)
            out["plain_v2_seconds"] = plain_mmdebstrap(tf2, work / "plain-v2")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps(out, indent=2, default=str))
        return
    v1, v2, again = out["v1"]["seconds"], out["v2"]["seconds"], out["v1_again"]["seconds"]
    print(f"treefile {args.treefile.name} ({out['v1']['packages']} packages), "
          f"v2 {args.v2.name}")
    print(f"atoll compose v1, cold package cache: {v1:7.1f} s")
    print(f"atoll compose v2, warm cache:         {v2:7.1f} s   v2/v1 = {v2 / v1:.2f}x "
          "(target <= 0.5)")
    print(f"atoll compose v1 again, warm cache:   {again:7.1f} s   same commit: "
          f"{out['reproducible']}")
    print(f"package cache after v1: {out['cache_after_v1_bytes'] >> 20} MiB")
    for key in ("v1", "v2"):
        print(f"  {key} phases: " + ", ".join(f"{m} {s:.1f}s" for m, s in out[key]["phases"]))
    if "plain_v1_seconds" in out:
        p1, p2 = out["plain_v1_seconds"], out["plain_v2_seconds"]
        print(f"plain mmdebstrap v1 (host + app image packages): {p1:7.1f} s   "
              f"atoll/plain = {v1 / p1:.2f}x")
        print(f"plain mmdebstrap v2:                             {p2:7.1f} s   "
              f"atoll/plain = {v2 / p2:.2f}x")
        a, p = out["atoll_size"], out["plain_size"]
        plain_all = p["apparent"] + p["app_image_archives"]
        print(f"image size (apparent): atoll {a['apparent'] >> 20} MiB; plain rootfs "
              f"{p['apparent'] >> 20} MiB + app image archives {p['app_image_archives'] >> 20} "
              f"MiB = {plain_all >> 20} MiB; atoll/plain = {a['apparent'] / plain_all:.3f}x "
              "(target <= 1.05)")
        print(f"image size (disk): atoll {a['disk'] >> 20} MiB; plain "
              f"{(p['disk'] + p['app_image_archives']) >> 20} MiB")
    print("atoll parts: " + ", ".join(f"{k} {v >> 20} MiB" for k, v in out["atoll_parts"].items()))
    if not out["reproducible"]:
        print("what differs:", json.dumps(out["differs"]))


if __name__ == "__main__":
    main()

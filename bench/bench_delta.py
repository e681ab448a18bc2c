"""Bytes a host downloads for a real bookworm patch: atoll delta against the anchors.

    .venv/bin/python bench/bench_delta.py [--work /var/tmp/atoll-bench-delta] [--level 19]

Composes two images of the same treefile (minbase + linux-image-amd64,
openssh-server, openssl, ca-certificates, curl): ``old`` from the bookworm point
release alone (``security: false, updates: false``), ``new`` with
bookworm-security and bookworm-updates. The kernel changes ABI between them,
so every module moves to a new directory. Composes are cached in ``--work``.

Then, in one run, for the same two trees it reports what a host holding
``old`` downloads to get ``new``:

- atoll static delta (``atoll publish --deltas 1``: the ``.delta`` target);
- atoll without delta: the pack chunks holding objects the host lacks + index;
- the full image: ``tar`` of ``new`` compressed with ``zstd -19 --long=27``;
- ``ostree static-delta generate`` (both trees committed into a bare-user repo);
- ``xdelta3 -9`` of the two tar files;

and the pull+import time and peak memory (max RSS) of the client: a real
``atoll update download`` over HTTP on 127.0.0.1 in a child process.
Targets: atoll delta <= ostree static delta, and <= 15 % of the full image.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from atoll.compose.build import compose
from atoll.compose.treefile import load_treefile
from atoll.core.run import run
from atoll.delta._util import commit_objects
from atoll.delta.pack import PackIndex
from atoll.store.checkout import checkout
from atoll.store.repo import Repo

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TREEFILE = """\
ref: bench/{name}
version: "{name}"
suite: bookworm
variant: minbase
security: {updates}
updates: {updates}
packages: [linux-image-amd64, openssh-server, openssl, ca-certificates, curl, libc6]
source_date_epoch: 1732000000
"""


def du(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def composed(work: Path) -> tuple[Repo, str, str]:
    repo = Repo.create(work / "repo")
    ids = []
    for name, upd in (("old", "false"), ("new", "true")):
        tf = work / f"{name}.yaml"
        tf.write_text(TREEFILE.format(name=name, updates=upd))
        key = hashlib.sha256(tf.read_bytes()).hexdigest()[:16]
        done = work / f"{name}-{key}.commit"
        if not done.exists():
            t = time.monotonic()
            res = compose(load_treefile(tf), work, repo)
            print(f"compose {name}: {time.monotonic() - t:.0f}s", flush=True)
            done.write_text(res.commit)
        ids.append(done.read_text().strip())
    return repo, ids[0], ids[1]


def anchors(work: Path, repo: Repo, old: str, new: str) -> dict[str, float]:
    """Full image (zstd), xdelta3 of the tars, ostree static delta."""
    res: dict[str, float] = {}
    for d in ("ostree", "trees"):
        shutil.rmtree(work / d, ignore_errors=True)
    trees = work / "trees"
    trees.mkdir()
    for name, c in (("old", old), ("new", new)):
        checkout(repo, c, trees / name, verify=False)
        run(["tar", "--sort=name", "--numeric-owner", "--xattrs", "-cf", trees / f"{name}.tar",
             "-C", trees / name, "."])
    res["tree_bytes"] = (trees / "new.tar").stat().st_size
    run(["zstd", "-q", "-19", "--long=27", "-T2", trees / "new.tar", "-o",
         trees / "new.tar.zst"], timeout=7200)
    res["full_zstd"] = (trees / "new.tar.zst").stat().st_size
    run(["xdelta3", "-e", "-9", "-f", "-B", str(1 << 30), "-s", trees / "old.tar",
         trees / "new.tar", trees / "tar.xdelta"], timeout=3600)
    res["xdelta3_tar"] = (trees / "tar.xdelta").stat().st_size
    orepo = work / "ostree"
    run(["ostree", "init", f"--repo={orepo}", "--mode=bare-user"])
    for name in ("old", "new"):
        run(["ostree", "commit", f"--repo={orepo}", f"--branch=bench/{name}",
             f"--tree=dir={trees / name}"], timeout=3600)
    t = time.monotonic()
    run(["ostree", "static-delta", "generate", f"--repo={orepo}", "--from=bench/old",
         "--to=bench/new"], timeout=3600)
    res["ostree_generate_s"] = time.monotonic() - t
    res["ostree_static_delta"] = du(orepo / "deltas")
    for d in ("ostree", "trees"):
        shutil.rmtree(work / d, ignore_errors=True)
    return res


def atoll(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "atoll.cli", "-q", *args], check=True,
                   stdout=subprocess.DEVNULL)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", type=Path, default=Path("/var/tmp/atoll-bench-delta"))
    ap.add_argument("--level", default="19")
    opts = ap.parse_args()
    work: Path = opts.work
    work.mkdir(parents=True, exist_ok=True)
    repo, old, new = composed(work)
    for d in ("www", "keys", "host"):
        shutil.rmtree(work / d, ignore_errors=True)
    www, keys, host = work / "www", work / "keys", work / "host"
    res: dict[str, float] = {}

    # -- atoll: publish old, then new with a delta from old ----------------
    atoll("keys", "init", str(keys), "--to", str(www))
    t = time.monotonic()
    for c in (old, new):
        atoll("publish", "bench/channel", "--repo", str(repo.path), "--commit", c, "--to",
              str(www), "--keys", str(keys), "--deltas", "1", "--level", opts.level)
    res["publish_s"] = time.monotonic() - t
    delta = next(www.glob("targets/deltas/*.delta"))
    res["atoll_delta"] = delta.stat().st_size
    index_file = next(p for p in www.glob("targets/packs/*.index") if new in p.name)
    idx = PackIndex.from_bytes(index_file.read_bytes())
    have = {(o.id, o.kind) for o in commit_objects(repo, old)}
    missing = {(o[0], o[1]) for o in idx.objects if (o[0], o[1]) not in have}
    res["atoll_objects"] = sum(idx.chunks[n].clen for n in idx.chunks_for(missing)) + \
        index_file.stat().st_size
    res["atoll_pack"] = next(p for p in www.glob("targets/packs/*.pack")
                             if new in p.name).stat().st_size

    # -- anchors (cached per commit pair: they do not depend on atoll's code) --
    anchors_file = work / f"anchors-{old[:12]}-{new[:12]}.json"
    if not anchors_file.exists():
        anchors_file.write_text(json.dumps(anchors(work, repo, old, new), indent=1))
    res.update(json.loads(anchors_file.read_text()))

    # -- client: pull + import over HTTP ----------------------------------
    from tests.integration.delivery_fixtures import serve_www

    with serve_www(www) as server:
        atoll("--sysroot", str(host), "remote", "add", "origin", server.url, "--root",
              str(www / "metadata/root.json"))
        hrepo = Repo.create(host / "atoll/repo")  # the host already runs `old`
        from atoll.delta.pack import import_chunk
        from atoll.delta.static import repo_missing

        old_index = next(p for p in www.glob("targets/packs/*.index") if old in p.name)
        oidx = PackIndex.from_bytes(old_index.read_bytes())
        pack = next(p for p in www.glob("targets/packs/*.pack") if old in p.name).read_bytes()
        metas: dict[tuple[str, str], bytes] = {}
        with hrepo.transaction():
            for n, c in enumerate(oidx.chunks):
                import_chunk(hrepo, oidx, n, pack[c.offset:c.offset + c.clen], metas=metas)
            assert not repo_missing(hrepo, old, metas)
            for (_o, kind), data in metas.items():
                if kind == "dirtree":
                    hrepo.write_meta_object(data, kind)
            hrepo.write_meta_object(metas[(old, "commit")], "commit")
        hrepo.set_ref("origin/bench/channel", old, namespace="remotes")
        del pack
        # The client in a fresh process; it reports its own peak RSS (ru_maxrss).
        code = ("import json, resource, sys\n"
                "from atoll.cli import main\n"
                "rc = main(sys.argv[1:])\n"
                "print('MAXRSS', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,"
                " file=sys.stderr)\n"
                "sys.exit(rc)\n")
        t = time.monotonic()
        proc = subprocess.run([sys.executable, "-c", code, "--sysroot", str(host), "--json",
                               "update", "download"], check=True, capture_output=True, text=True)
        res["pull_import_s"] = time.monotonic() - t
        rss = next(ln for ln in proc.stderr.splitlines() if ln.startswith("MAXRSS"))
        res["client_max_rss_mib"] = int(rss.split()[1]) / 1024
        out = json.loads(proc.stdout)
        assert out["method"] == "delta", out
    assert Repo.open(host / "atoll/repo").refs("remotes")["origin/bench/channel"] == new

    mib = 1 << 20
    print(f"\nold {old[:12]} -> new {new[:12]}; new tree {res['tree_bytes'] / mib:.1f} MiB (tar)")
    rows = [("atoll delta", "atoll_delta"), ("atoll without delta (missing objects)",
            "atoll_objects"), ("atoll full pack", "atoll_pack"),
            ("full image (tar | zstd -19 --long)", "full_zstd"),
            ("ostree static-delta", "ostree_static_delta"), ("xdelta3 -9 of tars", "xdelta3_tar")]
    for label, key in rows:
        print(f"{label:42s} {res[key] / mib:9.2f} MiB  {100 * res[key] / res['full_zstd']:6.1f} %"
              " of full image")
    ratio = res["atoll_delta"] / res["ostree_static_delta"]
    print(f"atoll delta / ostree static delta: {ratio:.2f} (target <= 1.00)")
    print(f"atoll delta / full image: {100 * res['atoll_delta'] / res['full_zstd']:.1f} %"
          " (target <= 15 %)")
    print(f"client pull+import {res['pull_import_s']:.1f}s, max RSS "
          f"{res['client_max_rss_mib']:.0f} MiB; publish (2 commits) {res['publish_s']:.0f}s; "
          f"ostree delta generate {res['ostree_generate_s']:.0f}s")
    (work / "result.json").write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONPATH", str(ROOT / "src"))
    sys.exit(main())

"""Bytes a host downloads for a real bookworm patch: atoll delta against the anchors.

    .venv/bin/python bench/bench_delta.py [--variant kernel|db] [--work DIR] [--level N]
        [--warm] [--clients-only] [--no-anchors]

Composes two images of the same treefile: ``old`` from the bookworm point
release alone (``security: false, updates: false``), ``new`` with
bookworm-security and bookworm-updates. The kernel changes ABI between them,
so every module moves to a new directory. Composes are cached in ``--work``
(default ``/var/tmp/atoll-bench-delta`` for ``kernel``, ``...-db`` for ``db``).
Variants (the packages on top of minbase):

- ``kernel``: linux-image-amd64, openssh-server, openssl, ca-certificates, curl;
- ``db``: the database host's set: linux-image-amd64, systemd, docker.io,
  mariadb-client.

Then, in one run, for the same two trees it reports what a host holding
``old`` downloads to get ``new``:

- atoll static delta (``atoll publish --deltas 1``: the ``.delta`` target);
- atoll without delta: the pack chunks holding objects the host lacks + index;
- the full image: ``tar`` of ``new`` compressed with ``zstd -19 --long=27``, and
  with ``zstd -19`` (its 8 MiB window: what a host holds decoding atoll's pack);
- ``ostree static-delta generate`` (both trees committed into a bare-user repo);
- ``xdelta3 -9`` of the two tar files;

and the pull+import time and peak memory of the client: a real ``atoll update
download`` over HTTP on 127.0.0.1 in a child process that reports its own
``ru_maxrss`` (MAXRSS) and its children's largest (gzip/xz rebuilding an initrd
or a kernel); once for the host holding ``old`` (the delta), once for a host
with an empty store (the whole pack).

The publish times are cold: the publishing repository's compression cache
(``REPO/cache/publish``) is emptied first; ``--warm`` also publishes ``new``
again on a fresh channel with the cache the first run filled.

Targets: atoll delta <= ostree static delta, and <= 15 % of the full image; client
MAXRSS <= 128 MiB; full pack <= 1.05x the full image; each publish <= 180 s (the
db variant, on the 2-core machine; docs/benchmarks.md, "Decided (2026-12-01)").
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
packages: [{packages}]
source_date_epoch: 1732000000
"""
PACKAGES = {
    "kernel": "linux-image-amd64, openssh-server, openssl, ca-certificates, curl, libc6",
    "db": "linux-image-amd64, systemd, docker.io, mariadb-client",
}


def du(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def composed(work: Path, variant: str) -> tuple[Repo, str, str]:
    repo = Repo.create(work / "repo")
    ids = []
    for name, upd in (("old", "false"), ("new", "true")):
        tf = work / f"{name}.yaml"
        tf.write_text(TREEFILE.format(name=name, updates=upd, packages=PACKAGES[variant]))
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
    # the same, within the window a host may hold (zstd -19 without --long: 8 MiB)
    run(["zstd", "-q", "-19", "-T2", trees / "new.tar", "-o", trees / "new.tar.w23.zst"],
        timeout=7200)
    res["full_zstd_w23"] = (trees / "new.tar.w23.zst").stat().st_size
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


# The client in a fresh process; it reports its peak RSS: ru_maxrss (MAXRSS) and
# VmHWM (its address space's high-water mark), and its largest child's ru_maxrss
# (gzip/xz rebuilding an initrd or a kernel).
CLIENT = ("import json, resource, sys\n"
          "from atoll.cli import main\n"
          "rc = main(sys.argv[1:])\n"
          "hwm = next(ln.split()[1] for ln in open('/proc/self/status')"
          " if ln.startswith('VmHWM'))\n"
          "print('MAXRSS', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,"
          " resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, hwm, file=sys.stderr)\n"
          "sys.exit(rc)\n")
# Linux carries a parent's high-water mark over fork/exec into the child's ru_maxrss,
# and this process grows large (composes, the old pack): the client is started by a
# small launcher, started first, so that its MAXRSS is its own.
LAUNCHER = ("import json, subprocess, sys\n"
            "for line in sys.stdin:\n"
            "    p = subprocess.run(json.loads(line), capture_output=True, text=True)\n"
            "    print(json.dumps([p.returncode, p.stdout, p.stderr]), flush=True)\n")


class Launcher:
    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", LAUNCHER], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)

    def run(self, argv: list[str]) -> tuple[int, str, str]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(argv) + "\n")
        self.proc.stdin.flush()
        rc, out, err = json.loads(self.proc.stdout.readline())
        return int(rc), str(out), str(err)


def client_download(launcher: Launcher, host: Path
                    ) -> tuple[float, float, float, float, dict[str, object]]:
    """(seconds, MAXRSS MiB, VmHWM MiB, largest child's MAXRSS MiB, JSON) of
    `update download`."""
    t = time.monotonic()
    rc, out, err = launcher.run([sys.executable, "-c", CLIENT, "--sysroot", str(host),
                                 "--json", "update", "download"])
    took = time.monotonic() - t
    if rc:
        raise SystemExit(f"update download failed ({rc}):\n{err}")
    rss = next(ln for ln in err.splitlines() if ln.startswith("MAXRSS")).split()
    return took, int(rss[1]) / 1024, int(rss[3]) / 1024, int(rss[2]) / 1024, json.loads(out)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--variant", choices=sorted(PACKAGES), default="kernel")
    ap.add_argument("--work", type=Path)
    ap.add_argument("--level", help="zstd level of packs and deltas (default: atoll's, by kind)")
    ap.add_argument("--warm", action="store_true",
                    help="also publish `new` again with the cache the first publish filled")
    ap.add_argument("--no-anchors", action="store_true",
                    help="publish and measure the clients, skip the anchors (tar, zstd, "
                    "xdelta3, ostree: most of a db run's time)")
    ap.add_argument("--clients-only", action="store_true",
                    help="measure the clients only, against WORK/www as an earlier run "
                    "published it (no publish, no anchors: for a loaded machine)")
    opts = ap.parse_args()
    launcher = Launcher()  # first, while this process is small
    work: Path = opts.work or Path("/var/tmp/atoll-bench-delta" + (
        "" if opts.variant == "kernel" else f"-{opts.variant}"))
    work.mkdir(parents=True, exist_ok=True)
    repo, old, new = composed(work, opts.variant)
    sfx = "-clients" if opts.clients_only else ""
    for d in ("host" + sfx, "host-empty" + sfx) if opts.clients_only else (
            "www", "keys", "host", "host-empty", "repo/cache"):
        shutil.rmtree(work / d, ignore_errors=True)
    www, keys = work / "www", work / "keys"
    res: dict[str, float] = {}
    level = ["--level", opts.level] if opts.level else []
    if opts.clients_only:
        return clients(launcher, work, sfx, repo, old, new, res)

    # -- atoll: publish old, then new with a delta from old (cold cache) -------
    atoll("keys", "init", str(keys), "--to", str(www))
    for name, c in (("old", old), ("new", new)):
        t = time.monotonic()
        atoll("publish", "bench/channel", "--repo", str(repo.path), "--commit", c, "--to",
              str(www), "--keys", str(keys), "--deltas", "1", *level)
        res[f"publish_{name}_s"] = time.monotonic() - t
    res["publish_s"] = res["publish_old_s"] + res["publish_new_s"]
    if opts.warm:  # the same commit on another channel: the pack from the cache
        t = time.monotonic()
        atoll("publish", "bench/warm", "--repo", str(repo.path), "--commit", new, "--to",
              str(www), "--keys", str(keys), "--deltas", "1", *level)
        res["publish_warm_s"] = time.monotonic() - t
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

    if opts.no_anchors:
        clients(launcher, work, sfx, repo, old, new, res)
        print(f"old {old[:12]} -> new {new[:12]}; atoll delta "
              f"{res['atoll_delta'] / (1 << 20):.2f} MiB, full pack "
              f"{res['atoll_pack'] / (1 << 20):.2f} MiB")
        print_clients(res)
        print(f"publish old {res['publish_old_s']:.0f}s + new {res['publish_new_s']:.0f}s = "
              f"{res['publish_s']:.0f}s (cold cache; target: each <= 180 s for db)")
        (work / "result-no-anchors.json").write_text(json.dumps(res, indent=1))
        return 0

    # -- anchors (cached per commit pair: they do not depend on atoll's code) --
    anchors_file = work / f"anchors-{old[:12]}-{new[:12]}.json"
    if not anchors_file.exists() or "full_zstd_w23" not in json.loads(
            anchors_file.read_text()):
        anchors_file.write_text(json.dumps(anchors(work, repo, old, new), indent=1))
    res.update(json.loads(anchors_file.read_text()))

    clients(launcher, work, sfx, repo, old, new, res)
    report(res, old, new, opts.warm)
    (work / "result.json").write_text(json.dumps(res, indent=1))
    return 0


def clients(launcher: Launcher, work: Path, sfx: str, repo: Repo, old: str, new: str,
            res: dict[str, float]) -> int:
    """Pull + import over HTTP: a host holding ``old`` (the delta), an empty host (the
    whole pack)."""
    from tests.integration.delivery_fixtures import serve_www

    www, host = work / "www", work / f"host{sfx}"

    with serve_www(www) as server:
        atoll("--sysroot", str(host), "remote", "add", "origin", server.url, "--root",
              str(www / "metadata/root.json"), "--channel", "bench/channel")
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
        took, rss, hwm, child, out = client_download(launcher, host)
        assert out["method"] == "delta", out
        res.update(pull_import_s=took, client_max_rss_mib=rss, client_hwm_mib=hwm,
                   client_child_rss_mib=child)
        # a host with an empty store: the whole pack
        empty = work / f"host-empty{sfx}"
        atoll("--sysroot", str(empty), "remote", "add", "origin", server.url, "--root",
              str(www / "metadata/root.json"), "--channel", "bench/channel")
        took, rss, hwm, child, out = client_download(launcher, empty)
        assert out["method"] == "pack", out
        res.update(pack_pull_import_s=took, pack_client_max_rss_mib=rss, pack_client_hwm_mib=hwm)
    assert Repo.open(host / "atoll/repo").refs("remotes")["origin/bench/channel"] == new
    assert Repo.open(empty / "atoll/repo").refs("remotes")["origin/bench/channel"] == new
    shutil.rmtree(empty, ignore_errors=True)
    if sfx:  # --clients-only
        res["atoll_delta"] = next(www.glob(f"targets/deltas/*{new}.delta")).stat().st_size
        print(f"old {old[:12]} -> new {new[:12]}; atoll delta "
              f"{res['atoll_delta'] / (1 << 20):.2f} MiB")
        print_clients(res)
        (work / "result-clients.json").write_text(json.dumps(res, indent=1))
    return 0


def print_clients(res: dict[str, float]) -> None:
    print(f"client, delta: pull+import {res['pull_import_s']:.1f}s, MAXRSS "
          f"{res['client_max_rss_mib']:.0f} MiB (VmHWM {res['client_hwm_mib']:.0f}; target "
          f"<= 128), largest child {res['client_child_rss_mib']:.0f} MiB")
    print(f"client, whole pack: pull+import {res['pack_pull_import_s']:.1f}s, MAXRSS "
          f"{res['pack_client_max_rss_mib']:.0f} MiB (VmHWM {res['pack_client_hwm_mib']:.0f})")


def report(res: dict[str, float], old: str, new: str, warm: bool) -> None:
    mib = 1 << 20
    print(f"\nold {old[:12]} -> new {new[:12]}; new tree {res['tree_bytes'] / mib:.1f} MiB (tar)")
    rows = [("atoll delta", "atoll_delta"), ("atoll without delta (missing objects)",
            "atoll_objects"), ("atoll full pack", "atoll_pack"),
            ("full image (tar | zstd -19 --long)", "full_zstd"),
            ("full image, 8 MiB window (tar | zstd -19)", "full_zstd_w23"),
            ("ostree static-delta", "ostree_static_delta"), ("xdelta3 -9 of tars", "xdelta3_tar")]
    for label, key in rows:
        print(f"{label:42s} {res[key] / mib:9.2f} MiB  {100 * res[key] / res['full_zstd']:6.1f} %"
              " of full image")
    ratio = res["atoll_delta"] / res["ostree_static_delta"]
    print(f"atoll delta / ostree static delta: {ratio:.2f} (target <= 1.00)")
    print(f"atoll delta / full image: {100 * res['atoll_delta'] / res['full_zstd']:.1f} %"
          " (target <= 15 %)")
    print(f"atoll full pack / full image: {res['atoll_pack'] / res['full_zstd']:.3f}"
          f" (target <= 1.05); / full image in an 8 MiB window: "
          f"{res['atoll_pack'] / res['full_zstd_w23']:.3f}")
    print_clients(res)
    print(f"publish old {res['publish_old_s']:.0f}s + new {res['publish_new_s']:.0f}s = "
          f"{res['publish_s']:.0f}s (cold cache; target: each <= 180 s for db)"
          + (f"; new again, warm cache {res['publish_warm_s']:.0f}s" if warm else ""))
    print(f"ostree delta generate {res['ostree_generate_s']:.0f}s")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONPATH", str(ROOT / "src"))
    sys.exit(main())

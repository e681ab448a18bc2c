"""Importing a delta or a pack holds a bounded amount of memory, whatever the file sizes.

The import runs in a child process that reports its peak RSS: an 80 MiB file
patched against an 80 MiB base, and a new 48 MiB file, must import in at most
128 MiB (holding the files would take several times their size). Memory does
not depend on the machine's load, so the bound is robust.

The child reads its peak from ``VmHWM`` (/proc/self/status): the high-water mark
of its own address space. ``ru_maxrss`` would not do here: Linux carries the
parent's high-water mark over ``fork``/``exec`` into it, and the parent (pytest,
which made the big files) is larger than the bound.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from atoll.delta import generate_delta, import_chunk, write_pack
from atoll.delta.static import read_header
from atoll.store.repo import Repo

MiB = 1 << 20
LIMIT_MIB = 128

CHILD = """
import json, sys
from pathlib import Path
from atoll.store.repo import Repo
mode, host, arg = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
repo = Repo.open(host)
if mode == "delta":
    from atoll.delta import apply_delta
    commit = apply_delta(repo, Path(arg))
else:
    from atoll.delta.pack import PackIndex, import_chunk_file
    from atoll.delta.static import repo_missing
    pack, index = Path(arg + ".pack"), Path(arg + ".index")
    idx = PackIndex.from_bytes(index.read_bytes())
    metas = {}
    with repo.transaction():
        for n, c in enumerate(idx.chunks):
            import_chunk_file(repo, idx, n, pack, c.offset, metas=metas)
        assert not repo_missing(repo, idx.commit, metas)
        for (oid, kind), data in metas.items():
            if kind == "dirtree":
                repo.write_meta_object(data, kind)
        repo.write_meta_object(metas[(idx.commit, "commit")], "commit")
    commit = idx.commit
hwm = next(int(ln.split()[1]) for ln in open("/proc/self/status") if ln.startswith("VmHWM"))
print(json.dumps({"commit": commit, "maxrss_mib": hwm / 1024}))
"""


def _child(mode: str, host: Path, arg: Path) -> dict[str, object]:
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2] / "src"))
    out = subprocess.run([sys.executable, "-c", CHILD, mode, str(host), str(arg)],
                         check=True, capture_output=True, text=True, env=env, timeout=600)
    result: dict[str, object] = json.loads(out.stdout)
    return result


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Repo, str, str]:
    tmp = tmp_path_factory.mktemp("big")
    rnd = random.Random(11)
    base = bytearray(rnd.randbytes(80 * MiB))
    repo = Repo.create(tmp / "repo")
    (tmp / "a/usr/lib").mkdir(parents=True)
    (tmp / "a/usr/lib/big.bin").write_bytes(base)
    a = repo.commit_dir(tmp / "a", ref="r")
    for off in range(0, len(base), 3 * MiB):  # a new build: a few changes everywhere
        base[off:off + 16] = rnd.randbytes(16)
    (tmp / "b/usr/lib").mkdir(parents=True)
    (tmp / "b/usr/lib/big.bin").write_bytes(base)
    (tmp / "b/usr/lib/new.bin").write_bytes(rnd.randbytes(48 * MiB))
    b = repo.commit_dir(tmp / "b", ref="r")
    return tmp, repo, a, b


def _host_with(tmp: Path, repo: Repo, commit: str) -> Path:
    host = Repo.create(tmp / "host")
    idx = write_pack(repo, commit, tmp / "a.pack", tmp / "a.index", level=1)
    data = (tmp / "a.pack").read_bytes()
    metas: dict[tuple[str, str], bytes] = {}
    with host.transaction():
        for n, c in enumerate(idx.chunks):
            import_chunk(host, idx, n, data[c.offset:c.offset + c.clen], metas=metas)
        for (_oid, kind), raw in metas.items():
            if kind == "dirtree":
                host.write_meta_object(raw, kind)
        host.write_meta_object(metas[(commit, "commit")], "commit")
    return host.path


def test_delta_import_in_bounded_memory(big: tuple[Path, Repo, str, str],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    tmp, repo, a, b = big
    monkeypatch.setattr("atoll.delta.static.CLI_LEVEL", 9)  # quick, and enough here
    monkeypatch.setattr("atoll.delta.static.BSDIFF_MAX", 0)
    generate_delta(repo, a, b, tmp / "d.delta", level=3)
    with open(tmp / "d.delta", "rb") as fh:
        hows = sorted(f["how"] for f in read_header(fh).files)
    assert hows == ["patch", "raw"]
    host = _host_with(tmp, repo, a)
    out = _child("delta", host, tmp / "d.delta")
    assert out["commit"] == b
    assert Repo.open(host).is_complete(b)
    assert isinstance(out["maxrss_mib"], float) and out["maxrss_mib"] <= LIMIT_MIB, out


def test_pack_import_in_bounded_memory(big: tuple[Path, Repo, str, str]) -> None:
    tmp, repo, _a, b = big
    write_pack(repo, b, tmp / "b.pack", tmp / "b.index", level=1)
    host = Repo.create(tmp / "empty")
    out = _child("pack", host.path, tmp / "b")
    assert out["commit"] == b
    assert host.is_complete(b)
    assert isinstance(out["maxrss_mib"], float) and out["maxrss_mib"] <= LIMIT_MIB, out

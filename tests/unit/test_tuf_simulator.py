"""An in-memory TUF repository simulator (and tests of the client against it).

The publishing side is atoll's own (``atoll.repo.publish`` over a
:class:`MemStorage`); :class:`SimFetcher` serves its files to the real
``tuf.ngclient.Updater`` and to atoll's ranged downloads, and can misbehave:
serve other bytes, cut a file short, send endless data, or be unreachable.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from tuf.api import exceptions as tuf_exc

from atoll.repo.client import UpdateClient, add_remote, read_update_state
from atoll.repo.fetch import RangeFetcher
from atoll.repo.keys import KeyDir
from atoll.repo.publish import init_repository, publish
from atoll.repo.storage import MemStorage
from atoll.store.repo import Repo
from tests.integration.delivery_fixtures import snapshot_host

BASE = "http://sim.invalid/"


class SimFetcher(RangeFetcher):
    """Serves a MemStorage; knobs make it misbehave."""

    def __init__(self, storage: MemStorage):
        self.storage = storage
        self.overrides: dict[str, bytes] = {}
        self.truncate: dict[str, int] = {}
        self.endless: set[str] = set()
        self.offline = False
        self.ignore_ranges = False  # answer 200 from byte 0, as some servers do
        self.fetched: list[str] = []
        self.ranges: list[tuple[str, int]] = []
        self.deadline = 30.0

    def _data(self, url: str) -> bytes:
        if self.offline:
            raise tuf_exc.DownloadError(f"{url}: connection refused")
        assert url.startswith(BASE), url
        rel = url[len(BASE):]
        self.fetched.append(rel)
        if rel in self.overrides:
            return self.overrides[rel]
        data = self.storage.get(rel)
        if data is None:
            raise tuf_exc.DownloadHTTPError(f"{url}: 404", 404)
        return data

    def _chunks(self, url: str, data: bytes) -> Iterator[bytes]:
        rel = url[len(BASE):]
        if rel in self.endless:
            while True:
                yield b"\0" * 65536
        if rel in self.truncate:
            data = data[:self.truncate[rel]]
        for i in range(0, len(data), 65536):
            yield data[i:i + 65536]

    def _fetch(self, url: str) -> Iterator[bytes]:
        return self._chunks(url, self._data(url))

    def _fetch_range(self, url: str, start: int, end: int | None) -> tuple[int, Iterator[bytes]]:
        data = self._data(url)
        rel = url[len(BASE):]
        self.ranges.append((rel, start))
        if rel in self.truncate:
            data = data[:self.truncate[rel]]
        if self.ignore_ranges:
            start, end = 0, None
        piece = data[start:None if end is None else end + 1]
        return start, self._chunks(url + "#range", piece) if rel not in self.endless else (
            self._chunks(url, b""))


def _tree(root: Path, version: int) -> Path:
    (root / "usr/lib").mkdir(parents=True)
    (root / "etc").mkdir()
    for i in range(8):
        body = bytes(range(256)) * 470 + f"lib{i}".encode()
        if i == 0:
            body += f"v{version}".encode() * 50
        (root / f"usr/lib/lib{i}.so").write_bytes(body)
    (root / "etc/os-release").write_text(f"VERSION={version}\n")
    return root


def manifest(version: int) -> list[dict[str, str]]:
    return [{"name": "libfoo", "version": f"1.{version}", "architecture": "amd64",
             "source": "foo", "source_version": f"1.{version}"},
            {"name": "base-files", "version": "12", "architecture": "amd64",
             "source": "base-files", "source_version": "12"}]


class Sim:
    """Publisher repo + keys + in-memory server + one host sysroot."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.repo = Repo.create(tmp / "pubrepo")
        self.keys = KeyDir(tmp / "keys")
        self.storage = MemStorage()
        init_repository(self.storage, self.keys)
        self.fetcher = SimFetcher(self.storage)
        self.sysroot = tmp / "host"
        self.commits: list[str] = []
        root = tmp / "root.json"
        data = self.storage.get("metadata/root.json")
        assert data is not None
        root.write_bytes(data)
        add_remote(self.sysroot, "origin", BASE, root, channel="site/base")

    def commit(self, version: int) -> str:
        cid = self.repo.commit_dir(_tree(self.tmp / f"tree{version}", version), ref="site/base",
                                   version=str(version), manifest=manifest(version),
                                   timestamp=1700000000 + version)
        self.commits.append(cid)
        return cid

    def publish(self) -> None:
        publish(self.repo, "site/base", self.storage, self.keys, deltas=2)

    def client(self) -> UpdateClient:
        return UpdateClient(self.sysroot, "origin", fetcher=self.fetcher)


@pytest.fixture
def sim(tmp_path: Path) -> Sim:
    return Sim(tmp_path)


def test_fresh_host_pulls_whole_pack_then_delta(sim: Sim) -> None:
    a = sim.commit(1)
    sim.publish()
    view = sim.client().check()
    assert view["target"]["commit"] == a and view["method"] == "pack"
    assert [p["name"] for p in view["packages"]["added"]] == ["base-files", "libfoo"]
    st = read_update_state(sim.sysroot)
    assert (st["state"], st["commit"], st["method"]) == ("available", a, "pack")
    assert st["download_bytes"] > 0 and st["available_since"] and st["metadata_expires"]
    out = sim.client().download()
    host = Repo.open(sim.sysroot / "atoll/repo")
    assert host.refs("remotes") == {"origin/site/base": a}
    st = read_update_state(sim.sysroot)
    assert (st["commit"], st["download_bytes"]) == (a, 0) and st["downloaded_since"]
    assert out["method"] == "pack"
    b = sim.commit(2)
    sim.publish()
    view = sim.client().check()
    assert view["method"] == "delta" and view["delta_from"] == a
    assert view["packages"]["upgraded"] == [{"name": "libfoo", "old": "1.1", "new": "1.2"}]
    sim.fetcher.fetched.clear()
    sim.client().download()
    assert host.refs("remotes") == {"origin/site/base": b}
    assert not any(f.startswith("targets/packs/") and f.endswith(".pack")
                   for f in sim.fetcher.fetched)
    from atoll.store.checkout import verify_commit

    verify_commit(host, b)
    again = sim.client().check()
    assert again["downloaded"] and again["method"] == "none"


def test_host_without_from_commit_fetches_missing_chunks(sim: Sim,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import atoll.delta.pack as pack

    # chunks of a few kB, so that this small tree has many (real packs: ~1 MiB each)
    for name, value in (("CHUNK_MIN", 2048), ("CHUNK_AVG", 4096), ("CHUNK_MAX", 16384),
                        ("SOLO_MIN", 16384)):
        monkeypatch.setattr(pack, name, value)
    sim.commit(1)
    sim.publish()
    sim.client().download()
    host = Repo.open(sim.sysroot / "atoll/repo")
    # The host loses the commit object (say, gc'd) but keeps the files: no delta applies.
    a = sim.commits[0]
    os.unlink(host.object_path(a, "commit"))
    host.set_ref("origin/site/base", None, namespace="remotes")
    b = sim.commit(2)
    sim.publish()
    view = sim.client().check()
    assert view["method"] == "chunks"
    sim.client().download()
    assert host.refs("remotes") == {"origin/site/base": b}


def test_offline_server_is_a_download_error(sim: Sim) -> None:
    from atoll.core.errors import DownloadError

    sim.commit(1)
    sim.publish()
    sim.fetcher.offline = True
    before = snapshot_host(sim.sysroot)
    with pytest.raises(DownloadError):
        sim.client().check()
    assert snapshot_host(sim.sysroot) == before


def test_host_whose_gzip_differs_falls_back_to_objects(sim: Sim,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import random
    import subprocess

    import atoll.delta.recompress as recompress
    import atoll.delta.static as static

    monkeypatch.setattr(static, "MIN_SIZE", 1000)
    rnd = random.Random(5)
    words = [rnd.randbytes(6).hex().encode() for _ in range(300)]
    text = b" ".join(rnd.choice(words) for _ in range(60_000))
    ids = []
    for v, body in ((1, text), (2, b"HEADER" * 20 + text)):
        root = sim.tmp / f"gz{v}"
        (root / "boot").mkdir(parents=True)
        gz = subprocess.run(["gzip", "-n", "-6"], input=body, capture_output=True,
                            check=True).stdout
        (root / "boot/initrd.img").write_bytes(gz)
        ids.append(sim.repo.commit_dir(root, ref="site/base", version=str(v),
                                       manifest=manifest(v)))
        sim.publish()
        if v == 1:
            sim.client().download()
    monkeypatch.setattr(recompress, "regzip_pieces",
                        lambda pieces, level: iter([b"not what the publisher made"]))
    out = sim.client().download()
    assert out["method"] in ("chunks", "pack")  # the delta was tried, then objects fetched
    host = Repo.open(sim.sysroot / "atoll/repo")
    assert host.refs("remotes") == {"origin/site/base": ids[1]}
    assert any(f.endswith(".delta") for f in sim.fetcher.fetched)


def test_host_short_of_memory_for_xz_falls_back_to_objects(
        sim: Sim, monkeypatch: pytest.MonkeyPatch) -> None:
    # Rebuilding a kernel with Debian's xz settings takes 370 MiB: a host that cannot
    # spare it gets the kernel from the pack instead (xz refuses at once).
    import random
    import subprocess

    import atoll.delta.recompress as recompress
    import atoll.delta.static as static

    monkeypatch.setattr(static, "MIN_SIZE", 1000)
    rnd = random.Random(6)
    payload = b" ".join(rnd.randbytes(5).hex().encode() for _ in range(40_000))
    ids = []
    for v, body in ((1, payload), (2, b"x86 changed " * 5 + payload)):
        stream = subprocess.run(["xz", "--check=crc32", "--x86", "--lzma2=dict=32MiB", "-c"],
                                input=body, capture_output=True, check=True).stdout
        root = sim.tmp / f"xz{v}"
        (root / "boot").mkdir(parents=True)
        (root / "boot/vmlinuz").write_bytes(b"MZ stub " + bytes([v]) * 500 + stream)
        ids.append(sim.repo.commit_dir(root, ref="site/base", version=str(v),
                                       manifest=manifest(v)))
        sim.publish()
        if v == 1:
            sim.client().download()
    import io

    from atoll.delta.static import read_header

    delta = next(v for k, v in sim.storage.files.items() if k.endswith(".delta"))
    assert [f["how"] for f in read_header(io.BytesIO(delta)).files] == ["xz"]
    monkeypatch.setattr(recompress, "available_memory", lambda: 100 << 20)
    out = sim.client().download()
    assert out["method"] in ("chunks", "pack")
    assert any(f.endswith(".delta") for f in sim.fetcher.fetched)
    host = Repo.open(sim.sysroot / "atoll/repo")
    assert host.refs("remotes") == {"origin/site/base": ids[1]}
    assert host.is_complete(ids[1])


def test_missing_patch_base_falls_back_to_objects(sim: Sim) -> None:
    a = sim.commit(1)
    sim.publish()
    sim.client().download()
    host = Repo.open(sim.sysroot / "atoll/repo")
    lib0 = next(e.id for p, e in host.walk(host.read_commit(a).tree) if p.endswith("lib0.so"))
    os.unlink(host.object_path(lib0, "file"))  # the store lost the delta's patch base
    b = sim.commit(2)
    sim.publish()
    assert sim.client().check()["method"] == "delta"
    out = sim.client().download()
    assert out["method"] in ("chunks", "pack")
    assert host.refs("remotes") == {"origin/site/base": b}
    from atoll.store.checkout import verify_commit

    verify_commit(host, b)

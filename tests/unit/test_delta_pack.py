"""Packs: content-defined chunks, levels per kind of object, the publish cache, and the
client's streaming of ranged chunk downloads."""

from __future__ import annotations

import gzip
import hashlib
import random
from pathlib import Path

import pytest
import zstandard

import atoll.delta.pack as pack
from atoll.core.errors import RepositoryError
from atoll.delta.cache import PublishCache
from atoll.delta.pack import PackIndex, import_chunk_file, is_packed, write_pack
from atoll.delta.static import repo_missing
from atoll.repo.pull import _save_frames
from atoll.store.repo import Repo


def _text(seed: int, n: int) -> bytes:
    r = random.Random(seed)
    words = [r.randbytes(r.randint(2, 8)).hex().encode() for _ in range(300)]
    return b" ".join(r.choice(words) for _ in range(n // 8))[:n]


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in (("CHUNK_MIN", 8 << 10), ("CHUNK_AVG", 32 << 10),
                        ("CHUNK_MAX", 128 << 10), ("SOLO_MIN", 128 << 10)):
        monkeypatch.setattr(pack, name, value)


def _tree(root: Path, changed: int | None = None) -> Path:
    for i in range(120):
        d = root / f"usr/share/pkg{i // 10}"
        d.mkdir(parents=True, exist_ok=True)
        body = _text(i, 6000 + 97 * i)
        if i == changed:
            body = b"CHANGED " + body
        (d / f"f{i}.txt").write_bytes(body)
    (root / "usr/lib").mkdir(parents=True, exist_ok=True)
    (root / "usr/lib/big.so").write_bytes(_text(999, 400_000))
    (root / "usr/lib/data.gz").write_bytes(gzip.compress(random.Random(7).randbytes(300_000)))
    return root


def _frames(p: Path, idx: PackIndex) -> list[bytes]:
    data = p.read_bytes()
    return [data[c.offset:c.offset + c.clen] for c in idx.chunks]


def _import(tmp: Path, idx: PackIndex, packfile: Path) -> Repo:
    host = Repo.create(tmp)
    metas: dict[tuple[str, str], bytes] = {}
    with host.transaction():
        for n, c in enumerate(idx.chunks):
            import_chunk_file(host, idx, n, packfile, c.offset, metas=metas)
        assert repo_missing(host, idx.commit, metas) == []
        for (_o, kind), raw in metas.items():
            if kind == "dirtree":
                host.write_meta_object(raw, kind)
        host.write_meta_object(metas[(idx.commit, "commit")], "commit")
    return host


def test_unchanged_chunks_are_reused_from_the_cache(tmp_path: Path, small_chunks: None) -> None:
    repo = Repo.create(tmp_path / "repo")
    a = repo.commit_dir(_tree(tmp_path / "a"), ref="r")
    b = repo.commit_dir(_tree(tmp_path / "b", changed=60), ref="r")
    cache = PublishCache(repo)
    ia = write_pack(repo, a, tmp_path / "a.pack", tmp_path / "a.index", level=9, cache=cache)
    assert cache.hits == 0 and cache.misses == len(ia.chunks) > 10
    cache.hits = cache.misses = 0
    ib = write_pack(repo, b, tmp_path / "b.pack", tmp_path / "b.index", level=9, cache=cache)
    # one file changed, so did the dirtrees above it and the commit (its id has the
    # time in it). A chunk holding one of them is new, and so may be the next one (a
    # changed object's id may move the cut after it; the cut after the next object
    # chosen by an unchanged id resynchronises); every other chunk is the same chunk,
    # read from the cache
    old_objects = {(o[0], o[1]) for o in ia.objects}
    touched = {o[2] for o in ib.objects if (o[0], o[1]) not in old_objects}
    assert len(touched) <= 6  # the commit, 4 dirtrees, the file
    may_change = touched | {n + 1 for n in touched}
    assert cache.misses <= len(may_change) and cache.hits == len(ib.chunks) - cache.misses
    assert len(ib.chunks) - cache.misses >= len(ib.chunks) - 12 > 10
    shared = set(_frames(tmp_path / "a.pack", ia)) & set(_frames(tmp_path / "b.pack", ib))
    assert len(shared) == cache.hits
    host = _import(tmp_path / "host", ib, tmp_path / "b.pack")
    assert host.is_complete(b)
    # the same pack without the cache: byte for byte
    write_pack(repo, b, tmp_path / "c.pack", tmp_path / "c.index", level=9)
    assert (tmp_path / "c.pack").read_bytes() == (tmp_path / "b.pack").read_bytes()


def test_damaged_or_wrong_cache_entries_are_not_used(tmp_path: Path, small_chunks: None) -> None:
    repo = Repo.create(tmp_path / "repo")
    a = repo.commit_dir(_tree(tmp_path / "a"), ref="r")
    cache = PublishCache(repo)
    write_pack(repo, a, tmp_path / "a.pack", tmp_path / "a.index", level=9, cache=cache)
    entries = sorted(p for p in cache.dir.rglob("*") if p.is_file())
    data = bytearray(entries[0].read_bytes())
    data[-1] ^= 0xFF  # bit rot: its checksum no longer matches
    entries[0].write_bytes(bytes(data))
    # another entry made to hold a valid frame of other content under its name
    cache.put(entries[1].parent.name + entries[1].name,
              zstandard.ZstdCompressor().compress(b"something else"))
    cache.hits = cache.misses = 0
    idx = write_pack(repo, a, tmp_path / "b.pack", tmp_path / "b.index", level=9, cache=cache)
    assert (tmp_path / "b.pack").read_bytes() == (tmp_path / "a.pack").read_bytes()
    assert cache.misses == 1 and cache.hits == len(idx.chunks) - 1  # the other: hit, refused
    assert _import(tmp_path / "host", idx, tmp_path / "b.pack").is_complete(a)


def test_levels_and_windows_per_kind_of_object(tmp_path: Path, small_chunks: None) -> None:
    assert is_packed(gzip.compress(b"x" * 1000))
    assert is_packed(random.Random(1).randbytes(65536))  # nothing to gain
    assert not is_packed(_text(1, 65536))
    repo = Repo.create(tmp_path / "repo")
    a = repo.commit_dir(_tree(tmp_path / "a"), ref="r")
    from atoll.delta._util import commit_objects

    planned = pack._plan(repo, commit_objects(repo, a))
    solo = {p.objs[0][0].path: p for p in planned if len(p.objs) == 1}
    assert solo["usr/lib/data.gz"].packed and not solo["usr/lib/big.so"].packed
    assert all(p.size <= pack.CHUNK_MAX for p in planned if len(p.objs) > 1)
    # every frame's window is bounded (what a host holds while importing it)
    assert pack._params(22, 1 << 30).window_log == pack.WINDOW_LOG_MAX
    idx = write_pack(repo, a, tmp_path / "a.pack", tmp_path / "a.index", level=19)
    for frame in _frames(tmp_path / "a.pack", idx):
        assert zstandard.get_frame_parameters(frame).window_size <= pack.WINDOW_MAX


def _chunk(data: bytes, offset: int) -> pack.Chunk:
    return pack.Chunk(offset, len(data), hashlib.sha256(data).hexdigest(), 0)


def test_ranged_chunks_are_checked_as_they_stream(tmp_path: Path) -> None:
    f1, f2, f3 = b"A" * 3000, b"B" * 5000, b"C" * 100
    body = f1 + b"gap" + f2 + f3
    frames = [_chunk(f1, 0), _chunk(f2, 3003), _chunk(f3, 8003)]
    pieces = [body[i:i + 700] for i in range(0, len(body), 700)]
    _save_frames(pieces, 0, frames, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        f"{c.sha256}.zst" for c in frames)
    assert (tmp_path / f"{frames[1].sha256}.zst").read_bytes() == f2
    # cut short: the frames received whole are kept, nothing else
    out = tmp_path / "short"
    out.mkdir()
    _save_frames(pieces[:6], 0, frames, out)
    assert [p.name for p in out.iterdir()] == [f"{frames[0].sha256}.zst"]
    # a frame that does not match the signed index: refused, not kept
    bad = tmp_path / "bad"
    bad.mkdir()
    tampered = body[:4000] + b"X" + body[4001:]
    with pytest.raises(RepositoryError):
        _save_frames([tampered], 0, frames, bad)
    assert [p.name for p in bad.iterdir()] == [f"{frames[0].sha256}.zst"]


def test_a_chunk_is_compressed_at_the_level_of_its_kind() -> None:
    """Without a publish level: compressed content at level 1, an object of LARGE_MIN
    bytes or more (alone in its chunk) at LARGE_LEVEL, the rest at LEVEL; a given level
    replaces the last two, never the first."""
    obj = pack.ObjectRef("a" * 64, "file", "usr/bin/dockerd")
    large = pack._Planned([(obj, pack.LARGE_MIN)], size=pack.LARGE_MIN)
    small = pack._Planned([(obj, 1 << 20), (obj, 1 << 20)], size=2 << 20)
    squeezed = pack._Planned([(obj, pack.LARGE_MIN)], size=pack.LARGE_MIN, packed=True)
    assert (pack.PACKED_LEVEL, pack.LARGE_LEVEL, pack.LEVEL) == (1, 17, 18)
    assert [pack._level(p, None) for p in (squeezed, large, small)] == [1, 17, 18]
    assert [pack._level(p, 3) for p in (squeezed, large, small)] == [1, 3, 3]

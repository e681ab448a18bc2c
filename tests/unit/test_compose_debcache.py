"""The package cache: apt's file names, index parsing, what is offered to apt, trimming,
and seed/collect on a directory with a fake (already verified) index."""

from __future__ import annotations

import fcntl
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from atoll.cli import main
from atoll.compose import debcache
from atoll.compose.debcache import (
    CachedDeb,
    DebCache,
    IndexEntry,
    deb_filename,
    parse_deb_filename,
    parse_packages,
    plan_seed,
    plan_trim,
)
from atoll.core.errors import InputError

INDEX = b"""Package: libc6
Source: glibc
Version: 2.36-9+deb12u9
Architecture: amd64
Description: GNU C Library
 a continuation line: Package: not-a-package
Size: 2757936
SHA256: AAAA000000000000000000000000000000000000000000000000000000000001

Package: tzdata
Version: 2024a-0+deb12u1
Architecture: all
Size: 255
SHA256: 00000000000000000000000000000000000000000000000000000000000000f2

Package: no-hash
Version: 1
Architecture: amd64
Size: 10

Package: bad-size
Version: 1
Architecture: amd64
Size: ten
SHA256: 00000000000000000000000000000000000000000000000000000000000000f3

Package: perl
Version: 1:5.36.0-7+deb12u1
Architecture: amd64
Size: 4
SHA256: 00000000000000000000000000000000000000000000000000000000000000f4
"""


def test_apt_file_names_quote_epochs_and_round_trip() -> None:
    assert deb_filename("libc6", "2.36-9+deb12u9", "amd64") == "libc6_2.36-9+deb12u9_amd64.deb"
    assert deb_filename("perl", "1:5.36.0-7", "amd64") == "perl_1%3a5.36.0-7_amd64.deb"
    assert parse_deb_filename("perl_1%3a5.36.0-7_amd64.deb") == ("perl", "1:5.36.0-7", "amd64")
    assert parse_deb_filename("not-a-deb.txt") is None
    assert parse_deb_filename("a_b.deb") is None


def test_parse_packages_reads_stanzas_and_skips_unverifiable_ones() -> None:
    entries = list(parse_packages(INDEX))
    assert [e.package for e in entries] == ["libc6", "tzdata", "perl"]
    libc = entries[0]
    assert (libc.version, libc.architecture, libc.size) == ("2.36-9+deb12u9", "amd64", 2757936)
    assert libc.sha256 == "aaaa" + "0" * 59 + "1"  # lowercased
    assert entries[2].filename == "perl_1%3a5.36.0-7+deb12u1_amd64.deb"
    assert [e.package for e in parse_packages(INDEX, {"tzdata", "nothing"})] == ["tzdata"]
    assert list(parse_packages(b"")) == []


def _entry(name: str, size: int, sha: str = "0" * 64) -> IndexEntry:
    return IndexEntry(name, "1", "amd64", size, sha)


def test_plan_seed_offers_only_listed_files_of_the_listed_size() -> None:
    index = {e.filename: e for e in (_entry("a", 10), _entry("b", 20))}
    cached = {"a_1_amd64.deb": 10, "b_1_amd64.deb": 21, "c_1_amd64.deb": 5}
    assert plan_seed(index, cached) == (["a_1_amd64.deb"], ["b_1_amd64.deb"])


def test_two_indexes_disagreeing_on_a_file_offer_neither() -> None:
    same = _entry("a", 10)
    index = debcache._index_by_filename([same, same, _entry("b", 1, "1" * 64),
                                         _entry("b", 1, "2" * 64)])
    assert list(index) == ["a_1_amd64.deb"]


def test_plan_trim_drops_least_recently_used_first() -> None:
    files = [CachedDeb(Path(f"{n}.deb"), size, mtime)
             for n, size, mtime in (("new", 50, 300.0), ("old", 30, 100.0), ("mid", 40, 200.0))]
    assert plan_trim(files, 200) == []
    assert [f.path.name for f in plan_trim(files, 60)] == ["old.deb", "mid.deb"]
    assert [f.path.name for f in plan_trim(files, 90)] == ["old.deb"]
    assert [f.path.name for f in plan_trim(files, 0)] == ["old.deb", "mid.deb", "new.deb"]


def test_bad_cache_arguments_are_refused(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="not a directory"):
        DebCache(tmp_path / "file")
    with pytest.raises(InputError, match="negative"):
        DebCache(tmp_path / "c", -1)
    assert not (tmp_path / "c").exists()


@pytest.fixture
def fake_apt(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[bytes]]:
    """seed() with apt-get update a no-op and the given (verified) index bytes."""
    indexes: list[bytes] = []
    calls: list[list[str]] = []

    def fake_run(argv: list[str], **_: object) -> None:
        calls.append([str(a) for a in argv])

    monkeypatch.setattr(debcache, "run", fake_run)
    monkeypatch.setattr(debcache, "_package_indexes", lambda env: iter(indexes))
    yield indexes
    assert calls and calls[0][:2] == ["apt-get", "update"]


def _stanza(name: str, version: str, data: bytes) -> bytes:
    return (f"Package: {name}\nVersion: {version}\nArchitecture: amd64\nSize: {len(data)}\n"
            f"SHA256: {hashlib.sha256(data).hexdigest()}\n\n").encode()


def test_seed_links_only_files_that_match_the_signed_index(
        tmp_path: Path, fake_apt: list[bytes]) -> None:
    cache = DebCache(tmp_path / "cache")
    good, tampered, unlisted = b"good deb", b"tampered", b"other"
    fake_apt.append(_stanza("good", "1", good) + _stanza("tampered", "1", b"original")
                    + _stanza("short", "1", b"longer than cached"))
    cache.pool.mkdir(parents=True)
    (cache.pool / "good_1_amd64.deb").write_bytes(good)
    (cache.pool / "tampered_1_amd64.deb").write_bytes(tampered)  # same size, other bytes
    (cache.pool / "short_1_amd64.deb").write_bytes(b"short")
    (cache.pool / "unlisted_1_amd64.deb").write_bytes(unlisted)
    os.utime(cache.pool / "good_1_amd64.deb", (1, 1))
    rootfs = tmp_path / "rootfs"
    res = cache.seed(rootfs, {})
    archives = rootfs / debcache.ARCHIVES
    assert sorted(os.listdir(archives)) == ["good_1_amd64.deb"]
    assert (archives / "good_1_amd64.deb").read_bytes() == good
    assert (res.seeded, res.seeded_bytes) == (1, len(good))
    assert res.rejected == ("short_1_amd64.deb", "tampered_1_amd64.deb")
    assert (cache.pool / "good_1_amd64.deb").stat().st_mtime > 1  # last use recorded


def test_collect_adds_new_and_replaces_different_files(tmp_path: Path) -> None:
    cache = DebCache(tmp_path / "cache")
    archives = tmp_path / "rootfs" / debcache.ARCHIVES
    archives.mkdir(parents=True)
    cache.pool.mkdir(parents=True)
    (cache.pool / "seeded_1_amd64.deb").write_bytes(b"seeded")
    os.link(cache.pool / "seeded_1_amd64.deb", archives / "seeded_1_amd64.deb")
    (cache.pool / "stale_1_amd64.deb").write_bytes(b"damaged")
    (archives / "stale_1_amd64.deb").write_bytes(b"fresh download")
    (archives / "new_2_all.deb").write_bytes(b"new")
    (archives / "lock").write_bytes(b"")
    (archives / "partial").mkdir()
    assert cache.collect(tmp_path / "rootfs") == 2
    assert (cache.pool / "stale_1_amd64.deb").read_bytes() == b"fresh download"
    assert cache.path_of("new", "2", "all") == cache.pool / "new_2_all.deb"
    assert cache.path_of("seeded", "1", "amd64") is not None
    assert cache.path_of("missing", "1", "amd64") is None
    assert sorted(p.name for p in cache.pool.iterdir()) == [
        "new_2_all.deb", "seeded_1_amd64.deb", "stale_1_amd64.deb"]
    assert list(cache.tmp.iterdir()) == []
    assert cache.collect(tmp_path / "rootfs") == 0


def test_trim_keeps_the_size_and_steps_aside_while_the_cache_is_in_use(tmp_path: Path) -> None:
    cache = DebCache(tmp_path / "cache", max_bytes=10)
    cache.pool.mkdir(parents=True)
    cache.tmp.mkdir()
    for i, name in enumerate(("a_1_all.deb", "b_1_all.deb", "c_1_all.deb")):
        (cache.pool / name).write_bytes(b"x" * 5)
        os.utime(cache.pool / name, (100 + i, 100 + i))
    (cache.tmp / ".left-by-a-killed-compose").write_bytes(b"x")
    os.utime(cache.tmp / ".left-by-a-killed-compose", (1, 1))
    fd = os.open(cache.path / "lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)  # another compose is seeding
        assert cache.trim() == []
        assert len(list(cache.pool.iterdir())) == 3
    finally:
        os.close(fd)
    assert [p.name for p in cache.trim()] == ["a_1_all.deb"]
    assert cache.size() == 10
    assert list(cache.tmp.iterdir()) == []
    assert DebCache(tmp_path / "cache", max_bytes=0).trim() == []  # no limit


def test_hook_arguments_and_usage(tmp_path: Path) -> None:
    args = DebCache(tmp_path / "c d").mmdebstrap_args()
    assert args[0] == "--skip=essential/unlink"
    assert args[1].startswith("--setup-hook=env PYTHONPATH=")
    assert f"seed '{tmp_path}/c d' \"$1\"" in args[1]
    assert f"collect '{tmp_path}/c d' \"$1\"" in args[2]
    assert debcache.hook_main(["bogus"]) == 2


def test_compose_refuses_bad_cache_options_and_creates_nothing(tmp_path: Path) -> None:
    tf = tmp_path / "t.yaml"
    tf.write_text("ref: t/x\nversion: '1'\n")
    (tmp_path / "afile").write_text("")
    repo = tmp_path / "repo"
    assert main(["compose", str(tf), "--repo", str(repo), "--deb-cache",
                 str(tmp_path / "afile")]) == 2
    assert main(["compose", str(tf), "--repo", str(repo), "--no-deb-cache",
                 "--deb-cache", str(tmp_path / "c")]) == 2
    assert main(["compose", str(tf), "--repo", str(repo), "--deb-cache-size", "lots"]) == 2
    assert not repo.exists() and not (tmp_path / "c").exists()


def _collect_in_child(cache_dir: str, rootfs: str) -> int:
    return DebCache(Path(cache_dir), max_bytes=1).collect(Path(rootfs))


def test_two_composes_adding_at_once_leave_whole_files(tmp_path: Path) -> None:
    """Two processes add overlapping sets (as two composes' collect hooks do) while
    a third keeps trying to trim: every file ends whole, none is left in tmp/."""
    import multiprocessing

    roots = []
    for n in range(2):
        archives = tmp_path / f"rootfs{n}" / debcache.ARCHIVES
        archives.mkdir(parents=True)
        for i in range(40 * n, 40 * n + 60):  # 20 files in common
            (archives / f"p{i}_1_amd64.deb").write_bytes(f"package {i}\n".encode() * 2000)
        roots.append(str(tmp_path / f"rootfs{n}"))
    cache_dir = str(tmp_path / "cache")
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(2) as pool:
        pending = [pool.apply_async(_collect_in_child, (cache_dir, r)) for r in roots]
        trimmed = 0
        while not all(p.ready() for p in pending):
            trimmed += len(DebCache(Path(cache_dir), max_bytes=10**12).trim())
        added = [p.get(timeout=60) for p in pending]
    assert trimmed == 0 and sum(added) >= 100
    cache = DebCache(Path(cache_dir))
    assert len(cache.files()) == 100
    for f in cache.files():
        i = int(f.path.name[1:].split("_")[0])
        assert f.path.read_bytes() == f"package {i}\n".encode() * 2000
    assert list(cache.tmp.iterdir()) == []

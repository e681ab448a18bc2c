"""The bounded-memory stream helpers of delta and pack import, and the pipe gateway."""

from __future__ import annotations

import gzip
import io
import itertools
import lzma
import random
import struct
from pathlib import Path

import bsdiff4.core  # type: ignore[import-untyped]
import pytest

from atoll.core.errors import CorruptObjectError, ToolError
from atoll.core.run import pipe
from atoll.delta._stream import (
    Cursor,
    Limited,
    bspatch_pieces,
    gunzip_pieces,
    read_pieces,
    xz_expanded_pieces,
)
from atoll.delta.static import member_windows, proportional_windows


def _pieces(data: bytes, n: int) -> list[bytes]:
    return [data[i:i + n] for i in range(0, len(data), n)]


def test_read_pieces_and_limited() -> None:
    src = io.BytesIO(b"abcdefghij")
    assert list(read_pieces(src, 7, 3)) == [b"abc", b"def", b"g"]
    lim = Limited(src, 2)
    assert lim.read(10) == b"hi" and lim.read(1) == b"" and src.read() == b"j"
    with pytest.raises(CorruptObjectError):
        list(read_pieces(io.BytesIO(b"abc"), 4))


def test_cursor_takes_consecutive_parts() -> None:
    cur = Cursor(_pieces(b"0123456789", 4))
    assert b"".join(cur.take(3)) == b"012"
    assert b"".join(cur.take(5)) == b"34567"
    assert b"".join(cur.rest()) == b"89"
    with pytest.raises(CorruptObjectError):
        b"".join(Cursor([b"ab"]).take(3))


def test_gunzip_pieces_members_and_padding() -> None:
    rnd = random.Random(1)
    a, b = rnd.randbytes(300_000), b"second member " * 1000
    gz = gzip.compress(a, mtime=0) + gzip.compress(b, mtime=0) + b"\0" * 512
    out = list(gunzip_pieces(_pieces(gz, 7_000), piece=65_536))
    assert b"".join(out) == a + b
    assert max(map(len, out)) <= 65_536
    with pytest.raises(CorruptObjectError):
        list(gunzip_pieces([gz[:5000]]))
    with pytest.raises(CorruptObjectError):
        list(gunzip_pieces([b"not gzip at all"]))


def test_xz_expanded_pieces(tmp_path: Path) -> None:
    payload = random.Random(2).randbytes(200_000) * 3
    stream = lzma.compress(payload, format=lzma.FORMAT_XZ)
    f = tmp_path / "vmlinuz"
    f.write_bytes(b"stub" * 100 + stream + b"trailer")
    out = list(xz_expanded_pieces(f, 400, piece=50_000))
    assert b"".join(out) == b"stub" * 100 + payload + b"trailer"
    assert max(map(len, out)) <= 50_000
    with pytest.raises(CorruptObjectError):
        list(xz_expanded_pieces(f, 10))


def _module(seed: int, n: int) -> bytearray:
    return bytearray(random.Random(seed).randbytes(n))


@pytest.mark.parametrize("piece", [997, 4096, 1 << 20])
def test_bspatch_pieces_matches_bsdiff4(tmp_path: Path, piece: int) -> None:
    old = _module(3, 120_000)
    new = bytearray(old)
    for off in range(0, len(new) - 8, 64):  # shifted addresses
        (x,) = struct.unpack_from("<I", new, off)
        struct.pack_into("<I", new, off, (x + 0x40) & 0xFFFFFFFF)
    new[5_000:5_000] = random.Random(4).randbytes(20_000)   # new code
    new = new[30_000:60_000] + new  # a block moved: seeks backwards in the base
    ctrl, diff, extra = bsdiff4.core.diff(bytes(old), bytes(new))
    (tmp_path / "base").write_bytes(old)
    out = list(bspatch_pieces(tmp_path / "base", len(new), ctrl, io.BytesIO(diff),
                              io.BytesIO(extra), piece=piece))
    assert b"".join(out) == bytes(new)
    assert max(map(len, out)) <= piece
    with pytest.raises(CorruptObjectError):
        list(bspatch_pieces(tmp_path / "base", len(new) + 1, ctrl, io.BytesIO(diff),
                            io.BytesIO(extra), piece=piece))
    with pytest.raises(CorruptObjectError):
        list(bspatch_pieces(tmp_path / "base", len(new), ctrl, io.BytesIO(diff[:-1]),
                            io.BytesIO(extra), piece=piece))


def test_pipe_streams_through_a_command() -> None:
    data = random.Random(5).randbytes(3 << 20)
    out = list(pipe(["gzip", "-n", "-1"], _pieces(data, 100_000), read_size=65_536))
    assert max(map(len, out)) <= 65_536
    assert gzip.decompress(b"".join(out)) == data


def test_pipe_reports_failures() -> None:
    with pytest.raises(ToolError) as exc:
        list(pipe(["gzip", "-d"], [b"not gzip"]))
    assert "gzip" in exc.value.brief

    def broken() -> list[bytes]:
        raise CorruptObjectError("input went wrong")

    def gen():  # type: ignore[no-untyped-def]
        yield b"abc"
        broken()

    with pytest.raises(CorruptObjectError):
        list(pipe(["cat"], gen()))
    with pytest.raises(ToolError):
        list(pipe(["/nonexistent/tool"], [b""]))


def test_patch_windows() -> None:
    from atoll.delta import format as fmt

    seg, base = fmt.SEG_MAX, fmt.SEG_BASE_MAX
    assert proportional_windows(100, 200) == [(0, 100, 0, 200)]
    wins = proportional_windows(5 * seg + 7, 6 * seg)
    assert [(a, b) for a, b, _s, _e in wins][-1] == (5 * seg, 5 * seg + 7)
    assert all(e - s == base for _a, _b, s, e in wins)
    assert all(w2[2] >= w1[2] and w2[3] >= w1[3] for w1, w2 in itertools.pairwise(wins))
    assert all(b - a <= seg for a, b, _s, _e in wins)
    # an archive whose members are the dictionary: each window is exactly its members
    members = [(0, seg // 2, 0), (seg, seg, seg // 2), (3 * seg, 10, seg // 2 + seg)]
    wins = member_windows(3 * seg + 100, members)
    assert wins[0] == (0, seg, 0, seg // 2)
    assert wins[1] == (seg, 2 * seg, seg // 2, seg // 2 + seg)
    assert wins[2] == (2 * seg, 3 * seg, seg // 2 + seg, seg // 2 + seg)  # nothing inside
    assert wins[3] == (3 * seg, 3 * seg + 100, seg // 2 + seg, seg // 2 + seg + 10)


def test_import_file_stream_verifies_before_staging(tmp_path: Path) -> None:
    import os

    from atoll.store.objects import FileMeta, file_hasher
    from atoll.store.repo import Repo

    repo = Repo.create(tmp_path / "repo")
    meta = FileMeta("reg", 0o644, os.getuid(), os.getgid(), {})
    data = random.Random(8).randbytes(3 << 20)
    h = file_hasher(meta)
    h.update(data)
    oid = h.hexdigest()
    with pytest.raises(CorruptObjectError), repo.transaction():
        repo.import_file_stream(oid, meta, len(data), _pieces(data[:-1] + b"X", 1 << 20))
    with pytest.raises(CorruptObjectError), repo.transaction():  # too long
        repo.import_file_stream(oid, meta, len(data), _pieces(data + b"X", 1 << 20))
    assert not repo.has(oid, "file") and not any((tmp_path / "repo/tmp").iterdir())
    with repo.transaction():
        repo.import_file_stream(oid, meta, len(data), _pieces(data, 1 << 20))
    assert repo.verify_file(oid)

    def never() -> list[bytes]:
        raise AssertionError("the store has it: its content is not read")

    with repo.transaction():
        repo.import_file_stream(oid, meta, len(data), iter(never, None))


def test_release_large_buffers() -> None:
    from atoll.core.memory import release_large_buffers

    assert release_large_buffers() is True  # glibc (Debian)

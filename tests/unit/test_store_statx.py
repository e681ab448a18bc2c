"""stat_object: one statx(2) gives the lstat fields the seal check uses and the fs-verity flag."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from atoll.store import seal


def _expect(path: Path) -> tuple[int, int, int, int, int]:
    st = os.lstat(path)
    return st.st_mode, st.st_uid, st.st_gid, st.st_size, st.st_mtime_ns


@pytest.mark.parametrize("with_statx", [True, False], ids=["statx", "lstat+ioctl"])
def test_the_fields_are_lstat_s(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                with_statx: bool) -> None:
    if with_statx:
        loaded = seal._load_statx()
        assert loaded is not None  # glibc 2.36 on Debian 12 exports statx
        monkeypatch.setattr(seal, "_statx", loaded)
    else:
        monkeypatch.setattr(seal, "_statx", None)
    f = tmp_path / "obj.file"
    f.write_bytes(b"x" * 12345)
    os.chmod(f, 0o4751)
    os.chown(f, 1234, 4321)
    os.utime(f, ns=(5, 1_700_000_000_123_456_789))
    link = tmp_path / "link.file"
    link.symlink_to("somewhere/else")
    os.utime(link, ns=(0, 987_654_321), follow_symlinks=False)
    parent = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for path in (f, link, tmp_path):
            # by its whole path, and relative to an open directory (deploy's way)
            for got in (seal.stat_object(str(path)),
                        seal.stat_object(os.path.relpath(path, tmp_path), parent)):
                assert got is not None
                assert tuple(got[:5]) == _expect(path)
                assert got.verity is False  # no fs-verity here (the VM tier has sealed objects)
        assert seal.stat_object(str(tmp_path / "missing")) is None
        assert seal.stat_object(str(f / "not-a-dir")) is None
        assert seal.stat_object("missing", parent) is None
    finally:
        os.close(parent)


def test_a_filtered_statx_falls_back_for_good(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    # an old container runtime's seccomp profile answers statx with EPERM: the check must
    # not take every object as unsealed (and re-hash all of them at every deploy)
    import errno

    calls = []

    def filtered(*args: object) -> int:
        calls.append(args)
        return -1

    monkeypatch.setattr(seal, "_statx", (filtered, lambda n: bytearray(n),
                                         lambda: errno.EPERM))
    f = tmp_path / "obj.file"
    f.write_bytes(b"data")
    got = seal.stat_object(str(f))
    assert got is not None and tuple(got[:5]) == _expect(f)
    assert seal._statx is None and len(calls) == 1
    assert seal.stat_object(str(f)) == got  # no second try


def test_a_missing_file_is_not_taken_for_a_filtered_statx(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(seal, "_statx", seal._load_statx())
    before = seal._statx
    assert before is not None
    assert seal.stat_object(str(tmp_path / "missing")) is None
    assert seal._statx is before

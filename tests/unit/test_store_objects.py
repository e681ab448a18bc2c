"""Object ids cover content, mode, owner and xattrs; unsafe names are refused."""

from __future__ import annotations

import pytest

from atoll.core.errors import StoreError
from atoll.store.objects import Commit, DirMeta, FileMeta, check_name, file_hasher


def _id(meta: FileMeta, content: bytes) -> str:
    h = file_hasher(meta)
    h.update(content)
    return str(h.hexdigest())


def test_file_id_covers_every_attribute() -> None:
    base = FileMeta("reg", 0o755, 0, 0, {})
    ref = _id(base, b"x")
    variants = [
        _id(base, b"y"),
        _id(FileMeta("reg", 0o4755, 0, 0, {}), b"x"),
        _id(FileMeta("reg", 0o755, 1, 0, {}), b"x"),
        _id(FileMeta("reg", 0o755, 0, 1, {}), b"x"),
        _id(FileMeta("reg", 0o755, 0, 0, {"security.capability": b"\x01"}), b"x"),
        _id(FileMeta("lnk", 0o777, 0, 0, {}), b"x"),
    ]
    assert ref not in variants
    assert len(set(variants)) == len(variants)
    assert _id(FileMeta("reg", 0o755, 0, 0, {}), b"x") == ref


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "../etc", "x\0y"])
def test_unsafe_names_refused(name: str) -> None:
    with pytest.raises(StoreError):
        check_name(name)


def test_commit_roundtrip_is_canonical() -> None:
    c = Commit(tree="a" * 64, root=DirMeta(0o755, 0, 0), parent=None, version="1",
               timestamp=5, manifest=({"name": "bash", "version": "5"},),
               metadata={"b": 1, "a": 2})
    data = c.to_bytes()
    assert Commit.from_bytes(data) == c
    assert Commit.from_bytes(data).to_bytes() == data
    assert data.index(b'"manifest"') < data.index(b'"metadata"')  # sorted keys

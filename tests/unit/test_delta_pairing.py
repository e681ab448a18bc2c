"""Pairing new files with old ones: by path, by normalised version, by basename + size."""

from __future__ import annotations

from atoll.delta.pairing import FileInfo, normalise_path, pair_files


def f(path: str, oid: str, size: int = 10_000, link: bool = False) -> FileInfo:
    return FileInfo(path, oid * 64 if len(oid) == 1 else oid, size, link)


def test_normalise_kernel_version() -> None:
    a = normalise_path("usr/lib/modules/6.1.0-26-amd64/kernel/fs/ext4/ext4.ko")
    b = normalise_path("usr/lib/modules/6.1.0-28-amd64/kernel/fs/ext4/ext4.ko")
    assert a == b == "usr/lib/modules/#/kernel/fs/ext4/ext4.ko"
    assert normalise_path("boot/vmlinuz-6.1.0-26-amd64") == "boot/vmlinuz-#"
    assert normalise_path("usr/lib/x86_64-linux-gnu/libssl.so.3") == (
        "usr/lib/x86_64-linux-gnu/libssl.so.3")


def test_same_path_wins() -> None:
    old = [f("usr/bin/ssh", "a"), f("usr/bin/other/ssh", "b")]
    new = [f("usr/bin/ssh", "c")]
    assert pair_files(old, new)["c" * 64].id == "a" * 64


def test_kernel_modules_pair_across_directories() -> None:
    old = [f("usr/lib/modules/6.1.0-26-amd64/kernel/fs/ext4/ext4.ko", "a"),
           f("usr/lib/modules/6.1.0-26-amd64/kernel/fs/xfs/xfs.ko", "b", 50_000)]
    new = [f("usr/lib/modules/6.1.0-28-amd64/kernel/fs/ext4/ext4.ko", "c"),
           f("usr/lib/modules/6.1.0-28-amd64/kernel/fs/xfs/xfs.ko", "d", 51_000)]
    pairs = pair_files(old, new)
    assert pairs["c" * 64].id == "a" * 64
    assert pairs["d" * 64].id == "b" * 64


def test_basename_and_closest_size() -> None:
    old = [f("opt/x/data.bin", "a", 1_000), f("opt/y/data.bin", "b", 9_000)]
    new = [f("srv/z/data.bin", "c", 10_000)]
    assert pair_files(old, new)["c" * 64].id == "b" * 64
    # Too different in size: no partner.
    assert pair_files([f("opt/x/data.bin", "a", 1_000)], new) == {}


def test_small_files_and_symlinks_unpaired() -> None:
    old = [f("etc/a", "a", 100), f("etc/l", "b", 5000, link=True)]
    new = [f("etc/a", "c", 100), f("etc/l", "d", 5000, link=True)]
    assert pair_files(old, new) == {}

"""Disk images from a sysroot: GPT layout, BIOS and UEFI GRUB in place, the
sysroot's boot files on the ext4 root, qcow2 output, bad input refused."""

from __future__ import annotations

import json
import struct
import subprocess
from pathlib import Path

import pytest

from atoll.boot import grubenv
from atoll.boot.image import ESP_START, ROOT_START, TYPE_BIOS, TYPE_ESP, TYPE_ROOT, build_image
from atoll.cli import main as cli_main
from atoll.core.errors import InputError
from atoll.core.fsutil import atomic_symlink, atomic_write_json


def fake_sysroot(root: Path) -> Path:
    """A sysroot with one deployment holding a (dummy) kernel: enough for layout tests."""
    dep = root / "atoll/deploy/c1.0"
    mods = dep / "usr/lib/modules/6.1.0-test"
    mods.mkdir(parents=True)
    (mods / "vmlinuz").write_bytes(b"kernel")
    (mods / "initrd.img").write_bytes(b"initrd")
    (dep / "etc").mkdir()
    (root / "var/lib/atoll").mkdir(parents=True)
    (root / "var/lib/atoll/data").write_text("kept\n")
    loader = root / "boot/loader.0"
    loader.mkdir(parents=True)
    atomic_write_json(loader / "deployments.json", {"version": 1, "deployments": [
        {"id": "c1.0", "commit": "c1", "serial": 0, "version": "1", "kernel": "6.1.0-test"}]})
    atomic_symlink("loader.0", root / "boot/loader")
    return root


def debugfs_cat(disk: Path, path: str) -> bytes:
    proc = subprocess.run(["debugfs", "-R", f"cat {path}", f"{disk}?offset={ROOT_START}"],
                          capture_output=True, check=True)
    return proc.stdout


def test_raw_image_layout(tmp_path: Path) -> None:
    sysroot = fake_sysroot(tmp_path / "sysroot")
    out = tmp_path / "host.raw"
    result = build_image(sysroot, out, "raw", "1G", "both")
    assert out.stat().st_size == 1 << 30
    table = json.loads(subprocess.run(["sfdisk", "--json", out], capture_output=True,
                                      check=True).stdout)["partitiontable"]
    assert table["label"] == "gpt"
    parts = [(p["start"], p["type"]) for p in table["partitions"]]
    assert parts == [(2048, TYPE_BIOS), (ESP_START // 512, TYPE_ESP),
                     (ROOT_START // 512, TYPE_ROOT)]
    raw = out.read_bytes()[:512]
    assert raw[510:512] == b"\x55\xaa"  # the protective MBR survived boot.img
    assert struct.unpack_from("<Q", raw, 0x5C)[0] == 2048  # boot.img -> core.img
    esp = subprocess.run(["mdir", "-b", "-i", f"{out}@@{ESP_START}", "::/EFI/BOOT"],
                         capture_output=True, check=True, env={"MTOOLS_SKIP_CHECK": "1"})
    assert b"BOOTX64.EFI" in esp.stdout
    # The root filesystem: the sysroot with its boot files naming this disk.
    assert result["root_uuid"] in debugfs_cat(out, "/atoll/state/kargs").decode()
    assert b"configfile /boot/loader/grub.cfg" in debugfs_cat(out, "/boot/grub/grub.cfg")
    assert b"atoll.deployment=c1.0" in debugfs_cat(out, "/boot/loader.0/grub.cfg")
    assert debugfs_cat(out, "/boot/atoll/c1/vmlinuz") == b"kernel"
    assert debugfs_cat(out, "/var/lib/atoll/data") == b"kept\n"
    env = grubenv.parse(debugfs_cat(out, "/boot/grub/grubenv"))
    assert env["atoll_pending"] == "c1.0" and env["atoll_tries"] == "3"


def test_qcow2_through_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sysroot = fake_sysroot(tmp_path / "sysroot")
    out = tmp_path / "host.qcow2"
    assert cli_main(["image", "build", "--from-sysroot", str(sysroot), "--out", str(out),
                     "--size", "1G", "--firmware", "uefi", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["format"] == "qcow2"
    info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", out],
                                     capture_output=True, check=True).stdout)
    assert info["format"] == "qcow2" and info["virtual-size"] == 1 << 30


def test_bad_input_is_refused_and_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "host.raw"
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match=r"deployments\.json"):
        build_image(empty, out, "raw", "1G")
    sysroot = fake_sysroot(tmp_path / "sysroot")
    with pytest.raises(InputError, match="format"):
        build_image(sysroot, out, "vmdk", "1G")
    with pytest.raises(InputError, match="size"):
        build_image(sysroot, out, "raw", "lots")
    with pytest.raises(InputError, match="too small"):
        build_image(sysroot, out, "raw", "100M")
    assert not out.exists()
    assert list(tmp_path.glob(".atoll-image-*")) == []
    assert cli_main(["image", "build", "--out", str(out)]) == 2  # no ref, no sysroot


def test_image_build_from_ref_with_the_deploy_layer(
    tmp_path: Path, artifact_cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from atoll.boot.devsysroot import cached_repo

    repo, commits = cached_repo(artifact_cache)
    out = tmp_path / "host.raw"
    assert cli_main(["image", "build", "test/v1", "--repo", str(repo), "--out", str(out),
                     "--format", "raw", "--size", "3G", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["deployment"] == f"{commits['1']}.0"
    deployments = json.loads(debugfs_cat(out, "/boot/loader/deployments.json"))["deployments"]
    assert [d["id"] for d in deployments] == [result["deployment"]]
    kernel = debugfs_cat(out, f"/boot/atoll/{commits['1']}/vmlinuz")
    assert kernel[0x202:0x206] == b"HdrS"  # a real bzImage
    assert list(tmp_path.glob(".atoll-*")) == []  # the temporary sysroot is gone
    # the objects keep their seal marks (mke2fs -d alone keeps whole seconds only): the
    # host's first deploy trusts them instead of re-hashing all
    from atoll.store import Repo
    from atoll.store.seal import seal_mtime_ns

    src = Repo.open(repo)
    oid = next(o for o, k in sorted(src.reachable(commits["1"], parents=False))
               if k == "file" and src.object_path(o, "file").lstat().st_size > 0
               and not src.object_path(o, "file").is_symlink())
    st = src.object_path(oid, "file").lstat()
    inside = f"/atoll/repo/objects/{oid[:2]}/{oid[2:]}.file"
    stat = subprocess.run(["debugfs", "-R", f"stat {inside}", f"{out}?offset={ROOT_START}"],
                          capture_output=True, text=True, check=True).stdout
    assert f"mtime: 0x00000000:{seal_mtime_ns(oid, st) << 2:08x}" in stat, stat

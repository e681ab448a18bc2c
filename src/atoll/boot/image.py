"""Bootable disk images from a prepared sysroot directory.

Layout (GPT, 512-byte sectors, 1 MiB aligned):

    LBA 0           protective MBR carrying GRUB's boot.img (BIOS)
    p1  1 MiB       BIOS boot partition: GRUB core.img (i386-pc)
    p2  64 MiB      ESP (FAT): EFI/BOOT/BOOTX64.EFI (x86_64-efi)
    p3  rest        ext4 "atoll-root": the sysroot (atoll/, boot/, var/)

Both GRUB images embed the same early config: find the root filesystem by
UUID, set ``prefix=($root)/boot/grub`` and read the static grub.cfg, which
chains to ``/boot/loader/grub.cfg``. No loop devices and no mounts: the root
is built with ``mkfs.ext4 -d``, the ESP with mtools, and both are copied into
the disk file at their offsets (holes stay holes).
"""

from __future__ import annotations

import os
import re
import shutil
import struct
import tempfile
import uuid as uuidlib
from collections.abc import Callable
from pathlib import Path

from atoll.boot import grubcfg, state
from atoll.boot.writer import grub_writer
from atoll.core.errors import InputError
from atoll.core.fsutil import atomic_write
from atoll.core.run import require_tool, run

__all__ = [
    "FIRMWARES",
    "FORMATS",
    "assemble_disk",
    "build_image",
    "build_image_from_ref",
    "parse_size",
    "prepare_sysroot",
]

FORMATS = ("raw", "qcow2")
FIRMWARES = ("bios", "uefi", "both")
SECTOR = 512
MIB = 1 << 20
BIOS_START, BIOS_SIZE = 1 * MIB, 1 * MIB
ESP_START, ESP_SIZE = 2 * MIB, 64 * MIB
ROOT_START = ESP_START + ESP_SIZE
GRUB_LIB = Path("/usr/lib/grub")
COMMON_MODULES = ["part_gpt", "ext2", "search", "search_fs_uuid", "normal", "configfile",
                  "linux", "loadenv", "test", "echo", "serial", "terminal", "gzio", "boot",
                  "reboot", "halt", "sleep"]
BIOS_MODULES = ["biosdisk", *COMMON_MODULES]
EFI_MODULES = ["fat", "efi_gop", *COMMON_MODULES]
TYPE_BIOS = "21686148-6449-6E6F-744E-656564454649"
TYPE_ESP = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
TYPE_ROOT = "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709"


def parse_size(text: str) -> int:
    """``8G``, ``512M``, ``2048K`` or bytes -> bytes.

    Raises:
        InputError: not a size.
    """
    m = re.fullmatch(r"\s*(\d+)\s*([KMGT]?)i?B?\s*", text, re.IGNORECASE)
    if not m:
        raise InputError(f"invalid size {text!r}", resolution="use e.g. 8G, 2048M")
    mult = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    return int(m.group(1)) * mult[m.group(2).upper()]


def prepare_sysroot(sysroot: Path, root_uuid: str) -> None:
    """Write the boot files of a disk into ``sysroot``: static grub.cfg, grubenv,
    kernel arguments naming this root, GRUB modules; re-render the active menu.

    Raises:
        InputError: the sysroot has no deployment to boot.
    """
    loader = sysroot / "boot" / "loader"
    if not (loader / "deployments.json").is_file():
        raise InputError(
            f"{sysroot} has no boot/loader/deployments.json",
            resolution="deploy a commit into the sysroot first (atoll deploy)",
        )
    deployments = state.read_deployments(loader)
    if not deployments:
        raise InputError(f"{sysroot}: deployments.json lists no deployment")
    state_dir = sysroot / "atoll" / "state"
    state_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(state_dir / "bootloader", b"grub\n")
    kargs = f"root=UUID={root_uuid} rw console=ttyS0,115200n8 panic=10"
    atomic_write(state_dir / "kargs", (kargs + "\n").encode())
    grub_dir = sysroot / "boot" / "grub"
    grub_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(grub_dir / "grub.cfg", grubcfg.static_cfg().encode())
    if not (grub_dir / "grubenv").exists():
        state.write_env(sysroot, {})
    for platform in ("i386-pc", "x86_64-efi"):
        dest = grub_dir / platform
        if not dest.exists():
            shutil.copytree(GRUB_LIB / platform, dest,
                            ignore=shutil.ignore_patterns("*.img", "*.efi", "*.image"))
    (sysroot / "var").mkdir(exist_ok=True)
    grub_writer(sysroot, loader.resolve(), deployments)


def _copy_sparse(src: Path, dst_fd: int, offset: int) -> None:
    """Copy ``src`` into ``dst_fd`` at ``offset``, data extents only."""
    with open(src, "rb") as fh:
        fd = fh.fileno()
        end = os.fstat(fd).st_size
        pos = 0
        while pos < end:
            try:
                data_at = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError:
                break
            hole_at = os.lseek(fd, data_at, os.SEEK_HOLE)
            os.lseek(fd, data_at, os.SEEK_SET)
            left = hole_at - data_at
            while left > 0:
                chunk = os.read(fd, min(left, 4 * MIB))
                if not chunk:
                    break
                os.pwrite(dst_fd, chunk, offset + data_at + (hole_at - data_at - left))
                left -= len(chunk)
            pos = hole_at


def _install_bios(work: Path, disk_fd: int, early: Path) -> None:
    core = work / "core.img"
    run([require_tool("grub-mkimage", package="grub-pc-bin"), "-O", "i386-pc", "-o", core,
         "-c", early, "-p", "/boot/grub", "-d", GRUB_LIB / "i386-pc", *BIOS_MODULES],
        what="build GRUB core.img")
    data = bytearray(core.read_bytes())
    if len(data) > BIOS_SIZE:
        raise InputError(f"GRUB core.img is {len(data)} bytes, larger than the BIOS partition")
    nsect = (len(data) + SECTOR - 1) // SECTOR
    first = BIOS_START // SECTOR
    # diskboot.img (core's first sector) ends with a blocklist: start LBA,
    # sector count, load segment of the rest of core.img.
    struct.pack_into("<QHH", data, SECTOR - 12, first + 1, nsect - 1, 0x820)
    os.pwrite(disk_fd, bytes(data), BIOS_START)
    boot = bytearray((GRUB_LIB / "i386-pc" / "boot.img").read_bytes())
    struct.pack_into("<Q", boot, 0x5C, first)  # kernel_sector: where core.img starts
    boot[0x66:0x68] = b"\x90\x90"  # as grub-bios-setup does for hard disks
    os.pwrite(disk_fd, bytes(boot[:440]), 0)  # keep the protective MBR's table


def _build_esp(work: Path, early: Path) -> Path:
    efi = work / "BOOTX64.EFI"
    run([require_tool("grub-mkimage", package="grub-efi-amd64-bin"), "-O", "x86_64-efi",
         "-o", efi, "-c", early, "-p", "/boot/grub", "-d", GRUB_LIB / "x86_64-efi",
         *EFI_MODULES], what="build GRUB BOOTX64.EFI")
    esp = work / "esp.img"
    with open(esp, "wb") as fh:
        fh.truncate(ESP_SIZE)
    run([require_tool("mkfs.fat", package="dosfstools"), "-n", "ESP", esp], what="format the ESP")
    mmd = require_tool("mmd", package="mtools")
    mcopy = require_tool("mcopy", package="mtools")
    env = {"MTOOLS_SKIP_CHECK": "1"}
    run([mmd, "-i", esp, "::/EFI", "::/EFI/BOOT"], env=env, what="create EFI/BOOT on the ESP")
    run([mcopy, "-i", esp, efi, "::/EFI/BOOT/BOOTX64.EFI"], env=env, what="copy BOOTX64.EFI")
    return esp


def _check_params(fmt: str, size: str | int, firmware: str) -> int:
    if fmt not in FORMATS:
        raise InputError(f"unknown image format {fmt!r}", resolution="use raw or qcow2")
    if firmware not in FIRMWARES:
        raise InputError(f"unknown firmware {firmware!r}", resolution="use bios, uefi or both")
    total = parse_size(size) if isinstance(size, str) else int(size)
    total -= total % MIB
    if total < ROOT_START + 256 * MIB:
        raise InputError(f"image size {size} is too small", resolution="use at least 512M")
    return total


def build_image(
    sysroot: Path,
    out: Path,
    fmt: str = "qcow2",
    size: str | int = "8G",
    firmware: str = "both",
    *,
    verity: bool = True,
) -> dict[str, object]:
    """Build a GPT disk image holding ``sysroot`` as its ext4 root.

    ``sysroot`` must already hold a deployment and ``boot/loader``; the
    disk's boot files are written into it first (:func:`prepare_sysroot`).

    Args:
        sysroot: the prepared sysroot directory.
        out: the image file to write (replaced atomically).
        fmt: "raw" or "qcow2".
        size: the virtual disk size ("8G" or bytes).
        firmware: "bios", "uefi" or "both" (both boot codes are installed).
        verity: give the root filesystem ext4's ``verity`` feature, so that the
            host's store seals its objects with fs-verity (atoll.store.seal). A
            kernel without fs-verity (some build machines) cannot open sealed
            files: build with ``verity=False`` a disk you will inspect or change
            offline on such a machine after the guest has written to its store.

    Raises:
        InputError: bad format, firmware, size, or a sysroot without a deployment.
        ToolError: a tool (mkfs.ext4, sfdisk, grub-mkimage, qemu-img...) failed.

    Returns:
        A summary: path, format, size, root UUID, firmware.
    """
    total = _check_params(fmt, size, firmware)
    sysroot, out = Path(sysroot), Path(out)
    if not sysroot.is_dir():
        raise InputError(f"sysroot {sysroot} is not a directory")
    root_uuid = str(uuidlib.uuid4())
    prepare_sysroot(sysroot, root_uuid)
    assemble_disk(sysroot, out, fmt, total, firmware, root_uuid, verity=verity)
    return {"path": str(out), "format": fmt, "size": total, "root_uuid": root_uuid,
            "firmware": firmware, "verity": verity}


def keep_seal_marks(root_dir: Path, root_img: Path, script: Path) -> int:
    """Write the store's seal marks (:func:`atoll.store.seal.seal_mtime_ns`: the
    nanoseconds of each file object's mtime) into the ext4 image ``root_img`` that
    ``mke2fs -d root_dir`` built: mke2fs copies whole seconds only, and an object
    without its mark would be re-hashed by the host's first deploy. One debugfs
    run (``set_inode_field PATH mtime_extra NS<<2``: ext4's extra timestamp
    field, nanoseconds in its upper 30 bits; e2fsprogs' debugfs(8)). Returns how
    many objects were marked.

    Raises:
        ToolError: debugfs failed.
    """
    objects = Path(root_dir) / "atoll/repo/objects"
    lines = []
    for path in sorted(objects.glob("*/*.file")):
        ns = os.lstat(path).st_mtime_ns % 1_000_000_000
        if ns:  # names are hex ids: nothing to quote
            lines.append(f"sif /atoll/repo/objects/{path.parent.name}/{path.name} "
                         f"mtime_extra {ns << 2}\n")
    if lines:
        script.write_text("".join(lines))
        run([require_tool("debugfs", package="e2fsprogs"), "-w", "-f", script, root_img],
            what="keep the store's seal marks in the image", timeout=1800)
    return len(lines)


def assemble_disk(root_dir: Path, out: Path, fmt: str, total: int, firmware: str,
                  root_uuid: str, *, verity: bool = True) -> None:
    """Write the GPT disk: ``root_dir`` as the ext4 root (label atoll-root,
    ``root_uuid``, with the ``verity`` feature unless told otherwise), GRUB's
    BIOS and/or UEFI boot code finding it by UUID.

    Raises:
        ToolError: a tool failed.
    """
    mkfs = require_tool("mkfs.ext4", package="e2fsprogs")
    sfdisk = require_tool("sfdisk", package="fdisk")
    sysroot = root_dir
    root_size = total - ROOT_START - MIB  # leave room for the backup GPT
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".atoll-image-", dir=out.parent) as tmp:
        work = Path(tmp)
        early = work / "early.cfg"
        early.write_text(grubcfg.early_cfg(root_uuid))
        root_img = work / "root.img"
        with open(root_img, "wb") as fh:
            fh.truncate(root_size)
        # 4 KiB blocks: Linux before 6.3 mounts ext4 with verity only when the block
        # size is the page size, and mke2fs picks 1 KiB blocks below 512 MiB
        features = ["-O", "verity", "-b", "4096"] if verity else []
        # -I 256: inodes with room for nanosecond timestamps (the objects' seal marks)
        run([mkfs, "-q", "-F", "-L", "atoll-root", "-U", root_uuid, "-I", "256", *features,
             "-d", sysroot, root_img],
            what="build the ext4 root filesystem", timeout=1800)
        keep_seal_marks(sysroot, root_img, work / "marks.debugfs")
        disk = work / "disk.raw"
        with open(disk, "wb") as fh:
            fh.truncate(total)
        table = (
            "label: gpt\nunit: sectors\nfirst-lba: 2048\n"
            f"start={BIOS_START // SECTOR}, size={BIOS_SIZE // SECTOR}, type={TYPE_BIOS}, "
            'name="bios"\n'
            f"start={ESP_START // SECTOR}, size={ESP_SIZE // SECTOR}, type={TYPE_ESP}, "
            'name="esp"\n'
            f"start={ROOT_START // SECTOR}, size={root_size // SECTOR}, type={TYPE_ROOT}, "
            'name="atoll-root"\n'
        )
        run([sfdisk, "--quiet", "--no-reread", "--no-tell-kernel", disk], input=table.encode(),
            what="write the partition table")
        fd = os.open(disk, os.O_WRONLY)
        try:
            if firmware in ("uefi", "both"):
                _copy_sparse(_build_esp(work, early), fd, ESP_START)
            if firmware in ("bios", "both"):
                _install_bios(work, fd, early)
            _copy_sparse(root_img, fd, ROOT_START)
            os.fsync(fd)
        finally:
            os.close(fd)
        root_img.unlink()
        staged = work / "out"
        if fmt == "qcow2":
            run([require_tool("qemu-img", package="qemu-utils"), "convert", "-f", "raw",
                 "-O", "qcow2", disk, staged], what="convert the image to qcow2", timeout=1800)
        else:
            os.rename(disk, staged)
        os.replace(staged, out)


def build_image_from_ref(
    ref: str,
    repo: Path,
    out: Path,
    fmt: str = "qcow2",
    size: str | int = "8G",
    firmware: str = "both",
    customize: Callable[[Path], object] | None = None,
    *,
    verity: bool = True,
) -> dict[str, object]:
    """Deploy ``ref`` from ``repo`` into a fresh sysroot, then :func:`build_image` it.

    The sysroot is created next to ``out`` (``Sysroot.init(bootloader="grub")``
    + ``Sysroot.deploy``) and removed afterwards. ``customize`` is called with
    the deployment's directory before the disk is written (e.g. to bake a
    host config into its /etc).

    Raises:
        InputError: unknown ref, or bad image parameters.
        StoreError: the repository is missing or corrupt.
    """
    from atoll.deploy import Sysroot  # the deploy layer sits beside boot, imported late
    from atoll.store import Repo

    _check_params(fmt, size, firmware)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".atoll-sysroot-", dir=out.parent) as tmp:
        sysroot = Sysroot(Path(tmp) / "sysroot")
        sysroot.init(bootloader="grub")
        dep = sysroot.deploy(ref, repo=Repo.open(Path(repo)))
        if customize is not None:
            customize(sysroot.root / "atoll" / "deploy" / dep.id)
        result = build_image(sysroot.root, out, fmt, size, firmware, verity=verity)
        result["deployment"] = dep.id
        return result

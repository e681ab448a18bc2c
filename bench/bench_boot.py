"""Boot benchmark under QEMU TCG: atoll's image vs the same tree booted plainly.

Both disks come from the same mmdebstrap tarball + the ``boot`` feature (same
kernel, initrd, packages; same GRUB core images and disk layout). atoll's:
the tree composed to the atoll layout, committed to a store and deployed
(sysroot with its repo), GRUB menu from the loader with boot counting, the
initramfs hook, boot-complete running the health checks. Plain: the tree as
an ordinary ext4 root (/etc in place, kernel in /boot), one GRUB entry, and a
unit that prints a marker once multi-user.target is reached.

Measured: power-on (QEMU start) to "marked good" (atoll: boot-complete's
marker; plain: the multi-user marker), and the image sizes.

    .venv/bin/python bench/bench_boot.py [--runs N] [--firmware bios|uefi] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import uuid
from pathlib import Path

from atoll.boot.devsysroot import cached_base, cached_repo, compose_tree, make_sysroot
from atoll.boot.image import assemble_disk, build_image
from atoll.boot.qemu import VM, overlay

CACHE = Path(os.environ.get("ATOLL_TEST_CACHE", "/var/tmp/atoll-test-cache"))
SIZE = 4 << 30

PLAIN_MARKER_UNIT = """[Unit]
Description=bench: plain boot reached multi-user
After=multi-user.target

[Service]
Type=oneshot
ExecStart=/bin/sh -c 'echo PLAIN-BOOT-COMPLETE > /dev/ttyS0'

[Install]
WantedBy=multi-user.target
"""


def plain_root(dest: Path, root_uuid: str) -> None:
    """The same mmdebstrap tree + boot feature, left as a plain Debian root."""
    base, _ = cached_base(CACHE)
    compose_tree(base, dest, layout=False)
    kver = sorted(p.name[len("vmlinuz-"):] for p in (dest / "boot").glob("vmlinuz-*"))[-1]
    unit = dest / "etc/systemd/system/plain-boot-complete.service"
    unit.write_text(PLAIN_MARKER_UNIT)
    wants = dest / "etc/systemd/system/multi-user.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    os.symlink("../plain-boot-complete.service", wants / "plain-boot-complete.service")
    grub = dest / "boot/grub"
    grub.mkdir(parents=True)
    (grub / "grub.cfg").write_text(
        "serial --unit=0 --speed=115200\nterminal_input serial console\n"
        "terminal_output serial console\nset timeout_style=hidden\nset timeout=0\n"
        "menuentry 'Debian' {\n"
        f"  linux /boot/vmlinuz-{kver} root=UUID={root_uuid} rw console=ttyS0,115200n8"
        " panic=10\n"
        f"  initrd /boot/initrd.img-{kver}\n}}\n")


def boot_time(image: Path, work: Path, marker: str, firmware: str) -> float:
    disk = overlay(image, work / f"run-{uuid.uuid4().hex[:8]}.qcow2")
    with VM(disk, disk.with_suffix(".console"), firmware=firmware) as vm:
        vm.wait_for(marker, 600)
        took = vm.elapsed()
    disk.unlink()
    return took


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--firmware", choices=("bios", "uefi"), default="bios")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    repo, _ = cached_repo(CACHE)
    with tempfile.TemporaryDirectory(prefix="atoll-bench-boot-", dir="/var/tmp") as tmp:
        work = Path(tmp)
        sysroot = work / "sysroot"
        make_sysroot(sysroot, repo, ["test/v1"])
        atoll_img = work / "atoll.qcow2"
        build_image(sysroot, atoll_img, "qcow2", SIZE, "both")
        plain_uuid = str(uuid.uuid4())
        plain_dir = work / "plain"
        plain_root(plain_dir, plain_uuid)
        plain_img = work / "plain.qcow2"
        assemble_disk(plain_dir, plain_img, "qcow2", SIZE, "both", plain_uuid)
        a_times, p_times = [], []
        for _ in range(args.runs):  # interleaved so that load changes hit both
            p_times.append(boot_time(plain_img, work, r"PLAIN-BOOT-COMPLETE", args.firmware))
            a_times.append(boot_time(atoll_img, work, r"ATOLL-BOOT-COMPLETE \{.*\"good\"",
                                     args.firmware))
        a, p = statistics.median(a_times), statistics.median(p_times)
        result = {
            "firmware": args.firmware, "runs": args.runs,
            "atoll_boot_s": round(a, 1), "plain_boot_s": round(p, 1),
            "boot_ratio": round(a / p, 3),
            "atoll_image_bytes": atoll_img.stat().st_size,
            "plain_image_bytes": plain_img.stat().st_size,
            "size_ratio": round(atoll_img.stat().st_size / plain_img.stat().st_size, 3),
            "atoll_times": [round(t, 1) for t in a_times],
            "plain_times": [round(t, 1) for t in p_times],
        }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"power-on to marked good ({args.firmware}, TCG, median of {args.runs}): "
              f"atoll {a:.1f} s, plain {p:.1f} s, ratio {a / p:.2f}x (target <= 1.2x)")
        print(f"image size (qcow2): atoll {result['atoll_image_bytes'] >> 20} MiB, plain "
              f"{result['plain_image_bytes'] >> 20} MiB, ratio {result['size_ratio']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())

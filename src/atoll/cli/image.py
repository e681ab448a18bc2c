"""``atoll image build``: a bootable GPT disk (BIOS + UEFI GRUB, ext4 sysroot)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["register"]


def _build(args: argparse.Namespace) -> int:
    from atoll.boot.image import build_image, build_image_from_ref
    from atoll.cli import emit
    from atoll.core.errors import InputError

    if args.from_sysroot is not None:
        if args.ref is not None:
            raise InputError("give either a ref or --from-sysroot, not both")
        if args.config is not None:
            raise InputError("--config bakes into a fresh deployment: give a ref, not "
                             "--from-sysroot", resolution="atoll host-config apply CONFIG "
                             "--root SYSROOT/atoll/deploy/ID prepares a sysroot instead")
        result = build_image(args.from_sysroot, args.out, args.format, args.size, args.firmware,
                             verity=args.verity)
    else:
        if args.ref is None or args.repo is None:
            raise InputError("atoll image build needs a ref and --repo (or --from-sysroot)",
                             resolution="atoll image build site/base --repo ./repo --out h.qcow2")
        customize = None
        if args.config is not None:
            from atoll.provision.bake import bake_config
            from atoll.provision.config import load_host_config

            load_host_config(args.config)  # refuse a bad config before building anything
            config = args.config

            def customize(deploy_dir: Path) -> None:
                bake_config(config, deploy_dir)

        result = build_image_from_ref(args.ref, args.repo, args.out, args.format, args.size,
                                      args.firmware, customize, verity=args.verity)
    emit(args, result, lambda: f"wrote {result['path']} ({result['format']}, "
                               f"{int(str(result['size'])) >> 20} MiB, {result['firmware']})")
    return 0


def register(sub: Any, common: Callable[[argparse.ArgumentParser], None]) -> None:
    """Add ``image build``."""
    image = sub.add_parser("image", help="bootable disk images")
    isub = image.add_subparsers(dest="image_command", metavar="COMMAND")
    isub.required = True
    p = isub.add_parser("build", help="build a GPT disk image from a ref (or a sysroot)")
    p.add_argument("ref", nargs="?", help="ref or commit to deploy into the image")
    p.add_argument("--repo", type=Path, help="the store holding the ref")
    p.add_argument("--from-sysroot", type=Path, default=None,
                   help="use a prepared sysroot directory instead of deploying a ref")
    p.add_argument("--out", type=Path, required=True, help="image file to write")
    p.add_argument("--config", type=Path, default=None,
                   help="host config to bake in (/etc/atoll/host-config.yaml, applied at "
                        "first boot); validated first")
    p.add_argument("--format", choices=("raw", "qcow2"), default="qcow2",
                   help="disk image format (default qcow2)")
    p.add_argument("--size", default="8G", help="virtual disk size (default 8G)")
    p.add_argument("--firmware", choices=("bios", "uefi", "both"), default="both",
                   help="boot code to install (default both: one disk boots either way)")
    p.add_argument("--no-verity", dest="verity", action="store_false",
                   help="leave out ext4's verity feature (the store then cannot seal its "
                   "objects with fs-verity); for disks you will change offline on a machine "
                   "whose kernel lacks fs-verity")
    common(p)
    p.set_defaults(handler=_build)

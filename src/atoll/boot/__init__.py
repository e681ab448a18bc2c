"""Boot layer: GRUB menus with boot counting, initramfs hook, boot-complete, disk images.

Importing this package registers the ``boot`` image feature (used by compose)
and, once the deploy layer provides ``atoll.deploy.bootloader``, the ``grub``
bootloader writer. See docs/boot.md.
"""

from __future__ import annotations

import importlib

from atoll.boot.feature import PACKAGES, install
from atoll.compose.features import Feature, register

__all__ = ["register_writer"]

# INITRD=No: the kernel package's postinst builds no initrd (the feature builds the
# one the image ships, with atoll's hook, after every package is in).
register(Feature("boot", install, packages=PACKAGES,
                 description="kernel, GRUB boot counting, initramfs hook, boot-complete",
                 build_env=(("INITRD", "No"),)))


def register_writer() -> bool:
    """Register the grub writer with the deploy layer; False while it does not exist."""
    try:
        bootloader = importlib.import_module("atoll.deploy.bootloader")
    except ImportError:
        # The deploy layer (or a package it needs) is not importable here, e.g.
        # boot-complete inside an image, which has only the stdlib: no writer
        # is needed there. Elsewhere get_writer("grub") reports it clearly.
        return False
    from atoll.boot.writer import grub_writer

    bootloader.register_writer("grub", grub_writer)
    return True


register_writer()

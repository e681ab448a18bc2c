"""Bootloader writers: small plugins the deploy layer calls for each new loader dir.

A writer ``fn(sysroot, loader_dir, deployments)`` renders whatever its
bootloader needs (GRUB: ``grub.cfg`` and kernels under ``boot/atoll/``) into
the new ``boot/loader.N`` directory *before* the boot pointer is swapped. The
sysroot names its bootloader in ``atoll/state/bootloader`` (absent: none).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from atoll.core.errors import HostStateError

__all__ = ["Writer", "get_writer", "register_writer"]

Writer = Callable[[Path, Path, list[dict[str, Any]]], None]

_WRITERS: dict[str, Writer] = {}


def register_writer(name: str, fn: Writer) -> None:
    _WRITERS[name] = fn


def get_writer(name: str) -> Writer:
    if name not in _WRITERS:
        try:
            importlib.import_module("atoll.boot")
        except ModuleNotFoundError as exc:
            if exc.name != "atoll.boot":
                raise
    try:
        return _WRITERS[name]
    except KeyError:
        raise HostStateError(
            f"bootloader {name!r} has no writer",
            resolution="known: " + (", ".join(sorted(_WRITERS)) or "(none)"),
        ) from None

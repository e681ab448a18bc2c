"""The GRUB bootloader writer, called by the deploy layer for each new loader.N.

``grub_writer(sysroot, new_loader_dir, deployments)`` (registered as "grub"
with :func:`atoll.deploy.bootloader.register_writer`):

1. copies each deployment's kernel and initrd to ``boot/atoll/<commit>/``
   (staged in a temp directory, then renamed: present means complete);
2. writes ``new_loader_dir/grub.cfg`` (the menu, see grubcfg.py);
3. updates grubenv so that a never-good ``deployments[0]`` is on trial with
   N tries (:func:`atoll.boot.counting.stage_env`);
4. removes kernel directories no loader refers to.

It runs before the ``loader`` symlink swap; see docs/boot.md for why every
crash point leaves a bootable system.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import Any

from atoll.boot import state
from atoll.boot.counting import DEFAULT_TRIES, stage_env
from atoll.boot.grubcfg import loader_cfg
from atoll.core.errors import HostStateError
from atoll.core.fsutil import atomic_write, fsync_dir

__all__ = ["find_kernel", "grub_writer", "install_kernel"]


def find_kernel(deploy_dir: Path, kver: str | None = None) -> tuple[Path, Path]:
    """Return (vmlinuz, initrd.img) inside a deployment's ``usr/lib/modules``.

    Raises:
        HostStateError: no kernel (or no initrd) in the deployment.
    """
    modules = deploy_dir / "usr" / "lib" / "modules"
    candidates = [modules / kver] if kver else sorted(modules.glob("*"), reverse=True)
    for cand in candidates:
        vmlinuz, initrd = cand / "vmlinuz", cand / "initrd.img"
        if vmlinuz.is_file() and initrd.is_file():
            return vmlinuz, initrd
    raise HostStateError(
        f"no kernel in deployment {deploy_dir.name}",
        details=f"looked for usr/lib/modules/{kver or '*'}/vmlinuz and initrd.img",
        resolution="compose the image with the `boot` feature (it installs the kernel)",
    )


def install_kernel(sysroot: Path, dep: dict[str, Any]) -> Path:
    """Copy a deployment's kernel and initrd to ``boot/atoll/<commit>/`` (idempotent)."""
    dest = sysroot / "boot" / "atoll" / str(dep["commit"])
    if dest.is_dir():
        return dest
    vmlinuz, initrd = find_kernel(sysroot / "atoll" / "deploy" / str(dep["id"]),
                                  dep.get("kernel") or None)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".tmp-{dest.name}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    for src, name in ((vmlinuz, "vmlinuz"), (initrd, "initrd.img")):
        shutil.copyfile(src, tmp / name)
        with open(tmp / name, "rb+") as fh:
            os.fsync(fh.fileno())
    fsync_dir(tmp)
    os.rename(tmp, dest)
    fsync_dir(dest.parent)
    return dest


def _referenced(sysroot: Path) -> set[str]:
    commits: set[str] = set()
    for loader in (sysroot / "boot").glob("loader.*"):
        with contextlib.suppress(Exception):
            commits |= {str(d.get("commit")) for d in state.read_deployments(loader)}
    return commits


def grub_writer(sysroot: Path, new_loader_dir: Path, deployments: list[dict[str, Any]]) -> None:
    """Write GRUB boot files for a new loader directory (before the symlink swap).

    Raises:
        HostStateError: a deployment has no kernel.
        InputError: a value cannot be written into a GRUB script.
    """
    for dep in deployments:
        install_kernel(sysroot, dep)
    atomic_write(new_loader_dir / "grub.cfg",
                 loader_cfg(deployments, state.kargs(sysroot)).encode())
    env = state.read_env(sysroot)
    tries_file = sysroot / "atoll" / "state" / "boot-tries"
    try:
        tries = int(tries_file.read_text().strip())
    except (FileNotFoundError, ValueError):
        tries = DEFAULT_TRIES
    new_env = stage_env(env, [str(d["id"]) for d in deployments], state.read_good(sysroot),
                        tries)
    if new_env != env or not state.env_path(sysroot).exists():
        state.write_env(sysroot, new_env)
    keep = _referenced(sysroot) | {str(d["commit"]) for d in deployments}
    for path in (sysroot / "boot" / "atoll").glob("*"):
        if path.is_dir() and path.name not in keep:
            shutil.rmtree(path, ignore_errors=True)

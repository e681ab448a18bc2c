"""The ``boot`` image feature: kernel, initramfs hook, boot-complete, health dirs.

``install(rootfs)`` runs on the fresh mmdebstrap tree (``/etc`` in place):

* ``usr/share/initramfs-tools/scripts/local-bottom/atoll`` + ``hooks/atoll``;
* ``atoll-boot-complete.service`` (vendor-enabled in multi-user.target);
* atoll itself, once, in ``/usr/lib/atoll/python`` (``install_atoll``; the
  ``agent`` feature adds its PyPI dependencies there); boot-complete runs it
  with Debian's ``python3 -S`` (no site-packages: only the standard library
  and atoll's stdlib-only modules), and every ``.pyc`` in the image is
  recompiled as unchecked-hash (see below);
* health-check directories, a required ``00-atoll-layout`` check (read-only
  /usr, booted deployment present) and a wanted ``10-failed-units`` check;
* mount points ``/sysroot`` and ``/atoll``;
* ``RESUME=none`` for initramfs-tools (no hibernation on these hosts, and the
  initrd must not depend on the build machine's swap);
* the initrd of every installed kernel (``update-initramfs -c -k all`` in the
  chroot; reproducible under ``SOURCE_DATE_EPOCH``, which compose sets; the
  kernel package's own initrd is skipped at install time, ``INITRD=No``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from atoll.boot import assets
from atoll.compose.features import ATOLL_PREFIX, install_atoll, install_unit
from atoll.core.run import run

__all__ = ["PACKAGES", "install"]

PACKAGES = (
    "linux-image-amd64",
    "systemd-sysv",
    "udev",
    "kmod",
    "initramfs-tools",
    "busybox",
    "python3",
)


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)


@contextlib.contextmanager
def _chroot_mounts(rootfs: Path) -> Iterator[None]:
    mounted: list[Path] = []
    try:
        for fs, target in (("proc", "proc"), ("sysfs", "sys")):
            path = rootfs / target
            path.mkdir(exist_ok=True)
            run(["mount", "-t", fs, fs, path], what=f"mount {target} in the rootfs")
            mounted.append(path)
        yield
    finally:
        for path in reversed(mounted):
            run(["umount", "-l", path], check=False)


def install(rootfs: Path) -> None:
    """Install atoll's boot integration into a Debian rootfs and rebuild its initrd.

    Raises:
        ToolError: update-initramfs failed.
    """
    rootfs = Path(rootfs)
    irfs = rootfs / "usr/share/initramfs-tools"
    _write(irfs / "scripts/local-bottom/atoll", assets.INITRAMFS_SCRIPT, 0o755)
    _write(irfs / "hooks/atoll", assets.INITRAMFS_HOOK, 0o755)
    install_unit(rootfs, "atoll-boot-complete.service", assets.BOOT_COMPLETE_UNIT)
    for kind in ("required.d", "wanted.d"):
        (rootfs / "usr/lib/atoll/health.d" / kind).mkdir(parents=True, exist_ok=True)
        (rootfs / "etc/atoll/health.d" / kind).mkdir(parents=True, exist_ok=True)
    _write(rootfs / "usr/lib/atoll/health.d/wanted.d/10-failed-units",
           assets.WANTED_FAILED_UNITS, 0o755)
    _write(rootfs / "usr/lib/atoll/health.d/required.d/00-atoll-layout",
           assets.REQUIRED_LAYOUT, 0o755)
    for d in ("sysroot", "atoll"):
        (rootfs / d).mkdir(exist_ok=True)
    _write(rootfs / "etc/initramfs-tools/conf.d/atoll", assets.INITRAMFS_CONF)
    install_atoll(rootfs)
    with _chroot_mounts(rootfs):
        # Hash-based, unchecked .pyc files: the store does not keep mtimes
        # (a checkout has the object's), which invalidates timestamp-based
        # .pyc files; /usr is read-only at run time, so Python would then
        # recompile every module it imports at every start. (Byte code of the
        # same sources is the same bytes: no timestamps, and Python 3.11's
        # marshal does not depend on the hash seed; fixed anyway.)
        pydirs = [f"/{p.relative_to(rootfs)}" for p in sorted(rootfs.glob("usr/lib/python3*"))]
        run(["chroot", rootfs, "python3", "-m", "compileall", "-q", "-f", "-j0",
             "--invalidation-mode", "unchecked-hash", *pydirs, f"/{ATOLL_PREFIX}"],
            env={"PYTHONHASHSEED": "0"}, what="byte-compile Python in the image", timeout=900)
        # -c: create for every installed kernel (compose's mmdebstrap made none: INITRD=No)
        run(["chroot", rootfs, "update-initramfs", "-c", "-k", "all"],
            what="build the initrd", timeout=900)

"""Folding an overlayfs upper layer into its lower directory.

A hotfix runs dpkg on an overlay whose lower directory is a checkout made of
hardlinks into the store: whatever dpkg and the maintainer scripts write lands
in the upper directory (overlayfs copies a file up before it is changed), so
no store object is ever written through a hardlink, and only what changed is
copied. Afterwards :func:`fold_upper` lays the upper directory onto the lower
one, which then holds the merged view as a plain tree.

The upper layer's format is the kernel's (Documentation/filesystems/overlayfs.rst):

- a *whiteout* (a character device 0/0) hides the lower entry of that name;
- an *opaque* directory (xattr ``trusted.overlay.opaque`` = ``y``) hides the whole
  lower directory of that name;
- every other entry replaces the lower one, and a directory found in both is
  merged entry by entry, the upper one's owner, mode and xattrs winning;
- ``trusted.overlay.*`` xattrs are overlayfs's bookkeeping (``origin`` on copy-up),
  never the tree's: they are dropped.

:data:`MOUNT_OPTIONS` turn off the features whose upper format this module does
not fold (redirected directories, metadata-only copy-up, the inode index); an
upper layer that uses them anyway is refused.
"""

from __future__ import annotations

import os
import shutil
import stat

from atoll.core.errors import HostStateError

__all__ = ["MOUNT_OPTIONS", "fold_upper"]

MOUNT_OPTIONS = "redirect_dir=off,metacopy=off,index=off,xino=off"

_PREFIX = "trusted.overlay."
_UNFOLDABLE = ("redirect", "metacopy")


def _overlay_xattrs(path: str) -> dict[str, bytes]:
    return {name: os.getxattr(path, name, follow_symlinks=False)
            for name in os.listxattr(path, follow_symlinks=False) if name.startswith(_PREFIX)}


def _remove(path: str) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(path)
    else:
        os.unlink(path)


def _copy_dir_meta(src: str, dst: str, st: os.stat_result) -> None:
    """Give ``dst`` the owner, mode and xattrs (overlay's excepted) of ``src``."""
    os.chown(dst, st.st_uid, st.st_gid, follow_symlinks=False)
    os.chmod(dst, stat.S_IMODE(st.st_mode))
    want = {n: os.getxattr(src, n, follow_symlinks=False)
            for n in os.listxattr(src, follow_symlinks=False) if not n.startswith(_PREFIX)}
    for name in os.listxattr(dst, follow_symlinks=False):
        if name not in want:
            os.removexattr(dst, name, follow_symlinks=False)
    for name, value in want.items():
        os.setxattr(dst, name, value, follow_symlinks=False)


def fold_upper(upper: str, lower: str) -> int:
    """Lay the overlayfs upper directory ``upper`` onto ``lower`` (same filesystem);
    returns how many entries of ``upper`` were moved in. ``upper`` is consumed, and
    ``lower`` (the root directory included) takes the merged view's owners, modes
    and xattrs.

    Files and symlinks are renamed into place, so a lower entry that is a hardlink
    elsewhere (a store object) is replaced, never written.

    Raises:
        HostStateError: ``upper`` uses a feature :data:`MOUNT_OPTIONS` turns off.
    """
    moved = _fold(upper, lower)
    _copy_dir_meta(upper, lower, os.lstat(upper))
    return moved


def _fold(upper: str, lower: str) -> int:
    moved = 0
    for name in sorted(os.listdir(upper)):
        src, dst = os.path.join(upper, name), os.path.join(lower, name)
        st = os.lstat(src)
        if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:  # a whiteout
            _remove(dst)
            continue
        marks = _overlay_xattrs(src)
        used = [n for n in marks if n[len(_PREFIX):] in _UNFOLDABLE]
        if used:
            raise HostStateError(f"{src}: overlayfs used {', '.join(used)}, which atoll "
                                 "mounts it without", resolution="report this as a bug")
        for mark in marks:
            os.removexattr(src, mark, follow_symlinks=False)
        if stat.S_ISDIR(st.st_mode):
            opaque = marks.get(_PREFIX + "opaque") == b"y"
            if opaque or not os.path.isdir(dst) or os.path.islink(dst):
                _remove(dst)
                os.mkdir(dst, 0o700)
            moved += _fold(src, dst)
            _copy_dir_meta(src, dst, st)
            continue
        if os.path.isdir(dst) and not os.path.islink(dst):
            shutil.rmtree(dst)
        os.rename(src, dst)
        moved += 1
    return moved

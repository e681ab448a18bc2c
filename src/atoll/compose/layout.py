"""Turn a Debian rootfs into the atoll layout (in place).

- ``/etc`` moves to ``/usr/etc`` (the image's defaults; deployments get a merged ``/etc``)
- ``/var`` is emptied: its directories become ``usr/lib/tmpfiles.d/atoll-var.conf``
  lines so systemd-tmpfiles recreates them at boot; dpkg's database moves to
  ``/usr/share/atoll/dpkg`` with a ``/var/lib/dpkg`` symlink line (``dpkg -l`` works)
- kernel and initrd move from ``/boot`` to ``/usr/lib/modules/<kver>/{vmlinuz,initrd.img}``
- ``home root srv opt mnt`` become symlinks into ``var``; ``media`` into ``run``;
  ``dev proc sys run tmp boot`` are empty mount points
- per-host identity is removed (machine-id, SSH host keys): made at first boot
"""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

from atoll.core.errors import InputError
from atoll.core.fsutil import atomic_write
from atoll.core.text import printable

__all__ = ["SLIM_DPKG_OPTS", "TMPFILES_NAME", "to_atoll_layout"]

# dpkg options of every package install into an image (compose's mmdebstrap, a hotfix's
# dpkg): documentation, man pages and translations are not installed (a small, closed
# image); copyright files stay, they are needed for compliance and the SBOM.
SLIM_DPKG_OPTS = (
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/locale/*",
    "path-include=/usr/share/locale/locale.alias",
)

TMPFILES_NAME = "usr/lib/tmpfiles.d/atoll-var.conf"
_VAR_LINKS = {"home": "var/home", "root": "var/roothome", "srv": "var/srv",
              "opt": "var/opt", "mnt": "var/mnt", "media": "run/media"}
_EMPTY = ("dev", "proc", "sys", "run", "tmp", "boot")
_DROP_VAR = ("var/cache", "var/log", "var/tmp", "var/lib/apt/lists", "var/backups")


def _clear(path: Path) -> None:
    for entry in os.scandir(path):
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path)
        else:
            os.unlink(entry.path)


def _tmpfiles_word(text: str) -> bool:
    """True when ``text`` can be one field of a tmpfiles.d line as it is (tmpfiles.d(5)):
    printable UTF-8 without whitespace (a name that is not UTF-8 comes as surrogates)."""
    return text.isprintable() and not any(c.isspace() for c in text)


def _var_tmpfiles(root: Path) -> list[str]:
    lines = []
    var = root / "var"
    for dirpath, dirnames, filenames in os.walk(var):
        rel = os.path.relpath(dirpath, root)
        if any(rel == d or rel.startswith(d + "/") for d in _DROP_VAR[1:]):
            dirnames[:] = []
            continue
        for name in sorted(dirnames + filenames):
            p = Path(dirpath) / name
            st = os.lstat(p)
            relp = "/" + os.path.relpath(p, root)
            if relp == "/var/lib/dpkg":
                continue
            target = os.readlink(p) if stat.S_ISLNK(st.st_mode) else ""
            if not all(_tmpfiles_word(w) for w in (relp, target) if w):
                raise InputError(f"{printable(relp)}: a name under /var that a tmpfiles.d line "
                                 "cannot hold (whitespace, control characters or not UTF-8)",
                                 resolution="rename it in the package that made it")
            if stat.S_ISDIR(st.st_mode):
                lines.append(f"d {relp} {stat.S_IMODE(st.st_mode):04o} {st.st_uid} {st.st_gid} -")
            elif stat.S_ISLNK(st.st_mode):
                lines.append(f"L {relp} - - - - {target}")
        dirnames.sort()
    return sorted(set(lines))


def to_atoll_layout(root: Path) -> None:
    """Convert ``root`` (a Debian rootfs made by mmdebstrap) in place."""
    root = Path(root)
    # kernel + initrd
    boot = root / "boot"
    if boot.is_dir():
        for vmlinuz in sorted(boot.glob("vmlinuz-*")):
            kver = vmlinuz.name[len("vmlinuz-"):]
            moddir = root / "usr/lib/modules" / kver
            moddir.mkdir(parents=True, exist_ok=True)
            shutil.move(vmlinuz, moddir / "vmlinuz")
            initrd = boot / f"initrd.img-{kver}"
            if initrd.exists():
                shutil.move(initrd, moddir / "initrd.img")
    for link in ("vmlinuz", "vmlinuz.old", "initrd.img", "initrd.img.old"):
        p = root / link
        if p.is_symlink():
            p.unlink()
    # per-host identity
    for p in [root / "etc/machine-id", root / "var/lib/dbus/machine-id"]:
        if p.is_file() or p.is_symlink():
            p.unlink()
    (root / "etc/machine-id").touch()  # empty: systemd fills it at first boot
    for key in (root / "etc/ssh").glob("ssh_host_*") if (root / "etc/ssh").is_dir() else []:
        key.unlink()
    # /var -> tmpfiles.d
    lines = _var_tmpfiles(root)
    for name, target in _VAR_LINKS.items():
        p = root / name
        if p.is_dir() and not p.is_symlink():
            if name == "root":
                lines.append("d /var/roothome 0700 0 0 -")
            elif target.startswith("var/"):
                lines.append(f"d /{target} 0755 0 0 -")
            shutil.rmtree(p)
        elif p.is_symlink():
            p.unlink()
        os.symlink(target, p)
    dpkg = root / "var/lib/dpkg"
    if dpkg.is_dir():
        dest = root / "usr/share/atoll/dpkg"
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(dpkg, dest)
        lines.append("L /var/lib/dpkg - - - - /usr/share/atoll/dpkg")
    tmpfiles = root / TMPFILES_NAME
    tmpfiles.parent.mkdir(parents=True, exist_ok=True)
    # replaced, never written into: it may be a hardlink into a store (a hotfix's
    # checkout) or a symlink a package shipped
    atomic_write(tmpfiles, ("# generated by atoll compose: the image's /var, recreated at "
                            "boot\n" + "\n".join(sorted(set(lines))) + "\n").encode(),
                 mode=0o644, sync=False)
    _clear(root / "var") if (root / "var").is_dir() else (root / "var").mkdir()
    # /etc -> /usr/etc
    etc, usr_etc = root / "etc", root / "usr/etc"
    if usr_etc.exists():
        shutil.rmtree(usr_etc)
    shutil.move(etc, usr_etc)
    etc.mkdir(mode=0o755)
    for name in _EMPTY:
        p = root / name
        if p.is_symlink():
            p.unlink()
        if p.is_dir():
            _clear(p)
        else:
            p.mkdir()
    os.chmod(root / "tmp", 0o1777)

"""Synthetic trees for store and deploy tests (needs root for ownership and xattrs)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

CAP_NET_RAW = bytes.fromhex("0100000200200000000000000000000000000000")


def make_tree(root: Path, *, files: int = 50, variant: str = "a") -> Path:
    """A small rootfs-like tree in the atoll layout with the cases that matter."""
    root.mkdir(parents=True)
    (root / "usr/bin").mkdir(parents=True)
    (root / "usr/lib/data").mkdir(parents=True)
    (root / "usr/etc/ssh").mkdir(parents=True)
    (root / "etc").mkdir()
    (root / "var").mkdir()
    for i in range(files):
        (root / "usr/lib/data" / f"f{i:04d}").write_text(f"content {i}\n" * (i % 7 + 1))
    ping = root / "usr/bin/ping"
    ping.write_bytes(b"\x7fELF fake ping " + variant.encode())
    os.chmod(ping, 0o755)
    os.setxattr(ping, "security.capability", CAP_NET_RAW)
    su = root / "usr/bin/su"
    su.write_bytes(b"setuid helper")
    os.chmod(su, 0o4755)
    owned = root / "usr/lib/data/owned"
    owned.write_text("owned by 101:102\n")
    os.chown(owned, 101, 102)
    os.symlink("usr/bin", root / "bin")
    os.symlink("../bin/ping", root / "usr/lib/data/rel-link")
    os.symlink("/etc/shadow", root / "usr/lib/data/abs-link")
    (root / "usr/etc/motd").write_text(f"motd {variant}\n")
    (root / "usr/etc/hostname").write_text("atoll\n")
    (root / "usr/etc/ssh/sshd_config").write_text(f"PermitRootLogin no # {variant}\n")
    secret = root / "usr/etc/shadow"
    secret.write_text("root:*:19000:0:99999:7:::\n")
    os.chmod(secret, 0o640)
    os.chown(secret, 0, 42)
    return root


def describe(root: Path) -> dict[str, tuple[object, ...]]:
    """Everything a checkout must preserve, per path."""
    out: dict[str, tuple[object, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            rel = os.path.relpath(p, root)
            xattrs = tuple(sorted(
                (k, os.getxattr(p, k, follow_symlinks=False))
                for k in os.listxattr(p, follow_symlinks=False)))
            if stat.S_ISLNK(st.st_mode):
                content: object = os.readlink(p)
            elif stat.S_ISREG(st.st_mode):
                content = Path(p).read_bytes()
            else:
                content = None
            out[rel] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid,
                        st.st_gid, content, xattrs)
    return out


def snapshot(root: Path) -> dict[str, tuple[object, ...]]:
    """describe() plus inode numbers: proves nothing was rewritten."""
    out = {}
    for rel, desc in describe(root).items():
        out[rel] = (*desc, os.lstat(root / rel).st_ino)
    return out

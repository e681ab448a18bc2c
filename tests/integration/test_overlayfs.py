"""fold_upper against the kernel's own overlay: whatever a script does on a real
overlayfs mount, the lower directory folded with the upper one is the merged view
the kernel showed (names, kinds, modes, owners, contents, link targets, xattrs)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from atoll.core.errors import HostStateError
from atoll.core.overlayfs import MOUNT_OPTIONS, fold_upper

SNAPSHOT = r"""
import hashlib, json, os, stat, sys
root = sys.argv[1]
st = os.lstat(root)
out = {".": [st.st_mode, st.st_uid, st.st_gid, None, sorted(
    (k, os.getxattr(root, k).hex()) for k in os.listxattr(root)
    if not k.startswith("trusted.overlay."))]}
for d, dirs, files in os.walk(root):
    for n in dirs + files:
        p = os.path.join(d, n)
        st = os.lstat(p)
        x = sorted((k, os.getxattr(p, k, follow_symlinks=False).hex())
                   for k in os.listxattr(p, follow_symlinks=False))
        body = (os.readlink(p) if stat.S_ISLNK(st.st_mode) else
                hashlib.sha256(open(p, "rb").read()).hexdigest()
                if stat.S_ISREG(st.st_mode) else None)
        out[os.path.relpath(p, root)] = [st.st_mode, st.st_uid, st.st_gid, body, x]
print(json.dumps(out, sort_keys=True))
"""

SCRIPT = """
set -e
cd m
echo more >> keep/appended                 # copy-up, then written
chmod 0600 keep/chmodded                   # copy-up of metadata only
chown 1234:5678 keep/chowned
setfattr -n user.note -v hello keep/xattred
rm keep/removed                            # whiteout
rm -r gone                                 # whiteout of a directory
rm -r again && mkdir again && echo new > again/fresh   # opaque directory
rm fileToDir && mkdir fileToDir && echo in > fileToDir/inner
rm -r dirToFile && echo now-a-file > dirToFile
ln -sfn elsewhere keep/link                # a symlink replaced
mkdir -p brand/new/deep && echo deep > brand/new/deep/f && ln brand/new/deep/f brand/hard
chmod 0750 keep                            # a directory's own metadata
setfattr -n user.dir -v d keep
chmod 0711 .                               # the root's own
"""


def _lower(root: Path) -> None:
    (root / "keep").mkdir(parents=True)
    for name in ("appended", "chmodded", "chowned", "xattred", "removed", "untouched"):
        (root / "keep" / name).write_text(name + "\n")
    os.symlink("target", root / "keep/link")
    (root / "gone/sub").mkdir(parents=True)
    (root / "gone/sub/f").write_text("x")
    (root / "again").mkdir()
    (root / "again/old").write_text("old")
    (root / "fileToDir").write_text("file")
    (root / "dirToFile").mkdir()
    (root / "dirToFile/f").write_text("f")


def _snapshot(root: Path) -> dict[str, list[object]]:
    out = subprocess.run([sys.executable, "-c", SNAPSHOT, root], check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out)  # type: ignore[no-any-return]


def _overlay(tmp: Path, script: str, extra: str = "") -> dict[str, list[object]]:
    for d in ("upper", "work", "m"):
        (tmp / d).mkdir()
    mount = (f"mount -t overlay overlay -o 'lowerdir=lower,upperdir=upper,workdir=work,"
             f"{MOUNT_OPTIONS}{extra}' m")
    done = subprocess.run(["unshare", "--mount", "--", "sh", "-c",
                           f"set -e; cd {tmp}; {mount}; ( {script} )\n"
                           f"{sys.executable} -c '{SNAPSHOT}' m"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def test_the_folded_lower_is_the_merged_view(tmp_path: Path) -> None:
    _lower(tmp_path / "lower")
    merged = _overlay(tmp_path, SCRIPT)
    assert merged["keep/chmodded"][0] & 0o777 == 0o600  # the script did run
    assert merged["."][0] & 0o777 == 0o711
    moved = fold_upper(os.fspath(tmp_path / "upper"), os.fspath(tmp_path / "lower"))
    assert moved > 0
    folded = _snapshot(tmp_path / "lower")
    assert folded == merged
    assert not any(k.startswith("trusted.overlay.") for v in folded.values() for k, _ in v[4])
    assert os.stat(tmp_path / "lower/brand/hard").st_ino == \
        os.stat(tmp_path / "lower/brand/new/deep/f").st_ino  # a hardlink stays one


def test_an_upper_layer_with_redirects_is_refused(tmp_path: Path) -> None:
    """A directory renamed on an overlay mounted with redirect_dir=on leaves a redirect
    that fold_upper cannot follow: refused, not folded wrongly."""
    _lower(tmp_path / "lower")
    _overlay(tmp_path, "cd m; mv gone moved", extra=",redirect_dir=on")
    with pytest.raises(HostStateError, match="redirect"):
        fold_upper(os.fspath(tmp_path / "upper"), os.fspath(tmp_path / "lower"))

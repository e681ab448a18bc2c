"""The store on real files: ids, checkout fidelity, fsck, gc, diff, hostile trees."""

from __future__ import annotations

import hashlib
import os
import struct
from pathlib import Path

import pytest

from atoll.core import canonjson
from atoll.core.errors import CorruptObjectError, InputError, StoreError
from atoll.store import ops
from atoll.store.checkout import checkout
from atoll.store.objects import Commit, DirMeta
from atoll.store.repo import Repo
from tests.trees import CAP_NET_RAW, describe, make_tree


@pytest.fixture
def repo(tmp_path: Path) -> Repo:
    return Repo.create(tmp_path / "repo")


def test_commit_checkout_roundtrip_preserves_everything(repo: Repo, tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "tree")
    cid = repo.commit_dir(tree, ref="t/a", version="1")
    assert repo.refs() == {"t/a": cid}
    out = tmp_path / "out"
    checkout(repo, cid, out)
    assert describe(out) == describe(tree)
    assert os.getxattr(out / "usr/bin/ping", "security.capability") == CAP_NET_RAW
    # checkouts are hardlinks to the objects
    assert os.lstat(out / "usr/bin/ping").st_nlink >= 2


_DIR_MODES = {"a": (0o755, 0, 0), "b": (0o750, 0, 50), "c": (0o555, 0, 0),
              "d": (0o1777, 0, 0), "e": (0o2775, 1000, 1000), "f": (0o000, 0, 0),
              "g": (0o700, 101, 0), "h": (0o4711, 0, 0)}


# a default ACL "u::rwx,g::r-x,o::---" (<linux/posix_acl_xattr.h>: version 2, then
# tag, permissions, id per entry): mkdir below it ignores the umask and masks with it
_DEFAULT_ACL = struct.pack("<I" + "HHI" * 3, 2, 0x01, 7, 0xFFFFFFFF, 0x04, 5, 0xFFFFFFFF,
                           0x20, 0, 0xFFFFFFFF)


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o077, 0o000, 0o777])
@pytest.mark.parametrize("parent_kind", ["plain", "setgid", "default-acl"])
def test_checkout_gives_every_directory_its_mode_and_owner(
        repo: Repo, tmp_path: Path, umask: int, parent_kind: str) -> None:
    """The checkout sets a directory's owner and mode only where mkdir did not already
    give them: whatever the umask, special bits, owners, and a destination below a
    set-group-ID directory or one with a default ACL, every directory comes out as
    committed."""
    tree = tmp_path / "tree"
    for name, (mode, uid, gid) in _DIR_MODES.items():
        d = tree / "usr" / name / "sub"
        d.mkdir(parents=True)
        (d / "f").write_text(name)
        os.chown(d.parent, uid, gid)
        os.chmod(d.parent, mode)
    cid = repo.commit_dir(tree, ref="t/modes")
    parent = tmp_path / "dest"
    parent.mkdir()
    if parent_kind == "setgid":
        os.chown(parent, 0, 4242)
        os.chmod(parent, 0o2755)
    elif parent_kind == "default-acl":
        os.setxattr(parent, "system.posix_acl_default", _DEFAULT_ACL)
    old = os.umask(umask)
    try:
        checkout(repo, cid, parent / "out")
    finally:
        os.umask(old)
    got = describe(parent / "out")
    if parent_kind == "default-acl":  # inherited by every directory, as by any mkdir there
        got = {k: (*v[:5], tuple(x for x in v[5] if not x[0].startswith("system.posix_acl")))
               for k, v in got.items()}
    assert got == describe(tree)


def test_same_tree_same_commit_id_and_dedup(repo: Repo, tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "tree")
    a = repo.commit_dir(tree, version="1", timestamp=1)
    b = repo.commit_dir(tree, version="1", timestamp=1)
    assert a == b
    n = len(list(repo.iter_objects()))
    (tree / "usr/lib/data/f0001").write_text("changed\n")
    c = repo.commit_dir(tree, version="2", timestamp=1)
    # one new file object, the dirtrees above it, one commit
    assert len(list(repo.iter_objects())) - n == 1 + 4 + 1
    assert c != a


def test_id_changes_with_capability_xattr(repo: Repo, tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "tree")
    a = repo.commit_dir(tree, timestamp=1)
    os.removexattr(tree / "usr/bin/ping", "security.capability")
    b = repo.commit_dir(tree, timestamp=1)
    d = ops.diff(repo, a, b)
    assert d["files"]["changed"] == ["/usr/bin/ping"]


def test_special_files_are_refused(repo: Repo, tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "tree")
    os.mkfifo(tree / "usr/lib/fifo")
    with pytest.raises(InputError, match="special file"):
        repo.commit_dir(tree, ref="t/x")
    assert repo.refs() == {}
    assert list(repo.iter_objects()) == []  # refused before anything was written


def test_diff_lists_files_and_packages(repo: Repo, tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "tree")
    a = repo.commit_dir(tree, manifest=[{"name": "bash", "version": "5.2-1"},
                                        {"name": "gone", "version": "1"}])
    (tree / "usr/lib/data/f0000").unlink()
    (tree / "usr/lib/data/new").write_text("new")
    (tree / "usr/etc/motd").write_text("changed")
    b = repo.commit_dir(tree, parent=a, manifest=[{"name": "bash", "version": "5.2-2"},
                                                  {"name": "curl", "version": "7"}])
    d = ops.diff(repo, a, b)
    assert d["files"] == {"added": ["/usr/lib/data/new"], "removed": ["/usr/lib/data/f0000"],
                          "changed": ["/usr/etc/motd"]}
    assert d["packages"] == {
        "added": [{"name": "curl", "version": "7"}],
        "removed": [{"name": "gone", "version": "1"}],
        "upgraded": [{"name": "bash", "old": "5.2-1", "new": "5.2-2"}],
        "downgraded": [],
    }
    assert [cid for cid, _ in ops.log(repo, b)] == [b, a]


def test_fsck_reports_each_corrupt_object_and_checkout_refuses(repo: Repo,
                                                               tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "tree")
    cid = repo.commit_dir(tree, ref="t/a")
    assert ops.fsck(repo).ok
    c = repo.read_commit(cid)
    victims: list[str] = []
    paths = {p: e.id for p, e in repo.walk(c.tree) if not e.is_dir}
    for p in ("usr/lib/data/f0003", "usr/etc/motd"):
        victims.append(paths[p])
        obj = repo.object_path(paths[p], "file")
        data = bytearray(obj.read_bytes())
        data[0] ^= 0xFF
        obj.write_bytes(bytes(data))
    report = ops.fsck(repo)
    assert not report.ok
    assert sorted(report.corrupt) == sorted(f"file {v}" for v in victims)
    with pytest.raises(CorruptObjectError):
        checkout(repo, cid, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_fsck_reports_missing_objects(repo: Repo, tmp_path: Path) -> None:
    cid = repo.commit_dir(make_tree(tmp_path / "tree"), ref="t/a")
    c = repo.read_commit(cid)
    some = next(e.id for _, e in repo.walk(c.tree) if not e.is_dir)
    repo.object_path(some, "file").unlink()
    assert f"file {some} (ref heads/t/a): missing" in ops.fsck(repo).missing


def test_gc_removes_only_unreachable(repo: Repo, tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "tree")
    keep = repo.commit_dir(tree, ref="t/keep")
    (tree / "usr/lib/data/only-in-drop").write_text("x" * 1000)
    drop = repo.commit_dir(tree, ref="t/drop", parent=None)
    repo.set_ref("t/drop", None)
    res = ops.gc(repo)
    assert res["removed"] >= 3  # the file, its dirtrees, the commit
    assert not repo.has(drop, "commit")
    assert ops.fsck(repo).ok
    checkout(repo, keep, tmp_path / "out")


def _craft_commit(repo: Repo, entries: dict[str, object]) -> str:
    with repo.transaction():
        tree = repo.write_meta_object(canonjson.dumps({"entries": entries}), "dirtree")
        return repo.write_meta_object(
            Commit(tree=tree, root=DirMeta(0o755, 0, 0), parent=None, version="evil",
                   timestamp=0).to_bytes(), "commit")


def _file_obj(repo: Repo, tmp_path: Path, name: str, content: bytes) -> str:
    src = tmp_path / name
    src.write_bytes(content)
    st = os.lstat(src)
    with repo.transaction():
        oid, _ = repo.write_file_object(str(src), st, {})
    return oid


@pytest.mark.parametrize("name", ["..", ".", "a/../../x", "/abs"])
def test_hostile_names_never_escape(repo: Repo, tmp_path: Path, name: str) -> None:
    fid = _file_obj(repo, tmp_path, "payload", b"pwned")
    cid = _craft_commit(repo, {"ok": {"t": "f", "id": fid}, name: {"t": "f", "id": fid}})
    dest = tmp_path / "sysroot" / "deploy"
    dest.parent.mkdir()
    before = sorted(os.listdir(tmp_path))
    with pytest.raises(StoreError, match="unsafe file name"):
        checkout(repo, cid, dest, verify=False)
    assert sorted(os.listdir(tmp_path)) == before
    assert not (tmp_path / "x").exists() and not Path("/abs").exists()


def test_absolute_symlink_is_created_not_followed(repo: Repo, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    tree = tmp_path / "tree"
    tree.mkdir()
    os.symlink(str(outside), tree / "escape")
    cid = repo.commit_dir(tree)
    dest = tmp_path / "co"
    checkout(repo, cid, dest)
    assert os.readlink(dest / "escape") == str(outside)
    assert os.listdir(outside) == []


def test_device_node_object_is_refused(repo: Repo, tmp_path: Path) -> None:
    fake = hashlib.sha256(b"device").hexdigest()
    path = repo.object_path(fake, "file")
    path.parent.mkdir(exist_ok=True)
    os.mknod(path, 0o600 | 0o020000, os.makedev(1, 3))  # a char device, like /dev/null
    cid = _craft_commit(repo, {"null": {"t": "f", "id": fake}})
    with pytest.raises(StoreError, match="not a regular file"):
        checkout(repo, cid, tmp_path / "co", verify=False)
    with pytest.raises(CorruptObjectError):
        checkout(repo, cid, tmp_path / "co2", verify=True)


def test_commit_of_a_tree_with_a_dpkg_database_records_its_manifest(
        repo: Repo, tmp_path: Path) -> None:
    """A tree built by any tool (debootstrap, a container export) carries its packages:
    diffs and `update check` show package changes for it too."""
    tree = make_tree(tmp_path / "tree")
    status = tree / "var/lib/dpkg/status"
    status.parent.mkdir(parents=True)
    status.write_text("Package: bash\nStatus: install ok installed\nVersion: 5.2.15-2\n"
                      "Architecture: amd64\n\nPackage: gone\nStatus: deinstall ok "
                      "config-files\nVersion: 1\n")
    cid = repo.commit_dir(tree, ref="t/dpkg")
    assert [(p["name"], p["version"]) for p in repo.read_commit(cid).manifest] == [
        ("bash", "5.2.15-2")]
    empty = repo.commit_dir(tree, ref="t/none", manifest=[])  # given: taken as given
    assert repo.read_commit(empty).manifest == ()

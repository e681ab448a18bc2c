"""Trees from any tool, refused or accepted cleanly: names, /etc layouts, hardlink limits,
a live /etc, a full disk, and temp files no one else can read.

Every refusal is one error (no traceback) and changes nothing.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from atoll.core.errors import DiskFullError, InputError
from atoll.deploy.sysroot import Sysroot
from atoll.store import ops
from atoll.store.repo import Repo
from tests.trees import describe, make_tree


def atoll(*args: str) -> subprocess.CompletedProcess[str]:
    p = subprocess.run([sys.executable, "-m", "atoll.cli", *args], capture_output=True,
                       text=True)
    assert "Traceback" not in p.stderr, p.stderr
    return p


def _boot(sr: Sysroot, dep_id: str) -> None:
    (sr.root / "run/atoll").mkdir(parents=True, exist_ok=True)
    (sr.root / "run/atoll/booted").write_text(dep_id + "\n")


@pytest.fixture
def sr(tmp_path: Path) -> Sysroot:
    s = Sysroot(tmp_path / "host")
    s.init()
    return s


# -- names ---------------------------------------------------------------------------


def test_non_utf8_name_refused_before_anything_is_written(sr: Sysroot, tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "tree")
    bad = os.fsencode(tree / "usr/lib/data") + b"/caf\xe9-\xff.conf"
    with open(bad, "wb") as fh:
        fh.write(b"x")
    p = atoll("--sysroot", str(sr.root), "store", "commit", str(tree), "--ref", "t/x")
    assert p.returncode == 2, p.stderr
    assert "usr/lib/data/caf\\xe9-\\xff.conf: file name is not valid UTF-8" in p.stderr
    assert list(sr.repo.iter_objects()) == [] and sr.repo.refs() == {}
    assert os.listdir(sr.repo.tmp) == []


def test_control_characters_in_names_are_escaped_wherever_printed(
        sr: Sysroot, tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "tree")
    repo = sr.repo
    a = repo.commit_dir(tree, ref="t/a")
    (tree / "usr/lib/data/evil\nname\twith\x1bcontrols").write_text("x")
    (tree / "usr/etc/new\nline.conf").write_text("x")
    b = repo.commit_dir(tree, ref="t/a")
    p = atoll("--sysroot", str(sr.root), "store", "diff", a, b, "--files")
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert "A /usr/lib/data/evil\\nname\\twith\\x1bcontrols" in lines
    assert "A /usr/etc/new\\nline.conf" in lines
    assert all(line.isprintable() for line in lines)
    # JSON keeps the exact name (JSON escapes it itself)
    p = atoll("--sysroot", str(sr.root), "--json", "store", "diff", a, b, "--files")
    assert "/usr/lib/data/evil\nname\twith\x1bcontrols" in json.loads(p.stdout)["files"]["added"]
    # the name survives a deploy, and a host-made /etc conflict with such a name is
    # shown on one line by status
    d = sr.deploy("t/a")
    _boot(sr, d.id)
    (sr.deployment_path(d) / "etc/new\nline.conf").write_text("host's")
    (tree / "usr/etc/new\nline.conf").write_text("image's v3")
    repo.commit_dir(tree, ref="t/a")
    p = atoll("--sysroot", str(sr.root), "deploy", "t/a")
    assert p.returncode == 0, p.stderr
    assert "  new\\nline.conf" in p.stdout.splitlines()
    p = atoll("--sysroot", str(sr.root), "status")
    assert "new\\nline.conf" in p.stdout and all(ln.isprintable() for ln in
                                                  p.stdout.splitlines())


# -- /etc layouts (OSTree's rules) ----------------------------------------------------


def _layout_tree(root: Path, *, etc: str | None, usr_etc: bool) -> Path:
    (root / "usr/bin").mkdir(parents=True)
    (root / "usr/bin/sh").write_text("#!sh\n")
    if usr_etc:
        (root / "usr/etc").mkdir()
        (root / "usr/etc/hostname").write_text("from-usr-etc\n")
    if etc == "dir":
        (root / "etc").mkdir()
        (root / "etc/motd").write_text("from-etc\n")
    elif etc == "empty":
        (root / "etc").mkdir()
    elif etc == "symlink":
        os.symlink("usr/etc", root / "etc")
    elif etc == "file":
        (root / "etc").write_text("not a dir")
    return root


@pytest.mark.parametrize(("etc", "usr_etc", "result"), [
    ("dir", False, {"motd": "from-etc\n"}),             # a lone /etc becomes /usr/etc
    (None, True, {"hostname": "from-usr-etc\n"}),
    ("empty", True, {"hostname": "from-usr-etc\n"}),    # compose's layout: a mount point
    (None, False, {}),                                  # no /etc: an empty one
    ("dir", True, "both /etc and /usr/etc"),
    ("symlink", True, "/etc is a symlink"),
    ("symlink", False, "/etc is a symlink"),
    ("file", False, "/etc is not a directory"),
])
def test_etc_layouts(sr: Sysroot, tmp_path: Path, etc: str | None, usr_etc: bool,
                     result: dict[str, str] | str) -> None:
    tree = _layout_tree(tmp_path / "tree", etc=etc, usr_etc=usr_etc)
    p = atoll("--sysroot", str(sr.root), "store", "commit", str(tree), "--ref", "t/l")
    if isinstance(result, str):
        assert p.returncode == 2 and result in p.stderr, p.stderr
        assert list(sr.repo.iter_objects()) == []
        return
    assert p.returncode == 0, p.stderr
    p = atoll("--sysroot", str(sr.root), "deploy", "t/l")
    assert p.returncode == 0, p.stderr
    dep = sr.deployment_path(sr.deployments()[0])
    etc_files = {f.name: f.read_text() for f in (dep / "etc").iterdir()}
    assert etc_files == result
    assert (dep / "usr/etc").is_dir() == bool(result)


def test_deploy_of_a_lone_etc_commit_made_elsewhere(sr: Sysroot, tmp_path: Path) -> None:
    """A commit whose tree has /etc but no /usr/etc (written by another tool or an older
    atoll, i.e. not through commit_dir's rule) deploys with /etc as the defaults."""
    from atoll.core import canonjson
    from atoll.store.objects import Commit, DirMeta

    repo = sr.repo
    src = tmp_path / "motd"
    src.write_text("lone\n")
    meta = {"mode": 0o755, "uid": 0, "gid": 0, "xattrs": {}}
    with repo.transaction():
        fid, _ = repo.write_file_object(str(src), os.lstat(src), {})
        etc = repo.write_meta_object(canonjson.dumps({"entries": {"motd": {"t": "f", "id": fid}}}),
                                     "dirtree")
        root = repo.write_meta_object(canonjson.dumps({"entries": {"etc": {
            "t": "d", "id": etc, "meta": meta}}}), "dirtree")
        cid = repo.write_meta_object(Commit(tree=root, root=DirMeta(0o755, 0, 0), parent=None,
                                            version="x", timestamp=0).to_bytes(), "commit")
    repo.set_ref("t/lone", cid)
    dep = sr.deploy("t/lone")
    assert (sr.deployment_path(dep) / "etc/motd").read_text() == "lone\n"
    assert (sr.deployment_path(dep) / "usr/etc/motd").read_text() == "lone\n"


# -- hardlink limits ---------------------------------------------------------------


def test_forty_thousand_identical_files_deploy_again_and_again(sr: Sysroot,
                                                             tmp_path: Path) -> None:
    """ext4 allows 65,000 links to one inode: identical files share one object, so the
    second deployment used to fail with EMLINK. Empty files are created, not linked;
    past the limit a file is copied."""
    tree = tmp_path / "tree"
    (tree / "usr/share/same").mkdir(parents=True)
    (tree / "usr/share/empty").mkdir(parents=True)
    for i in range(40_000):
        (tree / f"usr/share/same/f{i}").write_bytes(b"identical\n")
    for i in range(2_000):
        (tree / f"usr/share/empty/e{i}").touch()
    repo = sr.repo
    repo.commit_dir(tree, ref="t/many")
    first = sr.deploy("t/many")
    _boot(sr, first.id)
    second = sr.deploy("t/many", redeploy=True)
    third = sr.deploy("t/many", redeploy=True)  # replaces the pending one: links come and go
    for dep in (first, third):
        d = sr.deployment_path(dep)
        assert (d / "usr/share/same/f39999").read_bytes() == b"identical\n"
        assert (d / "usr/share/empty/e1999").stat().st_size == 0
        assert (d / "usr/share/empty/e1999").stat().st_nlink == 1
    assert second.id != third.id
    assert ops.fsck(repo).ok


# -- a live /etc ------------------------------------------------------------------


_CHURN = """
import os, sys, time
etc = sys.argv[1]
n = 0
while True:
    d = os.path.join(etc, f"tmp.{n % 7}.d")
    try:
        os.mkdir(d)
        for k in range(20):
            with open(os.path.join(d, f"x{k}"), "w") as fh:
                fh.write("t" * k)
        with open(os.path.join(etc, f".#lock{n % 5}"), "w") as fh:
            fh.write("x")
        for k in range(20):
            os.unlink(os.path.join(d, f"x{k}"))
        os.rmdir(d)
        os.unlink(os.path.join(etc, f".#lock{n % 5}"))
    except OSError:
        pass
    if n == 0:
        open(os.path.join(sys.argv[2]), "w").close()
    n += 1
"""


def test_etc_changing_during_the_merge(sr: Sysroot, tmp_path: Path) -> None:
    """A service (another process) creating and deleting files in /etc while deploy
    reads it: every deploy succeeds. (tests/unit/test_etcmerge.py makes the same race
    happen at exact points.)"""
    tree = make_tree(tmp_path / "tree", files=50)
    repo = sr.repo
    repo.commit_dir(tree, ref="t/e")
    booted = sr.deploy("t/e")
    _boot(sr, booted.id)
    etc = sr.deployment_path(booted) / "etc"
    started = tmp_path / "churn-started"
    churn = subprocess.Popen([sys.executable, "-c", _CHURN, str(etc), str(started)])
    try:
        deadline = time.monotonic() + 60
        while not started.exists():
            assert churn.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        for i in range(8):
            (tree / "usr/etc/motd").write_text(f"v{i}\n")
            repo.commit_dir(tree, ref="t/e")
            p = atoll("--sysroot", str(sr.root), "deploy", "t/e")
            assert p.returncode == 0, p.stderr
            dep = sr.deployments()[0]
            assert (sr.deployment_path(dep) / "etc/motd").read_text() == f"v{i}\n"
            assert (sr.deployment_path(dep) / "etc/hostname").exists()
    finally:
        churn.kill()
        churn.wait()


# -- a full disk ----------------------------------------------------------------


@contextlib.contextmanager
def small_tmpfs(path: Path, size: str) -> Iterator[Path]:
    path.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                   check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_disk_full_during_commit_and_deploy_import(tmp_path: Path) -> None:
    big = make_tree(tmp_path / "tree", files=20)
    (big / "usr/lib/blob").write_bytes(os.urandom(6 << 20))
    (big / "usr/lib/blob2").write_bytes(os.urandom(6 << 20))
    with small_tmpfs(tmp_path / "small", "8m") as small:
        sr = Sysroot(small / "host")
        sr.init()
        before = describe(small)
        p = atoll("--sysroot", str(sr.root), "store", "commit", str(big), "--ref", "t/big")
        assert p.returncode == 7, p.stderr
        err = [ln for ln in p.stderr.splitlines() if ln.startswith("error:")]
        assert len(err) == 1 and "disk full" in err[0] and "nothing was changed" in err[0]
        assert "store gc" in p.stderr  # says what to free
        after = describe(small)
        assert {k: v for k, v in after.items() if not k.endswith("/lock")} == {
            k: v for k, v in before.items() if not k.endswith("/lock")}
        assert os.listdir(sr.repo.tmp) == []
        assert stat.S_IMODE(os.stat(sr.repo.tmp).st_mode) == 0o700
        # deploy importing from another repository: the same
        other = Repo.create(tmp_path / "pub")
        other.commit_dir(big, ref="t/big")
        with pytest.raises(DiskFullError):
            sr.deploy("t/big", repo=other)
        assert os.listdir(sr.repo.tmp) == [] and list(sr.repo.iter_objects()) == []
        assert not [e for e in os.listdir(sr.deploy_dir) if e.startswith(".staging")]
        # with space, the same commands work
        (big / "usr/lib/blob2").unlink()
        assert atoll("--sysroot", str(sr.root), "store", "commit", str(big), "--ref",
                     "t/ok").returncode == 0


def test_disk_full_during_download(tmp_path: Path) -> None:
    from tests.integration.delivery_fixtures import serve_www
    from tests.integration.test_delivery_http import Env

    www = tmp_path / "www"
    www.mkdir()
    with serve_www(www) as server, small_tmpfs(tmp_path / "small", "3m") as small:
        env = Env(tmp_path, server)
        env.host = small / "host"
        env.commit_and_publish(1, big=5 << 20)
        env.add_remote()
        before = describe(small)
        p = atoll("--sysroot", str(env.host), "update", "download")
        assert p.returncode == 7, p.stderr
        assert "free" in p.stderr and "Traceback" not in p.stderr
        after = describe(small)
        # nothing half-written reached the store; the trusted metadata may be newer
        assert not (env.host / "atoll/repo/objects").exists() or not list(
            Repo.open(env.host / "atoll/repo").iter_objects())
        assert {k for k in after if "atoll/repo" in k and "/objects/" in k} == set()
        del before


# -- temp files -----------------------------------------------------------------


def test_temp_files_are_private_while_written(tmp_path: Path) -> None:
    """A copy of /etc/shadow in the store's tmp/ is never readable by others: tmp/ is
    0700 and every staged file is created 0600 before its content is written."""
    repo = Repo.create(tmp_path / "repo")
    assert stat.S_IMODE(os.stat(repo.tmp).st_mode) == 0o700
    os.chmod(repo.tmp, 0o755)  # a repository made by an older atoll
    repo = Repo.open(repo.path)
    assert stat.S_IMODE(os.stat(repo.tmp).st_mode) == 0o700
    secret = tmp_path / "shadow"
    secret.write_text("root:$6$hash:19000::::::\n")
    os.chmod(secret, 0o640)
    import atoll.store.repo as store_repo

    seen: list[int] = []
    real = store_repo._copy_hashing

    def spy(src: str, dest: str, h: object) -> int:
        n = real(src, dest, h)
        seen.append(stat.S_IMODE(os.lstat(dest).st_mode))  # whole, before its final mode
        return n

    old_umask = os.umask(0)
    try:
        store_repo._copy_hashing = spy  # type: ignore[assignment]
        tree = tmp_path / "tree"
        (tree / "usr/etc").mkdir(parents=True)
        os.link(secret, tree / "usr/etc/shadow")
        repo.commit_dir(tree, ref="t/s")
    finally:
        store_repo._copy_hashing = real  # type: ignore[assignment]
        os.umask(old_umask)
    assert seen == [0o600]
    oid = next(e.id for _, e in repo.walk(repo.read_commit(repo.refs()["t/s"]).tree)
               if e.name == "shadow")
    assert stat.S_IMODE(os.lstat(repo.object_path(oid, "file")).st_mode) == 0o640


def test_waiting_writer_does_not_lose_its_staging_to_a_cleaner(tmp_path: Path) -> None:
    """Another process's staging directory in tmp/ is never removed while it is in use,
    however old it is (it is flock'ed), and an abandoned one is."""
    repo = Repo.create(tmp_path / "repo")
    with repo.staging_dir("compose-") as mine:
        (mine / "rootfs").mkdir()
        old = time.time() - 3600
        os.utime(mine, (old, old))
        code = ("import sys; from atoll.store.repo import Repo; "
                "print(Repo.open(sys.argv[1]).clean_tmp(older_than=0))")
        out = subprocess.run([sys.executable, "-c", code, str(repo.path)], check=True,
                             capture_output=True, text=True).stdout
        assert out.strip() == "0" and (mine / "rootfs").is_dir()
    abandoned = repo.tmp / "txn-dead"
    abandoned.mkdir()
    os.utime(abandoned, (time.time() - 3600,) * 2)
    assert repo.clean_tmp() == 1 and not abandoned.exists()


def test_refused_inputs_raise_input_error_in_the_library(sr: Sysroot, tmp_path: Path) -> None:
    tree = _layout_tree(tmp_path / "t", etc="dir", usr_etc=True)
    with pytest.raises(InputError):
        sr.repo.commit_dir(tree, ref="x/y")


_SCRIBBLE = """
import os, sys, time
f = open(sys.argv[1], "r+b")
size = os.fstat(f.fileno()).st_size
open(sys.argv[2], "w").close()
i = 0
while True:
    f.seek((i * 7919 * 4096) % (size - 4096))
    f.write(os.urandom(4096))
    f.flush()
    i += 1
"""


def test_a_file_changing_while_committed_gives_objects_that_match_their_ids(
        sr: Sysroot, tmp_path: Path) -> None:
    """A log or a database written to during `store commit`: whatever is read is stored
    under the id of what was read, so the store stays whole."""
    tree = make_tree(tmp_path / "tree", files=20)
    live = tree / "usr/lib/live.db"
    live.write_bytes(os.urandom(64 << 20))
    started = tmp_path / "started"
    writer = subprocess.Popen([sys.executable, "-c", _SCRIBBLE, str(live), str(started)])
    try:
        deadline = time.monotonic() + 60
        while not started.exists():
            assert writer.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        for _ in range(3):
            p = atoll("--sysroot", str(sr.root), "store", "commit", str(tree), "--ref", "t/live")
            assert p.returncode == 0, p.stderr
    finally:
        writer.kill()
        writer.wait()
    assert ops.fsck(sr.repo).ok
    assert sr.deploy("t/live").commit == sr.repo.refs()["t/live"]


@pytest.mark.parametrize(("case", "message"), [
    ("usr-symlink", "/usr is not a directory"),
    ("usr-file", "/usr is not a directory"),
    ("usr-etc-file", "/usr/etc is not a directory"),
    ("usr-etc-symlink", "/usr/etc is a symlink"),
])
def test_etc_layouts_that_would_drop_something(sr: Sysroot, tmp_path: Path, case: str,
                                               message: str) -> None:
    tree = tmp_path / "tree"
    (tree / "etc").mkdir(parents=True)
    (tree / "etc/hostname").write_text("h\n")
    if case == "usr-symlink":
        os.symlink("/tmp", tree / "usr")
    elif case == "usr-file":
        (tree / "usr").write_text("payload\n")
    elif case == "usr-etc-file":
        (tree / "usr").mkdir()
        (tree / "usr/etc").write_text("f\n")
    else:
        (tree / "usr").mkdir()
        os.symlink("../etc", tree / "usr/etc")
    p = atoll("--sysroot", str(sr.root), "store", "commit", str(tree), "--ref", "t/x")
    assert p.returncode == 2 and message in p.stderr, p.stderr
    assert list(sr.repo.iter_objects()) == []


def test_trees_nested_too_deep_are_refused_at_commit(sr: Sysroot, tmp_path: Path) -> None:
    from atoll.store.tree import MAX_DEPTH

    tree = tmp_path / "tree"
    deep = tree / "usr/etc"
    deep.mkdir(parents=True)
    fd = os.open(deep, os.O_RDONLY)
    try:
        for _ in range(MAX_DEPTH + 5):  # deeper than PATH_MAX allows by name: use dir fds
            os.mkdir("d", dir_fd=fd)
            nfd = os.open("d", os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = nfd
    finally:
        os.close(fd)
    p = atoll("--sysroot", str(sr.root), "store", "commit", str(tree), "--ref", "t/deep")
    assert p.returncode == 2 and f"deeper than {MAX_DEPTH} levels" in p.stderr, p.stderr
    assert list(sr.repo.iter_objects()) == []


def _as_nobody(*args: str) -> subprocess.CompletedProcess[str]:
    p = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                        sys.executable, "-m", "atoll.cli", *args], capture_output=True, text=True,
                       cwd="/")
    assert "Traceback" not in p.stderr, p.stderr
    return p


def test_an_unprivileged_user_gets_one_line_and_a_hint(tmp_path: Path) -> None:
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="atoll-nobody-", dir="/tmp"))
    try:
        os.chmod(base, 0o755)
        tree = base / "tree"
        (tree / "usr/etc").mkdir(parents=True)
        (tree / "usr/etc/shadow").write_text("secret\n")
        os.chmod(tree / "usr/etc/shadow", 0o600)  # only root reads it
        repo = base / "repo"
        repo.mkdir()
        os.chown(repo, 65534, 65534)
        assert _as_nobody("store", "init", "--repo", str(repo)).returncode == 0
        p = _as_nobody("store", "commit", str(tree), "--ref", "t/x", "--repo", str(repo))
        assert p.returncode == 2 and "usr/etc/shadow: cannot read: permission denied" in p.stderr
        assert "as root" in p.stderr
        # a root-owned sysroot: every change says "run as root", nothing changes
        sr = Sysroot(base / "host")
        sr.init()
        before = describe(base / "host")
        for argv in (["deploy", "x"], ["rollback"], ["cleanup"], ["store", "gc"],
                     ["policy", "set", "--mode", "check"]):
            p = _as_nobody("--sysroot", str(sr.root), *argv)
            assert p.returncode == 7, (argv, p.stderr)
            assert "permission denied" in p.stderr and "run as root" in p.stderr, p.stderr
        assert describe(base / "host") == before
    finally:
        subprocess.run(["rm", "-rf", str(base)], check=False)


def test_refspecs_for_remote_refs_and_ancestors(sr: Sysroot, tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "tree", files=5)
    repo = sr.repo
    a = repo.commit_dir(tree, ref="t/a")
    (tree / "usr/etc/motd").write_text("b\n")
    b = repo.commit_dir(tree, ref="t/a")
    repo.set_ref("origin/site/db", b, namespace="remotes")
    assert repo.resolve("t/a~1") == a and repo.resolve("origin:site/db~1") == a
    assert repo.resolve_ref("origin:site/db") == (b, "origin:site/db")
    assert repo.resolve_ref("remotes/origin/site/db") == (b, "origin:site/db")
    assert repo.resolve_ref("site/db") == (b, "origin:site/db")  # a unique remote channel
    dep = sr.deploy("origin:site/db")
    assert dep.origin == "origin:site/db" and dep.commit == b
    p = atoll("--sysroot", str(sr.root), "deploy", "t/a~5")
    assert p.returncode == 2 and "has no parent" in p.stderr
    p = atoll("--sysroot", str(sr.root), "deploy", "nope:site/db")
    assert p.returncode == 2 and "REMOTE:CHANNEL" in p.stderr


def test_damaged_object_from_another_repository_is_named_there(sr: Sysroot,
                                                               tmp_path: Path) -> None:
    other = Repo.create(tmp_path / "build")
    tree = make_tree(tmp_path / "tree", files=5)
    cid = other.commit_dir(tree, ref="t/b")
    oid = next(e.id for _, e in other.walk(other.read_commit(cid).tree) if e.name == "f0001")
    other.object_path(oid, "file").write_text("damaged")
    p = atoll("--sysroot", str(sr.root), "deploy", "t/b", "--repo", str(other.path))
    assert p.returncode == 3
    assert f"store fsck --repo {other.path}" in p.stderr
    assert any(n.startswith(oid) for n in other.quarantined())
    assert not (tmp_path / "typo").exists()
    p = atoll("--sysroot", str(tmp_path / "typo"), "store", "commit", str(tree), "--ref", "x")
    assert p.returncode == 7 and not (tmp_path / "typo").exists()

"""/etc three-way merge decisions."""

from __future__ import annotations

import os

from atoll.deploy.etcmerge import Sig, plan_merge


def f(digest: str, mode: int = 0o644) -> Sig:
    return Sig("f", mode, 0, 0, digest)


D = Sig("d", 0o755, 0, 0, "")
LINK_OUT = Sig("l", 0o777, 0, 0, "/outside")


def test_untouched_file_takes_new_default() -> None:
    p = plan_merge({"a": f("1")}, {"a": f("1")}, {"a": f("2")})
    assert p.take_new == ("a",) and not p.conflicts


def test_host_change_kept_when_image_unchanged() -> None:
    p = plan_merge({"a": f("1")}, {"a": f("h")}, {"a": f("1")})
    assert p.keep_current == ("a",) and not p.conflicts


def test_both_changed_is_a_conflict_and_host_wins() -> None:
    p = plan_merge({"a": f("1")}, {"a": f("h")}, {"a": f("2")})
    assert p.keep_current == ("a",) and p.conflicts == ("a",)


def test_both_changed_the_same_way() -> None:
    p = plan_merge({"a": f("1")}, {"a": f("2")}, {"a": f("2")})
    assert p.keep_current == ("a",) and not p.conflicts


def test_mode_change_counts_as_change() -> None:
    p = plan_merge({"a": f("1")}, {"a": f("1", 0o600)}, {"a": f("2")})
    assert p.conflicts == ("a",)


def test_new_file_in_image_added_and_removed_file_removed() -> None:
    p = plan_merge({"gone": f("1")}, {"gone": f("1")}, {"new": f("n")})
    assert p.take_new == ("new",) and p.keep_current == ()


def test_host_deleted_file_stays_deleted_unless_image_changed_it() -> None:
    assert plan_merge({"a": f("1")}, {}, {"a": f("1")}).take_new == ()
    p = plan_merge({"a": f("1")}, {}, {"a": f("2")})
    assert p.conflicts == ("a",) and p.take_new == () and p.keep_current == ()


def test_host_file_keeps_directory_the_image_removed() -> None:
    old = {"d": D, "d/x": f("1")}
    cur = {"d": D, "d/x": f("1"), "d/mine": f("m")}
    p = plan_merge(old, cur, {})
    assert set(p.keep_current) == {"d", "d/mine"} and not p.take_new


def test_nothing_is_written_below_a_symlink() -> None:
    # the host replaced a directory by a symlink pointing outside; the image adds a file in it
    old = {"d": D}
    cur = {"d": LINK_OUT}
    new = {"d": D, "d/added": f("n")}
    p = plan_merge(old, cur, new)
    assert "d/added" not in p.take_new + p.keep_current
    assert "d/added" in p.conflicts


# -- a live /etc: paths that vanish between listing and reading (exact points) ---------


def test_scan_treats_a_file_deleted_while_listing_as_deleted(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import atoll.deploy.etcmerge as em

    (tmp_path / "keep").write_text("k")
    (tmp_path / "gone").write_text("g")
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir/inner").write_text("i")
    real = em._hash_at

    def vanish(dir_fd, name):  # type: ignore[no-untyped-def]
        if name in ("gone", "inner"):
            os.unlink(name, dir_fd=dir_fd)  # the service removed it after it was listed
        return real(dir_fd, name)

    monkeypatch.setattr(em, "_hash_at", vanish)
    sigs = em.scan(tmp_path)
    assert set(sigs) == {"keep", "dir"}


def test_apply_plan_skips_a_file_deleted_after_planning(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from atoll.deploy.etcmerge import apply_plan, scan

    cur, new, dest = tmp_path / "cur", tmp_path / "new", tmp_path / "dest"
    for d in (cur, new, dest):
        d.mkdir()
    (cur / "tmpfile").write_text("host's temp")
    (cur / "sub").mkdir()
    (cur / "sub/x").write_text("x")
    (new / "hostname").write_text("image")
    plan = plan_merge({}, scan(cur), scan(new))
    assert "tmpfile" in plan.keep_current and "sub/x" in plan.keep_current
    (cur / "tmpfile").unlink()  # gone between the plan and the copy
    (cur / "sub/x").unlink()
    (cur / "sub").rmdir()
    apply_plan(plan, cur, new, dest)
    assert sorted(os.listdir(dest)) == ["hostname"]


# -- properties (Hypothesis, derandomized: see tests/conftest.py) -----------------

from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_names = st.sampled_from(["a", "b", "c", "d/x", "d/y", "e"])
_sigs = st.one_of(st.none(), st.sampled_from([f("1"), f("2"), f("3"), f("1", 0o600),
                                               Sig("l", 0o777, 0, 0, "t")]))
_trees = st.dictionaries(_names, _sigs).map(lambda d: {k: v for k, v in d.items() if v})


def _with_dirs(tree: dict[str, Sig]) -> dict[str, Sig]:
    out = dict(tree)
    if any(p.startswith("d/") for p in tree):
        out["d"] = D
    return out


@given(_trees, _trees, _trees)
def test_merge_never_overwrites_what_the_host_changed(old: dict[str, Sig], cur: dict[str, Sig],
                                                     new: dict[str, Sig]) -> None:
    old, cur, new = _with_dirs(old), _with_dirs(cur), _with_dirs(new)
    p = plan_merge(old, cur, new)
    chosen = set(p.take_new) | set(p.keep_current)
    assert not set(p.take_new) & set(p.keep_current)
    for path in set(old) | set(cur) | set(new):
        if D in (old.get(path), cur.get(path), new.get(path)):
            continue  # directories are structure: recreated for a new file below them
        host_changed = cur.get(path) != old.get(path)
        image_changed = new.get(path) != old.get(path)
        if host_changed:
            # the host's version (or its deletion) wins; never the image's
            assert path not in p.take_new
            if path in cur and path in chosen:
                assert path in p.keep_current
        if host_changed and image_changed and cur.get(path) != new.get(path) and not (
                cur.get(path) == new.get(path) == D) and path != "d":
            assert path in p.conflicts
        if not host_changed and path in new and path not in p.conflicts:
            assert path in p.take_new or path in p.conflicts
    # what is written has its parent directory written too, as a directory
    for path in chosen:
        if "/" in path:
            parent = path.rsplit("/", 1)[0]
            assert parent in chosen
            src = new if parent in p.take_new else cur
            assert src[parent].kind == "d"


def test_scans_of_one_merge_read_a_shared_inode_once(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The defaults of two deployments share their unchanged files' inodes (hardlinks to
    one store object): with one digest cache, each is read once, and a changed file (a
    new inode) is still read and told apart."""
    import atoll.deploy.etcmerge as etcmerge

    store, old, new = tmp_path / "store", tmp_path / "old", tmp_path / "new"
    for d in (store, old, new):
        d.mkdir()
    (store / "same").write_text("unchanged\n")
    (store / "v1").write_text("version 1\n")
    (store / "v2").write_text("version 2\n")
    for root, conf in ((old, "v1"), (new, "v2")):
        os.link(store / "same", root / "same.conf")
        os.link(store / conf, root / "changed.conf")
    read: list[str] = []
    real = etcmerge._hash_at

    def counting(dir_fd, name):  # type: ignore[no-untyped-def]
        read.append(name)
        return real(dir_fd, name)

    monkeypatch.setattr(etcmerge, "_hash_at", counting)
    digests: etcmerge.Digests = {}
    a, b = etcmerge.scan(old, digests), etcmerge.scan(new, digests)
    assert sorted(read) == ["changed.conf", "changed.conf", "same.conf"]
    assert a["same.conf"] == b["same.conf"] and a["changed.conf"] != b["changed.conf"]
    plan = plan_merge(a, a, b)
    assert plan.take_new == ("changed.conf", "same.conf") and not plan.conflicts


def test_apply_plan_never_writes_through_a_symlink(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Even a plan that puts a file below a symlink (plan_merge never makes one; a
    user's swap during the copy can) writes nothing through it, outside the new /etc or
    inside it: the file is skipped, the rest copied."""
    from atoll.deploy.etcmerge import MergePlan, apply_plan

    cur, new, dest, outside = (tmp_path / n for n in ("cur", "new", "dest", "outside"))
    for d in (cur / "apt/conf.d", new / "a", new / "b", dest, outside):
        d.mkdir(parents=True)
    (cur / "ok").write_text("fine\n")
    os.symlink(outside, cur / "a")
    os.symlink("apt/conf.d", cur / "b")  # into another directory of the new /etc
    (new / "a/x").write_text("escaped\n")
    (new / "b/evil.conf").write_text("escaped\n")
    plan = MergePlan(take_new=("a/x", "b/evil.conf"),
                     keep_current=("a", "apt", "apt/conf.d", "b", "ok"), conflicts=())
    apply_plan(plan, cur, new, dest)
    assert list(outside.iterdir()) == []
    assert list((dest / "apt/conf.d").iterdir()) == []
    assert (dest / "ok").read_text() == "fine\n" and (dest / "b").is_symlink()


def test_a_symlink_is_copied_with_its_own_xattrs(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from atoll.deploy.etcmerge import MergePlan, apply_plan

    cur, new, dest = (tmp_path / n for n in ("cur", "new", "dest"))
    for d in (cur, new, dest):
        d.mkdir()
    (cur / "target").write_text("t\n")
    os.setxattr(cur / "target", "trusted.atoll", b"on the file")
    os.symlink("target", cur / "link")
    os.setxattr(cur / "link", "trusted.atoll", b"on the link", follow_symlinks=False)
    os.chown(cur / "link", 1000, 1001, follow_symlinks=False)
    apply_plan(MergePlan((), ("link", "target"), ()), cur, new, dest)
    assert os.readlink(dest / "link") == "target"
    assert os.getxattr(dest / "link", "trusted.atoll", follow_symlinks=False) == b"on the link"
    assert os.getxattr(dest / "target", "trusted.atoll") == b"on the file"
    st = os.lstat(dest / "link")
    assert (st.st_uid, st.st_gid) == (1000, 1001)


def test_a_directory_swapped_for_a_fifo_or_a_symlink_is_never_opened(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The scan opens a directory with O_DIRECTORY | O_NOFOLLOW: a FIFO swapped in is
    refused before it is opened (it would block), a symlink is not followed."""
    import time

    import pytest

    import atoll.deploy.etcmerge as em

    os.mkfifo(tmp_path / "was-a-dir")
    (tmp_path / "elsewhere").mkdir(mode=0o700)
    (tmp_path / "elsewhere/secret").write_text("s\n")
    os.symlink("elsewhere", tmp_path / "link")
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        t = time.monotonic()
        for name in ("was-a-dir", "link"):
            with pytest.raises(em._KindChanged):
                em._open_dir(fd, name)
        assert time.monotonic() - t < 5
    finally:
        os.close(fd)
    sigs = em.scan(tmp_path)
    assert sigs["link"].kind == "l" and "link/secret" not in sigs
    assert "was-a-dir" not in sigs and sigs["elsewhere/secret"].kind == "f"


def test_no_other_user_can_reach_into_the_new_etc_while_it_is_written(  # type: ignore[no-untyped-def]
        tmp_path, monkeypatch) -> None:
    """A user who owns a directory of /etc owns its copy too: the new /etc stays 0700
    (root's) until every entry is in, so nobody can swap an entry that root is about to
    chown for a symlink; then it gets usr/etc's mode."""
    import atoll.deploy.etcmerge as em

    cur, new = tmp_path / "cur", tmp_path / "new"
    (cur / "app").mkdir(parents=True)
    (cur / "app/conf").write_text("mine\n")
    os.chown(cur / "app", 1000, 1000)
    new.mkdir()
    os.chmod(new, 0o755)
    dest = tmp_path / "deploy/etc"
    dest.parent.mkdir()
    dest.mkdir(mode=0o700)
    modes: list[int] = []
    real = em._copy_one

    def watching(*args):  # type: ignore[no-untyped-def]
        modes.append(os.lstat(dest).st_mode & 0o7777)
        return real(*args)

    monkeypatch.setattr(em, "_copy_one", watching)
    plan = em.MergePlan(take_new=(), keep_current=("app", "app/conf"), conflicts=())
    em.apply_plan(plan, cur, new, dest)
    assert modes == [0o700, 0o700]
    assert os.lstat(dest).st_mode & 0o7777 == 0o755
    assert os.lstat(dest / "app").st_uid == 1000
    assert (dest / "app/conf").read_text() == "mine\n"


def test_a_source_swapped_for_a_symlink_copies_nothing_from_elsewhere(  # type: ignore[no-untyped-def]
        tmp_path, monkeypatch) -> None:
    """A user who owns a directory of /etc swaps a subdirectory for a symlink to a
    root-only directory while the merge copies: nothing below it is read through the
    symlink (a file's content, a link's target: they count as deleted), so no secret
    lands in the new /etc."""
    import atoll.deploy.etcmerge as em

    cur, new, dest, secret = (tmp_path / n for n in ("cur", "new", "dest", "secret"))
    (cur / "app/x").mkdir(parents=True)
    (cur / "app/x/shadow").write_text("the user's own file\n")
    os.chown(cur / "app", 1000, 1000)
    secret.mkdir(mode=0o700)
    (secret / "shadow").write_text("SECRET\n")
    os.chmod(secret / "shadow", 0o600)
    os.symlink("/root/SECRET-TOKEN", secret / "key")
    os.symlink("the user's own link", cur / "app/x/key")
    new.mkdir()
    dest.mkdir(mode=0o700)
    real = em._copy_one

    def racing(src_fd, dest_fd, rel):  # type: ignore[no-untyped-def]
        real(src_fd, dest_fd, rel)
        if rel == "app/x":  # copied; now the user swaps it
            os.rename(cur / "app/x", cur / "app/x.old")
            os.symlink(secret, cur / "app/x")

    monkeypatch.setattr(em, "_copy_one", racing)
    plan = em.MergePlan(take_new=(),
                        keep_current=("app", "app/x", "app/x/key", "app/x/shadow"),
                        conflicts=())
    em.apply_plan(plan, cur, new, dest)
    assert (dest / "app/x").is_dir() and not (dest / "app/x").is_symlink()
    assert sorted(os.listdir(dest / "app/x")) == []  # neither the file nor the link


def test_a_fifo_swapped_in_never_blocks_the_merge(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A FIFO where a regular file was listed is read as gone, at once (an open for
    reading would otherwise wait for a writer and hold the deploy lock forever)."""
    import pytest

    import atoll.deploy.etcmerge as em

    os.mkfifo(tmp_path / "conf")
    root_fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with pytest.raises(em._KindChanged):  # looked at again, never opened
            em._hash_at(root_fd, "conf")
        with pytest.raises(em._KindChanged):
            em._open_file(root_fd, "conf")
        em._copy_entry(root_fd, "conf", root_fd)  # skipped, as before
    finally:
        os.close(root_fd)
    assert sorted(os.listdir(tmp_path)) == ["conf"] and em.scan(tmp_path) == {}


def test_a_lease_on_a_host_file_never_fails_the_merge(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A user who holds a write lease on their file in /etc: the merge's read breaks it
    and waits for the holder to give way (as any open does; the kernel's
    lease-break-time bounds the wait), it does not fail the deploy."""
    import subprocess
    import sys

    import atoll.deploy.etcmerge as em

    (tmp_path / "conf").write_text("leased\n")
    holder = ("import fcntl, os, signal, sys, time\n"
              "fd = os.open(sys.argv[1], os.O_WRONLY)\n"
              "signal.signal(signal.SIGIO, lambda *a: (fcntl.fcntl(fd, fcntl.F_SETLEASE, "
              "fcntl.F_UNLCK), os._exit(0)))\n"
              "fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_WRLCK)\n"
              "print('held', flush=True)\n"
              "time.sleep(30)\n")
    proc = subprocess.Popen([sys.executable, "-c", holder, str(tmp_path / "conf")],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        sigs = em.scan(tmp_path)
        assert proc.wait(10) == 0  # the lease was broken, and given up
    finally:
        proc.kill()
    assert sigs["conf"].kind == "f"


def test_an_entry_that_changes_kind_while_read_is_read_again_not_dropped(  # type: ignore[no-untyped-def]
        tmp_path, monkeypatch) -> None:
    """A service replaces the symlink resolv.conf by a file between the merge's lstat
    and its readlink: the entry is looked at again and found as a file (a file that is
    there is never taken for deleted); one that never settles stops the merge."""
    import pytest

    import atoll.deploy.etcmerge as em
    from atoll.core.errors import HostStateError

    os.symlink("../run/resolv.conf", tmp_path / "resolv.conf")
    real = em._readlink
    swaps = {"n": 0}

    def racing(dir_fd, name):  # type: ignore[no-untyped-def]
        if name == "resolv.conf" and swaps["n"] == 0:
            swaps["n"] += 1
            os.unlink(tmp_path / "resolv.conf")
            (tmp_path / "resolv.conf").write_text("nameserver 10.0.0.1\n")
        return real(dir_fd, name)

    monkeypatch.setattr(em, "_readlink", racing)
    sigs = em.scan(tmp_path)
    assert sigs["resolv.conf"].kind == "f" and swaps["n"] == 1

    def never_settles(dir_fd, name):  # type: ignore[no-untyped-def]
        raise em._KindChanged(name)

    monkeypatch.setattr(em, "_hash_at", never_settles)
    with pytest.raises(HostStateError, match="kept changing"):
        em.scan(tmp_path)

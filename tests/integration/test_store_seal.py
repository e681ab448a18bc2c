"""Objects verified once, when they enter the store, then trusted by their seal
(atoll.store.seal): mtime 0 everywhere; fs-verity where the kernel has it (not on
this machine: tests/vm/test_dbhost.py shows it in the guest).

Deploy re-hashes only objects whose seal is broken; a write through a
deployment's hardlink breaks it, so the damage is refused at the next deploy;
``fsck`` re-hashes everything, seals what it found whole and decides whether
the store demands fs-verity."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from atoll.core.errors import CorruptObjectError
from atoll.deploy.sysroot import Sysroot
from atoll.store import Repo, ops, seal
from atoll.store.checkout import bad_objects


def _boot(sr: Sysroot, dep_id: str) -> None:
    (sr.root / "run/atoll").mkdir(parents=True, exist_ok=True)
    (sr.root / "run/atoll/booted").write_text(dep_id + "\n")


@pytest.fixture
def sr(tmp_path: Path) -> Sysroot:
    s = Sysroot(tmp_path / "host")
    s.init()
    tree = tmp_path / "tree"
    (tree / "usr/bin").mkdir(parents=True)
    (tree / "usr/lib").mkdir()
    for i in range(40):
        (tree / f"usr/lib/f{i}").write_bytes(os.urandom(3000 + i))
    (tree / "usr/bin/tool").write_bytes(b"#!/bin/sh\necho v1\n")
    os.chmod(tree / "usr/bin/tool", 0o755)
    os.symlink("../lib/f1", tree / "usr/bin/link")
    s.repo.commit_dir(tree, ref="t/app", version="1")
    return s


class Rehashes:
    """Counts Repo.verify_file calls (each is a re-hash of one object)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch):
        self.oids: list[str] = []
        real = Repo.verify_file

        def counting(repo: Repo, oid: str) -> bool:
            self.oids.append(oid)
            return real(repo, oid)

        monkeypatch.setattr(Repo, "verify_file", counting)


def _objects(repo: Repo) -> list[Path]:
    return sorted(repo.objects.glob("*/*.file"))


def _marked(p: Path) -> bool:
    """Whether the object file ``p`` carries its seal mtime."""
    oid = p.parent.name + p.name.removesuffix(".file")
    st = p.lstat()
    return st.st_mtime_ns == seal.seal_mtime_ns(oid, st)


def test_every_way_in_seals_objects(sr: Sysroot, tmp_path: Path) -> None:
    """commit (copy and link), local import (copy across filesystems) and pack
    import all leave file objects, symlinks too, with their seal mtime (0 s and
    nanoseconds of their own); checkouts of them, hardlinked or copied (empty
    files), have 0 s too."""
    objs = _objects(sr.repo)
    assert len(objs) == 42  # 40 files, the script, the symlink
    assert all(_marked(p) for p in objs)
    assert len({p.lstat().st_mtime_ns for p in objs}) == len(objs)  # one mark each
    linked = tmp_path / "throwaway"
    (linked / "usr").mkdir(parents=True)
    (linked / "usr/new").write_bytes(b"linked in\n")
    sr.repo.commit_dir(linked, ref="t/linked", link=True)
    assert int((linked / "usr/new").stat().st_mtime) == 0  # the object is this very inode
    other = Repo.create(Path("/dev/shm") / f"atoll-seal-{os.getpid()}")  # another filesystem
    try:
        other.pull_local(sr.repo, sr.repo.resolve("t/app"))
        assert all(_marked(p) for p in _objects(other))
    finally:
        subprocess.run(["rm", "-rf", str(other.path)], check=True)
    dep = sr.deploy("t/app")
    tree = sr.deployment_path(dep)
    for rel in ("usr/lib/f3", "usr/bin/tool", "usr/bin/link"):
        assert (tree / rel).lstat().st_mtime_ns < 1_000_000_000, rel
    assert not seal.sealed(os.fspath(objs[0]))  # this kernel has no fs-verity
    assert seal.seal(os.fspath(objs[0])) is None  # ...and says so, instead of failing


def test_deploy_rehashes_only_objects_whose_seal_is_broken(
        sr: Sysroot, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = Rehashes(monkeypatch)
    first = sr.deploy("t/app")
    assert seen.oids == []  # all sealed at commit: nothing re-hashed
    _boot(sr, first.id)
    obj = next(p for p in _objects(sr.repo)[5:] + _objects(sr.repo) if not p.is_symlink())
    os.utime(obj)  # touched (an older atoll's object, or a write that restored the bytes)
    sr.deploy("t/app", redeploy=True)
    oid = obj.parent.name + obj.name.split(".")[0]
    assert seen.oids == [oid]  # only that one, found whole...
    assert _marked(obj)  # ...and sealed again
    seen.oids.clear()
    sr.deploy("t/app", redeploy=True)
    assert seen.oids == []


def test_a_write_through_a_deployment_is_refused_at_the_next_deploy(sr: Sysroot) -> None:
    """/usr of a deployment that is not booted is writable: a write there writes the
    object. Its mtime moves, so the next deploy re-hashes it, refuses the commit
    and quarantines the object; an import from a remote then heals it."""
    dep = sr.deploy("t/app")
    _boot(sr, dep.id)
    victim = sr.deployment_path(dep) / "usr/bin/tool"
    with open(victim, "r+b") as fh:  # same size, other bytes
        fh.write(b"#!/bin/sh\necho XX\n")
    with pytest.raises(CorruptObjectError) as err:
        sr.deploy("t/app", redeploy=True)
    assert "1 damaged or missing object" in err.value.brief
    assert len(sr.repo.quarantined()) == 1
    assert [d.id for d in sr.deployments()] == [dep.id]  # nothing changed


def test_an_edit_that_resets_the_mtime_is_found_by_fsck(sr: Sysroot) -> None:
    """The seal is not proof against root resetting the mtime on purpose (only
    fs-verity is; docs/store-integrity.md): the scheduled fsck re-hashes all."""
    obj = next(p for p in _objects(sr.repo) if p.lstat().st_size > 100)
    with open(obj, "r+b") as fh:
        fh.write(b"rot")
    oid = obj.parent.name + obj.name.removesuffix(".file")
    ns = seal.seal_mtime_ns(oid, obj.lstat())
    os.utime(obj, ns=(ns, ns))
    assert sr.repo.is_sealed(oid)  # the mark is forged
    report = ops.fsck(sr.repo)
    assert not report.ok and len(report.corrupt) == 1
    assert report.verity is False and not sr.repo.sealing


def test_a_store_from_an_older_atoll_is_sealed_by_its_first_deploy(
        sr: Sysroot, monkeypatch: pytest.MonkeyPatch) -> None:
    for p in _objects(sr.repo):
        os.utime(p, (1_700_000_000, 1_700_000_000), follow_symlinks=False)
    seen = Rehashes(monkeypatch)
    sr.deploy("t/app")
    assert len(seen.oids) == 42
    seen.oids.clear()
    sr.deploy("t/app", redeploy=True)
    assert seen.oids == []


def test_a_sealing_store_without_fs_verity_rehashes_everything_until_fsck(
        sr: Sysroot, monkeypatch: pytest.MonkeyPatch) -> None:
    """A store marked sealing (e.g. copied from a disk with fs-verity to one
    without) trusts no object without fs-verity; fsck then drops the mark."""
    sr.repo.set_sealing(True)
    seen = Rehashes(monkeypatch)
    assert bad_objects(sr.repo, sr.repo.resolve("t/app")) == []
    assert len(seen.oids) == 42  # every object (symlinks on a sealing store are always read)
    report = ops.fsck(sr.repo)
    assert report.ok and report.verity is False
    assert not Repo.open(sr.repo.path).sealing


def test_killed_while_sealing_again_the_next_deploy_finishes(sr: Sysroot) -> None:
    """Killed between re-hashing an object and sealing it: the object is untouched
    (still unsealed), so the next deploy re-hashes it again and succeeds."""
    obj = next(p for p in _objects(sr.repo)[7:] + _objects(sr.repo) if not p.is_symlink())
    os.utime(obj)
    args = [sys.executable, "-m", "atoll.cli", "-q", "--sysroot", str(sr.root), "deploy",
            "t/app"]
    p = subprocess.run(args, env=dict(os.environ, ATOLL_CRASH_AT="seal:verified"),
                       capture_output=True, text=True)
    assert p.returncode == -signal.SIGKILL, p.stderr
    assert not _marked(obj)
    p = subprocess.run(args, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert _marked(obj)
    assert ops.fsck(sr.repo).ok


def test_copies_preserving_times_and_mode_changes_break_the_seal(
        sr: Sysroot, monkeypatch: pytest.MonkeyPatch) -> None:
    """`cp -p` of one checked-out file over another keeps an mtime of 0 s, but not
    the target object's mark; a chmod or chown moves the mark too. Either way the
    next deploy re-hashes that object and refuses it (quarantined)."""
    dep = sr.deploy("t/app")
    tree = sr.deployment_path(dep)
    small = sorted((p for p in (tree / "usr/lib").iterdir() if p.is_file()),
                   key=lambda p: p.name)
    a, b = small[0], small[1]
    subprocess.run(["cp", "-p", "--", str(a), str(b)], check=True)  # b's inode is b's object
    with pytest.raises(CorruptObjectError):
        sr.deploy("t/app", redeploy=True)
    assert len(sr.repo.quarantined()) == 1
    c = small[2]
    oid_c = next(o for o in _objects(sr.repo) if o.lstat().st_ino == c.lstat().st_ino)
    os.chmod(c, 0o4755)
    assert not sr.repo.is_sealed(oid_c.parent.name + oid_c.name.removesuffix(".file"))


def test_fsck_result_reaches_status_and_checkmk(sr: Sysroot) -> None:
    """What the scheduled fsck found is in `atoll status --json` and in the Checkmk
    local check: OK when whole, CRIT with damage (recorded even when --repair
    cannot fetch: no remote here); a damaged fsck.json is a named problem."""
    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "atoll.cli", "--sysroot", str(sr.root),
                               *args], capture_output=True, text=True)

    assert cli("-q", "store", "fsck").returncode == 0
    status = json.loads(cli("status", "--json").stdout)
    assert status["fsck"]["ok"] is True and status["fsck"]["checked"] >= 42
    assert '0 "atoll store fsck"' in cli("checkmk-agent").stdout
    obj = next(p for p in _objects(sr.repo) if p.lstat().st_size > 100)
    with open(obj, "r+b") as fh:
        fh.write(b"rot")
    assert cli("-q", "store", "fsck", "--repair").returncode != 0
    status = json.loads(cli("status", "--json").stdout)
    assert status["fsck"]["ok"] is False and status["fsck"]["corrupt"] == 1
    assert '2 "atoll store fsck"' in cli("checkmk-agent").stdout
    (sr.state / "fsck.json").write_text('{"time": 5}')
    status = json.loads(cli("status", "--json").stdout)
    assert status["fsck"] is None
    assert any(p["file"].endswith("fsck.json") for p in status["problems"])


def test_a_local_import_of_a_missing_object_is_a_clear_error(sr: Sysroot,
                                                             tmp_path: Path) -> None:
    """`deploy --repo` from a store that lost an object (quarantined there): a store
    error naming the object and the repair, exit 3 or 7 never with a traceback."""
    src = sr.repo
    obj = next(p for p in _objects(src) if not p.is_symlink() and p.lstat().st_size > 0)
    os.unlink(obj)
    other = tmp_path / "other"
    p = subprocess.run([sys.executable, "-m", "atoll.cli", "-q", "--sysroot", str(other),
                        "init"], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    p = subprocess.run([sys.executable, "-m", "atoll.cli", "--sysroot", str(other), "deploy",
                        "t/app", "--repo", str(src.path)], capture_output=True, text=True)
    assert p.returncode != 0 and "Traceback" not in p.stderr
    assert "is missing" in p.stderr and "No such file" not in p.stderr, p.stderr

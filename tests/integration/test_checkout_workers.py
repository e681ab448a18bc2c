"""A checkout split over worker processes (atoll.core.forkwork): the same tree as one
process makes, every damaged object named, nothing left behind when it fails or is
killed."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from atoll.core.errors import CorruptObjectError
from atoll.store.checkout import checkout
from atoll.store.repo import Repo
from tests.trees import describe, make_tree

ROOT = Path(__file__).resolve().parents[2]


def big_tree(root: Path, *, size: int = 1) -> Path:
    """make_tree's cases plus 60 package-like directories of 40 files each, some
    nested, with their own modes and owners: enough to be split into units."""
    make_tree(root)
    for p in range(60):
        d = root / "usr/share" / f"pkg{p:02d}"
        (d / "sub").mkdir(parents=True)
        for i in range(40):
            (d / ("sub" if i % 4 == 0 else ".") / f"f{i:02d}").write_bytes(
                f"{p}:{i}\n".encode() * (size * (1 + i % 5)))
        os.chmod(d / "sub", 0o750)
        os.chown(d / "sub", 0, 100 + p)
    return root


@pytest.fixture
def repo(tmp_path: Path) -> Repo:
    return Repo.create(tmp_path / "repo")


def test_the_workers_make_the_same_tree_as_one_process(repo: Repo, tmp_path: Path,
                                                       forks: list[int]) -> None:
    tree = big_tree(tmp_path / "tree")
    cid = repo.commit_dir(tree)
    checkout(repo, cid, tmp_path / "one", workers=1)
    assert forks == []
    checkout(repo, cid, tmp_path / "three", workers=3)
    assert len(forks) == 2
    assert describe(tmp_path / "three") == describe(tmp_path / "one") == describe(tree)
    # every file is a hardlink of its object, whichever process made it
    some = tmp_path / "three/usr/share/pkg59/f39"
    assert os.lstat(some).st_ino == os.lstat(tmp_path / "one/usr/share/pkg59/f39").st_ino


def test_every_damaged_object_is_named_whichever_worker_found_it(repo: Repo,
                                                                 tmp_path: Path) -> None:
    tree = big_tree(tmp_path / "tree")
    cid = repo.commit_dir(tree)
    paths = {p: e.id for p, e in repo.walk(repo.read_commit(cid).tree) if not e.is_dir}
    victims = [paths[p] for p in ("usr/share/pkg03/f01", "usr/share/pkg41/sub/f08",
                                  "usr/lib/data/f0007")]
    for oid in victims:
        obj = repo.object_path(oid, "file")
        obj.write_bytes(b"X" + obj.read_bytes()[1:])
    with pytest.raises(CorruptObjectError) as info:
        checkout(repo, cid, tmp_path / "out", workers=3)
    assert info.value.details is not None
    assert sorted(info.value.details.splitlines()) == sorted(f"file {v}" for v in victims)
    assert not (tmp_path / "out").exists()  # removed again: a checkout is whole or absent
    assert sorted(q.split(".")[0] for q in repo.quarantined()) == sorted(victims)


KILLED = """
import sys
from pathlib import Path
from atoll.store.checkout import checkout
from atoll.store.repo import Repo
checkout(Repo.open(Path(sys.argv[1])), sys.argv[2], Path(sys.argv[3]), workers=3)
"""


def _children(pid: int) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                status = (d / "status").read_text()
            except OSError:
                continue
            if f"\nPPid:\t{pid}\n" in status:
                out.append(int(d.name))
    return out


def test_workers_die_with_a_killed_checkout(repo: Repo, tmp_path: Path) -> None:
    """SIGKILL to the command while its workers run: no worker goes on writing."""
    tree = big_tree(tmp_path / "tree", size=2000)  # ~2,400 files of 4-40 kB
    cid = repo.commit_dir(tree)
    for p in (repo.path / "objects").glob("*/*.file"):  # unsealed: each is re-hashed
        os.utime(p, ns=(10**9, 10**9), follow_symlinks=False)
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}:{ROOT}"}
    proc = subprocess.Popen([sys.executable, "-c", KILLED, str(repo.path), cid,
                             str(tmp_path / "out")], env=env)
    deadline = time.monotonic() + 60
    workers: list[int] = []
    while not workers and proc.poll() is None and time.monotonic() < deadline:
        workers = _children(proc.pid)
    assert workers, "the checkout ended before its workers were seen"
    # a worker asks for its death signal first, then closes the descriptors it was not
    # given, the store's lock among them: once that is closed, it has asked (stopped
    # before, it would only ask, find its parent gone and leave, when continued)
    lock = str(repo.path / "lock")
    while time.monotonic() < deadline and any(lock in _fds(w) for w in workers):
        time.sleep(0.001)
    assert proc.poll() is None, "the checkout ended before its workers were stopped"
    for w in workers:  # stopped, they could not finish on their own
        os.kill(w, signal.SIGSTOP)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 10
    try:
        while time.monotonic() < deadline and any(_alive(w) for w in workers):
            time.sleep(0.05)
        assert [w for w in workers if _alive(w)] == []
    finally:
        for w in workers:
            if _alive(w):
                os.kill(w, signal.SIGKILL)


def _fds(pid: int) -> list[str]:
    """What the open descriptors of ``pid`` name."""
    out = []
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(FileNotFoundError):
                out.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
    except FileNotFoundError:
        pass
    return out


def _alive(pid: int) -> bool:
    try:
        return "\nState:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False

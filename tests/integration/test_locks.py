"""One writer at a time: real `atoll` processes racing on one sysroot and one store.

Every round starts several commands at once (deploy, stage, rollback, pin,
undeploy, cleanup, store gc, store commit); afterwards the boot pointer lists
only complete deployments, every deployment has its ref (and only those),
fsck is clean, and no command printed a traceback. A second command waits
for the first, or with ``--no-wait`` fails at once with exit code 75.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

from atoll.core.lock import FileLock
from atoll.deploy.sysroot import Sysroot
from atoll.store import ops
from tests.trees import describe, make_tree

ROUNDS = 12
# exit codes a racing command may legitimately end with: 0, bad input (an index that
# another command removed), host state (nothing to roll back to / nothing prepared)
ALLOWED = {0, 2, 7}


def _spawn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "atoll.cli", "-q", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


# What atolld does in-process (stage after a download, finalize at apply), as its own process.
_AGENT = """
import sys
from atoll.core.errors import AtollError
from atoll.deploy.sysroot import Sysroot
sr = Sysroot(sys.argv[1])
try:
    sr.prepare(sys.argv[3]) if sys.argv[2] == "prepare" else sr.finalize()
except AtollError as exc:
    print(exc.brief, file=sys.stderr)
    sys.exit(7)
"""


def _agent(root: str, action: str, rev: str = "") -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", _AGENT, root, action, rev],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _boot(sr: Sysroot, dep_id: str) -> None:
    (sr.root / "run/atoll").mkdir(parents=True, exist_ok=True)
    (sr.root / "run/atoll/booted").write_text(dep_id + "\n")


def _check(sr: Sysroot, trees: dict[str, dict[str, tuple[object, ...]]]) -> None:
    listed = sr.deployments()
    assert listed, "the boot pointer lists nothing"
    for d in listed:
        assert sr.deployment_path(d).is_dir(), f"{d.id} is listed but gone"
        assert describe(sr.deployment_path(d) / "usr") == trees[d.commit], f"{d.id} incomplete"
    deploy_refs = set(sr.repo.refs("deploy"))
    assert {d.id for d in listed} <= deploy_refs, "a listed deployment lost its ref"
    prepared = sr.prepared()
    if prepared is not None:
        assert prepared.id in deploy_refs
        assert describe(sr.deployment_path(prepared) / "usr") == trees[prepared.commit]
    report = ops.fsck(sr.repo)
    assert report.ok, report.to_json()


@pytest.fixture
def host(tmp_path: Path) -> tuple[Sysroot, dict[str, dict[str, tuple[object, ...]]], Path]:
    sr = Sysroot(tmp_path / "host")
    sr.init()
    trees: dict[str, dict[str, tuple[object, ...]]] = {}
    for v in ("a", "b", "c"):
        tree = make_tree(tmp_path / f"tree-{v}", files=400, variant=v)
        cid = sr.repo.commit_dir(tree, ref=f"site/{v}", version=v)
        trees[cid] = describe(tree / "usr")
    first = sr.deploy("site/a")
    _boot(sr, first.id)
    return sr, trees, tmp_path


def test_racing_commands_leave_a_consistent_sysroot(
        host: tuple[Sysroot, dict[str, dict[str, tuple[object, ...]]], Path]) -> None:
    sr, trees, tmp = host
    root = str(sr.root)
    rnd = random.Random(12)
    extra = make_tree(tmp / "extra", files=200, variant="x")
    outcomes: dict[str, set[int]] = {}
    for rnd_no in range(ROUNDS):
        (extra / "usr/lib/data/round").write_text(f"{rnd_no}\n")
        cmds = [
            ("deploy", ["--sysroot", root, "deploy", rnd.choice(["site/a", "site/b", "site/c"])]),
            ("deploy", ["--sysroot", root, "deploy", rnd.choice(["site/b", "site/c"])]),
            ("rollback", ["--sysroot", root, "rollback"]),
            ("pin", ["--sysroot", root, "pin", "1"]),
            ("undeploy", ["--sysroot", root, "undeploy", str(rnd.choice([1, 2]))]),
            ("cleanup", ["--sysroot", root, "cleanup"]),
            ("gc", ["--sysroot", root, "store", "gc"]),
            ("commit", ["--sysroot", root, "store", "commit", str(extra), "--ref",
                        f"scratch/r{rnd_no % 3}"]),
            ("refs-delete", ["--sysroot", root, "store", "refs", "--delete",
                             f"scratch/r{(rnd_no + 1) % 3}"]),
        ]
        rnd.shuffle(cmds)
        procs = [(name, _spawn(*argv)) for name, argv in cmds]
        procs.insert(rnd.randrange(len(procs)), ("prepare", _agent(
            root, "prepare", rnd.choice(["site/b", "site/c"]))))
        procs.insert(rnd.randrange(len(procs)), ("finalize", _agent(root, "finalize")))
        for name, proc in procs:
            _, err = proc.communicate(timeout=300)
            assert "Traceback" not in err, f"{name}: {err}"
            assert proc.returncode in ALLOWED, f"{name} exited {proc.returncode}: {err}"
            outcomes.setdefault(name, set()).add(proc.returncode)
        _check(sr, trees | {c: describe(extra / "usr") for c in
                            set(sr.repo.refs("heads").values()) - set(trees)})
        # the booted deployment never goes away, whatever raced
        assert sr.deployment_path(sr.booted_id() or "").is_dir()
    # the commands really ran (not all refused): deploys, gc and commits succeeded
    assert 0 in outcomes["deploy"] and 0 in outcomes["gc"] and 0 in outcomes["commit"]


def test_second_command_waits_then_no_wait_fails_at_once(
        host: tuple[Sysroot, dict[str, dict[str, tuple[object, ...]]], Path]) -> None:
    sr, _, _ = host
    root = str(sr.root)
    with FileLock(sr.atoll / "lock", "test").exclusive():
        t0 = time.monotonic()
        p = subprocess.run([sys.executable, "-m", "atoll.cli", "--sysroot", root, "deploy",
                            "site/b", "--lock-timeout", "1"], capture_output=True, text=True)
        waited = time.monotonic() - t0
        assert p.returncode == 75, p.stderr
        # it said once whom it waits for (this test's pid), and then gave up
        assert f"held by pid {os.getpid()}" in p.stderr
        assert p.stderr.count("waiting for the lock") == 1
        assert waited >= 1.0
        p = subprocess.run([sys.executable, "-m", "atoll.cli", "--json", "--sysroot", root,
                            "--no-wait", "rollback"], capture_output=True, text=True)
        assert p.returncode == 75, p.stderr
        err = json.loads(p.stdout)
        assert err["error"] == "BusyError" and str(os.getpid()) in err["brief"]
        assert "waiting" not in p.stderr
    # released: the same command now works, and nothing changed meanwhile
    before = [d.id for d in sr.deployments()]
    p = subprocess.run([sys.executable, "-m", "atoll.cli", "--sysroot", root, "--no-wait",
                        "deploy", "site/b"], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert [d.id for d in sr.deployments()][1:] == before


def test_gc_waits_for_a_writer_and_keeps_its_objects(tmp_path: Path) -> None:
    sr = Sysroot(tmp_path / "host")
    sr.init()
    repo = sr.repo
    lock = FileLock(repo.path / "lock", "test")
    with lock.shared():  # a writer (this test) is importing
        p = subprocess.run([sys.executable, "-m", "atoll.cli", "--sysroot", str(sr.root),
                            "--lock-timeout", "0.5", "store", "gc"], capture_output=True,
                           text=True)
        assert p.returncode == 75 and "repository" in p.stderr, p.stderr
    # writers and gc racing: commits of new refs while gc runs, many times
    trees = [make_tree(tmp_path / f"t{i}", files=300, variant=str(i)) for i in range(4)]
    for i in range(6):
        procs = [_spawn("--sysroot", str(sr.root), "store", "commit", str(trees[(i + k) % 4]),
                        "--ref", f"r/{k}") for k in range(3)]
        procs.append(_spawn("--sysroot", str(sr.root), "store", "gc"))
        for proc in procs:
            _, err = proc.communicate(timeout=300)
            assert proc.returncode == 0 and "Traceback" not in err, err
        report = ops.fsck(repo)
        assert report.ok, report.to_json()
        for name in repo.refs():
            assert repo.is_complete(repo.refs()[name])

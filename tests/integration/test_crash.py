"""Crash tests: SIGKILL during commit, download and deploy, then a simulated power cut
(tests/integration/powerloss.py), then the ordinary next command.

After every point: the next command succeeds, the store is whole (fsck clean),
refs point at complete commits, and a deployment boots the old or the new tree,
never a mix. CI runs a seeded sample (ATOLL_CRASH_POINTS, default 6 points per
command); `python -m bench.crash_matrix` runs the full matrix.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from atoll.deploy.sysroot import Sysroot
from atoll.store import ops
from atoll.store.repo import Repo
from tests.integration.delivery_fixtures import serve_www
from tests.integration.powerloss import power_cut
from tests.integration.test_delivery_http import Env
from tests.trees import describe, make_tree

POINTS = int(os.environ.get("ATOLL_CRASH_POINTS", "6"))
SEED = int(os.environ.get("ATOLL_CRASH_SEED", "12"))


def _run(args: list[str], trace: Path, crash_at: str | None = None) -> subprocess.Popen[str]:
    """Start ``atoll ARGS`` tracing its durability points; what existed before is durable
    (synced here, and marked so at the head of the trace). ``crash_at``: the named step
    (atoll.core.faults) where it kills itself."""
    os.sync()
    with open(trace, "a") as fh:
        fh.write(f"{time.time_ns()} syncfs-end /\n")
    env = dict(os.environ, ATOLL_TRACE_SYNC=str(trace))
    if crash_at:
        env["ATOLL_CRASH_AT"] = crash_at
    return subprocess.Popen([sys.executable, "-m", "atoll.cli", "-q", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _ok(args: list[str]) -> None:
    p = subprocess.run([sys.executable, "-m", "atoll.cli", "-q", *args], capture_output=True,
                       text=True)
    assert p.returncode == 0 and "Traceback" not in p.stderr, p.stderr


def _timed(args: list[str], trace: Path) -> float:
    t0 = time.monotonic()
    p = _run(args, trace)
    _, err = p.communicate()
    assert p.returncode == 0, err
    return time.monotonic() - t0


def _points(duration: float, rnd: random.Random,
            steps: tuple[str, ...]) -> Iterator[str | float]:
    """Every named step (atoll.core.faults), then kill delays spread over the whole run
    (python start-up included), jittered."""
    yield from steps
    for i in range(POINTS):
        frac = (i + rnd.random()) / POINTS
        yield duration * (0.1 + 0.95 * frac)


def _crash(args: list[str], trace: Path, point: str | float) -> None:
    """Run ``args`` until it is killed at ``point`` (a step name, or seconds)."""
    if isinstance(point, str):
        proc = _run(args, trace, crash_at=point)
        _, err = proc.communicate()
        assert proc.returncode == -signal.SIGKILL, f"{point} was not reached: {err}"
        return
    proc = _run(args, trace)
    time.sleep(point)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def _store_whole(repo: Repo) -> None:
    report = ops.fsck(repo)
    assert report.ok, report.to_json()


def test_commit_killed_and_power_cut(tmp_path: Path) -> None:
    rnd = random.Random(SEED)
    tree = make_tree(tmp_path / "tree", files=3000)
    (tree / "usr/lib/big").write_bytes(random.Random(1).randbytes(8 << 20))
    repo = Repo.create(tmp_path / "repo")
    expect = describe(tree / "usr")
    trace = tmp_path / "trace"
    args = ["store", "commit", str(tree), "--ref", "site/base", "--repo", str(repo.path)]
    duration = _timed(args, trace)
    _ok(["store", "refs", "--delete", "site/base", "--repo", str(repo.path)])
    _ok(["store", "gc", "--repo", str(repo.path)])
    damaged_any = 0
    steps = ("txn:staged", "txn:synced", "txn:placed", "commit:ref")
    for point in _points(duration, rnd, steps):
        trace.unlink(missing_ok=True)
        _crash(args, trace, point)
        damaged_any += len(power_cut(trace, [repo.path], rnd))
        # the next ordinary command: the same commit again
        _ok(args)
        _store_whole(repo)
        cid = repo.refs()["site/base"]
        from atoll.store.checkout import checkout

        out = tmp_path / "out"
        checkout(repo, cid, out)
        assert describe(out / "usr") == expect
        subprocess.run(["rm", "-rf", str(out)], check=True)
        # back to an empty store for the next point
        _ok(["store", "refs", "--delete", "site/base", "--repo", str(repo.path)])
        _ok(["store", "gc", "--repo", str(repo.path)])
    assert damaged_any, "no kill left anything unsynced: the points missed the writes"


@pytest.fixture
def http(tmp_path: Path) -> Iterator[Env]:
    www = tmp_path / "www"
    www.mkdir()
    with serve_www(www) as server:
        yield Env(tmp_path, server)


def test_download_killed_and_power_cut(http: Env, tmp_path: Path) -> None:
    env = http
    rnd = random.Random(SEED + 1)
    v1 = env.commit_and_publish(1, big=3 << 20)
    env.add_remote()
    assert env.update("download") == 0
    v2 = env.commit_and_publish(2, big=6 << 20)
    host_repo = env.host / "atoll/repo"
    trace = tmp_path / "trace"
    args = ["--sysroot", str(env.host), "update", "download"]
    # a fresh host copy per point: the host before the download
    pristine = tmp_path / "pristine"
    subprocess.run(["cp", "-a", str(env.host), str(pristine)], check=True)
    duration = _timed(args, trace)
    damaged_any = 0
    steps = ("download:fetched", "txn:staged", "txn:synced", "txn:placed")
    for i, point in enumerate(_points(duration, rnd, steps + steps)):
        subprocess.run(["rm", "-rf", str(env.host)], check=True)
        subprocess.run(["cp", "-a", str(pristine), str(env.host)], check=True)
        trace.unlink(missing_ok=True)
        # half the points on a whole pack (no delta: the host lost v1's objects), half delta
        if i % 2:
            _ok(["store", "refs", "--repo", str(host_repo), "--delete",
                 "remotes/origin/site/base"])
            _ok(["store", "gc", "--repo", str(host_repo)])
        _crash(args, trace, point)
        damaged_any += len(power_cut(trace, [env.host / "atoll"], rnd))
        _ok(args)  # the same command again reaches a deployable state
        repo = Repo.open(host_repo)
        _store_whole(repo)
        assert repo.refs("remotes")["origin/site/base"] == v2
        assert repo.is_complete(v2)
        sr = Sysroot(env.host)
        sr.init()
        assert sr.deploy(v2).commit == v2
    assert damaged_any
    del v1


def test_deploy_killed_and_power_cut(tmp_path: Path) -> None:
    rnd = random.Random(SEED + 2)
    sr = Sysroot(tmp_path / "host")
    sr.init()
    repo = sr.repo
    tree = make_tree(tmp_path / "tree", files=3000)
    c1 = repo.commit_dir(tree, ref="site/base", version="1")
    trees = {c1: describe(tree / "usr")}
    first = sr.deploy("site/base")
    (sr.root / "run/atoll").mkdir(parents=True, exist_ok=True)
    (sr.root / "run/atoll/booted").write_text(first.id)
    (tree / "usr/etc/motd").write_text("v2\n")
    (tree / "usr/lib/data/f0001").write_text("v2\n")
    c2 = repo.commit_dir(tree, ref="site/base", version="2")
    trees[c2] = describe(tree / "usr")
    trace = tmp_path / "trace"
    args = ["--sysroot", str(sr.root), "deploy", "site/base"]
    duration = _timed(args, trace)
    sr.undeploy(0)
    for point in _points(duration, rnd, ("deploy:checkout", "deploy:loader")):
        trace.unlink(missing_ok=True)
        _crash(args, trace, point)
        power_cut(trace, [sr.root / "atoll", sr.root / "boot"], rnd)
        # whatever the cut left, the boot pointer names complete deployments
        listed = sr.deployments()
        assert first.id in [d.id for d in listed]
        for d in listed:
            assert describe(sr.deployment_path(d) / "usr") == trees[d.commit]
            assert (sr.deployment_path(d) / "etc/motd").read_text() in ("motd a\n", "v2\n")
        _ok(args)
        _store_whole(repo)
        new = sr.deployments()[0]
        assert new.commit == c2 and describe(sr.deployment_path(new) / "usr") == trees[c2]
        assert (sr.deployment_path(new) / "etc/motd").read_text() == "v2\n"
        sr.undeploy(0)

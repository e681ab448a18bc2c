"""A deploy killed (SIGKILL) at any point leaves the sysroot booting the old deployment.

The deploy runs as a real `atoll` process. It is killed just before each of its
durability points in turn (after the checkout, the rename, the /etc merge, the
loader write, the swap: see :class:`DurabilityPoints`), which lands every kill
at a known place however loaded the machine is; then at moments spread over a
whole run, which lands them wherever the scheduler puts them (mid-checkout
too). After each kill the boot pointer must name a complete configuration
whose deployments all exist and are complete; the next deploy cleans up
whatever was left.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from atoll.deploy.sysroot import Sysroot
from tests.trees import describe, make_tree

POINTS = 24


def _start(sysroot: Path, env: Mapping[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "atoll.cli", "-q", "--sysroot", str(sysroot), "deploy",
         "site/base"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)


class DurabilityPoints:
    """Hold a command before each of its durability points, and let it pass one at a time.

    The command runs with ``ATOLL_TRACE_SYNC`` naming a FIFO (core/fsutil.py:
    each durability point opens the trace to note itself), and opening a FIFO
    for writing waits for a reader: the command stops there until the test
    reads. Before reading, the trace name is moved to a fresh FIFO, so the
    command's next point waits again: it cannot slip past it, whatever the
    scheduler does. No sleep decides where a kill lands.
    """

    def __init__(self, work: Path):
        work.mkdir()
        self.work, self.trace = work, work / "trace"
        self.passed: list[str] = []  # the points passed, as "<event> <path>"
        self._made = 0
        self._fifo = self._new_fifo()

    def _new_fifo(self) -> Path:
        """A fresh FIFO, which the trace name now points at (the old one keeps its own)."""
        fifo = self.work / f"point.{self._made}"
        self._made += 1
        os.mkfifo(fifo)
        tmp = self.work / "trace.new"
        os.link(fifo, tmp)
        os.replace(tmp, self.trace)
        return fifo

    def env(self) -> dict[str, str]:
        return dict(os.environ, ATOLL_TRACE_SYNC=str(self.trace))

    def wait_held(self, proc: subprocess.Popen[bytes], timeout: float = 120) -> bool:
        """Wait until ``proc`` is held at a point (True) or has exited (False)."""
        deadline = time.monotonic() + timeout
        while proc.poll() is None:
            for task in Path(f"/proc/{proc.pid}/task").glob("*"):
                try:
                    if (task / "wchan").read_text() in ("wait_for_partner", "fifo_open"):
                        return True
                except OSError:
                    pass  # the thread ended meanwhile
            assert time.monotonic() < deadline, (
                f"not held at a durability point within {timeout}s (does /proc/PID/wchan "
                "name kernel functions on this machine?)")
            time.sleep(0.01)
        return False

    def advance(self) -> str:
        """Let a held command pass its point; returns the trace line (event and path)."""
        held, self._fifo = self._fifo, self._new_fifo()
        with open(held, "rb") as fifo:  # the writer is waiting: this opens at once
            line = fifo.read().decode()
        self.passed.append(line.split(" ", 1)[1].strip())  # without the time stamp
        return line


def _kill_before_point(sr: Sysroot, k: int, work: Path) -> tuple[bool, list[str]]:
    """Deploy, let it pass ``k`` durability points and kill it at the next.

    Returns (whether it was held there: False when it finished first, the points passed).
    """
    points = DurabilityPoints(work)
    proc = _start(sr.root, points.env())
    try:
        for _ in range(k):
            if not points.wait_held(proc):
                break
            points.advance()
        held = points.wait_held(proc)
    finally:
        proc.kill()
        _, err = proc.communicate()
    assert held or proc.returncode == 0, err
    return held, points.passed


def _check_consistent(sr: Sysroot, trees: dict[str, dict[str, tuple[object, ...]]]) -> str:
    target = os.readlink(sr.loader_link)
    assert target in ("loader.0", "loader.1")
    listed = json.loads((sr.boot / target / "deployments.json").read_text())["deployments"]
    assert listed, "the loader lists no deployment"
    booted = sr.booted_id()
    assert booted in [d["id"] for d in listed]
    for d in listed:
        usr = describe(sr.deployment_path(d["id"]) / "usr")
        assert usr == trees[d["commit"]], f"deployment {d['id']} is incomplete"
    return "new" if listed[0]["id"] != booted else "old"


def test_deploy_killed_at_many_points(tmp_path: Path) -> None:
    sr = Sysroot(tmp_path / "host")
    sr.init()
    repo = sr.repo
    tree = make_tree(tmp_path / "tree", files=3000)
    c1 = repo.commit_dir(tree, ref="site/base", version="1")
    trees = {c1: describe(tree / "usr")}
    first = sr.deploy("site/base")
    (sr.root / "run/atoll").mkdir(parents=True)
    (sr.root / "run/atoll/booted").write_text(first.id)
    (tree / "usr/etc/motd").write_text("v2\n")
    (tree / "usr/lib/data/f0001").write_text("v2\n")
    c2 = repo.commit_dir(tree, ref="site/base", version="2")
    trees[c2] = describe(tree / "usr")

    # Killed just before each durability point in turn, from a clean state each time.
    seen: list[tuple[str, str, bool]] = []  # (the point, outcome, a staging dir left)
    for k in range(100):
        held, passed = _kill_before_point(sr, k, tmp_path / f"points-{k}")
        if not held:
            break
        outcome = _check_consistent(sr, trees)
        staging = any(e.name.startswith(".staging-") for e in os.scandir(sr.deploy_dir))
        seen.append((passed[-1] if passed else "(none yet)", outcome, staging))
        if outcome == "new":
            sr.undeploy(0)  # back to the old state for the next point
        sr.cleanup()  # what the next deploy would remove: each run starts the same
    else:
        raise AssertionError("the deploy never finished: more than 100 durability points?")
    outcomes = [o for _, o, _ in seen]
    # the kills landed before and after the swap, once (old ... new), and mid-deploy
    assert outcomes and outcomes[0] == "old" and outcomes[-1] == "new", seen
    assert outcomes == sorted(outcomes, key=["old", "new"].index), seen
    assert any(staging for _, _, staging in seen), seen

    # Killed at moments spread over a whole run: wherever they land, the state is consistent.
    t0 = time.monotonic()
    assert _start(sr.root).wait() == 0
    duration = time.monotonic() - t0  # spreads the kills; nothing is asserted on it
    sr.undeploy(0)
    for i in range(POINTS):
        delay = duration * (0.15 + 0.85 * i / (POINTS - 1))
        proc = _start(sr.root)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if _check_consistent(sr, trees) == "new":
            sr.undeploy(0)  # back to the old state for the next point
    # the next deploy cleans up and succeeds
    proc = _start(sr.root)
    _, err = proc.communicate()
    assert proc.returncode == 0, err
    assert _check_consistent(sr, trees) == "new"
    listed = {d.id for d in sr.deployments()}
    assert {e.name for e in os.scandir(sr.deploy_dir)} == listed
    assert set(sr.repo.refs("deploy")) == listed

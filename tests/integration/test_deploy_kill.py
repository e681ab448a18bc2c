"""A deploy killed (SIGKILL) at any point leaves the sysroot booting the old deployment.

The deploy runs as a real `atoll` process; it is killed at points spread over
its whole run (checkout, /etc merge, loader write, swap). After each kill the
boot pointer must name a complete configuration whose deployments all exist
and are complete; the next deploy cleans up whatever was left.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from atoll.deploy.sysroot import Sysroot
from tests.trees import describe, make_tree

POINTS = 24


def _start(sysroot: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "atoll.cli", "-q", "--sysroot", str(sysroot), "deploy",
         "site/base"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


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

    # How long does a whole deploy take here? (then undo it)
    t0 = time.monotonic()
    assert _start(sr.root).wait() == 0
    duration = time.monotonic() - t0
    sr.undeploy(0)

    outcomes = []
    leftovers_seen = 0
    for i in range(POINTS):
        delay = duration * (0.15 + 0.85 * i / (POINTS - 1))
        proc = _start(sr.root)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        outcome = _check_consistent(sr, trees)
        outcomes.append(outcome)
        leftovers_seen += any(e.name.startswith(".staging-") for e in os.scandir(sr.deploy_dir))
        if outcome == "new":
            sr.undeploy(0)  # back to the old state for the next point
    # the kills landed at different stages: before and after the swap, and mid-checkout
    assert "old" in outcomes, outcomes
    assert leftovers_seen > 0
    # the next deploy cleans up and succeeds
    proc = _start(sr.root)
    _, err = proc.communicate()
    assert proc.returncode == 0, err
    assert _check_consistent(sr, trees) == "new"
    listed = {d.id for d in sr.deployments()}
    assert {e.name for e in os.scandir(sr.deploy_dir)} == listed
    assert set(sr.repo.refs("deploy")) == listed

"""The local checks and metrics against a real atoll sysroot (the deploy layer's host_status)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from atoll.deploy.sysroot import Sysroot
from tests.trees import make_tree
from tests.unit.test_monitor_conformance import check_agent_output

ATOLL = [sys.executable, "-m", "atoll.cli"]


def test_agent_and_metrics_read_a_real_sysroot(tmp_path: Path) -> None:
    sr = Sysroot(tmp_path / "host")
    sr.init()
    tree = make_tree(tmp_path / "tree")
    sr.repo.commit_dir(tree, ref="site/base", version="1")
    d1 = sr.deploy("site/base")
    (sr.root / "run/atoll").mkdir(parents=True, exist_ok=True)
    (sr.root / "run/atoll/booted").write_text(d1.id + "\n")
    (sr.deployment_path(d1) / "etc/ssh/sshd_config").write_text("Port 2222\n")
    (tree / "usr/etc/ssh/sshd_config").write_text("PermitRootLogin no\n")
    sr.repo.commit_dir(tree, ref="site/base", version="2")
    d2 = sr.deploy("site/base")
    sr.record_event("boot", result="rolled-back", reason="health check db-writes failed",
                    deployment=d1.id)
    (sr.state / "update.json").write_text(json.dumps({
        "state": "pending", "version": "2", "since": "2026-11-26T10:00:00Z",
        "metadata_expires": "2099-01-01T00:00:00Z"}))

    out = subprocess.run([*ATOLL, "--sysroot", str(sr.root), "checkmk-agent"], check=True,
                         capture_output=True, text=True, timeout=60).stdout
    check_agent_output(out)
    local = out[out.index("<<<local:sep(0)>>>"):].splitlines()[1:]
    by_name = {ln.split('"')[1]: ln for ln in local}
    assert by_name["atoll version"].startswith("0 ")
    assert "booted 1 " in by_name["atoll version"] and "next boot: 2" in by_name["atoll version"]
    assert by_name["atoll etc merge"].startswith("1 ") and "ssh/sshd_config" in \
        by_name["atoll etc merge"]
    assert by_name["atoll last boot"].startswith("2 ")
    assert "db-writes failed" in by_name["atoll last boot"]
    assert by_name["atoll update"].startswith("0 ")
    assert "boots at the next reboot" in by_name["atoll update"]
    assert by_name["atoll update metadata"].startswith("0 ")

    prom = subprocess.run([*ATOLL, "--sysroot", str(sr.root), "metrics"], check=True,
                          capture_output=True, text=True, timeout=60).stdout
    m = {(s.name, tuple(sorted(s.labels.items()))): s.value
         for f in text_string_to_metric_families(prom) for s in f.samples}
    assert m[("atoll_host_status_available", ())] == 1
    assert m[("node_reboot_required", ())] == 1
    assert m[("atoll_update_state", (("state", "pending"),))] == 1
    assert m[("atoll_last_boot_rolled_back", ())] == 1
    assert m[("atoll_etc_conflicts", ())] == 1
    assert any(k[0] == "atoll_info" and ("deployment", d1.id) in k[1] for k in m)
    assert d2.id != d1.id

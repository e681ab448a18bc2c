"""`atoll status` in every state, as a person reads it (golden outputs with a fixed clock
and fixed commits) and as automation reads it (the atoll/v1 JSON schema).

States: fresh (nothing deployed), one booted, an update prepared, pending (applied),
booted after an automatic rollback (unacknowledged, then acknowledged), pinned, from a
remote. Regenerate the golden files with ``ATOLL_REGEN_GOLDEN=1`` after a deliberate
change of the format, and read the diff.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import jsonschema
import pytest

from atoll.cli.status import render_status
from atoll.deploy.status import host_status
from atoll.deploy.sysroot import Sysroot
from atoll.store.repo import Repo
from tests.trees import make_tree

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests/data/status"
SCHEMA = json.loads((ROOT / "docs/status.schema.json").read_text())
MANIFEST = {
    1: [{"name": "bash", "version": "5.2.15-2"}, {"name": "libssl3", "version": "3.0.11-1"}],
    2: [{"name": "bash", "version": "5.2.15-2"}, {"name": "libssl3", "version": "3.0.15-1"},
        {"name": "htop", "version": "3.2.2-2"}],
}


class Host:
    """A sysroot with two commits of fixed content and times, and a controllable clock."""

    def __init__(self, tmp: Path, monkeypatch: pytest.MonkeyPatch):
        import atoll.deploy.sysroot as sysroot_mod

        self.clock = ["2026-11-20T08:00:00Z"]
        monkeypatch.setattr(sysroot_mod, "_now", lambda: self.clock[0])
        self.sr = Sysroot(tmp / "host")
        self.sr.init()
        tree = make_tree(tmp / "tree", files=5)
        repo = self.sr.repo
        self.v1 = repo.commit_dir(tree, ref="site/db", version="2026.11.1",
                                  timestamp=1763600000, manifest=MANIFEST[1])
        (tree / "usr/etc/motd").write_text("v2\n")
        self.v2 = repo.commit_dir(tree, ref="site/db", version="2026.11.2",
                                  timestamp=1764200000, manifest=MANIFEST[2])
        repo.set_ref("origin/site/db", self.v2, namespace="remotes")

    def boot(self, dep_id: str) -> None:
        (self.sr.root / "run/atoll").mkdir(parents=True, exist_ok=True)
        (self.sr.root / "run/atoll/booted").write_text(dep_id + "\n")

    def event(self, **fields: object) -> None:
        from atoll.core.fsutil import append_json_line

        append_json_line(self.sr.state / "events.jsonl", fields)

    def status(self, *, verbose: bool = False) -> tuple[dict[str, object], str]:
        st = host_status(self.sr.root, packages=verbose)
        jsonschema.validate(st, SCHEMA)  # what automation relies on
        st["sysroot"] = "/"  # the tmp path is not part of the golden output
        return st, render_status(st, verbose=verbose)


@pytest.fixture
def host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Host]:
    yield Host(tmp_path, monkeypatch)


def golden(name: str, text: str) -> None:
    path = GOLDEN / f"{name}.txt"
    if os.environ.get("ATOLL_REGEN_GOLDEN"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")
    assert text + "\n" == path.read_text(), f"status output changed: {name}"


def test_status_in_every_state(host: Host) -> None:
    st, text = host.status()
    golden("fresh", text)
    assert st["deployments"] == [] and st["update"] is None

    d1 = host.sr.deploy("site/db~1")
    host.boot(d1.id)
    host.event(time="2026-11-20T08:05:00Z", event="boot", deployment=d1.id, result="good",
               reason="", checks=[{"name": "50-app-mariadb", "ok": True}])
    st, text = host.status()
    golden("booted", text)
    assert st["booted"]["id"] == d1.id and st["booted"]["timestamp"] == "2025-11-20T00:53:20Z"

    host.clock[0] = "2026-11-27T09:00:00Z"
    prepared = host.sr.prepare("origin:site/db")
    st, text = host.status(verbose=True)
    golden("prepared-verbose", text)
    assert st["prepared"]["id"] == prepared.id and st["pending"] is None
    assert st["prepared"]["packages"]["upgraded"] == [
        {"name": "libssl3", "old": "3.0.11-1", "new": "3.0.15-1"}]
    assert st["update"]["state"] == "prepared"

    host.clock[0] = "2026-11-28T02:00:00Z"
    pending = host.sr.finalize()
    st, text = host.status()
    golden("pending", text)
    assert st["pending"]["id"] == pending.id and st["pending"]["origin"] == "origin:site/db"
    assert st["update"]["state"] == "pending" and st["prepared"] is None

    # the host reboots into v2, its database check fails, it rolls back to v1 by itself
    host.event(time="2026-11-28T02:04:00Z", event="boot", deployment=pending.id,
               result="rolled-back", reason="required check 50-app-mariadb failed: no write",
               checks=[{"name": "50-app-mariadb", "ok": False}])
    host.sr.rollback()
    st, text = host.status()
    golden("rolled-back", text)
    assert st["last_boot"]["acknowledged"] is False and st["rollback_events"] == 1
    host.clock[0] = "2026-11-28T09:00:00Z"
    assert host.sr.acknowledge_rollback() is not None
    assert host.sr.acknowledge_rollback() is None  # once
    st, text = host.status()
    golden("rolled-back-acknowledged", text)

    host.sr.pin(1)
    st, text = host.status()
    golden("pinned", text)
    assert [d["pinned"] for d in st["deployments"]] == [False, True]


def test_rollback_ack_turns_checkmk_back_to_ok(host: Host) -> None:
    from atoll.monitor.facts import parse_host_status
    from atoll.monitor.localchecks import CRIT, OK, host_checks

    d1 = host.sr.deploy("site/db")
    host.boot(d1.id)
    host.event(time="2026-11-28T02:04:00Z", event="boot", deployment=d1.id,
               result="rolled-back", reason="required check failed")

    def state() -> int:
        import datetime as dt

        facts = parse_host_status(host_status(host.sr.root))
        checks = host_checks(facts, dt.datetime(2026, 11, 28, 10, tzinfo=dt.UTC))
        return next(c.state for c in checks if c.name == "atoll last boot")

    assert state() == CRIT
    p = subprocess.run([sys.executable, "-m", "atoll.cli", "--sysroot", str(host.sr.root),
                        "--json", "rollback", "ack"], capture_output=True, text=True)
    assert p.returncode == 0 and json.loads(p.stdout)["changed"] is True, p.stderr
    assert state() == OK
    p = subprocess.run([sys.executable, "-m", "atoll.cli", "--sysroot", str(host.sr.root),
                        "--json", "rollback", "ack"], capture_output=True, text=True)
    assert p.returncode == 0 and json.loads(p.stdout)["changed"] is False


def _atoll(*args: str) -> subprocess.CompletedProcess[str]:
    p = subprocess.run([sys.executable, "-m", "atoll.cli", *args], capture_output=True,
                       text=True)
    assert "Traceback" not in p.stderr, p.stderr
    return p


def test_deploy_cleanup_and_db_diff(host: Host) -> None:
    root = str(host.sr.root)
    d1 = host.sr.deploy("site/db~1")
    host.boot(d1.id)
    # deploying what already boots next changes nothing
    p = _atoll("--sysroot", root, "--json", "deploy", "site/db~1")
    assert p.returncode == 0 and json.loads(p.stdout)["changed"] is False
    assert [d.id for d in host.sr.deployments()] == [d1.id]
    p = _atoll("--sysroot", root, "--json", "deploy", "site/db~1", "--redeploy")
    assert json.loads(p.stdout)["changed"] is True and len(host.sr.deployments()) == 2
    host.sr.undeploy(0)
    # db diff: nothing pending: 77; then booted -> pending
    assert _atoll("--sysroot", root, "db", "diff").returncode == 77
    host.sr.deploy("site/db")
    p = _atoll("--sysroot", root, "--json", "db", "diff")
    assert p.returncode == 0
    assert json.loads(p.stdout)["packages"]["added"] == [{"name": "htop", "version": "3.2.2-2"}]
    p = _atoll("--sysroot", root, "db", "diff", "site/db~1", "origin:site/db")
    assert "~ libssl3 3.0.11-1 -> 3.0.15-1" in p.stdout
    # cleanup -p: the pending one goes, the booted one boots next
    p = _atoll("--sysroot", root, "--json", "cleanup", "-p")
    assert p.returncode == 0 and len(json.loads(p.stdout)["pending"]) == 1
    assert [d.id for d in host.sr.deployments()] == [d1.id]
    # cleanup -r: the rollback one goes (after a deploy and a "reboot" into it)
    d2 = host.sr.deploy("site/db")
    host.boot(d2.id)
    assert [d.id for d in host.sr.deployments()] == [d2.id, d1.id]
    p = _atoll("--sysroot", root, "--json", "cleanup", "-r", "--prune")
    assert json.loads(p.stdout)["rollback"] == [d1.id]
    assert [d.id for d in host.sr.deployments()] == [d2.id]


def test_closed_pipe_and_global_options_anywhere(host: Host) -> None:
    d1 = host.sr.deploy("site/db")
    host.boot(d1.id)
    root = str(host.sr.root)
    # `atoll status --json | head -1`: the reader leaves; no BrokenPipeError traceback.
    # (Deterministic: the read end is closed before atoll writes at all.)
    r, w = os.pipe()
    os.close(r)
    atoll = subprocess.Popen([sys.executable, "-m", "atoll.cli", "--sysroot", root, "status",
                              "--json"], stdout=w, stderr=subprocess.PIPE)
    os.close(w)
    assert atoll.stderr is not None
    err = atoll.stderr.read().decode()
    assert atoll.wait() == 141 and "Traceback" not in err and "Broken" not in err, err
    # global options after the subcommand
    a = _atoll("status", "--sysroot", root, "-q", "--json")
    b = _atoll("--json", "--sysroot", root, "status")
    assert a.returncode == b.returncode == 0 and json.loads(a.stdout) == json.loads(b.stdout)


def test_validation_of_policy_and_apply_requests(host: Host) -> None:
    root = str(host.sr.root)
    d1 = host.sr.deploy("site/db")
    host.boot(d1.id)
    policy = host.sr.state / "policy.json"
    for argv, needle in ((["--interval", "-5"], "check interval"),
                         (["--remote", "nosuch"], "no remote 'nosuch'"),
                         (["--fleet-lock", "notaurl"], "not an http(s) URL"),
                         (["--mode", "weekly"], "invalid choice")):
        p = _atoll("--sysroot", root, "policy", "set", *argv)
        assert p.returncode == 2 and needle in p.stderr, (argv, p.stderr)
        assert not policy.exists()  # nothing changed
    # an apply in a window nobody configured, or of nothing
    p = _atoll("--sysroot", root, "update", "apply", "--window")
    assert p.returncode == 2 and "no maintenance windows" in p.stderr
    p = _atoll("--sysroot", root, "update", "apply")  # never checked: nothing known
    assert p.returncode == 7 and "has not checked for one" in p.stderr
    assert "Traceback" not in p.stderr and "None" not in p.stderr


def test_app_validate(tmp_path: Path) -> None:
    good = ROOT / "examples/apps/mariadb-published.yaml"
    assert _atoll("app", "validate", str(good)).returncode == 0
    bad = tmp_path / "app.yaml"
    bad.write_text("image: x\nenvironment:\n  DB_PASS: hunter2\nbogus: 1\n")
    p = _atoll("--json", "app", "validate", str(bad))
    assert p.returncode == 2
    problems = json.loads(p.stdout)["problems"]
    assert [(q["line"], q["field"]) for q in problems] == [(3, "environment.DB_PASS"),
                                                          (4, "bogus")]
    assert Repo  # (the store is not touched by validation)

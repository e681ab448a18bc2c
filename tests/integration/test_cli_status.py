"""`atoll status` in every state, as a person reads it (golden outputs with a fixed clock
and fixed commits) and as automation reads it (the atoll/v1 JSON schema).

States: fresh (nothing deployed), one booted, an update prepared, pending (applied),
booted after an automatic rollback (unacknowledged, then acknowledged), pinned, from a
remote. Regenerate the golden files with ``ATOLL_REGEN_GOLDEN=1`` after a deliberate
change of the format, and read the diff.
"""

from __future__ import annotations

import fcntl
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
    # plain cleanup: what a killed store write left in tmp/, once nobody holds it and
    # it is older than the grace period; one in use (locked) stays
    tmp = host.sr.repo.tmp
    old, held = tmp / "txn-killed", tmp / "txn-running"
    for d in (old, held):
        (d / "objects").mkdir(parents=True)
        os.utime(d, (0, 0))
    fd = os.open(held, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        p = _atoll("--sysroot", root, "--json", "cleanup")
    finally:
        os.close(fd)
    assert p.returncode == 0 and json.loads(p.stdout)["store_tmp"] == 1
    assert not old.exists() and held.exists()


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
                         (["--fleet-lock", "notaurl"], "not an http:// or https:// URL"),
                         (["--fleet-lock", "http://[::1"], "not a valid URL"),
                         (["--group", "a\x1bb"], "not a group name"),
                         (["--group", "a/b"], "not a group name"),
                         (["--mode", "weekly"], "invalid choice")):
        p = _atoll("--sysroot", root, "policy", "set", *argv)
        assert p.returncode == 2 and needle in p.stderr, (argv, p.stderr)
        assert "\x1b" not in p.stderr  # the escape is shown escaped, never sent
        assert not policy.exists()  # nothing changed
    # an apply in a window nobody configured, or of nothing
    p = _atoll("--sysroot", root, "update", "apply", "--window")
    assert p.returncode == 2 and "no maintenance windows" in p.stderr
    p = _atoll("--sysroot", root, "update", "apply")  # never checked: nothing known
    assert p.returncode == 7 and "has not checked for one" in p.stderr
    assert "Traceback" not in p.stderr and "None" not in p.stderr
    # times: empty, past, too far; an empty --sysroot is no "." (review of issue 14)
    for at, needle in (("", "give a time"), ("2000-01-01 00:00", "has passed"),
                       ("2099-01-01 00:00", "more than a year ahead")):
        p = _atoll("--sysroot", root, "update", "apply", "--at", at)
        assert p.returncode == 2 and needle in p.stderr, (at, p.stderr)
    assert not (host.sr.state / "agent.json").exists()  # nothing scheduled
    p = _atoll("--sysroot", "", "status")
    assert p.returncode == 2 and "--sysroot: must name a directory" in p.stderr, p.stderr


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


def _commit_chain(repo: Repo, tmp: Path, n: int, variant: str) -> list[str]:
    tree = make_tree(tmp / f"tree-{variant}", files=5, variant=variant)
    out = []
    for i in range(n):
        (tree / "usr/etc/motd").write_text(f"{variant} {i}\n")
        out.append(repo.commit_dir(tree, ref="site/db", version=f"{variant}{i + 1}"))
    return out


def test_deploy_an_ancestor_from_another_repository(host: Host, tmp_path: Path) -> None:
    """REV~N with --repo is resolved once, in that repository: the host's own branch of
    the same name (here two commits behind) plays no part, and it does not move."""
    build = Repo.create(tmp_path / "build")
    r = _commit_chain(build, tmp_path, 3, "r")
    root = str(host.sr.root)
    p = _atoll("--sysroot", root, "--json", "deploy", "site/db~1", "--repo", str(build.path))
    assert p.returncode == 0, p.stderr
    dep = json.loads(p.stdout)
    assert dep["commit"] == r[1] and dep["origin"] == "site/db"
    assert host.sr.repo.refs()["site/db"] == host.v2  # the host's branch stays
    # a fresh host: imports the ancestor; no branch appears, nothing is left half done
    fresh = Sysroot(tmp_path / "fresh")
    fresh.init()
    p = _atoll("--sysroot", str(fresh.root), "--json", "deploy", "site/db~2", "--repo",
               str(build.path))
    assert p.returncode == 0 and json.loads(p.stdout)["commit"] == r[0], p.stderr
    assert fresh.repo.refs() == {}
    # the branch itself, by name: copied, so the host can name it again
    p = _atoll("--sysroot", str(fresh.root), "deploy", "heads/site/db", "--repo",
               str(build.path))
    assert p.returncode == 0 and fresh.repo.refs() == {"site/db": r[2]}, p.stderr


def test_deploying_a_commit_again_under_another_origin_records_it(host: Host) -> None:
    root = str(host.sr.root)
    d = host.sr.deploy(host.v2)  # by commit id: no origin
    assert d.origin is None
    p = _atoll("--sysroot", root, "--json", "deploy", "origin:site/db")
    out = json.loads(p.stdout)
    assert p.returncode == 0 and out["changed"] is True and out["id"] == d.id
    assert [(x.id, x.origin) for x in host.sr.deployments()] == [(d.id, "origin:site/db")]
    p = _atoll("--sysroot", root, "deploy", "origin:site/db")
    assert "nothing to do" in p.stdout and len(host.sr.deployments()) == 1


def test_cleanup_pending_never_empties_the_boot_order(host: Host) -> None:
    root = str(host.sr.root)
    d1 = host.sr.deploy("site/db~1")
    host.boot(d1.id)
    d2 = host.sr.deploy("site/db")
    order = [d.id for d in host.sr.deployments()]
    assert order == [d2.id, d1.id]
    host.boot("f" * 64 + ".0")  # names a deployment that is not in the boot order
    for _ in range(3):
        p = _atoll("--sysroot", root, "cleanup", "-p")
        assert p.returncode == 0 and "not in the boot order" in p.stdout, p.stdout
        assert [d.id for d in host.sr.deployments()] == order
    (host.sr.root / "run/atoll/booted").unlink()  # never booted
    p = _atoll("--sysroot", root, "--json", "cleanup", "-p")
    assert json.loads(p.stdout)["pending"] == [] and "has not booted" in json.loads(
        p.stdout)["next_boot"]
    assert [d.id for d in host.sr.deployments()] == order
    host.boot(d1.id)
    p = _atoll("--sysroot", root, "cleanup", "-p")
    assert "the booted deployment boots next" in p.stdout
    assert [d.id for d in host.sr.deployments()] == [d1.id]


def test_indexes_and_db_diff_say_what_to_do(host: Host) -> None:
    root = str(host.sr.root)
    host.sr.deploy("site/db~1")
    host.sr.prepare("site/db")
    for argv in (["undeploy", "--", "-1"], ["pin", "--", "-1"]):
        p = _atoll("--sysroot", root, *argv)
        assert p.returncode == 2 and "prepared deployment" in p.stderr
        assert "atoll cleanup -p" in p.stderr
    p = _atoll("--sysroot", root, "undeploy", "5")
    assert p.returncode == 2 and "0 to 0" in p.stderr and "atoll status" in p.stderr
    p = _atoll("--sysroot", root, "db", "diff")  # never booted: nothing to compare against
    assert p.returncode == 77 and "has not booted" in p.stdout and "FROM TO" in p.stdout


def test_the_agent_prepares_with_the_origin_it_downloaded_from(host: Host) -> None:
    """atolld prepares the downloaded commit by id: the deployment still follows the
    REMOTE:CHANNEL of update.json (it showed "no origin" before)."""
    from atoll.agent.host import Host as AgentHost

    (host.sr.state / "update.json").write_text(json.dumps({
        "state": "downloaded", "commit": host.v2, "remote": "t4", "channel": "site/db",
        "checked": "2026-11-27T09:00:00Z"}))
    dep = AgentHost(host.sr.root).prepare(host.v2)
    assert dep["origin"] == "t4:site/db" and host.sr.prepared().origin == "t4:site/db"

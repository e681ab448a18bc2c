"""The operator's command line when things go wrong: damaged state files, bad names,
escape sequences, `--json` errors, refs and revisions (review of issue 14).

Each command runs as a subprocess on a scratch sysroot, as a person (or Ansible) runs
it. Every refusal is one line with what to do, never a traceback, and changes nothing.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import jsonschema
import pytest

from atoll.deploy.status import host_status
from atoll.store.repo import Repo
from tests.integration.test_cli_status import SCHEMA, Host
from tests.trees import describe, make_tree


@pytest.fixture
def host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Host]:
    h = Host(tmp_path, monkeypatch)
    d1 = h.sr.deploy("site/db~1")
    h.boot(d1.id)
    h.sr.deploy("origin:site/db")  # pending
    yield h


def atoll(*args: str) -> subprocess.CompletedProcess[str]:
    p = subprocess.run([sys.executable, "-m", "atoll.cli", *args], capture_output=True,
                       text=True)
    assert "Traceback" not in p.stderr, p.stderr
    return p


# -- damaged state files -----------------------------------------------------------------

DAMAGE = {  # file under the sysroot -> (content, what the one-line error says)
    "atoll/state/update.json": (b"{garbage", "update.json: not valid JSON"),
    "boot/loader/deployments.json": (b"garbage", "deployments.json: not valid JSON"),
    "run/atoll/booted": (b"\xff", "booted: not a deployment id"),
}


@pytest.mark.parametrize("name", sorted(DAMAGE))
def test_a_damaged_state_file_is_named_and_the_rest_still_reported(host: Host,
                                                                   name: str) -> None:
    root = str(host.sr.root)
    content, says = DAMAGE[name]
    path = host.sr.root / name
    if name.startswith("boot/loader/"):
        path = host.sr.loader_dir() / "deployments.json"
    path.write_bytes(content)
    # status: exit 0, the problem named with what to do, every other section there
    p = atoll("--sysroot", root, "status")
    assert p.returncode == 0 and "Damaged: damaged state file" in p.stdout, p.stdout
    assert says in p.stdout
    p = atoll("--sysroot", root, "--json", "status")
    st = json.loads(p.stdout)
    jsonschema.validate(st, SCHEMA)
    assert [q["file"] for q in st["problems"]] == [str(path)]
    assert st["problems"][0]["resolution"]
    # commands that need the file: one line naming it, exit 7, nothing changed
    before = describe(host.sr.root / "boot")
    argv = ["update", "apply"] if name.endswith("update.json") else ["deploy", "site/db~1"]
    p = atoll("--sysroot", root, *argv)
    assert p.returncode == 7 and says in p.stderr and "hint:" in p.stderr, p.stderr
    assert describe(host.sr.root / "boot") == before


def test_monitoring_degrades_per_section(host: Host) -> None:
    import datetime as dt

    from atoll.monitor.facts import parse_host_status
    from atoll.monitor.localchecks import UNKNOWN, host_checks

    def checks() -> dict[str, tuple[int, str]]:
        facts = parse_host_status(host_status(host.sr.root))
        now = dt.datetime(2026, 11, 28, 10, tzinfo=dt.UTC)
        return {c.name: (c.state, c.summary) for c in host_checks(facts, now)}

    host.event(time="2026-11-20T08:05:00Z", event="boot",
               deployment=host.sr.booted_id(), result="good")
    with (host.sr.state / "events.jsonl").open("a") as fh:
        fh.write("[1,2]\n\"x\"\n")
    (host.sr.state / "update.json").write_text('{"state":"weird","version":{"a":1}}')
    got = checks()
    assert got["atoll update"][0] == UNKNOWN and "unknown state 'weird'" in got["atoll update"][1]
    assert got["atoll update metadata"][0] == UNKNOWN
    assert got["atoll version"][0] == 0  # fed by other files: still reported
    assert got["atoll last boot"][0] == 0 and "2 unreadable line(s)" in got["atoll last boot"][1]
    # the human status renders it (a version that is an object once raised TypeError)
    p = atoll("--sysroot", str(host.sr.root), "status")
    assert p.returncode == 0 and "unknown state 'weird'" in p.stdout
    loader = host.sr.loader_dir() / "deployments.json"
    loader.write_text('{"deployments":[{"id":5}]}')
    got = checks()
    assert got["atoll version"][0] == UNKNOWN and "is not COMMIT.SERIAL" in got["atoll version"][1]
    assert got["atoll etc merge"][0] == UNKNOWN


def test_rollback_ack_with_a_reason_holding_escapes(host: Host) -> None:
    host.event(time="2026-11-28T02:04:00Z", event="boot", deployment=host.sr.booted_id(),
               result="rolled-back", reason="check \x1b[31mRED\x07 failed")
    p = atoll("--sysroot", str(host.sr.root), "rollback", "ack")
    assert p.returncode == 0 and "\x1b" not in p.stdout and "\x07" not in p.stdout
    assert "\\x1b[31mRED\\x07" in p.stdout


# -- refs and revisions ------------------------------------------------------------------


def test_refs_that_shadow_a_namespace_or_are_too_long_are_refused(host: Host,
                                                                  tmp_path: Path) -> None:
    root = str(host.sr.root)
    tree = make_tree(tmp_path / "t", files=3)
    for ref, needle in (("remotes/x/y", "names a namespace"), ("deploy/x", "names a namespace"),
                        ("heads/x", "names a namespace"), ("r" * 300, "ref name too long"),
                        ("a/" + "b" * 201, "ref name too long")):
        p = atoll("--sysroot", root, "store", "commit", str(tree), "--ref", ref)
        assert p.returncode == 2 and needle in p.stderr, (ref, p.stderr)
    assert "heads" not in host.sr.repo.refs() and len(host.sr.repo.refs()) == 1
    p = atoll("--sysroot", root, "remote", "add", "r" * 300, "http://x.example/", "--root",
              str(tmp_path / "none.json"))
    assert p.returncode == 2 and "invalid remote name" in p.stderr and "no '/'" in p.stderr
    p = atoll("--sysroot", root, "remote", "add", "a/b", "http://x.example/", "--root",
              str(tmp_path / "none.json"))
    assert p.returncode == 2 and "invalid remote name" in p.stderr


def test_refs_delete_is_all_or_nothing_and_takes_remote_channel(host: Host) -> None:
    root = str(host.sr.root)
    repo = host.sr.repo
    repo.set_ref("site/a", host.v1)
    p = atoll("--sysroot", root, "store", "refs", "--delete", "site/a", "nosuch")
    assert p.returncode == 2 and "nosuch: no such ref" in p.stderr
    assert "site/a" in repo.refs()  # checked first: nothing deleted
    p = atoll("--sysroot", root, "store", "refs", "--delete", "--", "-x")
    assert p.returncode == 2 and "-x: no such ref" in p.stderr
    p = atoll("--sysroot", root, "--json", "store", "refs", "--delete", "origin:site/db",
              "site/a")
    assert p.returncode == 0 and json.loads(p.stdout)["deleted"] == ["origin:site/db", "site/a"]
    assert repo.refs("remotes") == {} and "site/a" not in repo.refs()
    # refs an older atoll let through can still be deleted
    (repo.refs_dir / "heads/remotes/x").mkdir(parents=True)
    (repo.refs_dir / "heads/remotes/x/y").write_text(host.v1 + "\n")
    p = atoll("--sysroot", root, "store", "refs", "--delete", "heads/remotes/x/y")
    assert p.returncode == 0, p.stderr
    p = atoll("--sysroot", root, "store", "refs", "site")  # a prefix, as `ostree refs`
    assert p.stdout.split() == [host.v2, "site/db"]


def test_revisions_say_which_forms_there_are(host: Host) -> None:
    root = str(host.sr.root)
    for rev, needle in (("site/db~²", "~N takes a number"), ("site/db~\u0661", "~N takes a number"),
                        ("site/db~-1", "~N takes a number"),
                        (host.v1[:7], "at least 8 hex digits")):
        p = atoll("--sysroot", root, "store", "log", rev)
        assert p.returncode == 2 and needle in p.stderr, (rev, p.stderr)
        assert "REMOTE:CHANNEL" in p.stderr
    # an ancestor that exists but was never downloaded (a host gets the newest only)
    host.sr.repo.object_path(host.v1, "commit").unlink()
    p = atoll("--sysroot", root, "deploy", "origin:site/db~1")
    assert p.returncode == 2 and "was never downloaded" in p.stderr, p.stderr


def test_store_commit_needs_a_repository_and_shows_a_missing_manifest(host: Host,
                                                                     tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "t", files=3)
    p = atoll("store", "commit", str(tree), "--ref", "x", "--repo", str(tmp_path / "nope"))
    assert p.returncode == 2 and "store init" in p.stderr
    assert not (tmp_path / "nope").exists()
    repo = Repo.create(tmp_path / "build")
    a = repo.commit_dir(tree, ref="x")  # no dpkg database: no manifest
    b = repo.commit_dir(tree, ref="y", manifest=[{"name": "bash", "version": "5.2"}])
    p = atoll("store", "show", a, "--repo", str(repo.path))
    assert "packages none recorded" in p.stdout
    p = atoll("store", "diff", a, b, "--repo", str(repo.path))
    assert "package changes unknown: no package manifest in the old commit" in p.stdout


# -- the error contract ------------------------------------------------------------------


def test_json_errors_for_usage_and_commands_without_json(host: Host) -> None:
    root = str(host.sr.root)
    for argv in (["--json", "deploy"], ["--json", "undeploy", "abc"], ["--json", "nosuchcmd"],
                 ["deploy", "--json"], ["--json", "man"], ["--json", "completion", "bash"],
                 ["metrics", "--json"]):
        p = atoll("--sysroot", root, *argv)
        assert p.returncode == 2, (argv, p.stderr)
        err = json.loads(p.stdout)
        assert err["error"] == "InputError" and err["exit_code"] == 2 and err["brief"], argv
    p = atoll("--sysroot", root, "undeploy", "abc")  # without --json: argparse's usage
    assert p.returncode == 2 and p.stdout == "" and "usage: atoll undeploy" in p.stderr


def test_internal_errors_and_interrupts_are_json_too(host: Host, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    import atoll.cli.status as status_cli
    from atoll.cli import main

    def boom(args: object) -> None:
        raise RuntimeError("kaboom")

    def interrupted(args: object) -> None:
        raise KeyboardInterrupt

    root = str(host.sr.root)
    monkeypatch.setattr(status_cli, "cmd_status", boom)
    assert main(["--sysroot", root, "--json", "status"]) == 70
    err = json.loads(capsys.readouterr().out)
    assert err["error"] == "InternalError" and err["exit_code"] == 70
    monkeypatch.setattr(status_cli, "cmd_status", interrupted)
    assert main(["--sysroot", root, "--json", "status"]) == 130
    err = json.loads(capsys.readouterr().out)
    assert err["error"] == "Interrupted" and err["exit_code"] == 130


def test_remote_list_never_prints_an_escape(host: Host) -> None:
    d = host.sr.state / "remotes/t2"
    d.mkdir(parents=True)
    (d / "remote.json").write_text(json.dumps({"name": "t2", "url": "http://x/\x1b[31mRED",
                                               "channel": None}))
    p = atoll("--sysroot", str(host.sr.root), "remote", "list")
    assert p.returncode == 0 and "\x1b" not in p.stdout and "\\x1b[31mRED" in p.stdout
    (d / "remote.json").write_text("{")  # damaged: named, and removing it replaces it
    p = atoll("--sysroot", str(host.sr.root), "remote", "show", "t2")
    assert p.returncode == 7 and "remote.json: not valid JSON" in p.stderr
    assert atoll("--sysroot", str(host.sr.root), "remote", "remove", "t2").returncode == 0
    assert not d.exists()

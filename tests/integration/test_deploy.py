"""Deployments in a sysroot directory: /etc merge, /var, boot pointer, rollback, pin."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from atoll.core.errors import CorruptObjectError, HostStateError
from atoll.deploy.status import host_status
from atoll.deploy.sysroot import Deployment, Sysroot
from atoll.store.repo import Repo
from tests.trees import make_tree, snapshot


def boot(sr: Sysroot, dep_id: str) -> None:
    """Simulate a boot: what the initramfs hook writes."""
    (sr.root / "run/atoll").mkdir(parents=True, exist_ok=True)
    (sr.root / "run/atoll/booted").write_text(dep_id + "\n")


@pytest.fixture
def env(tmp_path: Path) -> tuple[Sysroot, Repo, Path]:
    sr = Sysroot(tmp_path / "host")
    sr.init()
    tree = make_tree(tmp_path / "tree")
    return sr, sr.repo, tree


def atoll(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "atoll.cli", *args],
                          capture_output=True, text=True)


def test_deploy_then_update_merges_etc(env: tuple[Sysroot, Repo, Path]) -> None:
    sr, repo, tree = env
    repo.commit_dir(tree, ref="site/base", version="1")
    d1 = sr.deploy("site/base")
    root1 = sr.deployment_path(d1)
    assert (root1 / "etc/motd").read_text() == "motd a\n"
    assert os.listdir(root1 / "var") == []
    boot(sr, d1.id)
    # the host changes its /etc
    (root1 / "etc/hostname").write_text("db01\n")           # local change, image unchanged
    (root1 / "etc/ssh/sshd_config").write_text("Port 2222\n")  # local change, image changes too
    (root1 / "etc/local.conf").write_text("mine\n")        # host-only file
    (sr.var / "lib/mysql").mkdir(parents=True)
    (sr.var / "lib/mysql/data").write_text("rows")
    # image v2 changes motd and sshd_config
    (tree / "usr/etc/motd").write_text("motd b\n")
    (tree / "usr/etc/ssh/sshd_config").write_text("PermitRootLogin no # b\n")
    (tree / "usr/etc/new.conf").write_text("new default\n")
    repo.commit_dir(tree, ref="site/base", version="2")
    d2 = sr.deploy("site/base")
    root2 = sr.deployment_path(d2)
    assert (root2 / "etc/motd").read_text() == "motd b\n"
    assert (root2 / "etc/hostname").read_text() == "db01\n"
    assert (root2 / "etc/ssh/sshd_config").read_text() == "Port 2222\n"
    assert (root2 / "etc/local.conf").read_text() == "mine\n"
    assert (root2 / "etc/new.conf").read_text() == "new default\n"
    assert d2.etc_conflicts == ("ssh/sshd_config",)
    # written 0700, root's alone, then given usr/etc's mode and owner
    etc, defaults = os.lstat(root2 / "etc"), os.lstat(root2 / "usr/etc")
    assert (etc.st_mode, etc.st_uid, etc.st_gid) == (defaults.st_mode, defaults.st_uid,
                                                     defaults.st_gid)
    shadow = os.lstat(root2 / "etc/shadow")
    assert (shadow.st_mode & 0o777, shadow.st_gid) == (0o640, 42)
    st = host_status(sr.root)
    assert st["pending"]["id"] == d2.id and st["booted"]["id"] == d1.id
    assert st["etc_conflicts"] == ["ssh/sshd_config"]
    assert (sr.var / "lib/mysql/data").read_text() == "rows"  # /var is shared, untouched
    # the boot pointer is a symlink to a complete directory
    assert os.readlink(sr.loader_link) in ("loader.0", "loader.1")
    listed = json.loads((sr.loader_dir() / "deployments.json").read_text())
    assert [d["id"] for d in listed["deployments"]] == [d2.id, d1.id]


def test_rollback_and_keep_policy(env: tuple[Sysroot, Repo, Path]) -> None:
    sr, repo, tree = env
    ids = []
    for v in range(4):
        (tree / "usr/etc/motd").write_text(f"v{v}\n")
        repo.commit_dir(tree, ref="site/base", version=str(v))
        dep = sr.deploy("site/base")
        ids.append(dep.id)
        boot(sr, dep.id)
    # v3 was deployed while v2 was booted: kept are v3 (now booted), v2 and v2's
    # rollback v1; v0 is pruned from disk and from the store's deployment refs
    assert [d.id for d in sr.deployments()] == [ids[3], ids[2], ids[1]]
    assert sorted(os.listdir(sr.deploy_dir)) == sorted(ids[1:])
    assert sorted(repo.refs("deploy")) == sorted(ids[1:])
    order = sr.rollback()
    assert [d.id for d in order] == [ids[2], ids[3], ids[1]]
    st = host_status(sr.root)
    assert st["pending"]["version"] == "2" and st["booted"]["version"] == "3"
    with pytest.raises(HostStateError, match="booted"):
        sr.undeploy(1)


def test_pin_keeps_a_deployment(env: tuple[Sysroot, Repo, Path]) -> None:
    sr, repo, tree = env
    repo.commit_dir(tree, ref="site/base", version="0")
    first = sr.deploy("site/base")
    sr.pin(0)
    for v in range(1, 4):
        (tree / "usr/etc/motd").write_text(f"v{v}\n")
        repo.commit_dir(tree, ref="site/base", version=str(v))
        boot(sr, sr.deploy("site/base").id)
    assert first.id in [d.id for d in sr.deployments()]
    assert (sr.deploy_dir / first.id).is_dir()


def test_corrupt_object_refused_and_sysroot_unchanged(env: tuple[Sysroot, Repo, Path]) -> None:
    sr, repo, tree = env
    repo.commit_dir(tree, ref="site/base", version="1")
    boot(sr, sr.deploy("site/base").id)
    (tree / "usr/lib/data/f0007").write_text("v2 content")
    cid = repo.commit_dir(tree, ref="site/base", version="2")
    oid = next(e.id for p, e in repo.walk(repo.read_commit(cid).tree)
               if p == "usr/lib/data/f0007")
    repo.object_path(oid, "file").write_text("tampered")
    before = snapshot(sr.root)
    with pytest.raises(CorruptObjectError):
        sr.deploy("site/base")
    after = snapshot(sr.root)
    # the damaged object went to quarantine; nothing else changed
    moved = f"atoll/repo/objects/{oid[:2]}/{oid[2:]}.file"
    assert {k: v for k, v in before.items() if k != moved} == {
        k: v for k, v in after.items() if not k.startswith("atoll/repo/quarantine")}
    assert [n.split(".")[0] for n in sr.repo.quarantined()] == [oid]
    # the next ordinary command heals the store: committing the tree writes it again
    again = repo.commit_dir(tree, ref="site/base", version="2")
    assert repo.read_commit(again).tree == repo.read_commit(cid).tree
    assert repo.has(oid, "file") and repo.verify_file(oid)
    assert sr.deploy("site/base").commit == again


def test_cli_status_json_and_exit_codes(env: tuple[Sysroot, Repo, Path], tmp_path: Path) -> None:
    sr, repo, tree = env
    repo.commit_dir(tree, ref="site/base", version="1")
    r = atoll("--sysroot", str(sr.root), "deploy", "site/base")
    assert r.returncode == 0, r.stderr
    r = atoll("--sysroot", str(sr.root), "status", "--json")
    assert json.loads(r.stdout)["pending"]["version"] == "1"
    r = atoll("--sysroot", str(sr.root), "deploy", "no/such/ref")
    assert r.returncode == 2 and "no such ref" in r.stderr
    r = atoll("--sysroot", str(tmp_path / "nothing"), "status")
    assert r.returncode == 7 and "not an atoll sysroot" in r.stderr
    r = atoll("--sysroot", str(sr.root), "rollback")
    assert r.returncode == 7 and "no rollback deployment" in r.stderr


def test_deploy_from_another_repo(tmp_path: Path) -> None:
    build = Repo.create(tmp_path / "build")
    cid = build.commit_dir(make_tree(tmp_path / "tree"), ref="site/base", version="1")
    sr = Sysroot(tmp_path / "host")
    sr.init()
    dep = sr.deploy("site/base", repo=build)
    assert dep.commit == cid and sr.repo.refs()["site/base"] == cid


def test_stage_then_finalize(env: tuple[Sysroot, Repo, Path]) -> None:
    sr, repo, tree = env
    repo.commit_dir(tree, ref="site/base", version="1")
    d1 = sr.deploy("site/base")
    boot(sr, d1.id)
    (tree / "usr/etc/motd").write_text("v2\n")
    repo.commit_dir(tree, ref="site/base", version="2")
    prepared = sr.prepare("site/base")
    # prepared on disk but not the next boot
    assert sr.deployment_path(prepared).is_dir()
    assert [d.id for d in sr.deployments()] == [d1.id]
    assert sr.prepared() == prepared
    # a newer download replaces the prepared one
    (tree / "usr/etc/motd").write_text("v3\n")
    repo.commit_dir(tree, ref="site/base", version="3")
    newer = sr.prepare("site/base")
    assert newer.version == "3" and not sr.deployment_path(prepared).exists()
    # the host changes /etc after staging: finalize merges as late as possible
    (sr.deployment_path(d1) / "etc/hostname").write_text("late-change\n")
    final = sr.finalize()
    assert [d.id for d in sr.deployments()] == [newer.id, d1.id]
    assert (sr.deployment_path(final) / "etc/hostname").read_text() == "late-change\n"
    assert (sr.deployment_path(final) / "etc/motd").read_text() == "v3\n"
    assert sr.prepared() is None
    with pytest.raises(HostStateError, match="no prepared update"):
        sr.finalize()


def _applied_then_killed(env: tuple[Sysroot, Repo, Path], monkeypatch: pytest.MonkeyPatch
                         ) -> tuple[Deployment, Deployment]:
    """v1 booted (its /etc says hostname db01), v2 prepared and applied, the apply
    killed right after the loader swap (before the prepared record is cleared);
    (v1, v2)."""
    sr, repo, tree = env
    repo.commit_dir(tree, ref="site/base", version="1")
    d1 = sr.deploy("site/base")
    boot(sr, d1.id)
    (sr.deployment_path(d1) / "etc/hostname").write_text("db01\n")
    (tree / "usr/etc/motd").write_text("v2\n")
    repo.commit_dir(tree, ref="site/base", version="2")
    prepared = sr.prepare("site/base")

    def killed() -> None:
        raise KeyboardInterrupt  # stands for SIGKILL right after the loader swap

    monkeypatch.setattr(sr, "_clear_prepared", killed)
    with pytest.raises(KeyboardInterrupt):
        sr.finalize()
    monkeypatch.undo()
    return d1, prepared


def test_finalize_again_after_a_kill_never_merges_etc_again(
        env: tuple[Sysroot, Repo, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """Killed after the loader swap but before the prepared record is cleared, then
    rebooted into the new deployment: a second `update apply` must not rebuild that
    deployment's /etc (the live one) from the defaults."""
    sr, _repo, _tree = env
    d1, prepared = _applied_then_killed(env, monkeypatch)
    assert [d.id for d in sr.deployments()] == [prepared.id, d1.id]
    boot(sr, prepared.id)
    live = sr.deployment_path(prepared) / "etc"
    (live / "local.conf").write_text("made on v2\n")
    again = sr.finalize()
    assert again.id == prepared.id and sr.prepared() is None
    assert (live / "hostname").read_text() == "db01\n"
    assert (live / "local.conf").read_text() == "made on v2\n"
    assert [d.id for d in sr.deployments()] == [prepared.id, d1.id]


def test_finalize_after_a_kill_and_a_rollback_makes_it_the_next_boot(
        env: tuple[Sysroot, Repo, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """Killed after the loader swap, then rolled back: `update apply` again makes the
    prepared deployment the next boot (it is what was asked), its /etc untouched."""
    sr, _repo, _tree = env
    d1, prepared = _applied_then_killed(env, monkeypatch)
    sr.rollback()
    assert [d.id for d in sr.deployments()] == [d1.id, prepared.id]
    etc = sr.deployment_path(prepared) / "etc"
    (etc / "marker").write_text("merged once\n")
    again = sr.finalize()
    assert again.id == prepared.id and sr.prepared() is None
    assert [d.id for d in sr.deployments()] == [prepared.id, d1.id]
    assert (etc / "marker").read_text() == "merged once\n"

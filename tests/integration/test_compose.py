"""Compose real Debian trees with mmdebstrap."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from atoll.compose.build import compose
from atoll.compose.treefile import load_treefile
from atoll.core.errors import ToolError
from atoll.deploy.sysroot import Sysroot
from atoll.store import ops
from atoll.store.checkout import checkout
from atoll.store.repo import Repo
from tests.compose_fixtures import EXAMPLES, Composed, composed, deb_cache


@pytest.fixture(scope="session")
def trees(artifact_cache: Path) -> Composed:
    return composed(artifact_cache)


def test_same_inputs_same_commit(trees: Composed, tmp_path: Path, artifact_cache: Path) -> None:
    again = Repo.create(tmp_path / "again")
    # from the package cache this time: the same commit as from the archive
    res = compose(load_treefile(EXAMPLES / "base.yaml"), EXAMPLES, again,
                  deb_cache=deb_cache(artifact_cache))
    assert res.commit == trees.v1
    # and composing onto a ref that already has it makes no new commit
    res2 = compose(load_treefile(EXAMPLES / "base.yaml"), EXAMPLES, again)
    assert (res2.commit, res2.changed) == (trees.v1, False)


def test_commit_records_manifest_and_treefile(trees: Composed) -> None:
    c = trees.repo.read_commit(trees.v1)
    pkgs = c.packages()
    assert pkgs["iputils-ping"]["source"] == "iputils"
    assert pkgs["libc6"]["source"] == "glibc" and pkgs["libc6"]["architecture"] == "amd64"
    assert "netcat-openbsd" not in pkgs
    assert len(c.metadata["treefile_sha256"]) == 64
    assert c.version == "1" and c.timestamp == 1732000000


def test_atoll_layout(trees: Composed, tmp_path: Path) -> None:
    out = tmp_path / "tree"
    checkout(trees.repo, trees.v1, out)
    assert os.listdir(out / "etc") == [] and os.listdir(out / "var") == []
    assert (out / "usr/etc/motd").read_text() == "This host runs atoll.\n"
    assert (out / "usr/etc/passwd").is_file()
    assert (out / "usr/share/atoll/dpkg/status").is_file()
    tmpfiles = (out / "usr/lib/tmpfiles.d/atoll-var.conf").read_text()
    assert "L /var/lib/dpkg - - - - /usr/share/atoll/dpkg" in tmpfiles
    assert os.readlink(out / "home") == "var/home"
    assert os.readlink(out / "bin") == "usr/bin"
    assert os.getxattr(out / "usr/bin/ping", "security.capability")
    assert not list((out / "usr/share/man").glob("*/*")) if (out / "usr/share/man").exists() \
        else True


def test_v2_package_diff_and_deploy(trees: Composed, tmp_path: Path) -> None:
    d = ops.diff(trees.repo, trees.v1, trees.v2)
    added = [p["name"] for p in d["packages"]["added"]]
    assert "netcat-openbsd" in added
    assert "/usr/etc/motd" in d["files"]["changed"]
    sr = Sysroot(tmp_path / "host")
    sr.init()
    dep = sr.deploy(trees.v1, repo=trees.repo)
    root = sr.deployment_path(dep)
    assert (root / "etc/motd").read_text() == "This host runs atoll.\n"
    assert (root / "etc/passwd").read_text() == (root / "usr/etc/passwd").read_text()


def test_unknown_package_gives_apt_reason_and_commits_nothing(tmp_path: Path) -> None:
    tf = tmp_path / "bad.yaml"
    tf.write_text("ref: t/bad\nversion: '1'\nvariant: essential\nsecurity: false\n"
                  "updates: false\npackages: [no-such-package-atoll]\n")
    repo = Repo.create(tmp_path / "repo")
    with pytest.raises(ToolError) as exc:
        compose(load_treefile(tf), tmp_path, repo)
    assert "no-such-package-atoll" in exc.value.brief
    assert repo.refs() == {} and list(repo.iter_objects()) == []
    assert os.listdir(repo.tmp) == []


def test_cli_malformed_treefile(tmp_path: Path) -> None:
    tf = tmp_path / "t.yaml"
    tf.write_text("ref: t/x\nversion: '1'\nvariant: tiny\n")
    r = subprocess.run([sys.executable, "-m", "atoll.cli", "compose", str(tf), "--repo",
                        str(tmp_path / "repo")], capture_output=True, text=True)
    assert r.returncode == 2
    assert f"{tf}:3: variant: expected one of:" in r.stderr
    assert not (tmp_path / "repo").exists()

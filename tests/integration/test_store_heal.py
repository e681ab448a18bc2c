"""Damaged objects: refused clearly where they are read, quarantined, healed by the next
ordinary command.

Every kind of object (file, dirtree, commit) with every kind of damage (empty,
short, one flipped byte), in a build repository (healed by committing the tree
again) and on a host (healed by `atoll update download` or `store fsck --repair`).
The table in docs/store-integrity.md says which command detects and repairs each.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from atoll.deploy.sysroot import Sysroot
from atoll.store import ops
from atoll.store.repo import Repo
from tests.integration.delivery_fixtures import serve_www
from tests.integration.test_delivery_http import Env
from tests.trees import make_tree

KINDS = ("file", "dirtree", "commit")
DAMAGE = ("empty", "short", "flip")


def atoll(*args: str) -> subprocess.CompletedProcess[str]:
    p = subprocess.run([sys.executable, "-m", "atoll.cli", *args], capture_output=True,
                       text=True)
    assert "Traceback" not in p.stderr, p.stderr
    return p


def damage(path: Path, how: str) -> None:
    """Damage an object in place (same inode, owner and mode), as a disk or a power cut
    under an older atoll could."""
    data = path.read_bytes()
    with open(path, "r+b") as fh:
        if how == "empty":
            fh.truncate(0)
        elif how == "short":
            fh.truncate(len(data) // 2)
        else:
            fh.seek(len(data) // 2)
            fh.write(bytes([data[len(data) // 2] ^ 0x20]))


def pick(repo: Repo, commit: str, kind: str, *, not_in: str | None = None,
         max_size: int | None = None) -> str:
    """An object of ``commit`` of ``kind`` (a regular file for files, of at most
    ``max_size`` bytes when given; one that ``not_in`` lacks, when given)."""
    if kind == "commit":
        return commit
    other = repo.reachable(not_in, parents=False) if not_in else set()
    for oid, k in sorted(repo.reachable(commit, parents=False)):
        if k != kind or (oid, k) in other:
            continue
        p = repo.object_path(oid, k)
        if kind == "file" and (p.is_symlink() or p.stat().st_size < 8
                               or (max_size is not None and p.stat().st_size > max_size)):
            continue
        return oid
    raise AssertionError(f"no {kind} object to damage")


@pytest.fixture
def build(tmp_path: Path) -> tuple[Sysroot, Path, str, str]:
    sr = Sysroot(tmp_path / "host")
    sr.init()
    tree = make_tree(tmp_path / "tree", files=60)
    v1 = sr.repo.commit_dir(tree, ref="site/base", version="1")
    dep = sr.deploy("site/base")
    (sr.root / "run/atoll").mkdir(parents=True, exist_ok=True)
    (sr.root / "run/atoll/booted").write_text(dep.id)
    (tree / "usr/lib/data/new-in-v2").write_text("v2 " * 100)
    (tree / "usr/lib/data/f0003").write_text("changed in v2 " * 20)
    v2 = sr.repo.commit_dir(tree, ref="site/base", version="2")
    return sr, tree, v1, v2


@pytest.mark.parametrize("how", DAMAGE)
@pytest.mark.parametrize("kind", KINDS)
def test_damage_is_refused_then_healed_by_committing_again(
        build: tuple[Sysroot, Path, str, str], kind: str, how: str) -> None:
    sr, tree, v1, v2 = build
    repo = sr.repo
    oid = pick(repo, v2, kind, not_in=v1)
    damage(repo.object_path(oid, kind), how)
    before = [d.id for d in sr.deployments()]
    objects_before = sorted(repo.iter_objects())
    root = str(sr.root)

    # deploy refuses: one clear error naming the object, exit 3, nothing deployed
    p = atoll("--sysroot", root, "deploy", "site/base")
    assert p.returncode == 3, p.stderr
    assert (oid in p.stderr or oid[:12] in p.stderr) and "quarantine" in p.stderr
    assert "hint:" in p.stderr
    assert [d.id for d in sr.deployments()] == before
    assert any(n.startswith(oid) for n in repo.quarantined()), "not quarantined"

    # gc neither crashes nor deletes what it cannot see: a reachable dirtree or commit
    # that is gone stops it with the repair command; a missing file does not matter to it
    p = atoll("--sysroot", root, "--json", "store", "gc")
    if kind == "file":
        assert p.returncode == 0, p.stderr
    else:
        assert p.returncode == 3, p.stderr
        assert json.loads(p.stdout)["error"] in ("StoreError", "CorruptObjectError")
        assert "commit the tree again" in p.stderr  # a branch: the hint for its kind
        left = set(repo.iter_objects())
        assert left == set(objects_before) - {(oid, kind)}, "gc deleted objects"

    # fsck reports the gap, exit 3
    p = atoll("--sysroot", root, "--json", "store", "fsck")
    assert p.returncode == 3
    assert json.loads(p.stdout)["incomplete_refs"]

    # the next ordinary command heals: committing the same tree writes the object again
    p = atoll("--sysroot", root, "store", "commit", str(tree), "--ref", "site/base")
    assert p.returncode == 0, p.stderr
    assert ops.fsck(repo).ok or not ops.fsck(repo).missing
    p = atoll("--sysroot", root, "deploy", "site/base")
    assert p.returncode == 0, p.stderr


@pytest.mark.parametrize("how", ("empty", "short"))
def test_commit_replaces_an_empty_or_short_object_it_would_reuse(
        build: tuple[Sysroot, Path, str, str], how: str) -> None:
    """The power-cut fault of older atolls: a truncated object stays in objects/ and a
    later commit of the same tree must not reuse it."""
    sr, tree, _, v2 = build
    repo = sr.repo
    oid = pick(repo, v2, "file")
    damage(repo.object_path(oid, "file"), how)
    again = repo.commit_dir(tree, ref="other/ref")
    assert repo.read_commit(again).tree == repo.read_commit(v2).tree
    assert repo.verify_file(oid)
    assert ops.fsck(repo).ok


@pytest.fixture
def http_host(tmp_path: Path) -> Iterator[Env]:
    www = tmp_path / "www"
    www.mkdir()
    with serve_www(www) as server:
        e = Env(tmp_path, server)
        e.commit_and_publish(1, big=8 << 20)  # a pack of several chunks (CHUNK_AVG 1 MiB)
        e.add_remote()
        Sysroot(e.host).init()
        assert e.update("download") == 0
        yield e


@pytest.mark.parametrize("how", DAMAGE)
@pytest.mark.parametrize("kind", KINDS)
def test_host_heals_by_downloading_again(http_host: Env, kind: str, how: str) -> None:
    env = http_host
    repo = Repo.open(env.host / "atoll/repo")
    v1 = env.commits[0]
    oid = pick(repo, v1, kind, max_size=1 << 20)
    damage(repo.object_path(oid, kind), how)
    env.server.requests.clear()
    p = atoll("--sysroot", str(env.host), "update", "download")
    assert p.returncode == 0, p.stderr
    assert ops.fsck(repo).ok
    assert repo.is_complete(v1)
    # only what was lost travelled (chunks by range), not the whole image
    assert all(rng for path, rng in env.server.requests
               if path.endswith(".pack")), env.server.requests
    sr = Sysroot(env.host)
    sr.init()
    assert sr.deploy(v1).commit == v1


def test_fsck_repair_fetches_from_the_remote(http_host: Env) -> None:
    env = http_host
    repo = Repo.open(env.host / "atoll/repo")
    v1 = env.commits[0]
    for kind in ("file", "dirtree"):
        damage(repo.object_path(pick(repo, v1, kind), kind), "flip")
    p = atoll("--sysroot", str(env.host), "--json", "store", "fsck", "--repair")
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["ok"] and out["unrepaired"] == []
    assert out["quarantined"] >= 2
    # a commit no remote serves any more cannot be fetched: said clearly, exit 3
    env.commit_and_publish(2)
    damage(repo.object_path(pick(repo, v1, "file"), "file"), "empty")
    p = atoll("--sysroot", str(env.host), "--json", "store", "fsck", "--repair")
    assert p.returncode == 3
    assert "not served by any remote" in json.loads(p.stdout)["unrepaired"][0]


def test_hostile_dirtree_is_a_corrupt_object_not_a_traceback(tmp_path: Path) -> None:
    """A dirtree whose bytes match its id but not the format (crafted, or from a bad
    publisher): every reader says CorruptObjectError with the id."""
    from atoll.core import canonjson
    from atoll.store.objects import Commit, DirMeta

    repo = Repo.create(tmp_path / "repo")
    with repo.transaction():
        bad = [b"not json", canonjson.dumps({"entries": {"x": {"t": "f", "id": "../../x"}}}),
               canonjson.dumps({"entries": []}), canonjson.dumps({"entries": {"x": 5}})]
        commits = []
        for i, data in enumerate(bad):
            tree = repo.write_meta_object(data, "dirtree")
            commits.append(repo.write_meta_object(Commit(
                tree=tree, root=DirMeta(0o755, 0, 0), parent=None, version=str(i),
                timestamp=0).to_bytes(), "commit"))
    for i, cid in enumerate(commits):
        repo.set_ref(f"bad/{i}", cid)
        for cmd in (["fsck"], ["gc"], ["diff", cid, commits[(i + 1) % len(commits)]]):
            p = atoll("store", *cmd, "--repo", str(repo.path))
            assert p.returncode == 3, p.stderr
            assert "dirtree" in p.stdout + p.stderr and "malformed" in p.stdout + p.stderr
        repo.set_ref(f"bad/{i}", None)


def test_fsck_and_gc_agree_about_damaged_history(build: tuple[Sysroot, Path, str, str]) -> None:
    """A damaged dirtree only an older commit (history behind a ref) needs: fsck and gc
    agree: the ref's own commit is whole, gc runs (warning that it cannot keep that
    history), fsck is clean afterwards."""
    sr, _, v1, v2 = build
    repo = sr.repo
    sr.undeploy(1) if len(sr.deployments()) > 1 else None
    repo.set_ref(sr.deployments()[0].id, None, namespace="deploy")  # only heads/site/base
    repo.set_ref(sr.deployments()[0].id, v2, namespace="deploy")
    oid = pick(repo, v1, "dirtree", not_in=v2)
    damage(repo.object_path(oid, "dirtree"), "short")
    p = atoll("--sysroot", str(sr.root), "store", "gc")
    assert p.returncode == 0, p.stderr
    assert "history commit" in p.stderr
    assert atoll("--sysroot", str(sr.root), "store", "fsck").returncode == 0


def test_store_log_of_a_missing_commit_says_so(build: tuple[Sysroot, Path, str, str]) -> None:
    sr, _, _, v2 = build
    os.unlink(sr.repo.object_path(v2, "commit"))
    p = atoll("--sysroot", str(sr.root), "store", "log", "site/base")
    assert p.returncode == 3 and "missing" in p.stderr, p.stderr


def test_a_fifo_in_place_of_an_object_never_hangs_a_reader(
        build: tuple[Sysroot, Path, str, str]) -> None:
    sr, _, _, v2 = build
    repo = sr.repo
    oid = pick(repo, v2, "dirtree")
    path = repo.object_path(oid, "dirtree")
    path.unlink()
    os.mkfifo(path)
    p = subprocess.run([sys.executable, "-m", "atoll.cli", "--sysroot", str(sr.root), "--json",
                        "store", "fsck"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 3, p.stderr
    assert f"dirtree {oid}" in json.loads(p.stdout)["corrupt"]
    assert any(n.startswith(oid) for n in repo.quarantined())


def test_gc_hint_for_a_damaged_deployment_names_a_command_that_works(
        build: tuple[Sysroot, Path, str, str]) -> None:
    sr, _, v1, _ = build
    damage(sr.repo.object_path(v1, "commit"), "short")
    p = atoll("--sysroot", str(sr.root), "store", "gc")
    assert p.returncode == 3
    assert "undeploy" in p.stderr and "refs --delete deploy/" not in p.stderr

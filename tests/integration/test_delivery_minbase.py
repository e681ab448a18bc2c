"""Real composed minbase trees: publish -> pack pull -> delta pull -> checkout equality."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from atoll.cli import main
from atoll.store.checkout import checkout
from atoll.store.repo import Repo, read_xattrs
from tests.compose_fixtures import Composed, composed
from tests.integration.delivery_fixtures import serve_www

CHANNEL = "quickstart/base"


@pytest.fixture(scope="session")
def trees(artifact_cache: Path) -> Composed:
    return composed(artifact_cache)


def listing(root: Path) -> dict[str, tuple[int, int, int, str, dict[str, bytes]]]:
    out = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            p = Path(dirpath) / name
            st = os.lstat(p)
            if p.is_symlink():
                digest = "->" + os.readlink(p)
            elif p.is_file():
                digest = hashlib.sha256(p.read_bytes()).hexdigest()
            else:
                digest = "dir"
            out[str(p.relative_to(root))] = (st.st_mode, st.st_uid, st.st_gid, digest,
                                             read_xattrs(p))
    return out


def test_publish_delta_download_checkout(trees: Composed, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    www, keys, host = tmp_path / "www", tmp_path / "keys", tmp_path / "host"
    www.mkdir()
    assert main(["-q", "keys", "init", str(keys), "--to", str(www)]) == 0

    def publish(commit: str) -> None:
        assert main(["-q", "publish", CHANNEL, "--repo", str(trees.repo.path), "--commit",
                     commit, "--to", str(www), "--keys", str(keys), "--level", "3"]) == 0

    publish(trees.v1)
    with serve_www(www) as server:
        assert main(["-q", "--sysroot", str(host), "remote", "add", "origin", server.url,
                     "--root", str(www / "metadata/root.json")]) == 0
        assert main(["-q", "--sysroot", str(host), "update", "download"]) == 0
        publish(trees.v2)
        capsys.readouterr()
        assert main(["--sysroot", str(host), "--json", "update", "check"]) == 0
        view = json.loads(capsys.readouterr().out)
        assert view["method"] == "delta" and view["target"]["commit"] == trees.v2
        assert "netcat-openbsd" in [p["name"] for p in view["packages"]["added"]]
        pack = next(www.glob("targets/packs/*.pack"))
        assert view["download_bytes"] < pack.stat().st_size // 5
        server.requests.clear()
        assert main(["-q", "--sysroot", str(host), "update", "download"]) == 0
        assert [r for r, _ in server.requests if r.endswith(".delta")]
    hrepo = Repo.open(host / "atoll/repo")
    assert hrepo.refs("remotes") == {f"origin/{CHANNEL}": trees.v2}
    checkout(hrepo, trees.v2, tmp_path / "from-host")
    checkout(trees.repo, trees.v2, tmp_path / "from-publisher", verify=False)
    assert listing(tmp_path / "from-host") == listing(tmp_path / "from-publisher")

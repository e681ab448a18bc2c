"""Publish -> serve over real HTTP on 127.0.0.1 -> update check/download, and faults.

Small synthetic trees (a few dirs made in tmp, committed with Repo.commit_dir).
Every refused update must leave the host's store and state byte-for-byte alone.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from atoll.cli import main
from atoll.core.errors import DownloadError, HostStateError
from atoll.repo.client import UpdateClient
from atoll.repo.fetch import HttpFetcher
from atoll.store.repo import Repo
from tests.integration.delivery_fixtures import (
    ENDLESS_CAP,
    WwwServer,
    serve_www,
    snapshot_host,
)


def make_tree(root: Path, version: int, *, big: int = 0) -> Path:
    rnd = random.Random(7)
    (root / "usr/lib/modules" / f"6.1.0-{version}-amd64").mkdir(parents=True)
    (root / "usr/bin").mkdir()
    (root / "etc").mkdir()
    for i in range(6):
        mod = bytearray(rnd.randbytes(40_000))
        mod[:8] = f"ver{version:05d}".encode()[:8]
        (root / f"usr/lib/modules/6.1.0-{version}-amd64/m{i}.ko").write_bytes(bytes(mod))
    (root / "usr/bin/tool").write_bytes(rnd.randbytes(100_000) + str(version).encode())
    if big:
        (root / "usr/lib/blob").write_bytes(random.Random(version).randbytes(big))
    (root / "etc/os-release").write_text(f"VERSION={version}\n")
    return root


class Env:
    def __init__(self, tmp: Path, server: WwwServer):
        self.tmp, self.server = tmp, server
        self.repo = Repo.create(tmp / "pub")
        self.www = tmp / "www"
        self.keys = tmp / "keys"
        self.host = tmp / "host"
        self.commits: list[str] = []
        assert main(["-q", "keys", "init", str(self.keys), "--to", str(self.www)]) == 0

    def commit_and_publish(self, version: int, *, big: int = 0, expires: str = "") -> str:
        cid = self.repo.commit_dir(make_tree(self.tmp / f"t{version}", version, big=big),
                                   ref="site/base", version=str(version),
                                   manifest=[{"name": "tool", "version": str(version)}])
        argv = ["-q", "publish", "site/base", "--repo", str(self.repo.path), "--to",
                str(self.www), "--keys", str(self.keys), "--deltas", "2"]
        if expires:
            argv += ["--expires", expires]
        assert main(argv) == 0
        self.commits.append(cid)
        return cid

    def add_remote(self) -> None:
        assert main(["-q", "--sysroot", str(self.host), "remote", "add", "origin",
                     self.server.url, "--root", str(self.www / "metadata/root.json")]) == 0

    def update(self, action: str) -> int:
        return main(["-q", "--sysroot", str(self.host), "update", action])

    def host_ref(self) -> str | None:
        return Repo.open(self.host / "atoll/repo").refs("remotes").get("origin/site/base")

    def target(self, suffix: str) -> str:
        return next(str(p.relative_to(self.www)) for p in self.www.rglob("*")
                    if p.name.endswith(suffix))


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    www = tmp_path / "www"
    www.mkdir()
    with serve_www(www) as server:
        e = Env(tmp_path, server)
        e.commit_and_publish(1)
        e.add_remote()
        assert e.update("download") == 0
        e.commit_and_publish(2)
        yield e


def refused(env: Env, action: str, code: int) -> None:
    before = snapshot_host(env.host)
    assert env.update(action) == code
    assert snapshot_host(env.host) == before


def test_pull_by_delta_over_http(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    assert env.host_ref() == env.commits[0]
    capsys.readouterr()
    assert main(["--sysroot", str(env.host), "--json", "update", "check"]) == 0
    import json

    view = json.loads(capsys.readouterr().out)
    assert view["method"] == "delta" and view["download_bytes"] < 20_000
    assert view["packages"]["upgraded"] == [{"name": "tool", "old": "1", "new": "2"}]
    env.server.requests.clear()
    assert env.update("download") == 0
    assert env.host_ref() == env.commits[1]
    assert not any(r.endswith(".pack") for r, _ in env.server.requests)
    state = json.loads((env.host / "atoll/state/update.json").read_text())
    assert state["commit"] == env.commits[1] and state["downloaded_since"]
    assert state["metadata_expires"] and state["version"] == "2"


def test_tampered_delta_refused(env: Env) -> None:
    env.server.faults[".delta"] = ("tamper",)
    refused(env, "download", 4)


def test_unsigned_channel_refused(env: Env) -> None:
    (env.www / "targets/refs/site/evil.json").write_text("{}")
    import json

    cfg = env.host / "atoll/state/remotes/origin/remote.json"
    raw = json.loads(cfg.read_text())
    raw["channel"] = "site/evil"
    cfg.write_text(json.dumps(raw))
    refused(env, "download", 4)


def test_rollback_refused(env: Env) -> None:
    old_ts = (env.www / "metadata/timestamp.json").read_bytes()
    env.commit_and_publish(3)
    assert env.update("check") == 0
    env.server.faults["metadata/timestamp.json"] = ("replace", old_ts)
    refused(env, "check", 4)


def test_freeze_refused_with_exit_5(env: Env) -> None:
    env.commit_and_publish(3, expires="timestamp=1s")
    time.sleep(1.5)
    refused(env, "check", 5)


def test_mix_and_match_refused(env: Env) -> None:
    snaps = sorted(env.www.glob("metadata/*.snapshot.json"),
                   key=lambda p: int(p.name.split(".")[0]))
    env.server.faults[snaps[-1].name] = ("replace", snaps[-2].read_bytes())
    refused(env, "check", 4)


def test_endless_data_refused(env: Env) -> None:
    env.server.faults[".delta"] = ("endless",)
    refused(env, "download", 6)
    # the client stopped at the signed length: it hung up long before the server's cap
    # (a byte count, where a time limit would depend on the machine's speed)
    sent = env.server.srv.endless_sent
    assert sent and all(n < ENDLESS_CAP for n in sent.values()), sent


def test_endless_metadata_refused(env: Env) -> None:
    env.server.faults["metadata/timestamp.json"] = ("endless",)
    refused(env, "check", 6)


def test_unreachable_server_exit_6_quickly(env: Env) -> None:
    """A server that never answers: the read timeout (1 s) ends the check with DownloadError.

    The server hangs until the test ends, so only the client's timeout can end
    the check; the 120 s wait is a deadline for a broken timeout, not a speed.
    """
    env.server.faults["timestamp.json"] = ("hang",)
    before = snapshot_host(env.host)
    client = UpdateClient(env.host, fetcher=HttpFetcher(connect_timeout=1, read_timeout=1))
    raised: list[BaseException] = []

    def check() -> None:
        try:
            client.check()
        except BaseException as exc:
            raised.append(exc)

    worker = threading.Thread(target=check, daemon=True)
    worker.start()
    worker.join(120)
    assert not worker.is_alive(), "the check is still waiting for a server that never answers"
    assert len(raised) == 1 and isinstance(raised[0], DownloadError), raised
    assert snapshot_host(env.host) == before


def test_below_threshold_and_revoked_key(env: Env) -> None:
    from tuf.api.metadata import Metadata

    from atoll.repo.keys import KeyDir

    old = KeyDir(env.keys).signers("timestamp")
    assert main(["-q", "keys", "rotate", "timestamp", "--keys", str(env.keys),
                 "--to", str(env.www)]) == 0
    assert env.update("check") == 0
    md = Metadata.from_bytes((env.www / "metadata/timestamp.json").read_bytes())
    md.signed.version += 1
    md.signatures.clear()
    md.sign(old[0])  # the revoked key
    env.server.faults["metadata/timestamp.json"] = ("replace", md.to_bytes())
    refused(env, "check", 4)
    # No signature at all: below the threshold of 1.
    md.signatures.clear()
    env.server.faults["metadata/timestamp.json"] = ("replace", md.to_bytes())
    refused(env, "check", 4)


def test_truncated_then_resumed(env: Env) -> None:
    env.server.faults[".delta"] = ("truncate", 1000)
    refused(env, "download", 6)
    del env.server.faults[".delta"]
    env.server.requests.clear()
    assert env.update("download") == 0
    assert env.host_ref() == env.commits[1]
    ranges = [r for p, r in env.server.requests if p.endswith(".delta")]
    assert ranges == ["bytes=1000-"]


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    d = tmp_path / "small"
    d.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2M", "tmpfs", str(d)], check=True)
    try:
        yield d
    finally:
        subprocess.run(["umount", "-l", str(d)], check=True)


def test_disk_full_during_download_then_retry(env: Env, small_fs: Path) -> None:
    # The host's download cache lives on a 2 MB filesystem; the new commit adds 1.2 MB.
    cache = env.host / "atoll/cache"
    shutil.rmtree(cache, ignore_errors=True)
    os.symlink(small_fs, cache)
    repo = Repo.open(env.host / "atoll/repo")
    repo.set_ref("origin/site/base", None, namespace="remotes")
    os.unlink(repo.object_path(env.commits[0], "commit"))  # no delta: fetch objects
    env.commit_and_publish(3, big=1_200_000)

    def fill() -> None:  # another process eats the space after the check passed
        with open(small_fs / "filler", "wb") as fh, pytest.raises(OSError):
            fh.write(b"\0" * (3 << 20))

    env.server.faults[".pack"] = ("hook", fill)
    before = snapshot_host(env.host)
    with pytest.raises(HostStateError, match="disk full"):
        UpdateClient(env.host).download()
    assert snapshot_host(env.host) == before
    os.unlink(small_fs / "filler")
    del env.server.faults[".pack"]
    assert env.update("download") == 0
    assert env.host_ref() == env.commits[-1]


def test_free_space_checked_before_download(env: Env, small_fs: Path) -> None:
    shutil.rmtree(env.host / "atoll/cache", ignore_errors=True)
    os.symlink(small_fs, env.host / "atoll/cache")
    env.commit_and_publish(3, big=3_000_000)
    env.server.requests.clear()
    before = snapshot_host(env.host)
    with pytest.raises(HostStateError, match="not enough free space"):
        UpdateClient(env.host).download()
    assert snapshot_host(env.host) == before
    assert not any(p.endswith((".delta", ".pack")) for p, _ in env.server.requests)


def test_resume_from_a_server_that_ignores_ranges(env: Env) -> None:
    delta = env.target(f"{env.commits[0]}-{env.commits[1]}.delta")
    full = (env.www / delta).stat().st_size
    env.server.faults[".delta"] = ("truncate", full // 2)
    assert env.update("download") == 6  # cut short: a download error, resumable
    env.server.faults[".delta"] = ("norange",)
    env.server.requests.clear()
    assert env.update("download") == 0
    assert env.host_ref() == env.commits[1]
    assert any(path.endswith(".delta") and rng for path, rng in env.server.requests)


@pytest.mark.parametrize("fault", ["bad206", "206from0"])
def test_resume_from_a_206_that_is_not_the_range_asked_for(env: Env, fault: str) -> None:
    """Review of issue 13: a 206 that sends the file from byte 0 gave "server sent more
    than the signed length" (reads like an attack), on every retry. The Content-Range
    (and Content-Length) must match the range asked for; otherwise it is a server that
    ignores ranges: the file is fetched again from the start, within the signed length."""
    delta = env.target(f"{env.commits[0]}-{env.commits[1]}.delta")
    full = (env.www / delta).stat().st_size
    env.server.faults[".delta"] = ("truncate", full // 2)
    assert env.update("download") == 6  # cut short: a download error, resumable
    env.server.faults[".delta"] = (fault,)
    env.server.requests.clear()
    assert env.update("download") == 0
    assert env.host_ref() == env.commits[1]
    asked = [rng for path, rng in env.server.requests if path.endswith(".delta")]
    assert asked == [f"bytes={full // 2}-", None], asked  # the range, then the whole file


def test_remote_list_show_remove(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    host = str(env.host)
    capsys.readouterr()
    assert main(["--json", "--sysroot", host, "remote", "list"]) == 0
    assert [r["name"] for r in json.loads(capsys.readouterr().out)] == ["origin"]
    assert main(["--json", "--sysroot", host, "remote", "show", "origin"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["targets_base"] == env.server.url + "targets/"
    assert shown["trusted"]["root"]["version"] == 1 and shown["trusted"]["timestamp"]["expires"]
    # a second remote for the same server, targets from another base URL
    assert main(["-q", "--sysroot", host, "remote", "add", "mirror", env.server.url,
                 "--root", str(env.www / "metadata/root.json"), "--targets-url",
                 env.server.url + "targets/"]) == 0
    assert main(["-q", "--sysroot", host, "update", "check", "--remote", "mirror"]) == 0
    assert main(["-q", "--sysroot", host, "remote", "add", "mirror", env.server.url,
                 "--root", str(env.www / "metadata/root.json")]) == 2  # exists
    assert main(["-q", "--sysroot", host, "remote", "remove", "mirror"]) == 0
    assert main(["-q", "--sysroot", host, "remote", "show", "mirror"]) == 2
    assert not (env.host / "atoll/state/remotes/mirror").exists()
    assert main(["-q", "--sysroot", host, "remote", "add", "bad", "ftp://x/", "--root",
                 str(env.www / "metadata/root.json")]) == 2


def test_downloading_twice_then_apply_on_a_host_without_deployments(env: Env) -> None:
    """A second download does not make the host look up to date (it runs nothing yet):
    apply still finds the downloaded commit."""
    assert main(["-q", "--sysroot", str(env.host), "init"]) == 0
    assert env.update("download") == 0
    assert env.update("download") == 0
    state = json.loads((env.host / "atoll/state/update.json").read_text())
    assert state["state"] == "downloaded" and state["commit"] == env.commits[1]
    assert main(["-q", "--sysroot", str(env.host), "update", "apply"]) == 0
    from atoll.deploy.sysroot import Sysroot

    assert Sysroot(env.host).deployments()[0].commit == env.commits[1]


def test_retry_after_a_cut_counts_what_the_cache_already_holds(tmp_path: Path) -> None:
    """Killed once the pack was downloaded (OOM killer, power cut): on a nearly full
    disk, the retry needs only what the import adds, not the download again."""
    www = tmp_path / "www"
    www.mkdir()
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=11m", "tmpfs", str(small)], check=True)
    try:
        with serve_www(www) as server:
            env = Env(tmp_path, server)
            env.host = small / "host"
            env.commit_and_publish(1, big=4 << 20)  # random: the pack is ~4 MiB, like the tree
            env.add_remote()
            p = subprocess.run([sys.executable, "-m", "atoll.cli", "-q", "--sysroot",
                                str(env.host), "update", "download"], capture_output=True,
                               env=dict(os.environ, ATOLL_CRASH_AT="download:fetched"))
            assert p.returncode == -9  # killed with the pack in the cache
            assert env.update("download") == 0
            assert env.host_ref() == env.commits[0]
    finally:
        subprocess.run(["umount", "-l", str(small)], check=False)


def test_update_commands_are_idempotent_with_meaningful_exit_codes(
        env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    from atoll.deploy.sysroot import Sysroot

    host = str(env.host)
    assert main(["-q", "--sysroot", host, "init"]) == 0
    assert env.update("check") == 0  # v2 is new
    assert env.update("download") == 0
    capsys.readouterr()
    assert main(["--json", "--sysroot", host, "update", "download"]) == 0
    assert json.loads(capsys.readouterr().out)["changed"] is False  # already downloaded
    assert main(["-q", "--sysroot", host, "update", "apply"]) == 0
    capsys.readouterr()
    assert env.update("check") == 77  # applied: nothing new
    capsys.readouterr()
    assert main(["--json", "--sysroot", host, "update", "apply"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["changed"] is False and "already applied" in out["note"]
    sr = Sysroot(env.host)
    assert len(sr.deployments()) == 1  # the second apply did not make a copy
    (env.host / "run/atoll").mkdir(parents=True, exist_ok=True)
    (env.host / "run/atoll/booted").write_text(sr.deployments()[0].id)
    assert env.update("check") == 77  # runs the newest
    capsys.readouterr()
    assert main(["--sysroot", host, "update", "check"]) == 77
    assert "up to date" in capsys.readouterr().out
    # booted and newest: apply and download say so, change nothing (no loop)
    assert main(["--json", "--sysroot", host, "update", "apply"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["changed"] is False and "already up to date" in out["note"]
    assert main(["--json", "--sysroot", host, "update", "download"]) == 0
    assert json.loads(capsys.readouterr().out)["changed"] is False
    assert len(sr.deployments()) == 1


def test_rebase_to_another_channel(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    v2 = env.commits[1]
    env.repo.set_ref("site/lts", env.commits[0])
    assert main(["-q", "publish", "site/lts", "--repo", str(env.repo.path), "--to",
                 str(env.www), "--keys", str(env.keys), "--level", "3"]) == 0
    host = str(env.host)
    assert main(["-q", "--sysroot", host, "init"]) == 0
    capsys.readouterr()
    assert main(["--json", "--sysroot", host, "rebase", "origin:site/lts", "--download"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["channel"] == "site/lts" and out["prepared"]["commit"] == env.commits[0]
    assert json.loads((env.host / "atoll/state/remotes/origin/remote.json").read_text())[
        "channel"] == "site/lts"
    # a channel the remote does not sign is refused; nothing changes
    assert main(["-q", "--sysroot", host, "rebase", "origin:site/nope"]) == 4
    assert json.loads((env.host / "atoll/state/remotes/origin/remote.json").read_text())[
        "channel"] == "site/lts"
    del v2


def test_origin_reboot_requests_and_a_damaged_update_json(
        env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    """Review of issue 14: the deployment `update apply` makes follows the remote's channel;
    an update applied first can be rebooted into later (now, or at a time); `update
    check` writes a damaged update.json whole again."""
    import datetime as dt

    from atoll.deploy.sysroot import Sysroot

    host = str(env.host)
    assert main(["-q", "--sysroot", host, "init"]) == 0
    capsys.readouterr()
    assert main(["--sysroot", host, "update", "check"]) == 0
    out = capsys.readouterr().out
    assert "origin:site/base: - → 2, " in out and ", delta\n" in out, out
    assert env.update("download") == 0
    assert main(["-q", "--sysroot", host, "update", "apply"]) == 0
    sr = Sysroot(env.host)
    assert sr.deployments()[0].origin == "origin:site/base"
    # applied: `--reboot` reboots into it (a sysroot that is not /: recorded only)
    capsys.readouterr()
    assert main(["--json", "--sysroot", host, "update", "apply", "--reboot"]) == 0
    assert json.loads(capsys.readouterr().out)["changed"] is True
    assert sr.events()[-1]["event"] == "reboot" and len(sr.deployments()) == 1
    at = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=2)).isoformat(timespec="minutes")
    assert main(["--json", "--sysroot", host, "update", "apply", "--at", at]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["changed"] is True and out["request"]["kind"] == "at"
    agent = json.loads((env.host / "atoll/state/agent.json").read_text())
    assert agent["request"]["at"].startswith(at[:16])
    assert main(["-q", "--sysroot", host, "update", "apply", "--cancel"]) == 0
    # without a reboot there is nothing to do, and it says how to reboot into it
    assert main(["--sysroot", host, "update", "apply"]) == 0
    assert "already applied" in capsys.readouterr().out
    # a damaged update.json: status names it; `update check` writes it whole again
    state = env.host / "atoll/state/update.json"
    state.write_text("{garbage")
    assert main(["-q", "--sysroot", host, "update", "apply", "--reboot"]) == 7
    assert main(["-q", "--sysroot", host, "update", "check"]) == 77
    assert json.loads(state.read_text())["commit"] == env.commits[1]


def test_update_commands_follow_the_policy_remote(env: Env,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    host = str(env.host)
    assert main(["-q", "--sysroot", host, "remote", "add", "mirror", env.server.url,
                 "--root", str(env.www / "metadata/root.json"), "--channel", "site/base"]) == 0
    capsys.readouterr()
    assert main(["--sysroot", host, "rebase", "mirror:site/base"]) == 0
    assert "following site/base (was origin:" in capsys.readouterr().out
    assert main(["--sysroot", host, "rebase", "mirror:site/base"]) == 0
    assert "already following site/base" in capsys.readouterr().out
    # origin is followed no more: it may go; what it downloaded is named as refs take it
    assert main(["--json", "--sysroot", host, "remote", "remove", "origin"]) == 0
    assert json.loads(capsys.readouterr().out)["refs"] == ["origin:site/base"]
    assert main(["--json", "--sysroot", host, "update", "check"]) == 0  # asks mirror
    assert json.loads(capsys.readouterr().out)["remote"] == "mirror"
    # the followed remote is refused (updates would stop), unless --force
    assert main(["--sysroot", host, "remote", "remove", "mirror"]) == 2
    assert "update policy follows remote mirror" in capsys.readouterr().err
    assert main(["-q", "--sysroot", host, "remote", "remove", "--force", "mirror"]) == 0
    assert main(["-q", "store", "refs", "--repo", f"{host}/atoll/repo", "--delete",
                 "origin:site/base"]) == 0

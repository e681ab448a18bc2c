"""atolld as the image runs it: systemd in a container (systemd-nspawn), a real
update server on 127.0.0.1, the CLI on the host talking to the agent's socket.

The composed boot tree gets the ``agent`` image feature (atoll and its
dependencies in /usr/lib/atoll/python, atolld.service enabled), is committed
and deployed in a sysroot, and booted with systemd-nspawn as the initramfs
would lay it out. Then: prepare mode checks, downloads and prepares by itself; the
agent is killed (SIGKILL) in the middle of the download and systemd restarts
it, and the download completes; an apply for the next window waits; a
cancelled apply is gone. The weekly store fsck (``atoll-fsck.timer``) is in the
image, enabled, passes ``systemd-analyze verify``, and its service run by the
container's systemd writes the result Checkmk reads.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from atoll.agent import api
from atoll.agent.feature import FSCK_SERVICE, FSCK_TIMER
from atoll.agent.feature import install as install_agent
from atoll.boot.devsysroot import cached_tree, make_sysroot
from atoll.cli import main
from atoll.core.run import run
from atoll.store.checkout import checkout
from atoll.store.repo import Repo
from tests.integration.delivery_fixtures import serve_www


@pytest.fixture(scope="module")
def agent_repo(artifact_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    tree, _ = cached_tree(artifact_cache)
    work = tmp_path_factory.mktemp("agent-image")
    copy = work / "tree"
    run(["cp", "-al", tree, copy])  # hardlinks: the feature only adds files
    (copy / ".atoll-done").unlink(missing_ok=True)
    install_agent(copy)
    repo = Repo.create(work / "repo")
    repo.commit_dir(copy, ref="test/agent", version="1", timestamp=1764170000)
    shutil.rmtree(copy)
    return repo.path


def wait_for(what: str, cond: Callable[[], object], timeout: float = 120) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def pids_of(pattern: str) -> list[int]:
    out = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


@pytest.fixture
def booted(agent_repo: Path, tmp_path: Path) -> Iterator[tuple[Path, Path, object]]:
    """A sysroot running the agent image in a container; yields (sysroot, www, server)."""
    www = tmp_path / "www"
    www.mkdir()
    with serve_www(www) as server:
        pub = Repo.create(tmp_path / "pub")
        keys = tmp_path / "keys"
        assert main(["-q", "keys", "init", str(keys), "--to", str(www)]) == 0
        sysroot = tmp_path / "sysroot"
        (dep,) = make_sysroot(sysroot, agent_repo, ["test/agent"])
        assert main(["-q", "--sysroot", str(sysroot), "remote", "add", "origin", server.url,
                     "--root", str(www / "metadata/root.json"), "--channel", "site/base"]) == 0
        assert main(["-q", "--sysroot", str(sysroot), "policy", "set", "--mode", "prepare",
                     "--window", "Sat 02:00-04:00 UTC"]) == 0
        # v2: a small tree with a big file, so the download takes a while
        v2 = tmp_path / "v2"
        for d in ("usr/lib", "usr/etc", "etc", "var"):
            (v2 / d).mkdir(parents=True)
        (v2 / "usr/lib/blob").write_bytes(os.urandom(30_000_000))
        (v2 / "usr/etc/os-release").write_text("VERSION=2\n")
        pub.commit_dir(v2, ref="site/base", version="2")
        assert main(["-q", "publish", "site/base", "--repo", str(pub.path), "--to", str(www),
                     "--keys", str(keys)]) == 0
        depdir = sysroot / "atoll/deploy" / dep
        run_atoll = sysroot / "run/atoll"
        run_atoll.mkdir(parents=True, exist_ok=True)
        (run_atoll / "booted").write_text(dep + "\n")
        argv = ["systemd-nspawn", "--register=no", "--keep-unit", "-q", "-D", str(depdir),
                f"--bind-ro={depdir}/usr:/usr", f"--bind={sysroot}/var:/var",
                f"--bind={sysroot}/boot:/boot", f"--bind={sysroot}/atoll:/atoll",
                f"--bind={run_atoll}:/run/atoll", "--boot"]
        console = open(tmp_path / "console.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen(["script", "-qec", " ".join(argv), "/dev/null"],
                                stdout=console, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            yield sysroot, www, server
        finally:
            for pid in pids_of(f"systemd-nspawn.*{depdir}"):
                os.kill(pid, signal.SIGTERM)  # an orderly shutdown of the container
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            console.close()


def container_init(sysroot: Path) -> int:
    """PID (on the host) of the container's systemd."""
    def comm(pid: int) -> str:
        return Path(f"/proc/{pid}/comm").read_text().strip()

    # (script and its shell match the pattern too)
    (nspawn,) = [p for p in pids_of(f"systemd-nspawn.*{sysroot}/atoll/deploy")
                 if comm(p) == "systemd-nspawn"]
    out = subprocess.run(["pgrep", "-P", str(nspawn)], capture_output=True, text=True).stdout
    (init,) = [int(p) for p in out.split() if comm(int(p)) == "systemd"]
    return init


def test_fsck_timer_in_the_image(agent_repo: Path, tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    repo = Repo.open(agent_repo)
    checkout(repo, repo.resolve("test/agent"), tree)
    units = tree / "usr/lib/systemd/system"
    assert (units / "atoll-fsck.service").read_text() == FSCK_SERVICE
    assert (units / "atoll-fsck.timer").read_text() == FSCK_TIMER
    # enabled: the timer in timers.target; the service only through its timer
    assert os.readlink(units / "timers.target.wants/atoll-fsck.timer") == "../atoll-fsck.timer"
    assert not list(units.glob("*.wants/atoll-fsck.service"))
    service = dict(ln.split("=", 1) for ln in FSCK_SERVICE.splitlines() if "=" in ln)
    assert service["ExecStart"] == "/usr/bin/atoll store fsck --repair --json"
    assert (service["Type"], service["Nice"], service["IOSchedulingClass"]) == (
        "oneshot", "19", "idle")
    timer = dict(ln.split("=", 1) for ln in FSCK_TIMER.splitlines() if "=" in ln)
    assert (timer["OnCalendar"], timer["RandomizedDelaySec"], timer["Persistent"]) == (
        "weekly", "6h", "true")
    # systemd's own check, against the image (it also finds /usr/bin/atoll executable)
    r = subprocess.run(["systemd-analyze", "verify", f"--root={tree}", "atoll-fsck.service",
                        "atoll-fsck.timer"], capture_output=True, text=True, timeout=120)
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")


def agent_status(sysroot: Path) -> dict[str, object]:
    return api.call(sysroot, "GET", "/v1/status", timeout=10)  # type: ignore[no-any-return]


def test_agent_in_a_container(booted: tuple[Path, Path, object], tmp_path: Path) -> None:
    sysroot, _www, server = booted
    gate = {"open": False}

    def slow_pack() -> None:  # hold the big download until the test has killed the agent
        wait_for("the test to release the download", lambda: gate["open"], 120)

    server.faults[".pack"] = ("hook", slow_pack)  # type: ignore[attr-defined]
    wait_for("atolld's socket", lambda: api.running(sysroot), 180)
    # prepare mode: the agent checks and starts downloading by itself
    wait_for("the download to start", lambda: any(
        p.endswith(".pack") for p, _ in server.requests), 120)  # type: ignore[attr-defined]
    (old,) = pids_of("/usr/sbin/atolld")
    os.kill(old, signal.SIGKILL)
    repo = Repo.open(sysroot / "atoll/repo")
    assert "origin/site/base" not in repo.refs("remotes")  # nothing unverified landed
    gate["open"] = True
    # systemd restarts atolld (Restart=on-failure); it downloads again and stages
    wait_for("a new atolld", lambda: [p for p in pids_of("/usr/sbin/atolld") if p != old], 60)
    # the killed one's socket file is still there: wait until the new one listens on it
    wait_for("the new atolld's socket", lambda: api.running(sysroot), 180)
    wait_for("the update prepared", lambda: (agent_status(sysroot)["host"] or {}).get(  # type: ignore[union-attr]
        "prepared"), 240)
    st = agent_status(sysroot)
    decisions = st["agent"]["decisions"]  # type: ignore[index]
    assert any("waiting for the customer" in d["reason"] for d in decisions)
    # the customer asks for the next window, then changes their mind
    r = subprocess.run([str(Path(os.environ.get("VIRTUAL_ENV", ".venv")) / "bin/atoll"),
                        "--sysroot", str(sysroot), "--json", "update", "apply", "--window"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["decision"]["action"] == "wait"
    assert "Sat 02:00-04:00 UTC" in out["decision"]["reason"]
    assert agent_status(sysroot)["agent"]["request"]["kind"] == "window"  # type: ignore[index]
    assert main(["-q", "--sysroot", str(sysroot), "update", "apply", "--cancel"]) == 0
    assert agent_status(sysroot)["agent"]["request"] is None  # type: ignore[index]
    # nothing was applied: the booted deployment is still the only one in the loader
    assert len(json.loads((sysroot / "boot/loader/deployments.json").read_text())
               ["deployments"]) == 1
    # the scheduled fsck, as the container's systemd runs it: the timer is active, and
    # its service re-hashes the host's store and writes what Checkmk reads
    init = container_init(sysroot)
    ns = ["nsenter", "--target", str(init), "--mount", "--pid", "--uts", "--ipc"]
    r = subprocess.run([*ns, "systemctl", "is-active", "atoll-fsck.timer"],
                       capture_output=True, text=True, timeout=60)
    assert r.stdout.strip() == "active", r
    (sysroot / "atoll/state/fsck.json").unlink(missing_ok=True)
    r = subprocess.run([*ns, "systemctl", "start", "atoll-fsck.service"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    result = json.loads((sysroot / "atoll/state/fsck.json").read_text())
    assert result["ok"] is True and result["checked"] > 10_000 and result["corrupt"] == 0

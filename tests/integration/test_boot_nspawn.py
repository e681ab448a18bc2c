"""Fast tier: boot deployments with systemd-nspawn (no kernel, no GRUB) to test
atoll-boot-complete.service, the health-check drop-ins, events, grubenv and
the reboot request, on a real composed Debian tree with the `boot` feature."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from atoll.boot import state
from atoll.boot.counting import grub_step
from atoll.boot.devsysroot import cached_repo, make_sysroot
from atoll.cli import main as cli_main

NSPAWN_REBOOT = 133  # systemd-nspawn's exit status when the container asked to reboot


@pytest.fixture(scope="session")
def boot_repo(artifact_cache: Path) -> tuple[Path, dict[str, str]]:
    return cached_repo(artifact_cache)


def simulate_grub(sysroot: Path) -> tuple[str, bool]:
    """What GRUB would do at power-on: apply grub_step to the sysroot's grubenv."""
    deployments = state.read_deployments(sysroot / "boot" / "loader")
    ids = [d["id"] for d in deployments]
    choice = grub_step(state.read_env(sysroot), ids)
    state.write_env(sysroot, choice.env)
    return ids[choice.entry], choice.fallback


def nspawn_boot(sysroot: Path, deployment: str, fallback: bool) -> tuple[int, str]:
    """Boot ``deployment`` like the initramfs would lay it out; return (exit, console)."""
    dep = sysroot / "atoll" / "deploy" / deployment
    run_atoll = sysroot / "run" / "atoll"
    shutil.rmtree(run_atoll, ignore_errors=True)
    run_atoll.mkdir(parents=True)
    (run_atoll / "booted").write_text(deployment + "\n")
    (run_atoll / "fallback").write_text("1\n" if fallback else "0\n")
    # Power off once boot-complete succeeded (a failure reboots by itself).
    dropin = dep / "etc/systemd/system/atoll-boot-complete.service.d"
    dropin.mkdir(parents=True, exist_ok=True)
    (dropin / "test-poweroff.conf").write_text(
        "[Service]\nExecStartPost=/bin/systemctl poweroff --no-block\n")
    argv = [
        "systemd-nspawn", "--register=no", "--keep-unit", "-q", "-D", str(dep),
        f"--bind-ro={dep}/usr:/usr", f"--bind={sysroot}/var:/var",
        f"--bind={sysroot}/boot:/boot", f"--bind={sysroot}/atoll:/atoll",
        f"--bind={run_atoll}:/run/atoll", "--boot",
    ]
    proc = subprocess.run(["script", "-qec", " ".join(argv), "/dev/null"],
                          capture_output=True, timeout=180, check=False)
    return proc.returncode, proc.stdout.decode("utf-8", "replace")


def add_check(sysroot: Path, deployment: str, kind: str, name: str, body: str) -> None:
    d = sysroot / "atoll" / "deploy" / deployment / "etc/atoll/health.d" / kind
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_text("#!/bin/sh\n" + body + "\n")
    (d / name).chmod(0o755)


@pytest.fixture
def sysroot(tmp_path: Path, boot_repo: tuple[Path, dict[str, str]]) -> tuple[Path, str, str]:
    """(sysroot, v2, v1): v2 deployed as next boot (on trial), v1 good as the rollback."""
    root = tmp_path / "sysroot"
    v2, v1 = make_sysroot(root, boot_repo[0], ["test/v1", "test/v2"], good=["test/v1"])
    return root, v2, v1


def events(sysroot: Path) -> list[dict[str, object]]:
    return state.read_events(sysroot)


def test_healthy_update_is_marked_good(sysroot: tuple[Path, str, str]) -> None:
    sysroot, v2, _ = sysroot
    assert state.read_env(sysroot)["atoll_pending"] == v2
    add_check(sysroot, v2, "wanted.d", "90-optional", "echo not yet; exit 3")
    deployment, fallback = simulate_grub(sysroot)
    assert (deployment, fallback) == (v2, False)
    assert state.read_env(sysroot)["atoll_tries"] == "2"
    rc, console = nspawn_boot(sysroot, deployment, fallback)
    assert rc == 0, console
    assert "ATOLL-BOOT-COMPLETE" in console
    ev = events(sysroot)[-1]
    assert (ev["deployment"], ev["result"], ev["event"]) == (v2, "good", "boot")
    checks = {c["name"]: c for c in ev["checks"]}  # type: ignore[attr-defined]
    assert checks["00-atoll-layout"]["ok"] is True  # /usr read-only, booted id present
    assert checks["90-optional"]["ok"] is False and checks["90-optional"]["required"] is False
    assert state.read_env(sysroot)["atoll_pending"] == ""
    assert v2 in state.read_good(sysroot)
    # Next power-on boots v2 plainly: no trial any more.
    assert simulate_grub(sysroot) == (v2, False)


def test_failed_required_check_reboots_into_rollback_with_reason(
    sysroot: tuple[Path, str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    sysroot, v2, v1 = sysroot
    add_check(sysroot, v2, "required.d", "50-db", "echo 'database refuses writes'; exit 1")
    deployment, fallback = simulate_grub(sysroot)
    rc, console = nspawn_boot(sysroot, deployment, fallback)
    assert rc == NSPAWN_REBOOT, console  # boot-complete asked for a reboot
    ev = events(sysroot)[-1]
    assert (ev["deployment"], ev["result"]) == (v2, "failed")
    assert "50-db" in str(ev["reason"]) and "database refuses writes" in str(ev["reason"])
    assert state.read_env(sysroot)["atoll_tries"] == "0"
    # GRUB now boots the rollback with atoll.fallback=1.
    deployment, fallback = simulate_grub(sysroot)
    assert (deployment, fallback) == (v1, True)
    rc, console = nspawn_boot(sysroot, deployment, fallback)
    assert rc == 0, console
    ev = events(sysroot)[-1]
    assert (ev["deployment"], ev["result"]) == (v1, "rolled-back")
    assert f"{v2} failed: required health check 50-db failed" in str(ev["reason"])
    # `atoll boot status --json` says what happened and why.
    (sysroot / "run" / "atoll" / "booted").write_text(v1 + "\n")
    assert cli_main(["--sysroot", str(sysroot), "boot", "status", "--json"]) == 0
    st = json.loads(capsys.readouterr().out)
    assert st["booted"] == v1 and st["next"] == v2 and st["tries_left"] == 0
    assert st["last_boot"]["result"] == "rolled-back"
    assert "50-db" in st["last_boot"]["reason"]

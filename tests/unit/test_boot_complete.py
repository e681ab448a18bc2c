"""boot-complete, health-check discovery and the grub writer on directory sysroots."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from atoll.boot import state
from atoll.boot.complete import boot_complete, boot_status
from atoll.boot.health import discover, run_checks
from atoll.boot.writer import grub_writer
from atoll.core.errors import HostStateError
from atoll.core.fsutil import atomic_symlink, atomic_write_json


def check(root: Path, where: str, kind: str, name: str, body: str, mode: int = 0o755) -> None:
    d = root / where / kind
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_text("#!/bin/sh\n" + body + "\n")
    (d / name).chmod(mode)


def booted_sysroot(tmp_path: Path, booted: str, env: dict[str, str]) -> Path:
    root = tmp_path / "sysroot"
    (root / "run/atoll").mkdir(parents=True)
    (root / "run/atoll/booted").write_text(booted + "\n")
    (root / "atoll/state").mkdir(parents=True)
    state.write_env(root, env)
    return root


def test_discover_etc_overrides_usr_and_sorts(tmp_path: Path) -> None:
    check(tmp_path, "usr/lib/atoll/health.d", "required.d", "20-b", "exit 1")
    check(tmp_path, "etc/atoll/health.d", "required.d", "20-b", "exit 0")
    check(tmp_path, "usr/lib/atoll/health.d", "wanted.d", "10-a", "exit 0")
    check(tmp_path, "etc/atoll/health.d", "required.d", "30-c.disabled", "exit 1")
    found = [(n, r, str(p.relative_to(tmp_path))) for n, r, p in discover(tmp_path)]
    assert found == [("10-a", False, "usr/lib/atoll/health.d/wanted.d/10-a"),
                     ("20-b", True, "etc/atoll/health.d/required.d/20-b")]


def test_not_executable_and_timeout_fail(tmp_path: Path) -> None:
    check(tmp_path, "etc/atoll/health.d", "required.d", "10-noexec", "exit 0", mode=0o644)
    check(tmp_path, "etc/atoll/health.d", "required.d", "20-slow", "exec sleep 5")
    res = {r.name: r for r in run_checks(tmp_path, timeout=0.5)}
    assert not res["10-noexec"].ok and res["10-noexec"].exit_code == 126
    assert not res["20-slow"].ok and "timed out" in res["20-slow"].output


def test_pending_passes_and_is_marked_good(tmp_path: Path) -> None:
    root = booted_sysroot(tmp_path, "c2.0", {"atoll_pending": "c2.0", "atoll_tries": "2",
                                             "atoll_max_tries": "3"})
    check(root, "etc/atoll/health.d", "wanted.d", "90-w", "echo meh; exit 1")
    reboots: list[int] = []
    ev = boot_complete(root, root, cmdline="", reboot=lambda: reboots.append(1))
    assert (ev["result"], ev["deployment"], reboots) == ("good", "c2.0", [])
    assert state.read_env(root) == {"atoll_pending": "", "atoll_tries": ""}
    assert state.read_good(root) == ["c2.0"]
    assert state.read_events(root)[-1] == ev


def test_pending_fails_records_then_reboots(tmp_path: Path) -> None:
    root = booted_sysroot(tmp_path, "c2.0", {"atoll_pending": "c2.0", "atoll_tries": "2",
                                             "atoll_max_tries": "3"})
    check(root, "etc/atoll/health.d", "required.d", "50-db", "echo no writes; exit 4")
    order: list[str] = []

    def on_event(ev: dict[str, Any]) -> None:
        order.append("event:" + ev["result"])

    ev = boot_complete(root, root, cmdline="", reboot=lambda: order.append("reboot"),
                       on_event=on_event)
    assert order == ["event:failed", "reboot"]
    assert "50-db failed (exit 4): no writes" in ev["reason"]
    assert state.read_env(root)["atoll_tries"] == "0"
    assert state.read_good(root) == []


def test_fallback_boot_reports_rollback(tmp_path: Path) -> None:
    root = booted_sysroot(tmp_path, "c1.0", {"atoll_pending": "c2.0", "atoll_tries": "0",
                                             "atoll_max_tries": "3"})
    ev = boot_complete(root, root, cmdline="ro atoll.deployment=c1.0 atoll.fallback=1",
                       reboot=lambda: None)
    assert ev["result"] == "rolled-back"
    assert ev["reason"] == "deployment c2.0 did not reach boot-complete in 3 tries"
    st = boot_status(root)
    assert st["booted"] == "c1.0" and st["pending"] == "c2.0" and st["tries_left"] == 0
    assert st["last_boot"]["result"] == "rolled-back"


def test_not_booted_from_atoll_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(HostStateError, match="not booted"):
        boot_complete(tmp_path, tmp_path, cmdline="")


def fake_deploy(root: Path, dep_id: str) -> dict[str, Any]:
    mods = root / "atoll/deploy" / dep_id / "usr/lib/modules/6.1.0-t"
    mods.mkdir(parents=True)
    (mods / "vmlinuz").write_text("k-" + dep_id)
    (mods / "initrd.img").write_text("i-" + dep_id)
    return {"id": dep_id, "commit": dep_id.split(".")[0], "version": dep_id, "kernel": "6.1.0-t"}


def test_grub_writer_copies_kernels_stages_trial_and_collects(tmp_path: Path) -> None:
    root = tmp_path
    d1, d2, d3 = (fake_deploy(root, i) for i in ("c1.0", "c2.0", "c3.0"))
    loader0 = root / "boot/loader.0"
    loader0.mkdir(parents=True)
    atomic_write_json(loader0 / "deployments.json", {"version": 1, "deployments": [d1]})
    grub_writer(root, loader0, [d1])
    atomic_symlink("loader.0", root / "boot/loader")
    state.add_good(root, "c1.0")
    loader1 = root / "boot/loader.1"
    loader1.mkdir()
    atomic_write_json(loader1 / "deployments.json", {"version": 1, "deployments": [d2, d1]})
    grub_writer(root, loader1, [d2, d1])
    assert (root / "boot/atoll/c2/vmlinuz").read_text() == "k-c2.0"
    assert "atoll.deployment=c2.0" in (loader1 / "grub.cfg").read_text()
    assert state.read_env(root)["atoll_pending"] == "c2.0"
    atomic_symlink("loader.1", root / "boot/loader")
    # The next loader drops c1: its kernel stays while the active loader refers to it...
    atomic_write_json(loader0 / "deployments.json", {"version": 1, "deployments": [d3, d2]})
    grub_writer(root, loader0, [d3, d2])
    assert sorted(p.name for p in (root / "boot/atoll").iterdir()) == ["c1", "c2", "c3"]
    assert state.read_env(root)["atoll_pending"] == "c3.0"
    atomic_symlink("loader.0", root / "boot/loader")
    # ...and goes once no loader does.
    atomic_write_json(loader1 / "deployments.json", {"version": 1, "deployments": [d3, d2]})
    grub_writer(root, loader1, [d3, d2])
    assert sorted(p.name for p in (root / "boot/atoll").iterdir()) == ["c2", "c3"]
    assert state.read_env(root)["atoll_tries"] == "3"  # same pending: tries kept


def test_grub_writer_refuses_a_deployment_without_kernel(tmp_path: Path) -> None:
    (tmp_path / "atoll/deploy/c9.0/usr").mkdir(parents=True)
    loader = tmp_path / "boot/loader.0"
    loader.mkdir(parents=True)
    with pytest.raises(HostStateError, match="no kernel"):
        grub_writer(tmp_path, loader, [{"id": "c9.0", "commit": "c9"}])
    assert not (loader / "grub.cfg").exists()


def test_boot_complete_entry_needs_only_the_stdlib() -> None:
    """Images carry atoll's sources but no PyPI packages: the unit's entry point
    must import with Debian's bare python3 (site-packages disabled)."""
    import subprocess

    src = Path(__file__).resolve().parents[2] / "src"
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import runpy; "
            "sys.argv = ['atoll', 'boot-complete', '--help']; "
            "runpy.run_module('atoll.cli.boot', run_name='__main__')")
    proc = subprocess.run(["/usr/bin/python3", "-S", "-c", code, str(src)],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "--console" in proc.stdout

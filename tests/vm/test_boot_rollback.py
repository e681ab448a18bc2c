"""Automatic rollback on real GRUB + kernel: a failed required health check
(UEFI), and a deployment that never reaches boot-complete (BIOS)."""

from __future__ import annotations

from pathlib import Path

from atoll.boot.qemu import VM, overlay
from tests.vm.conftest import ImageFactory, markers

BOOT_TIMEOUT = 300


def test_failed_health_check_rolls_back_by_itself(make_image: ImageFactory,
                                                  tmp_path: Path) -> None:
    image = make_image(
        "v3-unhealthy", ["test/v2", "test/v3"], good=["test/v2"],
        checks={"test/v3": {"50-db-writes": "echo 'database refuses writes'; exit 1"}})
    v2, v3 = image.ids["test/v2"], image.ids["test/v3"]
    disk = overlay(image.path, tmp_path / "disk.qcow2")
    with VM(disk, tmp_path / "console.log", firmware="uefi") as vm:
        vm.wait_for(r"ATOLL-BOOT-STATUS \{.*\"rolled-back\".*\}\r?\n", 2 * BOOT_TIMEOUT)
        text = vm.text()
    assert f"mounted deployment {v3} fallback=0" in text
    assert f"mounted deployment {v2} fallback=1" in text
    failed, rolled = markers(text, "BOOT-COMPLETE")
    assert (failed["deployment"], failed["result"], failed["reboot"]) == (v3, "failed", True)
    assert "50-db-writes" in failed["reason"] and "database refuses writes" in failed["reason"]
    assert (rolled["deployment"], rolled["result"]) == (v2, "rolled-back")
    assert f"{v3} failed: required health check 50-db-writes failed" in rolled["reason"]
    status = markers(text, "BOOT-STATUS")[-1]
    assert status["booted"] == v2 and status["next"] == v3 and status["rollback"] == v2
    assert status["tries_left"] == 0 and status["last_boot"]["result"] == "rolled-back"


def test_broken_boot_falls_back_after_tries_run_out(make_image: ImageFactory,
                                                    tmp_path: Path) -> None:
    image = make_image("v4-broken", ["test/v2", "test/v4"], good=["test/v2"],
                       break_initrd=["test/v4"])
    v2, v4 = image.ids["test/v2"], image.ids["test/v4"]
    disk = overlay(image.path, tmp_path / "disk.qcow2")
    with VM(disk, tmp_path / "console.log", firmware="bios") as vm:
        vm.wait_for(r"ATOLL-BOOT-STATUS \{.*\}\r?\n", 3 * BOOT_TIMEOUT)
        text = vm.text()
    # Three kernel starts that panic (garbage initrd; panic=10 reboots), then v2.
    assert text.count("Kernel panic") == 3, text[-3000:]
    assert f"mounted deployment {v4}" not in text
    assert f"mounted deployment {v2} fallback=1" in text
    (event,) = markers(text, "BOOT-COMPLETE")
    assert (event["deployment"], event["result"]) == (v2, "rolled-back")
    assert f"{v4} did not reach boot-complete in 3 tries" in event["reason"]

"""Boot v1 from a built image to "marked good" (BIOS); stage v2 with the deploy
layer on the powered-off disk; boot again: v2 runs, is marked good, and data
written to /var under v1 is still there. Then stage a v3 that fails a required
check: it boots, fails, the host rolls back to v2 by itself, and v1's /var
data is still there after the rollback."""

from __future__ import annotations

from pathlib import Path

from atoll.boot.qemu import VM
from atoll.deploy import Sysroot
from atoll.store import Repo
from tests.vm.conftest import ImageFactory, add_check, markers, mounted_root

BOOT_TIMEOUT = 300

# The data is synced, as a database does: QEMU is killed (a power cut) after boot-complete.
V1_WRITES = ("mkdir -p /var/lib/boot-test\n"
             "[ -e /var/lib/boot-test/data ] || echo written-by-v1 > /var/lib/boot-test/data\n"
             "sync /var/lib/boot-test/data")
V2_READS = "grep -qx written-by-v1 /var/lib/boot-test/data || { echo '/var data lost'; exit 1; }"
V3_FAILS = "echo 'database refuses writes'; exit 1"


def test_boot_v1_then_update_to_v2_then_roll_back_from_v3(
        make_image: ImageFactory, tmp_path: Path,
        boot_repo: tuple[Path, dict[str, str]]) -> None:
    image = make_image("v1", ["test/v1"], checks={"test/v1": {"60-write-var": V1_WRITES}},
                       fmt="raw")
    v1 = image.ids["test/v1"]
    with VM(image.path, tmp_path / "console1.log", firmware="bios") as vm:
        vm.wait_for(r"ATOLL-BOOT-STATUS \{.*\}\r?\n", BOOT_TIMEOUT)
        text = vm.text()
    # (QEMU is killed here: a power cut right after boot-complete.)
    assert f"ATOLL-INITRAMFS: mounted deployment {v1} fallback=0" in text
    (event,) = markers(text, "BOOT-COMPLETE")
    assert (event["deployment"], event["result"]) == (v1, "good")
    checks = {c["name"]: c["ok"] for c in event["checks"]}
    assert checks == {"00-atoll-layout": True, "10-failed-units": True, "60-write-var": True}
    (status,) = markers(text, "BOOT-STATUS")
    assert status["booted"] == v1 and status["pending"] is None and status["good"] == [v1]

    # Stage v2 and apply it with the deploy layer (what `update download` +
    # `update apply` do on the host), here on the powered-off disk.
    v2 = _stage_on_disk(image.path, tmp_path / "mnt", boot_repo[0], "test/v2",
                        "70-var-kept", V2_READS)

    with VM(image.path, tmp_path / "console2.log", firmware="bios") as vm:
        vm.wait_for(r"ATOLL-BOOT-STATUS \{.*\}\r?\n", BOOT_TIMEOUT)
        text = vm.text()
    assert f"ATOLL-INITRAMFS: mounted deployment {v2} fallback=0" in text
    (event,) = markers(text, "BOOT-COMPLETE")
    assert (event["deployment"], event["result"]) == (v2, "good")
    assert {c["name"]: c["ok"] for c in event["checks"]}["70-var-kept"] is True
    (status,) = markers(text, "BOOT-STATUS")
    assert (status["booted"], status["next"], status["rollback"]) == (v2, v2, v1)
    assert status["pending"] is None and v2 in status["good"]

    # v3 fails a required check: one boot of v3, the reboot it asks for, v2 with fallback.
    v3 = _stage_on_disk(image.path, tmp_path / "mnt", boot_repo[0], "test/v3",
                        "50-db-writes", V3_FAILS)

    with VM(image.path, tmp_path / "console3.log", firmware="bios") as vm:
        vm.wait_for(r"ATOLL-BOOT-STATUS \{.*\"rolled-back\".*\}\r?\n", 3 * BOOT_TIMEOUT)
        text = vm.text()
    assert f"ATOLL-INITRAMFS: mounted deployment {v3} fallback=0" in text
    assert f"ATOLL-INITRAMFS: mounted deployment {v2} fallback=1" in text
    failed, rolled = markers(text, "BOOT-COMPLETE")
    assert (failed["deployment"], failed["result"], failed["reboot"]) == (v3, "failed", True)
    assert (rolled["deployment"], rolled["result"]) == (v2, "rolled-back")
    # v2's check, run again on the rollback boot, reads what v1 wrote
    assert {c["name"]: c["ok"] for c in rolled["checks"]}["70-var-kept"] is True
    status = markers(text, "BOOT-STATUS")[-1]
    assert (status["booted"], status["next"], status["rollback"]) == (v2, v3, v2)
    with mounted_root(image.path, tmp_path / "mnt") as root:
        assert (root / "var/lib/boot-test/data").read_text() == "written-by-v1\n"


def _stage_on_disk(disk: Path, mnt: Path, repo: Path, ref: str, check: str, body: str) -> str:
    """Stage and finalize ``ref`` on the powered-off disk (what `update download` +
    `update apply` do on the host), with a required check; the deployment id."""
    with mounted_root(disk, mnt) as root:
        sysroot = Sysroot(root)
        sysroot.prepare(ref, repo=Repo.open(repo))
        dep = sysroot.finalize()
        add_check(root / "atoll/deploy" / dep.id, "required.d", check, body)
    return dep.id

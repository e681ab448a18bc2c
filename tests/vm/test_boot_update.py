"""Boot v1 from a built image to "marked good" (BIOS); stage v2 with the deploy
layer on the powered-off disk; boot again: v2 runs, is marked good, and data
written to /var under v1 is still there."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

from atoll.boot.image import ROOT_START
from atoll.boot.qemu import VM
from atoll.deploy import Sysroot
from atoll.store import Repo
from tests.vm.conftest import ImageFactory, add_check, markers

BOOT_TIMEOUT = 300

# The data is synced, as a database does: QEMU is killed (a power cut) after boot-complete.
V1_WRITES = ("mkdir -p /var/lib/boot-test\n"
             "[ -e /var/lib/boot-test/data ] || echo written-by-v1 > /var/lib/boot-test/data\n"
             "sync /var/lib/boot-test/data")
V2_READS = "grep -qx written-by-v1 /var/lib/boot-test/data || { echo '/var data lost'; exit 1; }"


@contextlib.contextmanager
def mounted_root(disk: Path, mnt: Path) -> Iterator[Path]:
    """Mount the image's ext4 root (a loop device at the partition's offset)."""
    loop = subprocess.run(["losetup", "--find", "--show", "-o", str(ROOT_START), disk],
                          capture_output=True, check=True, text=True).stdout.strip()
    try:
        mnt.mkdir(exist_ok=True)
        subprocess.run(["mount", loop, mnt], check=True)
        try:
            yield mnt
        finally:
            subprocess.run(["umount", mnt], check=True)
    finally:
        subprocess.run(["losetup", "-d", loop], check=True)


def test_boot_v1_then_update_to_v2(make_image: ImageFactory, tmp_path: Path,
                                   boot_repo: tuple[Path, dict[str, str]]) -> None:
    image = make_image("v1", ["test/v1"], checks={"test/v1": {"60-write-var": V1_WRITES}},
                       fmt="raw")
    v1 = image.ids["test/v1"]
    with VM(image.path, tmp_path / "console1.log", firmware="bios") as vm:
        vm.wait_for(r"ATOLL-BOOT-STATUS \{.*\}", BOOT_TIMEOUT)
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
    with mounted_root(image.path, tmp_path / "mnt") as root:
        sysroot = Sysroot(root)
        sysroot.stage("test/v2", repo=Repo.open(boot_repo[0]))
        dep = sysroot.finalize()
        add_check(root / "atoll/deploy" / dep.id, "required.d", "70-var-kept", V2_READS)
    v2 = dep.id

    with VM(image.path, tmp_path / "console2.log", firmware="bios") as vm:
        vm.wait_for(r"ATOLL-BOOT-STATUS \{.*\}", BOOT_TIMEOUT)
        text = vm.text()
    assert f"ATOLL-INITRAMFS: mounted deployment {v2} fallback=0" in text
    (event,) = markers(text, "BOOT-COMPLETE")
    assert (event["deployment"], event["result"]) == (v2, "good")
    assert {c["name"]: c["ok"] for c in event["checks"]}["70-var-kept"] is True
    (status,) = markers(text, "BOOT-STATUS")
    assert (status["booted"], status["next"], status["rollback"]) == (v2, v2, v1)
    assert status["pending"] is None and v2 in status["good"]

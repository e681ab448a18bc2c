"""The whole update path inside a real guest: atolld checks a TUF update server
(on the host's 127.0.0.1, reached through QEMU's user networking), downloads
and verifies v2, stages it, applies it and reboots; GRUB boots v2 on trial and
boot-complete marks it good. Nothing is done to the disk from outside."""

from __future__ import annotations

from pathlib import Path

from atoll.boot.qemu import VM
from tests.integration.delivery_fixtures import serve_www
from tests.vm.agent_fixtures import Versions, host_image
from tests.vm.conftest import markers

TIMEOUT = 900


def test_agent_updates_the_guest_and_it_reboots_into_v2(versions: Versions, published: Path,
                                                        tmp_path: Path) -> None:
    c2, www = versions.c2, published
    with serve_www(www) as server:
        port = server.url.rsplit(":", 1)[1].strip("/")
        image = tmp_path / "host.qcow2"
        v1 = host_image(versions, www, f"http://10.0.2.2:{port}/", image)
        with VM(image, tmp_path / "console.log", firmware="bios", net=True) as vm:
            vm.wait_for(rf"ATOLL-INITRAMFS: mounted deployment {v1} ", TIMEOUT)
            vm.wait_for(r"ATOLL-BOOT-COMPLETE \{.*\}\r?\n", TIMEOUT)
            m = vm.wait_for(rf"ATOLL-INITRAMFS: mounted deployment {c2}\.\d+ fallback=0",
                            TIMEOUT)
            vm.wait_for(r"ATOLL-BOOT-STATUS \{.*\}\r?\n", TIMEOUT, m.end())
            text = vm.text()
        downloads = [p for p, _ in server.requests if "/packs/" in p or "/deltas/" in p]
    assert downloads, "the guest downloaded nothing from the update server"
    events = markers(text, "BOOT-COMPLETE")
    assert (events[0]["deployment"], events[0]["result"]) == (v1, "good")
    assert events[-1]["deployment"].startswith(c2) and events[-1]["result"] == "good"
    status = markers(text, "BOOT-STATUS")[-1]
    assert status["booted"].startswith(c2) and status["rollback"] == v1

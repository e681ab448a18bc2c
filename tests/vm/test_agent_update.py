"""The whole update path inside a real guest: atolld checks a TUF update server
(on the host's 127.0.0.1, reached through QEMU's user networking), downloads
and verifies v2, stages it, applies it and reboots; GRUB boots v2 on trial and
boot-complete marks it good. Nothing is done to the disk from outside."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from atoll.agent.feature import install as install_agent
from atoll.agent.policy import Policy
from atoll.agent.state import AgentFiles
from atoll.boot.devsysroot import cached_tree
from atoll.boot.image import build_image
from atoll.boot.qemu import VM
from atoll.cli import main
from atoll.core.run import run
from atoll.deploy import Sysroot
from atoll.store import Repo
from tests.integration.delivery_fixtures import serve_www
from tests.vm.conftest import markers

TIMEOUT = 900
NETWORK = "[Match]\nName=en*\n\n[Network]\nDHCP=yes\n"


class NetVM(VM):
    """A guest with QEMU user networking: the host's 127.0.0.1 is 10.0.2.2 inside."""

    def argv(self) -> list[str]:
        argv = super().argv()
        i = argv.index("-nic")
        argv[i + 1] = "user,model=virtio-net-pci"
        return argv


def _enable(tree: Path, unit: str, target: str) -> None:
    wants = tree / "usr/lib/systemd/system" / f"{target}.wants"
    wants.mkdir(parents=True, exist_ok=True)
    if not (wants / unit).is_symlink():
        os.symlink(f"../{unit}", wants / unit)


@pytest.fixture(scope="module")
def versions(artifact_cache: Path, tmp_path_factory: pytest.TempPathFactory
             ) -> tuple[Repo, str, str]:
    """A publisher's repo with site/base v1 (the boot tree + the agent) and v2."""
    tree, _ = cached_tree(artifact_cache)
    work = tmp_path_factory.mktemp("agent-vm")
    v1 = work / "v1"
    run(["cp", "-al", tree, v1])  # hardlinks: only new files are added below
    (v1 / ".atoll-done").unlink(missing_ok=True)
    install_agent(v1)
    (v1 / "usr/lib/systemd/network").mkdir(parents=True, exist_ok=True)
    (v1 / "usr/lib/systemd/network/80-atoll-test.network").write_text(NETWORK)
    _enable(v1, "systemd-networkd.service", "multi-user.target")
    _enable(v1, "systemd-networkd-wait-online.service", "network-online.target")
    pub = Repo.create(work / "pub")
    c1 = pub.commit_dir(v1, ref="site/base", version="1", timestamp=1764170001)
    v2 = work / "v2"
    run(["cp", "-al", v1, v2])
    (v2 / "usr/share/atoll-test-version").write_text("2\n")
    c2 = pub.commit_dir(v2, ref="site/base", version="2", timestamp=1764170002)
    return pub, c1, c2


def test_agent_updates_the_guest_and_it_reboots_into_v2(
        versions: tuple[Repo, str, str], tmp_path: Path) -> None:
    pub, c1, c2 = versions
    www = tmp_path / "www"
    www.mkdir()
    keys = tmp_path / "keys"
    assert main(["-q", "keys", "init", str(keys), "--to", str(www)]) == 0
    assert main(["-q", "publish", "site/base", "--repo", str(pub.path), "--to", str(www),
                 "--keys", str(keys)]) == 0
    with serve_www(www) as server:
        port = server.url.rsplit(":", 1)[1].strip("/")
        sysroot = tmp_path / "sysroot"
        sr = Sysroot(sysroot)
        sr.init(bootloader="grub")
        v1 = sr.deploy(c1, repo=pub).id
        assert main(["-q", "--sysroot", str(sysroot), "remote", "add", "origin",
                     f"http://10.0.2.2:{port}/", "--root", str(www / "metadata/root.json"),
                     "--channel", "site/base"]) == 0
        AgentFiles(sysroot).save_policy(Policy(mode="apply", check_interval_s=30, jitter_s=5))
        image = tmp_path / "host.qcow2"
        build_image(sysroot, image, "qcow2", "4G", "bios")
        with NetVM(image, tmp_path / "console.log", firmware="bios") as vm:
            vm.wait_for(rf"ATOLL-INITRAMFS: mounted deployment {v1} ", TIMEOUT)
            vm.wait_for(r"ATOLL-BOOT-COMPLETE \{.*\}", TIMEOUT)
            m = vm.wait_for(rf"ATOLL-INITRAMFS: mounted deployment {c2}\.\d+ fallback=0",
                            TIMEOUT)
            vm.wait_for(r"ATOLL-BOOT-STATUS \{.*\}", TIMEOUT, m.end())
            text = vm.text()
        downloads = [p for p, _ in server.requests if "/packs/" in p or "/deltas/" in p]
    assert downloads, "the guest downloaded nothing from the update server"
    events = markers(text, "BOOT-COMPLETE")
    assert (events[0]["deployment"], events[0]["result"]) == (v1, "good")
    assert events[-1]["deployment"].startswith(c2) and events[-1]["result"] == "good"
    status = markers(text, "BOOT-STATUS")[-1]
    assert status["booted"].startswith(c2) and status["rollback"] == v1

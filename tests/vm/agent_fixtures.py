"""Shared setup of the in-guest update tests (test_agent_update.py, test_powercut.py).

* :func:`versions`: a publisher's store with ``site/base`` v1 (the composed boot
  tree + the ``agent`` feature, systemd-networkd on DHCP) and v2 (v1 + a version
  file + :data:`PAYLOAD_BYTES` of incompressible data, so that the download is
  a few MiB and takes a measurable time under TCG);
* :func:`published` / :func:`publish`: that store signed into a ``www/``
  (`atoll keys init`, `atoll publish`), which ``serve_www()`` serves on 127.0.0.1;
* :func:`host_image`: a v1 host whose atolld (policy mode ``apply``) follows
  ``http://10.0.2.2:PORT/`` (the host's 127.0.0.1 through QEMU's user networking).

atolld's log also goes to the serial console (a unit drop-in in the test
image, not in the product), so a test sees its decisions
(``decision: download: ...``, ``decision: prepare: ...``, ``decision: apply: ...``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import pytest

from atoll.agent.feature import install as install_agent
from atoll.agent.policy import Policy
from atoll.agent.state import AgentFiles
from atoll.boot.devsysroot import cached_tree
from atoll.boot.image import build_image
from atoll.cli import main
from atoll.compose.features import enable_unit
from atoll.core.run import run
from atoll.deploy import Sysroot
from atoll.store import Repo

__all__ = ["NETWORK", "PAYLOAD_BYTES", "Versions", "host_image", "make_versions", "publish",
           "published", "versions"]

NETWORK = "[Match]\nName=en*\n\n[Network]\nDHCP=yes\n"
AGENT_TO_CONSOLE = "[Service]\nStandardOutput=journal+console\nStandardError=journal+console\n"
PAYLOAD_BYTES = 24 << 20


@dataclass(frozen=True)
class Versions:
    """The publisher's store and the commits of v1 and v2 of ``site/base``."""

    pub: Repo
    c1: str
    c2: str


@pytest.fixture(scope="session")
def versions(artifact_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Versions:
    """A publisher's repo with site/base v1 (the boot tree + the agent) and v2."""
    return make_versions(artifact_cache, tmp_path_factory.mktemp("agent-vm"))


def make_versions(cache: Path, work: Path) -> Versions:
    """Compose v1 and v2 under ``work`` and commit them to ``work/pub``."""
    tree, _ = cached_tree(cache)
    work.mkdir(parents=True, exist_ok=True)
    v1 = work / "v1"
    run(["cp", "-al", tree, v1])  # hardlinks: only new files are added below
    (v1 / ".atoll-done").unlink(missing_ok=True)
    install_agent(v1)
    (v1 / "usr/lib/systemd/network").mkdir(parents=True, exist_ok=True)
    (v1 / "usr/lib/systemd/network/80-atoll-test.network").write_text(NETWORK)
    enable_unit(v1, "systemd-networkd.service", "multi-user.target")
    enable_unit(v1, "systemd-networkd-wait-online.service", "network-online.target")
    dropin = v1 / "usr/lib/systemd/system/atolld.service.d"
    dropin.mkdir(parents=True, exist_ok=True)
    (dropin / "50-console.conf").write_text(AGENT_TO_CONSOLE)
    pub = Repo.create(work / "pub")
    c1 = pub.commit_dir(v1, ref="site/base", version="1", timestamp=1764170001)
    v2 = work / "v2"
    run(["cp", "-al", v1, v2])
    (v2 / "usr/share/atoll-test-version").write_text("2\n")
    (v2 / "usr/share/atoll-test-payload").write_bytes(random.Random(2).randbytes(PAYLOAD_BYTES))
    c2 = pub.commit_dir(v2, ref="site/base", version="2", timestamp=1764170002)
    return Versions(pub, c1, c2)


@pytest.fixture(scope="session")
def published(versions: Versions, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``site/base`` (v2) signed into a www/ that the tests serve (read-only)."""
    return publish(versions.pub, tmp_path_factory.mktemp("agent-www"))


def publish(pub: Repo, work: Path) -> Path:
    """Sign ``site/base`` into ``work/www`` with fresh keys (``work/keys``); returns www.

    zstd level 3 (publish's fast level for tests) rather than 19: ~20 s instead of
    ~170 s for the boot tree's pack; the sizes are not what these tests measure.
    """
    www, keys = work / "www", work / "keys"
    www.mkdir(parents=True)
    assert main(["-q", "keys", "init", str(keys), "--to", str(www)]) == 0
    assert main(["-q", "publish", "site/base", "--repo", str(pub.path), "--to", str(www),
                 "--keys", str(keys), "--level", "3"]) == 0
    return www


def host_image(v: Versions, www: Path, url: str, out: Path, *, fmt: str = "qcow2",
               policy: Policy | None = None, verity: bool = True) -> str:
    """Build a v1 host (BIOS) at ``out`` following ``url``; returns v1's deployment id.

    ``url`` is how the guest reaches the server (``http://10.0.2.2:PORT/``);
    ``policy`` defaults to mode ``apply``, checking every 30 s. ``verity=False``
    for a disk checked offline on this machine, whose kernel cannot open files
    the guest sealed with fs-verity.
    """
    sysroot = out.parent / f"{out.stem}-sysroot"
    sr = Sysroot(sysroot)
    sr.init(bootloader="grub")
    v1 = sr.deploy(v.c1, repo=v.pub).id
    assert main(["-q", "--sysroot", str(sysroot), "remote", "add", "origin", url,
                 "--root", str(www / "metadata/root.json"), "--channel", "site/base"]) == 0
    AgentFiles(sysroot).save_policy(policy or Policy(mode="apply", check_interval_s=30,
                                                     jitter_s=5))
    build_image(sysroot, out, fmt, "4G", "bios", verity=verity)
    return v1

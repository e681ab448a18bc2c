"""VM tier fixtures: the composed boot tree and its store (once per run), and
disk images whose sysroots are made with the deploy layer."""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from atoll.boot import state
from atoll.boot.devsysroot import cached_repo, make_sysroot
from atoll.boot.image import ROOT_START, build_image
from tests.vm.agent_fixtures import published, versions  # noqa: F401  (agent tests' fixtures)


@dataclass(frozen=True)
class Image:
    path: Path
    ids: dict[str, str]  # ref ("test/v2") -> deployment id
    commits: dict[str, str]  # ref -> commit


ImageFactory = Callable[..., Image]


@pytest.fixture(scope="session")
def boot_repo(artifact_cache: Path) -> tuple[Path, dict[str, str]]:
    return cached_repo(artifact_cache)


def add_check(deploy_dir: Path, kind: str, name: str, body: str) -> None:
    """Add a health check to a deployment's /etc (as an app would on the host)."""
    d = deploy_dir / "etc/atoll/health.d" / kind
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_text("#!/bin/sh\n" + body + "\n")
    (d / name).chmod(0o755)


def deployment_ids(sysroot: Path) -> tuple[dict[str, str], dict[str, str]]:
    deps = state.read_deployments(sysroot / "boot" / "loader")
    return ({d["ref"]: d["id"] for d in deps}, {d["ref"]: d["commit"] for d in deps})


@pytest.fixture(scope="session")
def make_image(boot_repo: tuple[Path, dict[str, str]],
               tmp_path_factory: pytest.TempPathFactory) -> ImageFactory:
    """Build an image whose sysroot has ``revs`` deployed in order (last boots next).

    ``good``: refs marked good after their deploy; ``checks``: {ref: {name:
    shell body}} of required checks added to that deployment's /etc;
    ``break_initrd``: refs whose initrd is replaced with garbage.
    """
    repo, _ = boot_repo

    def make(name: str, revs: Sequence[str], good: Sequence[str] = (),
             checks: dict[str, dict[str, str]] | None = None,
             break_initrd: Sequence[str] = (), fmt: str = "qcow2") -> Image:
        work = tmp_path_factory.mktemp(name)
        sysroot = work / "sysroot"
        make_sysroot(sysroot, repo, revs, good)
        ids, commits = deployment_ids(sysroot)
        for ref, named in (checks or {}).items():
            for check, body in named.items():
                add_check(sysroot / "atoll/deploy" / ids[ref], "required.d", check, body)
        for ref in break_initrd:
            (sysroot / "boot/atoll" / commits[ref] / "initrd.img").write_bytes(b"garbage\n" * 64)
        out = work / f"{name}.{fmt}"
        build_image(sysroot, out, fmt, "4G", "both")
        return Image(out, ids, commits)

    return make


def markers(text: str, name: str) -> list[dict[str, Any]]:
    """Decode every ``ATOLL-<name> {json}`` line the guest printed."""
    return [json.loads(m) for m in re.findall(rf"ATOLL-{name} (\{{.*\}})", text)]


@contextlib.contextmanager
def mounted_root(disk: Path, mnt: Path) -> Iterator[Path]:
    """Mount a raw image's ext4 root (a loop device at the partition's offset).

    Mounting replays the ext4 journal, as the guest's kernel would at boot.
    """
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

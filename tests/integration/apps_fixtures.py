"""Fixtures for the apps integration tests: dockerd, the MariaDB image, a sysroot.

The image is built from Debian packages once per run (or once per developer
machine): its tar is cached in ``artifact_cache`` under the hash of its inputs,
and loaded into Docker only when the daemon does not have it yet.

Import the fixtures into a test module with
``from tests.integration.apps_fixtures import app_env, docker_url, mariadb_image``.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from atoll.apps.image import build_image, default_tag, image_inputs
from atoll.apps.runtime import Runtime, get_runtime
from atoll.boot.devsysroot import prune_cache
from atoll.core import canonjson
from tests.services import dockerd

__all__ = ["AppEnv", "app_env", "docker_url", "mariadb_image"]

SUITE = "bookworm"


@pytest.fixture(scope="session")
def docker_url() -> Iterator[str]:
    """A running Docker daemon's URL (started for the run if none is up)."""
    with dockerd() as url:
        yield url


@pytest.fixture(scope="session")
def mariadb_image(docker_url: str, artifact_cache: Path) -> str:
    """The tag of atoll's MariaDB image, built from Debian packages once per run."""
    key = canonjson.sha256_of(image_inputs("mariadb", SUITE))[:16]
    tar = artifact_cache / f"apps-mariadb-{SUITE}-{key}.tar"
    tag = default_tag("mariadb", SUITE)
    if not tar.exists():
        prune_cache(artifact_cache, f"apps-mariadb-{SUITE}-*.tar", tar)
        tmp = tar.with_suffix(".partial.tar")
        build_image("mariadb", suite=SUITE, out=tmp, tag=tag)
        os.replace(tmp, tar)
    os.utime(tar)
    rt = get_runtime("docker", docker_url)
    import docker

    client = docker.DockerClient(base_url=docker_url)
    try:
        have = client.images.get(tag).labels.get("io.atoll.inputs-sha256")
    except docker.errors.ImageNotFound:
        have = None
    if have != canonjson.sha256_of(image_inputs("mariadb", SUITE)):
        rt.load_image(tar)
    return tag


@dataclass
class AppEnv:
    """A sysroot in a temp dir, a runtime, and unique app names cleaned up afterwards."""

    sysroot: Path
    runtime: Runtime
    url: str
    names: list[str] = field(default_factory=list)

    def name(self, prefix: str = "db") -> str:
        n = f"{prefix}-{secrets.token_hex(3)}"
        self.names.append(n)
        return n


@pytest.fixture()
def app_env(tmp_path: Path, docker_url: str, mariadb_image: str) -> Iterator[AppEnv]:
    sysroot = tmp_path / "sysroot"
    sysroot.mkdir()
    env = AppEnv(sysroot, get_runtime("docker", docker_url), docker_url)
    yield env
    for n in env.names:
        env.runtime.remove(f"atoll-{n}")
        env.runtime.remove_network(f"atoll-{n}")
    shutil.rmtree(sysroot, ignore_errors=True)

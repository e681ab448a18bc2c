"""Fixtures for the apps integration tests: dockerd, the MariaDB image, a sysroot.

The image is built from Debian packages once per state of the archive: it is kept in
the app image cache (``atoll.apps.imagecache``) under ``artifact_cache/app-images``,
and loaded into Docker only when the daemon does not have it yet.

Import the fixtures into a test module with
``from tests.integration.apps_fixtures import app_env, docker_url, mariadb_image``.
"""

from __future__ import annotations

import secrets
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from atoll.apps.image import build_image, default_tag, image_inputs
from atoll.apps.imagecache import ImageCache
from atoll.apps.runtime import Runtime, get_runtime
from atoll.core import canonjson
from tests.services import dockerd

__all__ = ["AppEnv", "app_env", "docker_url", "image_cache", "mariadb_image"]

SUITE = "bookworm"


@pytest.fixture(scope="session")
def docker_url() -> Iterator[str]:
    """A running Docker daemon's URL (started for the run if none is up)."""
    with dockerd() as url:
        yield url


def image_cache(artifact_cache: Path) -> ImageCache:
    """The app image cache the tests share (under the artifact cache)."""
    return ImageCache(artifact_cache / "app-images")


@pytest.fixture(scope="session")
def mariadb_image(docker_url: str, artifact_cache: Path,
                  tmp_path_factory: pytest.TempPathFactory) -> str:
    """The tag of atoll's MariaDB image, built from Debian packages, or reused from the
    image cache when the archive has not changed since it was built."""
    tar = tmp_path_factory.mktemp("mariadb-image") / "mariadb.tar"
    tag = default_tag("mariadb", SUITE)
    build_image("mariadb", suite=SUITE, out=tar, tag=tag, cache=image_cache(artifact_cache))
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

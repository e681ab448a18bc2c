"""The MariaDB image built from the real archive is reused while the archive stays the same."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from atoll.apps import image as image_mod
from atoll.apps.image import default_tag, image_inputs
from atoll.apps.imagecache import archive_state
from atoll.core import canonjson
from tests.integration.apps_fixtures import (  # noqa: F401 (fixtures)
    docker_url,
    image_cache,
    mariadb_image,
)

SUITE = "bookworm"


def test_an_unchanged_archive_reuses_the_built_image(
        mariadb_image: str, docker_url: str, artifact_cache: Path, tmp_path: Path,  # noqa: F811
        monkeypatch: pytest.MonkeyPatch) -> None:
    import docker

    sources = image_mod._sources(SUITE, image_mod.DEFAULT_MIRROR)
    assert archive_state(sources) is not None  # Debian's InRelease files verify with gpgv

    def no_build(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("rebuilt although the inputs and the archive are the same")

    monkeypatch.setattr(image_mod, "_rootfs", no_build)
    out = tmp_path / "mariadb.tar"
    got = image_mod.build_image("mariadb", suite=SUITE, out=out,
                                cache=image_cache(artifact_cache))
    # the very image the fixture loaded into Docker (its id is the config's digest)
    loaded = docker.DockerClient(base_url=docker_url).images.get(default_tag("mariadb", SUITE))
    assert got["image_id"] == loaded.id
    assert loaded.labels["io.atoll.inputs-sha256"] == canonjson.sha256_of(
        image_inputs("mariadb", SUITE))
    assert out.stat().st_size > 100 << 20

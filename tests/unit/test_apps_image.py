"""The image archive writer: deterministic, ``docker load`` layout, exact config."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest

from atoll.apps.image import (
    default_tag,
    image_config,
    image_inputs,
    recipe,
    write_docker_archive,
)
from atoll.core import canonjson
from atoll.core.errors import InputError


def _layer(path: Path) -> str:
    with tarfile.open(path, "w") as tar:
        info = tarfile.TarInfo("./etc/hostname")
        data = b"atoll\n"
        info.size, info.mtime = len(data), 1700000000
        tar.addfile(info, io.BytesIO(data))
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_archive_is_deterministic_and_loadable_layout(tmp_path: Path) -> None:
    layer = tmp_path / "layer.tar"
    diff_id = _layer(layer)
    r = recipe("mariadb")
    inputs = image_inputs("mariadb", "bookworm")
    config = image_config(r, "bookworm", inputs, diff_id, 1700000000)
    a, b = tmp_path / "a.tar", tmp_path / "b.tar"
    id_a = write_docker_archive(layer, diff_id, config, "atoll/mariadb:bookworm", a, 1700000000)
    id_b = write_docker_archive(layer, diff_id, config, "atoll/mariadb:bookworm", b, 1700000000)
    assert id_a == id_b and a.read_bytes() == b.read_bytes()
    assert id_a == hashlib.sha256(canonjson.dumps(config)).hexdigest()
    with tarfile.open(a) as tar:
        names = tar.getnames()
        assert set(names) == {
            f"{id_a}.json",
            f"{diff_id}/layer.tar",
            "manifest.json",
            "repositories",
        }
        manifest = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
        cfg = json.loads(tar.extractfile(f"{id_a}.json").read())  # type: ignore[union-attr]
        assert tar.extractfile(f"{diff_id}/layer.tar").read() == layer.read_bytes()  # type: ignore[union-attr]
        assert all(m.mtime == 1700000000 and m.uid == 0 for m in tar.getmembers())
    assert manifest == [
        {
            "Config": f"{id_a}.json",
            "RepoTags": ["atoll/mariadb:bookworm"],
            "Layers": [f"{diff_id}/layer.tar"],
        }
    ]
    c = cfg["config"]
    assert c["User"] == "999:999" and c["Entrypoint"] == ["/usr/local/sbin/atoll-entrypoint"]
    assert c["Labels"]["io.atoll.inputs-sha256"] == canonjson.sha256_of(inputs)
    assert cfg["created"] == "2023-11-14T22:13:20Z"
    assert cfg["rootfs"]["diff_ids"] == [f"sha256:{diff_id}"]


def test_inputs_and_recipes() -> None:
    assert default_tag("mariadb", "trixie") == "atoll/mariadb:trixie"
    a = image_inputs("mariadb", "bookworm")
    assert a != image_inputs("mariadb", "trixie") and a == image_inputs("mariadb", "bookworm")
    assert {"mariadb-server", "mariadb-backup", "mariadb-client"} <= set(a["packages"])  # type: ignore[arg-type]
    with pytest.raises(InputError):
        recipe("postgres")


def test_bundle_index_names_the_archive_of_each_tag(tmp_path: Path) -> None:
    from atoll.apps.image import bundled_archive, write_bundle_index

    layer = tmp_path / "layer.tar"
    diff_id = _layer(layer)
    config = image_config(recipe("mariadb"), "bookworm", image_inputs("mariadb", "bookworm"),
                          diff_id, 1700000000)
    bundle = tmp_path / "app-images"
    bundle.mkdir()
    write_docker_archive(layer, diff_id, config, "atoll/mariadb:bookworm",
                         bundle / "mariadb.tar", 1700000000)
    assert write_bundle_index(bundle) == {"atoll/mariadb:bookworm": "mariadb.tar"}
    assert bundled_archive("atoll/mariadb:bookworm", bundle) == bundle / "mariadb.tar"
    assert bundled_archive("atoll/mariadb:trixie", bundle) is None
    assert bundled_archive("atoll/mariadb:bookworm", tmp_path / "none") is None

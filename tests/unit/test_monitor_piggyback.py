"""Piggyback host names, as mk_docker's ``container_id`` option chooses them."""

from __future__ import annotations

from pathlib import Path

import pytest

from atoll.core.errors import InputError
from atoll.monitor.docker_sections import piggyback_name, read_docker_cfg

ATTRS = {"Id": "3f9c2a1b7d04" + "e" * 52, "Name": "/shop-db"}


def test_names() -> None:
    assert piggyback_name(ATTRS) == "3f9c2a1b7d04"
    assert piggyback_name(ATTRS, "long") == ATTRS["Id"]
    assert piggyback_name(ATTRS, "name") == "shop-db"


@pytest.mark.parametrize(("text", "want"), [
    ("[DOCKER]\ncontainer_id: name\n", "name"),
    ("[DOCKER]\nbase_url: unix:///var/run/docker.sock\n", "short"),
    ("container_id = long\n", "long"),  # no section: mk_docker reads DEFAULT
    ("", "short"),
])
def test_docker_cfg(tmp_path: Path, text: str, want: str) -> None:
    cfg = tmp_path / "docker.cfg"
    cfg.write_text(text)
    assert read_docker_cfg(cfg) == want


@pytest.mark.parametrize("text", ["[DOCKER]\ncontainer_id: uuid\n", "[DOCKER\n", "\udcff"])
def test_docker_cfg_refused(tmp_path: Path, text: str) -> None:
    cfg = tmp_path / "docker.cfg"
    cfg.write_bytes(text.encode("utf-8", "surrogateescape"))
    with pytest.raises(InputError):
        read_docker_cfg(cfg)

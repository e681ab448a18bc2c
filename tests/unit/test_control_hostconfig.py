"""The host config's control: section: validated, carried by seeds, applied 0600."""

from __future__ import annotations

from pathlib import Path

import pytest

from atoll.agent.control import ControlFiles
from atoll.core.errors import SpecError
from atoll.provision.config import load_host_config
from atoll.provision.seed import seed_files


def write(tmp: Path, control: str) -> Path:
    cfg = tmp / "site.yaml"
    cfg.write_text(f"hostname: db01\ncontrol: {control}\n")
    return cfg


def test_control_section(tmp_path: Path) -> None:
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets/enrol").write_text("atl_en_secret\n")
    cfg = write(tmp_path, '{url: "https://fleet.example:8470", enrol_token: secrets/enrol, '
                'interval: 600}')
    loaded = load_host_config(cfg)
    assert loaded.control is not None and loaded.control.interval == 600
    assert seed_files(cfg)["atoll/secrets/enrol"] == b"atl_en_secret\n"
    host = tmp_path / "host"
    files = ControlFiles(host)
    changes = files.configure(loaded.control.url, tmp_path / "secrets/enrol",
                              interval_s=loaded.control.interval)
    assert len(changes) == 2 and all("atl_en" not in c for c in changes)
    assert files.token_path.read_text() == "atl_en_secret\n"
    assert files.token_path.stat().st_mode & 0o777 == 0o600
    assert files.dir.stat().st_mode & 0o777 == 0o700
    assert files.configure(loaded.control.url, tmp_path / "secrets/enrol",
                           interval_s=600) == []  # idempotent
    config = files.config()
    assert config is not None and (config.url, config.interval_s) == (
        "https://fleet.example:8470", 600)


@pytest.mark.parametrize("control,problem", [
    ('{url: "https://fleet.example", enrol_token: missing}', "does not exist"),
    ('{url: "ftp://fleet.example", enrol_token: t}', "control.url"),
    ('{url: "https://fleet.example", enrol_token: t, interval: 5}', "control.interval"),
    ('{url: "https://fleet.example", token: t}', "control"),
])
def test_bad_control_sections(tmp_path: Path, control: str, problem: str) -> None:
    (tmp_path / "t").write_text("atl_en_x\n")
    with pytest.raises(SpecError) as err:
        load_host_config(write(tmp_path, control))
    assert problem in str(err.value.problems)

"""Host config validation: every problem located as file:line: field: problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from atoll.core.errors import SpecError
from atoll.provision.config import load_host_config

ROOT = Path(__file__).resolve().parents[2]


def problems(tmp_path: Path, text: str) -> list[str]:
    p = tmp_path / "site.yaml"
    p.write_text(text)
    with pytest.raises(SpecError) as exc:
        load_host_config(p)
    return [x.replace(str(p), "site.yaml") for x in exc.value.problems]


def test_example_is_valid() -> None:
    cfg = load_host_config(ROOT / "examples/site.yaml")
    assert cfg.hostname == "db01" and cfg.apps[0].name == "mariadb"


def test_located_errors(tmp_path: Path) -> None:
    got = problems(tmp_path, "hostname: db01\ntimezone: Mars/Base\nnetwork:\n  interfaces:\n"
                   "    - match: eth0\n      dhcp: true\n      address: 10.0.0.7/24\n"
                   "updates:\n  policy:\n    windows: [\"Sat 02:00\"]\n")
    assert got[0] == "site.yaml:2: timezone: unknown time zone 'Mars/Base'"
    assert got[1].startswith("site.yaml:5: network.interfaces.0: give either")
    assert got[2].startswith("site.yaml:9: updates.policy: expected 'DAYS")


def test_missing_secret_file_is_located(tmp_path: Path) -> None:
    got = problems(tmp_path, "hostname: db01\napps:\n  - name: mariadb\n    secrets:\n"
                   "      root-password: nope.txt\n")
    assert got == ["site.yaml:5: apps.0.secrets.root-password: file nope.txt does not exist"]


def test_passwords_are_not_a_field(tmp_path: Path) -> None:
    got = problems(tmp_path, "hostname: db01\nusers:\n  - name: ops\n    password: hunter2\n")
    assert got == ["site.yaml:4: users.0.password: unknown field"]
    assert not any("hunter2" in g for g in got)

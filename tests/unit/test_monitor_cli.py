"""The monitoring commands' arguments, and the shipped systemd units against them."""

from __future__ import annotations

import configparser
import re
import shlex
from importlib import resources

import pytest

from atoll.cli import build_parser

UNITS = ["atoll-checkmk-agent.service", "atoll-metrics.service",
         "atoll-metrics-textfile.service", "atoll-metrics-textfile.timer"]


def test_commands_parse() -> None:
    p = build_parser()
    a = p.parse_args(["checkmk-agent"])
    assert a.handler.__name__ == "_checkmk_agent"
    a = p.parse_args(["checkmk-agent", "serve", "--port", "6556", "--only-from",
                      "10.0.0.5,127.0.0.1"])
    assert a.handler.__name__ == "_checkmk_serve" and a.only_from == "10.0.0.5,127.0.0.1"
    a = p.parse_args(["metrics", "--textfile", "/tmp/x"])
    assert a.handler.__name__ == "_metrics" and str(a.textfile) == "/tmp/x"
    a = p.parse_args(["metrics", "serve", "--listen", "127.0.0.1:9101"])
    assert a.handler.__name__ == "_metrics_serve"


@pytest.mark.parametrize("unit", UNITS)
def test_units_are_shipped_and_their_commands_parse(unit: str) -> None:
    text = resources.files("atoll.monitor").joinpath("units", unit).read_text()
    cp = configparser.ConfigParser(strict=False, interpolation=None)
    cp.optionxform = str  # type: ignore[assignment,method-assign]
    cp.read_string(text)
    if unit.endswith(".timer"):
        assert cp["Timer"]["OnUnitActiveSec"]
        return
    env = dict(e.split("=", 1) for e in re.findall(r"^Environment=(\S+)$", text, re.M))
    exec_start = cp["Service"]["ExecStart"]
    argv = shlex.split(re.sub(r"\$\{(\w+)\}", lambda m: env[m.group(1)], exec_start))
    assert argv[0] == "/usr/bin/atoll"
    build_parser().parse_args(argv[1:])
    if unit == "atoll-checkmk-agent.service":
        assert "--only-from" in argv and "6556" in argv


def test_cli_default_docker_url_matches_the_library() -> None:
    from atoll.cli import monitor as cli_monitor
    from atoll.monitor.docker_sections import DEFAULT_DOCKER_URL

    assert cli_monitor.DEFAULT_DOCKER_URL == DEFAULT_DOCKER_URL

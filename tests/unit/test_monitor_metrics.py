"""Prometheus metrics from facts; parsed back with prometheus_client's text parser."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from atoll.core.errors import InputError
from atoll.monitor.docker_sections import AppContainer
from atoll.monitor.facts import HostFacts, parse_host_status
from atoll.monitor.metrics import Snapshot, exposition, write_textfile
from tests.unit.test_monitor_facts import DEP, NOW, sample


def samples(data: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for fam in text_string_to_metric_families(data.decode()):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def expo(f: HostFacts, apps: tuple[AppContainer, ...] | None = None) -> dict[Any, float]:
    return samples(exposition(lambda: Snapshot(f, apps, NOW)))


def test_full_host() -> None:
    f = parse_host_status(sample(
        pending=DEP | {"id": "new.0"},
        update={"state": "pending", "version": "v2", "since": "2026-11-26T10:00:00Z",
                "metadata_expires": "2026-12-24T00:00:00Z", "last_check": "2026-11-26T15:55:00Z"},
        last_boot={"result": "rolled-back", "reason": "x", "time": "2026-11-26T09:00:00Z",
                   "acknowledged": False},
        etc_conflicts=["hosts"], rollback_events=2,
        backups=[{"app": "shop", "last": "2026-11-24T00:00:00Z", "max_age_s": 86400}],
    ))
    apps = (AppContainer("shop", "database", "shop-db", "running", "healthy"),
            AppContainer("crm", "database", "crm-db", "running", "unhealthy"),
            AppContainer("web", "", "web", "exited", "none"))
    m = expo(f, apps)
    assert m[("atoll_host_status_available", ())] == 1
    assert m[("atoll_info", (("channel", "stable"), ("commit", "abc123" * 10),
                             ("deployment", "abc123.0"), ("version", "2026.11.1")))] == 1
    assert m[("node_reboot_required", ())] == 1
    assert m[("atoll_update_state", (("state", "pending"),))] == 1
    assert m[("atoll_update_state", (("state", "up-to-date"),))] == 0
    since = dt.datetime(2026, 11, 26, 10, tzinfo=dt.UTC).timestamp()
    assert m[("atoll_update_state_change_timestamp_seconds", ())] == since
    assert m[("atoll_update_last_check_timestamp_seconds", ())] == since + 5 * 3600 + 55 * 60
    assert ("atoll_update_metadata_expiry_timestamp_seconds", ()) in m
    assert m[("atoll_rollback_events_total", ())] == 2
    assert m[("atoll_last_boot_rolled_back", ())] == 1
    assert m[("atoll_last_boot_acknowledged", ())] == 0
    assert m[("atoll_etc_conflicts", ())] == 1
    assert m[("atoll_backup_overdue", (("app", "shop"),))] == 1
    assert m[("atoll_backup_max_age_seconds", (("app", "shop"),))] == 86400
    assert m[("atoll_docker_up", ())] == 1
    assert m[("atoll_app_health", (("app", "shop"), ("container", "shop-db"),
                                   ("role", "database")))] == 1
    assert m[("atoll_app_health", (("app", "crm"), ("container", "crm-db"),
                                   ("role", "database")))] == 0
    assert m[("atoll_app_health", (("app", "web"), ("container", "web"), ("role", "")))] == 0


def test_quiet_host_without_docker() -> None:
    m = expo(parse_host_status(sample()))
    assert m[("node_reboot_required", ())] == 0
    assert m[("atoll_update_state", (("state", "up-to-date"),))] == 1
    assert ("atoll_rollback_events_total", ()) not in m  # not reported by this deploy layer
    assert m[("atoll_backup_overdue", (("app", "shop"),))] == 0
    assert m[("atoll_docker_up", ())] == 0


def test_unknown_host_status() -> None:
    m = expo(HostFacts.unknown("not an atoll sysroot"))
    assert m == {("atoll_host_status_available", ()): 0, ("atoll_docker_up", ()): 0}


def test_textfile_is_written_atomically(tmp_path: Path) -> None:
    data = exposition(lambda: Snapshot(parse_host_status(sample()), None, NOW))
    path = write_textfile(tmp_path, data)
    assert path == tmp_path / "atoll.prom" and path.read_bytes() == data
    write_textfile(tmp_path, b"# replaced\n")
    assert path.read_bytes() == b"# replaced\n"
    assert os.listdir(tmp_path) == ["atoll.prom"]  # no temp file left behind
    with pytest.raises(InputError, match="does not exist"):
        write_textfile(tmp_path / "missing", data)

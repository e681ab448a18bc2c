"""Planning logic: the confined container plan, and backup retention."""

from __future__ import annotations

from pathlib import Path

import pytest

from atoll.apps.paths import AppPaths
from atoll.apps.plan import BackupRecord, backups_to_delete, plan_container, uid_gid
from atoll.apps.spec import AppSpec, load_builtin
from atoll.core.spec import load_spec_text

SYSROOT = Path("/sysroot")


def plan(text: str | None = None, app: str = "db"):  # type: ignore[no-untyped-def]
    spec = load_builtin("mariadb")[0] if text is None else load_spec_text(text, AppSpec, "x.yaml")
    return plan_container(app, spec, AppPaths(SYSROOT, app), "f" * 64), spec


def test_confined_by_default() -> None:
    p, _ = plan()
    assert p.read_only is True
    assert p.cap_drop == ["ALL"] and p.cap_add == []
    assert p.security_opt == ["no-new-privileges:true"]  # and no seccomp=unconfined
    assert p.memory == 1024**3 and p.nano_cpus == 10**9 and p.pids_limit == 512
    assert p.network == "atoll-db" and p.network_internal is True
    assert set(p.tmpfs) == {"/run", "/tmp"} and "uid=999" in p.tmpfs["/run"]
    assert p.user == "999:999" and p.stop_timeout == 300


def test_only_own_directories_are_mounted() -> None:
    p, _ = plan()
    own = SYSROOT / "var/lib/atoll/apps/db"
    assert {(m.source, m.target, m.read_only) for m in p.mounts} == {
        (own / "volumes/data", "/var/lib/mysql", False),
        (own / "secrets", "/run/secrets", True),
    }
    assert all(m.source.is_relative_to(own) for m in p.mounts)


def test_contract_labels() -> None:
    p, _ = plan()
    assert p.labels["io.atoll.app"] == "db" and p.labels["io.atoll.role"] == "database"
    assert p.labels["io.atoll.managed"] == "true" and p.labels["io.atoll.spec-sha256"] == "f" * 64


def test_spec_labels_cannot_override_contract() -> None:
    p, _ = plan("image: x\nlabels: {io.atoll.app: other, team: dba}\n")
    assert p.labels["io.atoll.app"] == "db" and p.labels["team"] == "dba"
    assert p.labels["io.atoll.role"] == "service"


def test_secrets_never_in_environment() -> None:
    p, _ = plan()
    assert p.environment == {}
    assert not any("password" in k.lower() for k in p.environment)


def test_ports_make_the_network_routable_and_caps_are_kept() -> None:
    p, _ = plan(
        'image: x\nports: ["127.0.0.1:5000:80"]\ncap_add: [NET_BIND_SERVICE]\n'
        "resources: {memory: 256m, cpus: 0.25, pids: 64}\nhealthcheck: {test: [CMD, 'true']}\n"
    )
    assert p.ports == [("127.0.0.1", 5000, 80, "tcp")] and p.network_internal is False
    assert p.cap_add == ["NET_BIND_SERVICE"] and p.cap_drop == ["ALL"]
    assert p.memory == 256 * 1024**2 and p.nano_cpus == 250_000_000 and p.pids_limit == 64
    assert p.healthcheck is not None and p.healthcheck["interval"] == 30 * 10**9
    assert p.mounts == []  # no volumes, no secrets: nothing of the host at all


def test_uid_gid() -> None:
    assert uid_gid(load_spec_text("image: x\n", AppSpec, "x")) == (0, 0)
    assert uid_gid(load_spec_text('image: x\nuser: "5"\n', AppSpec, "x")) == (5, 5)
    assert uid_gid(load_spec_text('image: x\nuser: "5:6"\n', AppSpec, "x")) == (5, 6)


DAY = 86400.0


def recs(*ages_days: float, now: float = 100 * DAY) -> list[BackupRecord]:
    return [BackupRecord(f"b{i}", now - a * DAY) for i, a in enumerate(ages_days)]


@pytest.mark.parametrize(
    ("ages", "retention", "max_age", "doomed"),
    [
        ((), 3, None, []),
        ((0, 1, 2), 3, None, []),
        ((0, 1, 2, 3, 4), 3, None, ["b3", "b4"]),
        ((4, 3, 2, 1, 0), 2, None, ["b2", "b1", "b0"]),  # by age, not by list order
        ((0, 10, 40), 7, 30 * DAY, ["b2"]),
        ((40, 50), 7, 30 * DAY, ["b1"]),  # the newest is kept even when too old
        ((0, 1, 2), 1, None, ["b1", "b2"]),
    ],
)
def test_retention(
    ages: tuple[float, ...], retention: int, max_age: float | None, doomed: list[str]
) -> None:
    got = backups_to_delete(recs(*ages), retention=retention, max_age=max_age, now=100 * DAY)
    assert sorted(got) == sorted(doomed)


def test_retention_same_second_ties_are_stable() -> None:
    rs = [BackupRecord("20261126T000000Z", 5.0), BackupRecord("20261126T000000Z-1", 5.0)]
    assert backups_to_delete(rs, retention=1, max_age=None, now=10.0) == ["20261126T000000Z"]

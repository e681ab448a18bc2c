"""The fleet gate's view of a real MariaDB, asked as the app's monitoring user."""

from __future__ import annotations

from pathlib import Path

import pytest

from atoll import apps
from atoll.agent.replication import gate_host, replication_facts
from atoll.apps.plan import container_name
from tests.integration.apps_fixtures import *  # noqa: F403  (fixtures)
from tests.integration.apps_fixtures import AppEnv

BUILTIN = Path(apps.__file__).parent / "specs" / "mariadb.yaml"


def test_standalone_database_lets_the_host_take_a_slot_and_a_stopped_one_does_not(
        app_env: AppEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    env, app = app_env, app_env.name()
    monkeypatch.setenv("DOCKER_HOST", env.url)  # exec_sql's default runtime
    apps.install(env.sysroot, app, spec_file=BUILTIN, runtime=env.runtime)
    # every statement works with the monitoring user's privileges (no replication here)
    facts = replication_facts(env.sysroot, app)
    assert facts.role == "none"
    ((name, decision),) = gate_host(env.sysroot, max_lag_seconds=30)
    assert name == app and decision.allowed, decision
    env.runtime.stop(container_name(app), 60)
    ((_, decision),) = gate_host(env.sysroot, max_lag_seconds=30)
    assert not decision.allowed and decision.code == "database_unreachable"

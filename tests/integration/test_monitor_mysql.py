"""mk_mysql sections against a real MariaDB app (the apps layer's image and install)."""

from __future__ import annotations

from pathlib import Path

from atoll import apps
from atoll.apps.plan import container_name
from atoll.monitor.agent import Agent, AgentConfig
from atoll.monitor.mysql import mysql_section
from tests.integration.apps_fixtures import AppEnv, app_env, docker_url, mariadb_image  # noqa: F401
from tests.unit.test_monitor_conformance import _instances, check_agent_output, parse_agent_output

APP_DEADLINE = 60.0


def _spec() -> Path:
    return Path(apps.__file__).parent / "specs" / "mariadb.yaml"


def _mine(out: str, section: str, app: str) -> list[list[str]]:
    rows = parse_agent_output(out).get(("", section))
    return _instances(rows.rows).get(app, []) if rows else []


def test_real_mariadb_sections_and_faults(app_env: AppEnv) -> None:  # noqa: F811
    env, app = app_env, app_env.name("mon")
    apps.install(env.sysroot, app, spec_file=_spec(), runtime=env.runtime)

    # alive: the four mk_mysql sections, parseable, with the app as instance. How long they
    # take is measured by bench/bench_checkmk_agent.py --with-db, not asserted here: the
    # timeouts below (60 s, not the 10 s default) are deadlines for a loaded machine.
    out = mysql_section(env.url, APP_DEADLINE)
    check_agent_output(out)
    assert _mine(out, "mysql_ping", app) == [["mysqld", "is", "alive"]]
    status = {r[0]: r[1] for r in _mine(out, "mysql", app) if len(r) >= 2}
    assert int(status["Threads_connected"]) >= 1 and int(status["max_connections"]) > 0
    assert "MariaDB" in status["version"]
    schemas = {r[0] for r in _mine(out, "mysql_capacity", app)}
    assert {"mysql", "information_schema"} <= schemas
    assert _mine(out, "mysql_slave", app) == []  # a primary: empty, as mk_mysql prints it

    # the full agent with one DB
    agent = Agent(AgentConfig(docker_url=env.url, app_timeout=APP_DEADLINE))
    try:
        full = agent.output()
    finally:
        agent.close()
    check_agent_output(full)
    assert _mine(full, "mysql_ping", app) == [["mysqld", "is", "alive"]]

    # wrong credentials: the monitoring user's password no longer matches
    root = ["mysql", "--defaults-extra-file=/run/secrets/root-client.cnf"]
    res = env.runtime.exec(container_name(app), root,
                           stdin=[b"ALTER USER 'atoll'@'localhost' IDENTIFIED BY 'not-it';\n"])
    assert res.exit_code == 0, res.stderr
    out = mysql_section(env.url, APP_DEADLINE)
    check_agent_output(out)
    ping = " ".join(" ".join(r) for r in _mine(out, "mysql_ping", app))
    assert "Access denied" in ping, ping
    assert _mine(out, "mysql", app) == [] and _mine(out, "mysql_capacity", app) == []

    # database down: the other sections still complete
    apps.stop(env.sysroot, app, runtime=env.runtime)
    agent = Agent(AgentConfig(docker_url=env.url, app_timeout=APP_DEADLINE))
    try:
        full = agent.output()
    finally:
        agent.close()
    sections = check_agent_output(full)
    ping = " ".join(" ".join(r) for r in _mine(full, "mysql_ping", app))
    assert "is not running" in ping, ping
    assert {"uptime", "mem", "df", "ps_lnx", "docker_node_info", "local"} <= \
        {n for _, n in sections}
    assert '0 "atoll agent"' in full

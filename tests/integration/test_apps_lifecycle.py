"""Real Docker, real MariaDB: install, write rows, stop/start, remove --keep-data, reinstall,
backup / break / restore, the monitor contract, the boot health check drop-in."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from atoll import apps
from atoll.apps.plan import container_name
from atoll.core import fsutil
from tests.integration.apps_fixtures import *  # noqa: F403  (fixtures)
from tests.integration.apps_fixtures import AppEnv

N = 200


def _write_rows(env: AppEnv, app: str) -> None:
    root = ["mysql", "--defaults-extra-file=/run/secrets/root-client.cnf"]
    sql = (
        b"CREATE DATABASE shop; CREATE TABLE shop.orders (id INT PRIMARY KEY, v VARCHAR(40));\n"
        + b"".join(b"INSERT INTO shop.orders VALUES (%d, 'row-%d');\n" % (i, i) for i in range(N))
    )
    res = env.runtime.exec(container_name(app), root, stdin=[sql])
    assert res.exit_code == 0, res.stderr


def _root_sql(env: AppEnv, app: str, sql: str) -> None:
    root = ["mysql", "--defaults-extra-file=/run/secrets/root-client.cnf"]
    res = env.runtime.exec(container_name(app), root, stdin=[sql.encode()])
    assert res.exit_code == 0, res.stderr


def _rows(env: AppEnv, app: str) -> str:
    return apps.exec_sql(
        app,
        "SELECT COUNT(*), SUM(id), MAX(v) FROM shop.orders",
        sysroot=env.sysroot,
        runtime=env.runtime,
    ).strip()


EXPECTED = f"{N}\t{sum(range(N))}\trow-99"


def test_rows_survive_stop_start_and_reinstall_with_kept_data(app_env: AppEnv) -> None:
    env, app = app_env, app_env.name()
    inst = apps.install(env.sysroot, app, spec_file=_builtin(), runtime=env.runtime)
    assert inst.state["role"] == "database"
    # The monitor contract: labels, and a 0400 client option file in /run/secrets.
    info = env.runtime.inspect(container_name(app))
    assert info is not None and info.labels["io.atoll.app"] == app
    assert info.labels["io.atoll.role"] == "database"
    res = env.runtime.exec(
        container_name(app), ["stat", "-c", "%a", "/run/secrets/mysql-client.cnf"]
    )
    assert res.stdout.strip() == b"400"
    assert (
        apps.exec_sql(
            app, "SELECT CURRENT_USER()", sysroot=env.sysroot, runtime=env.runtime
        ).strip()
        == "atoll@localhost"
    )

    _write_rows(env, app)
    assert _rows(env, app) == EXPECTED
    apps.stop(env.sysroot, app, runtime=env.runtime)
    info = env.runtime.inspect(container_name(app))
    assert info is not None and info.status == "exited" and info.exit_code == 0  # clean shutdown
    apps.start(env.sysroot, app, runtime=env.runtime)
    assert _rows(env, app) == EXPECTED

    apps.remove(env.sysroot, app, keep_data=True, runtime=env.runtime)
    paths = inst.paths
    assert not paths.state.exists() and env.runtime.inspect(container_name(app)) is None
    assert (paths.volume("data") / "shop").is_dir() and (paths.secrets / "root-password").exists()
    assert not paths.health_dropin.exists()
    apps.install(env.sysroot, app, spec_file=_builtin(), runtime=env.runtime)
    assert _rows(env, app) == EXPECTED

    # The boot health check: a function, and an executable drop-in.
    assert apps.check_database(env.sysroot, app, runtime=env.runtime).ok
    dropin = paths.health_dropin
    assert dropin.stat().st_mode & 0o111
    run_env = {**os.environ, "ATOLL_SYSROOT": str(env.sysroot), "DOCKER_HOST": env.url}
    ok = subprocess.run([dropin], env=run_env, capture_output=True, timeout=180)
    assert ok.returncode == 0, ok.stderr
    env.runtime.stop(container_name(app), 60)  # a broken database fails the required check
    bad = subprocess.run([dropin], env=run_env, capture_output=True, timeout=180)
    assert bad.returncode != 0

    apps.remove(env.sysroot, app, runtime=env.runtime)
    assert not paths.root.exists()


def _builtin() -> Path:
    import atoll.apps

    return Path(atoll.apps.__file__).parent / "specs" / "mariadb.yaml"


def test_backup_break_restore_and_retention(app_env: AppEnv, tmp_path: Path) -> None:
    env, app = app_env, app_env.name()
    spec = tmp_path / "db.yaml"
    spec.write_text(_builtin().read_text().replace("retention: 7", "retention: 2"))
    apps.install(env.sysroot, app, spec_file=spec, runtime=env.runtime)
    _write_rows(env, app)

    dump = apps.backup(env.sysroot, app, runtime=env.runtime)
    bdir = env.sysroot / "var/lib/atoll/backups" / app / dump["id"]
    assert fsutil.read_json(bdir / "manifest.json") == dump
    assert (bdir / "dump.sql").stat().st_mode & 0o077 == 0
    _root_sql(env, app, "DELETE FROM shop.orders WHERE id < 150")
    assert _rows(env, app) != EXPECTED
    apps.restore(env.sysroot, app, dump["id"], runtime=env.runtime)
    assert _rows(env, app) == EXPECTED

    from atoll.apps.spec import BackupMethod

    snap = apps.backup(env.sysroot, app, runtime=env.runtime, method=BackupMethod.snapshot)
    _root_sql(env, app, "DROP TABLE shop.orders")
    apps.restore(env.sysroot, app, snap["id"], runtime=env.runtime)
    assert _rows(env, app) == EXPECTED

    # A hot physical backup (mariadb-backup), restored into a wrecked datadir.
    xb = apps.backup(env.sysroot, app, runtime=env.runtime, method=BackupMethod.mariadb_backup)
    _root_sql(env, app, "DROP DATABASE shop")
    apps.restore(env.sysroot, app, runtime=env.runtime)  # newest: the mariadb-backup one
    assert _rows(env, app) == EXPECTED
    assert apps.check_database(env.sysroot, app, runtime=env.runtime).ok

    # The pre-update hook takes one more; retention 2 keeps the two newest.
    taken = apps.backup_all_before_update(env.sysroot, runtime=env.runtime)
    assert [m["app"] for m in taken] == [app] and taken[0]["reason"] == "before-update"
    kept = [m["id"] for m in apps.list_backups(env.sysroot, app)]
    assert kept == [taken[0]["id"], xb["id"]]
    for gone in (dump, snap):
        assert not (env.sysroot / "var/lib/atoll/backups" / app / gone["id"]).exists()


def test_cli_lifecycle_and_secrets_never_shown(app_env: AppEnv, tmp_path: Path) -> None:
    env, app = app_env, app_env.name()
    root_pw = "Root'Pw\\-" + os.urandom(8).hex()
    mon_pw = "mon-" + os.urandom(8).hex()
    (tmp_path / "root").write_text(root_pw + "\n")
    (tmp_path / "mon").write_text(mon_pw + "\n")
    run_env = {**os.environ, "DOCKER_HOST": env.url}

    def atoll(*argv: str) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [sys.executable, "-m", "atoll.cli", "--sysroot", str(env.sysroot), "app", *argv],
            env=run_env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        for out in (proc.stdout, proc.stderr):
            assert root_pw not in out and mon_pw not in out
        return proc

    p = atoll(
        "install",
        app,
        "--spec",
        str(_builtin()),
        "--secret",
        f"root-password=@{tmp_path / 'root'}",
        "--secret",
        f"monitor-password=@{tmp_path / 'mon'}",
    )
    assert p.returncode == 0, p.stderr
    # A literal secret on the command line is refused (it would show in `ps`).
    assert atoll("install", "x", "--secret", "root-password=hunter2").returncode == 2
    assert atoll("status", "not-installed", "--json").returncode == 2
    # The root password given by file works inside, and is nowhere outside.
    import json

    st = json.loads(atoll("status", app, "--json").stdout)
    assert st["container"]["status"] == "running" and st["secrets"] == [
        "monitor-password",
        "root-password",
    ]
    listed = json.loads(atoll("list", "--json").stdout)
    assert [r["app"] for r in listed] == [app] and listed[0]["status"] == "running"
    for cmd in (
        ["stop", app],
        ["start", app],
        ["restart", app],
        ["check", app],
        ["backup", app, "--json"],
        ["restore", app],
        ["logs", app],
    ):
        p = atoll(*cmd)
        assert p.returncode == 0, (cmd, p.stderr)
    import docker

    client = docker.DockerClient(base_url=env.url)
    attrs = json.dumps(client.api.inspect_container(container_name(app)))
    assert root_pw not in attrs and mon_pw not in attrs
    assert json.dumps(root_pw)[1:-1] not in attrs
    logs = client.api.logs(container_name(app)).decode("utf-8", "replace")
    assert root_pw not in logs and mon_pw not in logs
    res = env.runtime.exec(
        container_name(app), ["mysql", "-uroot", f"-p{root_pw}", "-sN", "-e", "SELECT 7"]
    )
    assert res.stdout.strip() == b"7"
    assert atoll("remove", app).returncode == 0
    assert not (env.sysroot / "var/lib/atoll/apps" / app).exists()

"""Bad input with real Docker: each gives a clear error and changes nothing."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from atoll import apps
from tests.integration.apps_fixtures import *  # noqa: F403  (fixtures)
from tests.integration.apps_fixtures import AppEnv

BUILTIN = Path(apps.__file__).parent / "specs" / "mariadb.yaml"


def _atoll(
    env: AppEnv, *argv: str, docker_host: str | None = None
) -> subprocess.CompletedProcess[str]:
    run_env = {**os.environ, "DOCKER_HOST": docker_host or env.url}
    return subprocess.run(
        [sys.executable, "-m", "atoll.cli", "--sysroot", str(env.sysroot), "app", *argv],
        env=run_env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _unchanged(env: AppEnv, app: str) -> None:
    assert list(env.sysroot.iterdir()) == [], list(env.sysroot.rglob("*"))
    assert env.runtime.inspect(f"atoll-{app}") is None
    assert not env.runtime.containers({"io.atoll.app": app})
    import docker

    assert not docker.DockerClient(base_url=env.url).networks.list(names=[f"atoll-{app}"])


def test_invalid_spec_gives_a_located_error(app_env: AppEnv, tmp_path: Path) -> None:
    app = app_env.name()
    spec = tmp_path / "bad.yaml"
    spec.write_text(
        BUILTIN.read_text()
        .replace("  - data:/var/lib/mysql", "  - /etc:/var/lib/mysql")
        .replace("  memory: 1g", "  memory: lots")
    )
    p = _atoll(app_env, "install", app, "--spec", str(spec))
    assert p.returncode == 2
    lines = {ln.strip() for ln in p.stderr.splitlines()}
    vol_line = BUILTIN.read_text().splitlines().index("  - data:/var/lib/mysql") + 1
    assert any(
        ln.startswith(f"{spec}:{vol_line}: volumes.0:") and "host paths" in ln for ln in lines
    ), p.stderr
    assert any(ln.startswith(f"{spec}:") and "resources.memory" in ln for ln in lines), p.stderr
    _unchanged(app_env, app)


def test_port_already_in_use(app_env: AppEnv, tmp_path: Path) -> None:
    app = app_env.name()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        spec = tmp_path / "ports.yaml"
        spec.write_text(BUILTIN.read_text() + f'ports: ["127.0.0.1:{port}:3306"]\n')
        p = _atoll(app_env, "install", app, "--spec", str(spec))
        assert p.returncode == 7, p.stderr
        assert f"port 127.0.0.1:{port}/tcp is already in use" in p.stderr
    _unchanged(app_env, app)


def test_missing_image(app_env: AppEnv, tmp_path: Path) -> None:
    app = app_env.name()
    spec = tmp_path / "noimage.yaml"
    spec.write_text(BUILTIN.read_text().replace("atoll/mariadb:bookworm", "atoll/nothing:never"))
    p = _atoll(app_env, "install", app, "--spec", str(spec))
    assert p.returncode == 2 and "image atoll/nothing:never is not present" in p.stderr
    assert "atoll app image build" in p.stderr
    _unchanged(app_env, app)


def test_docker_daemon_down(app_env: AppEnv, tmp_path: Path) -> None:
    app = app_env.name()
    nothing = tmp_path / "nothing.sock"
    p = _atoll(app_env, "install", app, "--spec", str(BUILTIN), docker_host=f"unix://{nothing}")
    assert p.returncode == 8 and "cannot reach the Docker daemon" in p.stderr
    assert "DOCKER_HOST" in p.stderr
    _unchanged(app_env, app)


def test_start_failure_rolls_back_the_install(app_env: AppEnv, tmp_path: Path) -> None:
    """The daemon's own port check (a port taken between atoll's check and the start)."""
    app = app_env.name()
    spec = tmp_path / "crash.yaml"
    # A database that cannot start (an unknown server option): install undoes everything.
    spec.write_text(BUILTIN.read_text() + 'command: ["--no-such-option"]\n')
    p = _atoll(app_env, "install", app, "--spec", str(spec))
    assert p.returncode == 8 and "stopped while starting" in p.stderr, p.stderr
    _unchanged(app_env, app)

"""App lifecycle: install, start, stop, restart, remove, status, list, logs.

Every operation checks everything it can before it changes anything (spec,
secrets, daemon, image, ports); ``install`` then records what it created and
undoes it when a later step fails, so a failed install leaves the host as it
found it. ``state.json`` is written last: it is the install's commit point.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import logging
import os
import shutil
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from atoll.apps import image as appimage
from atoll.apps import secrets as secretsmod
from atoll.apps.paths import AppPaths, installed_names
from atoll.apps.plan import (
    LABEL_MANAGED,
    container_name,
    is_database,
    network_name,
    plan_container,
    uid_gid,
)
from atoll.apps.runtime import ContainerInfo, ExecResult, Runtime, get_runtime
from atoll.apps.spec import (
    AppSpec,
    load_app_spec,
    load_builtin,
    parse_duration,
    validate_app_name,
)
from atoll.core import fsutil
from atoll.core.errors import HostStateError, InputError, RuntimeBackendError
from atoll.core.spec import load_spec_text, read_spec_text

__all__ = [
    "InstalledApp",
    "ensure_image",
    "exec_sql",
    "install",
    "installed_apps",
    "load_installed",
    "logs",
    "remove",
    "restart",
    "start",
    "status",
    "stop",
    "wait_ready",
]

log = logging.getLogger("atoll.apps")
CLIENT_ARGS = ["--defaults-extra-file=/run/secrets/mysql-client.cnf"]
ROOT_ARGS = ["--defaults-extra-file=/run/secrets/root-client.cnf"]
READY_TIMEOUT = 120.0
# Below the boot layer's per-check limit (120 s), so the check reports its own reason.
DROPIN_TIMEOUT = 90


@dataclass(frozen=True)
class InstalledApp:
    """An installed app: its paths, validated spec and recorded state."""

    name: str
    paths: AppPaths
    spec: AppSpec
    state: dict[str, Any]

    @property
    def container(self) -> str:
        return container_name(self.name)


def _runtime(runtime: Runtime | None, name: str = "docker") -> Runtime:
    return runtime if runtime is not None else get_runtime(name)


def load_installed(sysroot: Path, app: str) -> InstalledApp:
    """The installed app ``app``.

    Raises:
        InputError: no such app installed (or a bad name).
    """
    validate_app_name(app)
    paths = AppPaths(Path(sysroot), app)
    state = fsutil.read_json(paths.state)
    if state is None:
        raise InputError(
            f"app {app!r} is not installed",
            resolution="see `atoll app list`; install it with `atoll app install`",
        )
    spec = load_spec_text(read_spec_text(paths.spec), AppSpec, str(paths.spec))
    return InstalledApp(app, paths, spec, state)


def installed_apps(sysroot: Path) -> list[InstalledApp]:
    """Every installed app, by name."""
    return [load_installed(sysroot, name) for name in installed_names(Path(sysroot))]


def _check_ports(spec: AppSpec) -> None:
    for p in spec.port_mappings():
        kind = socket.SOCK_STREAM if p.protocol == "tcp" else socket.SOCK_DGRAM
        fam = socket.AF_INET6 if ":" in p.host_ip else socket.AF_INET
        with socket.socket(fam, kind) as s:
            try:
                s.bind((p.host_ip, p.host_port))
            except OSError as exc:
                raise HostStateError(
                    f"port {p.host_ip}:{p.host_port}/{p.protocol} is already in use",
                    details=str(exc),
                    resolution="stop what listens there or change `ports` in the app's spec",
                ) from exc


def _resolve_spec(app: str, spec_file: Path | None) -> tuple[AppSpec, str]:
    if spec_file is not None:
        return load_app_spec(spec_file)
    return load_builtin(app)


def _health_dropin_text(app: str) -> str:
    # The `atoll` command of this host (on an image: /usr/bin/atoll, the agent's
    # wrapper with its own dependencies; boot-complete runs checks with the
    # system Python, which has only atoll's stdlib-only modules).
    atoll = shutil.which("atoll") or f"{sys.executable} -m atoll.cli"
    return (
        "#!/bin/sh\n"
        f"# atoll: the database of app {app} accepts a write and reads it back.\n"
        f"# Installed by `atoll app install {app}`; removed by `atoll app remove {app}`.\n"
        f'exec {atoll} --sysroot "${{ATOLL_SYSROOT:-/}}" '
        f"app check {app} --timeout {DROPIN_TIMEOUT}\n"
    )


def install(
    sysroot: Path,
    app: str,
    *,
    spec_file: Path | None = None,
    secrets: dict[str, Path] | None = None,
    runtime: Runtime | None = None,
    start_app: bool = True,
    ready_timeout: float = READY_TIMEOUT,
) -> InstalledApp:
    """Install ``app`` (a built-in spec, or ``spec_file``) and start it.

    Data volumes and secrets already present (``remove --keep-data``) are reused.

    Raises:
        SpecError: the spec is invalid (``file:line: field: problem``).
        InputError: bad app name, unknown secret, missing image.
        HostStateError: already installed, a container of that name exists, a port is in use.
        RuntimeBackendError: the container runtime is unreachable or refused.
    """
    validate_app_name(app)
    spec, text = _resolve_spec(app, spec_file)
    given = secretsmod.read_secret_args(secrets or {}, spec.secrets)
    paths = AppPaths(Path(sysroot), app)
    if paths.state.exists():
        raise HostStateError(
            f"app {app!r} is already installed",
            resolution=f"`atoll app remove {app} --keep-data` first to reinstall",
        )
    rt = _runtime(runtime)
    if rt.inspect(container_name(app)) is not None:
        raise HostStateError(
            f"a container named {container_name(app)} already exists",
            resolution="remove it (docker rm) or choose another app name",
        )
    ensure_image(rt, spec.image)
    _check_ports(spec)

    spec_sha = hashlib.sha256(text.encode()).hexdigest()
    uid, gid = uid_gid(spec)
    created_root = not paths.root.exists()
    # The topmost directory this install creates (var/, var/lib/atoll/... in a fresh sysroot).
    first_new = paths.root
    while not first_new.parent.exists():
        first_new = first_new.parent
    created: list[Path] = []
    container_created = network_created = False
    try:
        paths.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(paths.root, 0o700)
        paths.volumes.mkdir(mode=0o700, exist_ok=True)
        for vol in spec.volume_mounts():
            vdir = paths.volume(vol.name)
            if not vdir.exists():
                vdir.mkdir(mode=0o750)
                created.append(vdir)
                os.chown(vdir, uid, gid)
        written = secretsmod.ensure_secrets(
            paths, spec.secrets, given, uid=uid, gid=gid, database=is_database(spec)
        )
        created += [
            paths.secrets / n for n in written if n in (secretsmod.CLIENT_CNF, secretsmod.ROOT_CNF)
        ]
        plan = plan_container(app, spec, paths, spec_sha)
        rt.ensure_network(
            plan.network,
            internal=plan.network_internal,
            labels={LABEL_MANAGED: "true", "io.atoll.app": app},
        )
        network_created = True
        rt.create(plan)
        container_created = True
        fsutil.atomic_write(paths.spec, text.encode(), 0o600)
        if start_app:
            rt.start(plan.name)
            if is_database(spec):
                wait_ready(rt, app, timeout=ready_timeout, args=ROOT_ARGS)
                _ensure_monitor_user(rt, paths, app)
                wait_ready(rt, app, timeout=10)
        if is_database(spec):
            _mkdirs_undoable(paths.health_dropin.parent, created)
            fsutil.atomic_write(paths.health_dropin, _health_dropin_text(app).encode(), 0o755)
        state = {
            "app": app,
            "image": spec.image,
            "role": spec.role.value,
            "runtime": rt.name,
            "container": plan.name,
            "network": plan.network,
            "spec_sha256": spec_sha,
            "installed": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "uid": uid,
            "gid": gid,
            "stop_timeout": plan.stop_timeout,
        }
        fsutil.atomic_write_json(paths.state, state, 0o600)
    except BaseException:
        with contextlib.suppress(Exception):
            if container_created:
                rt.remove(container_name(app))
            if network_created:
                rt.remove_network(network_name(app))
        with contextlib.suppress(FileNotFoundError):
            paths.health_dropin.unlink()
        with contextlib.suppress(FileNotFoundError):
            paths.spec.unlink()
        for p in created:
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()
        if created_root:
            shutil.rmtree(first_new, ignore_errors=True)
        raise
    return InstalledApp(app, paths, spec, state)


def ensure_image(rt: Runtime, image: str, bundle_dir: Path = appimage.BUNDLE_DIR) -> None:
    """Make sure ``image`` is in the runtime: load it from the OS image's bundle if needed.

    Raises:
        InputError: the image is neither present nor shipped in the OS image.
    """
    if rt.image_exists(image):
        return
    archive = appimage.bundled_archive(image, bundle_dir)
    if archive is None:
        raise InputError(
            f"image {image} is not present",
            resolution="ship it in the OS image (treefile app_images: [mariadb]), or build and "
            "load it: atoll app image build mariadb --suite bookworm --out mariadb.tar && "
            "docker load -i mariadb.tar (or pull it where a registry is reachable)",
        )
    log.info("loading %s from %s", image, archive)
    rt.load_image(archive)
    if not rt.image_exists(image):
        raise InputError(f"image {image} is not in {archive} (the bundle's index is wrong)")


def _mkdirs_undoable(path: Path, created: list[Path]) -> None:
    missing = []
    while not path.exists():
        missing.append(path)
        path = path.parent
    for p in reversed(missing):
        p.mkdir()
    if missing:
        created.append(missing[-1])


def _sql_quote(value: bytes) -> str:
    return value.decode().replace("\\", "\\\\").replace("'", "\\'")


def _ensure_monitor_user(rt: Runtime, paths: AppPaths, app: str) -> None:
    """Create or update the monitoring user over stdin (never argv), as root."""
    pw = _sql_quote((paths.secrets / "monitor-password").read_bytes().strip())
    user = f"'{secretsmod.MONITOR_USER}'@'localhost'"
    sql = (
        f"CREATE USER IF NOT EXISTS {user} IDENTIFIED BY '{pw}';\n"
        f"ALTER USER {user} IDENTIFIED BY '{pw}';\n"
        "GRANT SELECT, PROCESS, RELOAD, LOCK TABLES, SHOW VIEW, EVENT, TRIGGER, "
        f"REPLICATION CLIENT ON *.* TO {user};\n"
        "CREATE DATABASE IF NOT EXISTS atoll_health;\n"
        f"GRANT ALL ON atoll_health.* TO {user};\n"
    ).encode()
    res = rt.exec(container_name(app), ["mysql", *ROOT_ARGS], stdin=[sql])
    if res.exit_code != 0:
        raise RuntimeBackendError(
            f"app {app}: cannot set up the monitoring user",
            details=res.stderr.decode("utf-8", "replace"),
        )


def wait_ready(
    rt: Runtime, app: str, *, timeout: float = READY_TIMEOUT, args: list[str] | None = None
) -> float:
    """Wait until the app's database answers a query; return the seconds waited.

    Raises:
        RuntimeBackendError: the container stopped, or no answer within ``timeout``.
    """
    start = time.monotonic()
    name = container_name(app)
    last = b""
    while True:
        info = rt.inspect(name)
        if info is None or info.status != "running":
            tail = rt.logs(name, 20).decode("utf-8", "replace") if info else ""
            raise RuntimeBackendError(
                f"app {app}: the container stopped while starting "
                f"({info.status if info else 'missing'})",
                details=tail,
                resolution=f"see `atoll app logs {app}`",
            )
        try:
            res = rt.exec(
                name, ["mysql", *(args or CLIENT_ARGS), "-sN", "-e", "SELECT 1"], timeout=30
            )
        except RuntimeBackendError as exc:  # it died between the inspect and the exec
            res = ExecResult(-1, b"", exc.brief.encode())
        if res.exit_code == 0:
            return time.monotonic() - start
        last = res.stderr
        if time.monotonic() - start > timeout:
            raise RuntimeBackendError(
                f"app {app}: the database did not answer within {timeout}s",
                details=last.decode("utf-8", "replace"),
            )
        time.sleep(0.1)


def exec_sql(
    app: str,
    sql: str,
    *,
    sysroot: Path = Path("/"),
    runtime: Runtime | None = None,
    timeout: float = 60,
    as_root: bool = False,
) -> str:
    """Run ``sql`` as the monitoring user (or root) in the app's container; return its output.

    The command is ``mysql --defaults-extra-file=/run/secrets/mysql-client.cnf -sN -e SQL``
    (tab-separated rows, no column names).

    Raises:
        InputError: no such app.
        RuntimeBackendError: the runtime is unreachable, or mysql failed.
    """
    load_installed(sysroot, app)
    rt = _runtime(runtime)
    creds = ROOT_ARGS if as_root else CLIENT_ARGS
    res = rt.exec(container_name(app), ["mysql", *creds, "-sN", "-e", sql], timeout=timeout)
    if res.exit_code != 0:
        raise RuntimeBackendError(
            f"app {app}: query failed (exit code {res.exit_code})",
            details=res.stderr.decode("utf-8", "replace").strip(),
        )
    return res.stdout.decode("utf-8", "replace")


def start(
    sysroot: Path,
    app: str,
    *,
    runtime: Runtime | None = None,
    wait: bool = True,
    ready_timeout: float = READY_TIMEOUT,
) -> float:
    """Start the app; for a database, wait until it answers. Returns seconds to ready."""
    inst = load_installed(sysroot, app)
    rt = _runtime(runtime, inst.state.get("runtime", "docker"))
    t0 = time.monotonic()
    info = rt.inspect(inst.container)
    if info is None:
        raise HostStateError(
            f"app {app}: its container is missing",
            resolution=f"reinstall: atoll app remove {app} --keep-data && atoll app install {app}",
        )
    if info.status != "running":
        rt.start(inst.container)
    if wait and is_database(inst.spec):
        wait_ready(rt, app, timeout=ready_timeout)
    return time.monotonic() - t0


def stop(
    sysroot: Path, app: str, *, runtime: Runtime | None = None, timeout: int | None = None
) -> None:
    """Stop the app cleanly: SIGTERM, then up to ``stop_grace_period`` before SIGKILL."""
    inst = load_installed(sysroot, app)
    rt = _runtime(runtime, inst.state.get("runtime", "docker"))
    grace = timeout if timeout is not None else int(parse_duration(inst.spec.stop_grace_period))
    if rt.inspect(inst.container) is not None:
        rt.stop(inst.container, grace)


def restart(sysroot: Path, app: str, *, runtime: Runtime | None = None) -> float:
    """Stop, then start the app; returns seconds from start to ready."""
    stop(sysroot, app, runtime=runtime)
    return start(sysroot, app, runtime=runtime)


def remove(
    sysroot: Path, app: str, *, keep_data: bool = False, runtime: Runtime | None = None
) -> None:
    """Stop and remove the app's container, network, health check and state.

    With ``keep_data`` the volumes and secrets stay (a later install reuses
    them); backups are always kept.
    """
    inst = load_installed(sysroot, app)
    rt = _runtime(runtime, inst.state.get("runtime", "docker"))
    if rt.inspect(inst.container) is not None:
        rt.stop(inst.container, int(parse_duration(inst.spec.stop_grace_period)))
        rt.remove(inst.container)
    rt.remove_network(network_name(app))
    with contextlib.suppress(FileNotFoundError):
        inst.paths.health_dropin.unlink()
    inst.paths.state.unlink()  # the commit point: from here the app is not installed
    inst.paths.spec.unlink()
    if not keep_data:
        shutil.rmtree(inst.paths.root)


def _container_dict(info: ContainerInfo | None) -> dict[str, Any] | None:
    if info is None:
        return None
    return {
        "id": info.id[:12],
        "status": info.status,
        "health": info.health,
        "started_at": info.started_at,
        "exit_code": info.exit_code,
    }


def status(sysroot: Path, app: str, *, runtime: Runtime | None = None) -> dict[str, Any]:
    """The app's state for people and machines. Names of secrets only, never values."""
    from atoll.apps.backups import list_backups

    inst = load_installed(sysroot, app)
    rt = _runtime(runtime, inst.state.get("runtime", "docker"))
    backups = list_backups(sysroot, app)
    return {
        "app": app,
        "image": inst.spec.image,
        "role": inst.spec.role.value,
        "installed": inst.state.get("installed"),
        "container": _container_dict(rt.inspect(inst.container)),
        "network": inst.state.get("network"),
        "volumes": {v.name: str(inst.paths.volume(v.name)) for v in inst.spec.volume_mounts()},
        "secrets": sorted(inst.spec.secrets),
        "resources": {"memory": inst.spec.resources.memory, "cpus": inst.spec.resources.cpus},
        "backups": {"count": len(backups), "latest": backups[0]["id"] if backups else None},
    }


def logs(
    sysroot: Path, app: str, *, tail: int | None = 200, runtime: Runtime | None = None
) -> bytes:
    """The container's recent output."""
    inst = load_installed(sysroot, app)
    rt = _runtime(runtime, inst.state.get("runtime", "docker"))
    return rt.logs(inst.container, tail)

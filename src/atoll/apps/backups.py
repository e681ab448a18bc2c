"""Consistent backups of database apps, retention, restore, and the pre-update hook.

Methods:

* ``mysqldump``: ``mysqldump --single-transaction --all-databases`` as the
  maintenance user, streamed out of the container into ``dump.sql`` (a
  consistent InnoDB snapshot with the app running);
* ``snapshot``: the app is stopped cleanly, its volumes are archived into
  ``snapshot.tar`` (owners and modes kept), and it is started again;
* ``mariadb-backup``: ``mariadb-backup --backup --stream=xbstream`` into
  ``backup.xb`` (hot physical backup; restored by ``atoll.apps.physical``:
  unpacked and prepared in a helper container, then swapped in).

A backup is written into ``<backups>/<app>/.<id>.tmp/`` and renamed into place
when its manifest is complete, so a listed backup is always whole.
"""

from __future__ import annotations

import datetime
import os
import shutil
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from atoll.apps.manager import (
    CLIENT_ARGS,
    ROOT_ARGS,
    installed_apps,
    load_installed,
    wait_ready,
)
from atoll.apps.plan import BackupRecord, backups_to_delete, container_name, is_database
from atoll.apps.runtime import Runtime, get_runtime
from atoll.apps.spec import BackupMethod, parse_duration
from atoll.core import fsutil
from atoll.core.errors import HostStateError, InputError, RuntimeBackendError, StoreError

__all__ = ["backup", "backup_all_before_update", "list_backups", "prune", "restore"]

_FILES = {
    BackupMethod.mysqldump: "dump.sql",
    BackupMethod.snapshot: "snapshot.tar",
    BackupMethod.mariadb_backup: "backup.xb",
}


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)



def list_backups(sysroot: Path, app: str) -> list[dict[str, Any]]:
    """Manifests of the app's complete backups, newest first."""
    root = Path(sysroot) / "var/lib/atoll/backups" / app
    if not root.is_dir():
        return []
    out = []
    for d in root.iterdir():
        if d.name.startswith("."):
            continue
        manifest = fsutil.read_json(d / "manifest.json")
        if manifest is not None:
            out.append(manifest)
    return sorted(out, key=lambda m: (m["created_ts"], m["id"]), reverse=True)


def _new_id(root: Path, now: datetime.datetime) -> str:
    base = now.strftime("%Y%m%dT%H%M%SZ")
    bid, n = base, 0
    while (root / bid).exists():
        n += 1
        bid = f"{base}-{n}"
    return bid


def _stream_dump(rt: Runtime, app: str, out: Path, argv: list[str]) -> None:
    with os.fdopen(os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as fh:
        res = rt.exec(container_name(app), argv, stdout=fh, timeout=6 * 3600)
        fh.flush()
        os.fsync(fh.fileno())
    if res.exit_code != 0:
        raise RuntimeBackendError(
            f"app {app}: {argv[0]} failed (exit code {res.exit_code})",
            details=res.stderr.decode("utf-8", "replace").strip(),
        )


def _snapshot(rt: Runtime, sysroot: Path, app: str, out: Path) -> None:
    inst = load_installed(sysroot, app)
    info = rt.inspect(inst.container)
    was_running = info is not None and info.status == "running"
    if was_running:
        rt.stop(inst.container, int(parse_duration(inst.spec.stop_grace_period)))
    try:
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh, tarfile.open(fileobj=fh, mode="w") as tar:
            tar.add(inst.paths.volumes, arcname="volumes")
    finally:
        if was_running:
            rt.start(inst.container)
            if is_database(inst.spec):
                wait_ready(rt, app)


def backup(
    sysroot: Path,
    app: str,
    *,
    runtime: Runtime | None = None,
    method: BackupMethod | None = None,
    reason: str = "manual",
) -> dict[str, Any]:
    """Take a consistent backup of ``app`` per its policy, then apply retention.

    Returns:
        The backup's manifest.

    Raises:
        InputError: no such app, or not a database app.
        RuntimeBackendError: the dump failed (nothing is kept then).
    """
    inst = load_installed(sysroot, app)
    if not is_database(inst.spec):
        raise InputError(f"app {app} is not a database app: atoll backs up database apps")
    policy = inst.spec.backup_policy()
    method = method or policy.method
    rt = runtime if runtime is not None else get_runtime(inst.state.get("runtime", "docker"))
    root = inst.paths.backups
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    now = _now()
    bid = _new_id(root, now)
    staging = root / f".{bid}.tmp"
    staging.mkdir(mode=0o700)
    t0 = time.monotonic()
    try:
        out = staging / _FILES[method]
        if method is BackupMethod.mysqldump:
            _stream_dump(
                rt,
                app,
                out,
                [
                    "mysqldump",
                    *CLIENT_ARGS,
                    "--single-transaction",
                    "--all-databases",
                    "--routines",
                    "--events",
                    "--triggers",
                    "--hex-blob",
                ],
            )
        elif method is BackupMethod.mariadb_backup:
            _stream_dump(
                rt,
                app,
                out,
                [
                    "mariadb-backup",
                    *ROOT_ARGS,
                    "--backup",
                    "--stream=xbstream",
                    "--target-dir=/tmp",
                ],
            )
        else:
            _snapshot(rt, sysroot, app, out)
        manifest = {
            "version": 1,
            "id": bid,
            "app": app,
            "method": method.value,
            "reason": reason,
            "created": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "created_ts": now.timestamp(),
            "image": inst.spec.image,
            "spec_sha256": inst.state.get("spec_sha256"),
            "seconds": round(time.monotonic() - t0, 3),
            "files": {out.name: {"sha256": fsutil.sha256_file(out), "size": out.stat().st_size}},
        }
        fsutil.atomic_write_json(staging / "manifest.json", manifest, 0o600)
        os.replace(staging, root / bid)
        fsutil.fsync_dir(root)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    prune(sysroot, app)
    return manifest


def prune(sysroot: Path, app: str, *, now: float | None = None) -> list[str]:
    """Delete backups beyond the policy's retention count or max age; return their ids."""
    inst = load_installed(sysroot, app)
    policy = inst.spec.backup_policy()
    records = [BackupRecord(m["id"], float(m["created_ts"])) for m in list_backups(sysroot, app)]
    doomed = backups_to_delete(
        records,
        retention=policy.retention,
        max_age=parse_duration(policy.max_age) if policy.max_age else None,
        now=time.time() if now is None else now,
    )
    for bid in doomed:
        shutil.rmtree(inst.paths.backups / bid, ignore_errors=True)
    return doomed


def _chunks(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as fh:
        yield from iter(lambda: fh.read(1 << 20), b"")


def restore(
    sysroot: Path, app: str, backup_id: str | None = None, *, runtime: Runtime | None = None
) -> dict[str, Any]:
    """Bring back backup ``backup_id`` (default: the newest) of ``app``.

    The backup's files are verified against its manifest before anything changes.

    Raises:
        InputError: no such app or backup.
        StoreError: the backup's files do not match its manifest.
        RuntimeBackendError: loading the dump failed.
    """
    inst = load_installed(sysroot, app)
    backups = list_backups(sysroot, app)
    if not backups:
        raise InputError(f"app {app} has no backups", resolution=f"atoll app backup {app}")
    chosen = (
        backups[0]
        if backup_id is None
        else next((m for m in backups if m["id"] == backup_id), None)
    )
    if chosen is None:
        raise InputError(
            f"app {app} has no backup {backup_id!r}",
            resolution="backups: " + ", ".join(m["id"] for m in backups),
        )
    bdir = inst.paths.backups / chosen["id"]
    for fname, meta in chosen["files"].items():
        if not (bdir / fname).is_file() or fsutil.sha256_file(bdir / fname) != meta["sha256"]:
            raise StoreError(
                f"backup {chosen['id']} of {app}: {fname} does not match its manifest",
                resolution="choose another backup (atoll app status shows them)",
            )
    rt = runtime if runtime is not None else get_runtime(inst.state.get("runtime", "docker"))
    method = BackupMethod(chosen["method"])
    if method is BackupMethod.mysqldump:
        info = rt.inspect(inst.container)
        if info is None or info.status != "running":
            raise HostStateError(f"app {app} is not running", resolution=f"atoll app start {app}")
        res = rt.exec(
            inst.container,
            ["mysql", *ROOT_ARGS],
            stdin=_chunks(bdir / "dump.sql"),
            timeout=6 * 3600,
        )
        if res.exit_code != 0:
            raise RuntimeBackendError(
                f"app {app}: loading the dump failed",
                details=res.stderr.decode("utf-8", "replace").strip(),
            )
    elif method is BackupMethod.snapshot:
        _restore_snapshot(
            rt,
            inst.paths.volumes,
            bdir / "snapshot.tar",
            inst.container,
            int(parse_duration(inst.spec.stop_grace_period)),
        )
        wait_ready(rt, app)
    else:
        from atoll.apps.physical import restore_physical

        restore_physical(rt, inst, bdir / "backup.xb")
    return chosen


def _restore_snapshot(
    rt: Runtime, volumes: Path, archive: Path, container: str, grace: int
) -> None:
    new = volumes.with_name("volumes.restore")
    old = volumes.with_name("volumes.old")
    shutil.rmtree(new, ignore_errors=True)
    with tarfile.open(archive) as tar:
        members = tar.getmembers()
        for m in members:
            if not (m.name == "volumes" or m.name.startswith("volumes/")) or ".." in m.name:
                raise StoreError(f"{archive}: unexpected member {m.name}")
        tmp = volumes.with_name("volumes.extract")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(mode=0o700)
        tar.extractall(tmp, members=members)
        os.replace(tmp / "volumes", new)
        tmp.rmdir()
    rt.stop(container, grace)
    os.replace(volumes, old)
    try:
        os.replace(new, volumes)
    except BaseException:
        os.replace(old, volumes)
        raise
    fsutil.fsync_dir(volumes.parent)
    shutil.rmtree(old, ignore_errors=True)
    rt.start(container)


def backup_all_before_update(
    sysroot: Path, *, runtime: Runtime | None = None
) -> list[dict[str, Any]]:
    """The pre-update hook: back up every database app whose policy asks for it.

    The boot/update layer calls this before applying a deployment and stops the
    update when it raises: no update without a fresh backup.

    Returns:
        The manifests of the backups taken.
    """
    out = []
    for inst in installed_apps(sysroot):
        if is_database(inst.spec) and inst.spec.backup_policy().before_update:
            out.append(backup(sysroot, inst.name, runtime=runtime, reason="before-update"))
    return out

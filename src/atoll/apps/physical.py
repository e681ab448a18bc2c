"""Restore a ``mariadb-backup`` (xbstream) backup into an app's data volume.

The app's own image does the work in a short-lived helper container, confined
like the app (same user, read-only root, no capabilities) with one extra
mount: a staging directory beside the volume. The stream is unpacked there
(``mbstream -x``) and prepared (``mariadb-backup --prepare``); only then is
the app stopped and the prepared directory swapped in for the data volume by
two renames. The old data is kept until the app answers again, and put back if
it does not.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from atoll.apps.manager import InstalledApp, wait_ready
from atoll.apps.plan import Mount, plan_container, uid_gid
from atoll.apps.runtime import Runtime
from atoll.apps.spec import parse_duration
from atoll.core import fsutil
from atoll.core.errors import InputError, RuntimeBackendError

__all__ = ["restore_physical"]

STAGING = "/restore"


def _chunks(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as fh:
        yield from iter(lambda: fh.read(1 << 20), b"")


def _data_volume(inst: InstalledApp) -> Path:
    for v in inst.spec.volume_mounts():
        if v.target == "/var/lib/mysql":
            return inst.paths.volume(v.name)
    raise InputError(f"app {inst.name}: no volume is mounted at /var/lib/mysql")


def restore_physical(rt: Runtime, inst: InstalledApp, archive: Path) -> None:
    """Unpack, prepare and swap in ``archive`` (an xbstream) as the app's datadir.

    Raises:
        RuntimeBackendError: unpacking or preparing failed (the app's data is untouched),
            or the app does not answer on the restored data (the old data is put back).
    """
    data = _data_volume(inst)
    staging = data.with_name(data.name + ".restore")
    old = data.with_name(data.name + ".old")
    shutil.rmtree(staging, ignore_errors=True)
    uid, gid = uid_gid(inst.spec)
    staging.mkdir(mode=0o750)
    os.chown(staging, uid, gid)
    base = plan_container(inst.name, inst.spec, inst.paths, inst.state.get("spec_sha256", ""))
    helper = dataclasses.replace(
        base,
        name=f"{base.name}-restore",
        command=["sleep", "3600"],
        mounts=[Mount(staging, STAGING, False)],
        labels={k: v for k, v in base.labels.items() if k != "io.atoll.role"},
        healthcheck=None,
        restart="no",
        ports=[],
    )
    rt.remove(helper.name)
    try:
        rt.create(helper)
        rt.start(helper.name)
        steps: list[tuple[list[str], Path | None]] = [
            (["mbstream", "-x", "-C", STAGING], archive),
            (["mariadb-backup", "--prepare", f"--target-dir={STAGING}"], None),
        ]
        for argv, stdin in steps:
            res = rt.exec(
                helper.name, argv, stdin=_chunks(stdin) if stdin else None, timeout=6 * 3600
            )
            if res.exit_code != 0:
                raise RuntimeBackendError(
                    f"app {inst.name}: {argv[0]} failed (exit code {res.exit_code})",
                    details=res.stderr.decode("utf-8", "replace")[-4000:],
                )
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        rt.remove(helper.name)

    rt.stop(inst.container, int(parse_duration(inst.spec.stop_grace_period)))
    shutil.rmtree(old, ignore_errors=True)
    os.replace(data, old)
    os.replace(staging, data)
    fsutil.fsync_dir(data.parent)
    try:
        rt.start(inst.container)
        wait_ready(rt, inst.name)
    except BaseException:
        with contextlib.suppress(Exception):
            rt.stop(inst.container, 60)
        shutil.rmtree(data, ignore_errors=True)
        os.replace(old, data)
        with contextlib.suppress(Exception):
            rt.start(inst.container)
        raise
    shutil.rmtree(old, ignore_errors=True)

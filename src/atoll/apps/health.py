"""The boot health check of a database app: it accepts a write and reads it back.

Installed as an executable drop-in in
``<sysroot>/etc/atoll/health.d/required.d/50-app-<app>`` (see docs/on-disk.md,
"Health checks"): a database that cannot take a write after an update makes the
boot bad, and the host rolls back.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from atoll.apps.manager import exec_sql, load_installed, wait_ready
from atoll.apps.runtime import Runtime, get_runtime
from atoll.core.errors import AtollError

__all__ = ["HealthResult", "check_database"]


@dataclass(frozen=True)
class HealthResult:
    """The outcome of a health check."""

    app: str
    ok: bool
    seconds: float
    message: str


def check_database(
    sysroot: Path, app: str, *, runtime: Runtime | None = None, timeout: float = 120
) -> HealthResult:
    """Wait (up to ``timeout``) for the database, write a random token, read it back."""
    t0 = time.monotonic()
    try:
        inst = load_installed(sysroot, app)
        rt = runtime if runtime is not None else get_runtime(inst.state.get("runtime", "docker"))
        wait_ready(rt, app, timeout=timeout)
        token = secrets.token_hex(16)
        exec_sql(
            app,
            "CREATE TABLE IF NOT EXISTS atoll_health.probe "
            "(id INT PRIMARY KEY, token VARCHAR(64), at TIMESTAMP) ENGINE=InnoDB; "
            f"REPLACE INTO atoll_health.probe VALUES (1, '{token}', NOW())",
            sysroot=sysroot,
            runtime=rt,
        )
        got = exec_sql(
            app, "SELECT token FROM atoll_health.probe WHERE id = 1", sysroot=sysroot, runtime=rt
        ).strip()
    except AtollError as exc:
        return HealthResult(app, False, time.monotonic() - t0, f"{exc.brief}: {exc.details or ''}")
    if got != token:
        return HealthResult(app, False, time.monotonic() - t0, f"wrote {token}, read back {got!r}")
    return HealthResult(
        app, True, time.monotonic() - t0, "the database accepts a write and reads it back"
    )

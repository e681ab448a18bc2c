"""Apps: databases (and other services) run as confined containers.

Public API for the CLI, the monitor and the boot/update layers::

    install / start / stop / restart / remove / status / logs / installed_apps
    exec_sql(app, sql)                      run SQL as the monitoring user (docker exec)
    backup / restore / list_backups         consistent backups with retention
    backup_all_before_update(sysroot)       the pre-update hook
    check_database(sysroot, app)            "accepts a write and reads it back"
    install_units(sysroot)                  systemd units (start after boot, stop before shutdown)

Contract with the monitor: each database app's container carries the labels
``io.atoll.app=<app>`` and ``io.atoll.role=database``; inside it,
``/run/secrets/mysql-client.cnf`` (mode 0400) is the monitoring user's option file.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from atoll.apps.backups import (
        backup,
        backup_all_before_update,
        list_backups,
        prune,
        restore,
    )
    from atoll.apps.feature import install_docker_feature
    from atoll.apps.health import HealthResult, check_database
    from atoll.apps.manager import (
        InstalledApp,
        exec_sql,
        install,
        installed_apps,
        load_installed,
        logs,
        remove,
        restart,
        start,
        status,
        stop,
        wait_ready,
    )
    from atoll.apps.plan import LABEL_APP, LABEL_ROLE
    from atoll.apps.units import install_units

# Loaded on first use (PEP 562): importing one submodule (``atoll.apps.paths`` on the
# update path) does not load the app specs and pydantic with it. No name here may be
# a submodule's: importing that submodule would rebind the package attribute to it.
_WHERE = {
    "backup": "backups", "backup_all_before_update": "backups", "list_backups": "backups",
    "prune": "backups", "restore": "backups",
    "install_docker_feature": "feature",
    "HealthResult": "health", "check_database": "health",
    "InstalledApp": "manager", "exec_sql": "manager", "install": "manager",
    "installed_apps": "manager", "load_installed": "manager", "logs": "manager",
    "remove": "manager", "restart": "manager", "start": "manager", "status": "manager",
    "stop": "manager", "wait_ready": "manager",
    "LABEL_APP": "plan", "LABEL_ROLE": "plan",
    "install_units": "units",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'atoll.apps' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"atoll.apps.{module}"), name)
    globals()[name] = value  # looked up once
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))


__all__ = [
    "LABEL_APP",
    "LABEL_ROLE",
    "HealthResult",
    "InstalledApp",
    "backup",
    "backup_all_before_update",
    "check_database",
    "exec_sql",
    "install",
    "install_docker_feature",
    "install_units",
    "installed_apps",
    "list_backups",
    "load_installed",
    "logs",
    "prune",
    "remove",
    "restart",
    "restore",
    "start",
    "status",
    "stop",
    "wait_ready",
]

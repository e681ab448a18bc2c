"""Where an app lives on disk.

<sysroot>/var/lib/atoll/apps/<app>/         mode 0700, root
├── spec.yaml                               the spec the app was installed from (copy)
├── state.json                              canonical JSON: image, container, network, spec hash
├── volumes/<name>/                         data volumes (owned by the app's uid)
└── secrets/<name>                          secret files, mode 0600 (0400 for *.cnf), app's uid
<sysroot>/var/lib/atoll/backups/<app>/<backup-id>/
├── manifest.json                           id, app, method, created, files (sha256, size)
└── dump.sql | snapshot.tar                 the backup itself
<sysroot>/etc/atoll/health.d/required.d/50-app-<app>   the app's boot health check
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["AppPaths", "apps_root", "backups_root", "installed_names"]


def apps_root(sysroot: Path) -> Path:
    """``<sysroot>/var/lib/atoll/apps``."""
    return Path(sysroot) / "var/lib/atoll/apps"


def installed_names(sysroot: Path) -> list[str]:
    """The names of the installed apps (a directory with a ``state.json``), sorted;
    without loading their specs."""
    root = apps_root(sysroot)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / "state.json").is_file())


def backups_root(sysroot: Path) -> Path:
    """``<sysroot>/var/lib/atoll/backups``."""
    return Path(sysroot) / "var/lib/atoll/backups"


@dataclass(frozen=True)
class AppPaths:
    """The on-disk paths of one app."""

    sysroot: Path
    app: str

    @property
    def root(self) -> Path:
        return apps_root(self.sysroot) / self.app

    @property
    def spec(self) -> Path:
        return self.root / "spec.yaml"

    @property
    def state(self) -> Path:
        return self.root / "state.json"

    @property
    def volumes(self) -> Path:
        return self.root / "volumes"

    def volume(self, name: str) -> Path:
        return self.volumes / name

    @property
    def secrets(self) -> Path:
        return self.root / "secrets"

    @property
    def backups(self) -> Path:
        return backups_root(self.sysroot) / self.app

    @property
    def health_dropin(self) -> Path:
        return Path(self.sysroot) / "etc/atoll/health.d/required.d" / f"50-app-{self.app}"

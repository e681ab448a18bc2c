"""The ``docker`` image feature: Docker Engine in the OS image, apps started at boot.

A treefile with ``features: [docker]`` gets Debian's ``docker.io`` installed,
``docker.service`` enabled, and atoll's ``atoll-apps.service`` (start apps after
boot, stop them cleanly before shutdown) installed and enabled.
"""

from __future__ import annotations

import os
from pathlib import Path

from atoll.apps.units import install_units
from atoll.core import fsutil

__all__ = ["install_docker_feature"]


def install_docker_feature(rootfs: Path) -> None:
    """Enable docker.service and install atoll's app units into ``rootfs``."""
    wants = Path(rootfs) / "etc/systemd/system/multi-user.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    for unit in ("docker.service", "containerd.service"):
        for base in ("lib/systemd/system", "usr/lib/systemd/system"):
            if (Path(rootfs) / base / unit).exists():
                fsutil.atomic_symlink(os.path.join("/", base, unit), wants / unit)
                break
    install_units(rootfs)


def _register() -> None:
    try:
        from atoll.compose.features import Feature, register
    except ImportError:  # compose not present: nothing to register with
        return
    register(
        Feature(
            name="docker",
            install=install_docker_feature,
            # apparmor: Docker confines every container with its docker-default
            # profile when the kernel has AppArmor on (Debian's does), and refuses
            # to start containers if it cannot load that profile
            packages=("docker.io", "apparmor"),
            description="Docker Engine (docker.io) and atoll's app units",
        )
    )


_register()

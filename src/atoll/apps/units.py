"""systemd units that start apps after boot and stop them cleanly before shutdown."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

from atoll.core import fsutil

__all__ = ["UNITS", "install_units"]

UNITS = ["atoll-apps.service"]


def install_units(sysroot: Path, *, atoll_bin: str = "/usr/bin/atoll") -> list[Path]:
    """Install the units into ``<sysroot>/etc/systemd/system`` and enable them.

    Returns:
        The unit files written.
    """
    unit_dir = Path(sysroot) / "etc/systemd/system"
    wants = unit_dir / "multi-user.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    out = []
    for name in UNITS:
        text = (resources.files("atoll.apps") / "units" / name).read_text()
        text = text.replace("/usr/bin/atoll", atoll_bin)
        path = unit_dir / name
        fsutil.atomic_write(path, text.encode(), 0o644)
        fsutil.atomic_symlink(os.path.join("..", name), wants / name)
        out.append(path)
    return out

"""Bake a host config into a deployment's /etc (``atoll image build --config``).

The config and every file it names (secrets, app specs, the update root.json)
land under ``/etc/atoll/`` with the same relative paths as on the seed, mode
0600, owned by root; first boot finds ``/etc/atoll/host-config.yaml`` when no
seed is attached (see :mod:`atoll.provision.firstboot`).

Decision: a baked image carries the config's secrets, so the image file is as
secret as they are; a seed keeps them out of the image (docs/provisioning.md).
"""

from __future__ import annotations

import os
from pathlib import Path

from atoll.core.fsutil import atomic_write
from atoll.provision.firstboot import BAKED
from atoll.provision.seed import seed_files

__all__ = ["bake_config"]


def bake_config(config: Path, deploy_dir: Path) -> list[str]:
    """Validate ``config`` and write it with its files into ``deploy_dir``'s etc.

    Returns the paths written (relative to the deployment).

    Raises:
        SpecError: the config is invalid (nothing is written).
        InputError: it names a file outside its directory.
    """
    files = {name.removeprefix("atoll/"): data for name, data in seed_files(config).items()
             if name.startswith("atoll/")}
    etc_atoll = Path(deploy_dir) / Path(BAKED).parent
    written = []
    for rel, data in sorted(files.items()):
        dest = etc_atoll / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        if dest.parent != etc_atoll:  # a directory of secrets
            os.chmod(dest.parent, 0o700)
        atomic_write(dest, data, 0o600)
        os.chown(dest, 0, 0)
        written.append(str(dest.relative_to(deploy_dir)))
    return written

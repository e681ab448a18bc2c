"""First boot: find the host config (seed device, else baked), validate, apply once.

    <root>/var/lib/atoll/provision/
    ├── seed/               the seed's atoll/ directory, copied (files 0600)
    ├── applied.json        what the last apply did (or why it was refused)
    └── done                the sha256 of the config applied: the unit's condition
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from atoll.core.errors import SpecError
from atoll.core.fsutil import atomic_write, atomic_write_json, copy_private, read_json
from atoll.core.run import run
from atoll.provision.apply import PHASES, RECORD, apply_config, config_sha256
from atoll.provision.config import load_host_config

__all__ = ["BAKED", "find_seed_device", "first_boot"]

log = logging.getLogger("atoll.provision")
BAKED = "etc/atoll/host-config.yaml"
STATE = "var/lib/atoll/provision"


def find_seed_device() -> Path | None:
    for label in ("CIDATA", "cidata"):
        p = Path("/dev/disk/by-label") / label
        if p.exists():
            return p.resolve()
    out = run(["blkid", "-L", "CIDATA"], check=False)
    dev = out.stdout.decode().strip()
    return Path(dev) if dev else None


def _copy_seed(device: Path, dest: Path) -> Path:
    mnt = Path("/run/atoll/seed")
    mnt.mkdir(parents=True, exist_ok=True)
    run(["mount", "-o", "ro,nosuid,nodev,noexec", device, mnt], what="mount the seed")
    try:
        if dest.exists():
            shutil.rmtree(dest)
        copy_tree_private(mnt / "atoll", dest)
    finally:
        run(["umount", mnt], check=False)
    return dest / "host-config.yaml"


def copy_tree_private(src: Path, dest: Path) -> None:
    """Copy a seed's files (secrets among them) so that no one else can read them at any
    moment: directories 0700, files created 0600 (symlinks and special files skipped)."""
    dest.mkdir(mode=0o700)
    for dirpath, dirnames, files in os.walk(src):
        rel = Path(dirpath).relative_to(src)
        for d in dirnames:
            if not os.path.islink(os.path.join(dirpath, d)):
                (dest / rel / d).mkdir(mode=0o700)
        for f in files:
            p = Path(dirpath) / f
            if p.is_file() and not p.is_symlink():
                copy_private(p, dest / rel / f)


def _find_config(root: Path, state: Path, seed_dir: Path | None, phases: tuple[str, ...]
                 ) -> Path | None:
    if seed_dir is not None:
        return seed_dir / "host-config.yaml"
    if Path(root).resolve() == Path("/"):
        if "system" in phases:  # the first phase reads the seed device; later ones its copy
            dev = find_seed_device()
            if dev is not None:
                log.info("host-config: seed found on %s", dev)
                return _copy_seed(dev, state / "seed")
        if (state / "seed/host-config.yaml").is_file():
            return state / "seed/host-config.yaml"
    if (Path(root) / BAKED).is_file():
        return Path(root) / BAKED
    return None


def first_boot(root: Path, sysroot: Path, *, seed_dir: Path | None = None,
               phases: tuple[str, ...] = PHASES) -> dict[str, Any]:
    """Apply the first-boot config once (the given phases of it).

    Args:
        seed_dir: a directory laid out like a seed's ``atoll/`` (tests); without it
            the seed device is looked for (on a real host).
        phases: "system" runs before the network; "apps" after Docker. ``done``
            is written when the last phase succeeded.

    Raises:
        SpecError: the config is invalid (recorded; nothing applied).
    """
    state = Path(root) / STATE
    state.mkdir(parents=True, exist_ok=True)
    config = _find_config(root, state, seed_dir, phases)
    if config is None:
        log.info("host-config: no seed and no baked config: nothing to apply")
        return {"result": "none"}
    sha = config_sha256(config)
    with contextlib.suppress(FileNotFoundError):
        if (state / "done").read_text().strip() == sha:
            return {"result": "already-applied", "config_sha256": sha}
    try:
        cfg = load_host_config(config)
    except SpecError as exc:
        record = {"config": str(config), "config_sha256": sha, "result": "refused",
                  "problems": exc.problems}
        atomic_write_json(Path(root) / RECORD, record)
        for problem in exc.problems:
            log.error("host-config refused: %s", problem)
        raise
    earlier = read_json(Path(root) / RECORD) or {}
    record = apply_config(cfg, config, root, sysroot, phases=phases)
    if phases[0] != PHASES[0] and earlier.get("config_sha256") == sha \
            and earlier.get("result") == "applied":
        # this phase continues an earlier one: keep one record of the whole apply
        record["phases"] = [*earlier.get("phases", []), *record["phases"]]
        record["changes"] = [*earlier.get("changes", []), *record["changes"]]
        atomic_write_json(Path(root) / RECORD, record)
    if phases[-1] == PHASES[-1]:
        atomic_write(state / "done", sha.encode() + b"\n")
    return record

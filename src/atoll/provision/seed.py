"""A NoCloud-style seed: a small config drive that carries the host config.

Layout of the filesystem (label ``CIDATA``, vfat, as cloud-init's NoCloud reads it)::

    meta-data                 instance-id (the config's sha256), local-hostname
    user-data                 #cloud-config with the hostname (for cloud-init users)
    atoll/host-config.yaml    the host config, as validated
    atoll/<path>              every file it names (secrets, root.json), same relative paths

The image is built without mounting anything (mkfs.vfat + mtools), so it works
where vfat cannot be mounted. At first boot the ``provision`` unit finds the
device by label, mounts it read-only, copies ``atoll/`` to
``/var/lib/atoll/provision/seed`` (files 0600) and applies the config from there.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from atoll.core.run import require_tool, run
from atoll.core.spec import MAX_SPEC_BYTES
from atoll.core.userfile import read_user_file
from atoll.provision.config import load_host_config

__all__ = ["LABEL", "build_seed", "seed_files"]

LABEL = "CIDATA"
MAX_SEED_FILE = 2 << 20  # a file the config names (secret, app spec, root.json): the seed's size


def seed_files(config: Path) -> dict[str, bytes]:
    """Every file of the seed, by path (validates the config first)."""
    cfg = load_host_config(config)
    base = Path(config).parent
    data = read_user_file(config, MAX_SPEC_BYTES, "host config")
    sha = hashlib.sha256(data).hexdigest()
    files = {
        "meta-data": f"instance-id: atoll-{sha[:16]}\nlocal-hostname: {cfg.hostname}\n".encode(),
        "user-data": f"#cloud-config\nhostname: {cfg.hostname}\n".encode(),
        "atoll/host-config.yaml": data,
    }
    refs = [v for app in cfg.apps for v in app.secrets.values()]
    refs += [a.spec for a in cfg.apps if a.spec]
    if cfg.updates.remote:
        refs.append(cfg.updates.remote.root)
    if cfg.control:
        refs += [r for r in (cfg.control.enrol_token, cfg.control.ca) if r]
    for ref in refs:
        rel = Path(ref)
        if rel.is_absolute() or ".." in rel.parts:
            from atoll.core.errors import InputError

            raise InputError(f"{config}: {ref}: a seed carries files named relative to the "
                             "config, inside its directory")
        files[f"atoll/{rel.as_posix()}"] = read_user_file(base / rel, MAX_SEED_FILE, str(config)
                                                          + ":")
    return files


def build_seed(config: Path, out: Path, *, size_kib: int = 2048) -> dict[str, int]:
    """Write a vfat seed image (label CIDATA) at ``out``; returns file sizes."""
    for tool, pkg in (("mkfs.vfat", "dosfstools"), ("mcopy", "mtools")):
        require_tool(tool, package=pkg)
    files = seed_files(config)
    out = Path(out)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.unlink(missing_ok=True)
    run(["mkfs.vfat", "-C", "-n", LABEL, tmp, str(size_kib)], what="create the seed filesystem")
    os.chmod(tmp, 0o600)  # still empty: the secrets go in only once no one else can read it
    made: set[str] = set()
    with tempfile.TemporaryDirectory() as td:
        for name, content in sorted(files.items()):
            parts = name.split("/")
            for i in range(1, len(parts)):
                d = "/".join(parts[:i])
                if d not in made:
                    run(["mmd", "-i", tmp, f"::{d}"], what="mkdir on the seed")
                    made.add(d)
            src = Path(td) / "f"
            src.write_bytes(content)
            run(["mcopy", "-i", tmp, src, f"::{name}"], what="copy to the seed")
    tmp.rename(out)
    return {k: len(v) for k, v in files.items()}

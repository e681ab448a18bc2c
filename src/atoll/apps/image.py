"""Build app images from Debian packages, for hosts with no registry.

``atoll app image build mariadb --suite bookworm --out mariadb.tar``:

1. mmdebstrap a minbase rootfs with the image's packages, as a tar
   (``SOURCE_DATE_EPOCH`` fixes timestamps, so the same packages give the same
   bytes); a fixed ``mysql`` user (uid/gid 999) is created before the packages
   are installed, so that volumes and secrets can be owned by it on the host;
   atoll's entrypoint is copied in; docs, man pages and apt lists are dropped.
2. Wrap that tar, as the single layer, in a ``docker load`` archive
   (``manifest.json`` + image config + ``<diff_id>/layer.tar``). We write the
   archive ourselves rather than ``docker import`` it: the config (USER,
   ENTRYPOINT, CMD, ENV, labels, ``created``) is then exact, reproducible and
   independent of the daemon, and the tar can be built where no daemon runs.
"""

from __future__ import annotations

import datetime
import hashlib
import io
import json
import os
import tarfile
import tempfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from atoll.compose.debcache import DebCache
from atoll.core import canonjson, fsutil
from atoll.core.errors import InputError
from atoll.core.run import require_tool, run

__all__ = [
    "BUNDLE_DIR",
    "IMAGES",
    "ImageRecipe",
    "build_image",
    "bundled_archive",
    "default_tag",
    "image_config",
    "image_inputs",
    "recipe",
    "write_bundle_index",
    "write_docker_archive",
]

DEFAULT_MIRROR = "http://deb.debian.org/debian"
DEFAULT_SECURITY = "http://deb.debian.org/debian-security"
DEFAULT_EPOCH = 1700000000


@dataclass(frozen=True)
class ImageRecipe:
    """How one image is built from Debian packages."""

    name: str
    packages: tuple[str, ...]
    user: str
    entrypoint: tuple[str, ...]
    cmd: tuple[str, ...]
    env: tuple[str, ...]
    uid: int
    volumes: tuple[str, ...]
    exposed: tuple[str, ...]


IMAGES: dict[str, ImageRecipe] = {
    "mariadb": ImageRecipe(
        name="mariadb",
        packages=("mariadb-server", "mariadb-backup", "mariadb-client"),
        user="999:999",
        entrypoint=("/usr/local/sbin/atoll-entrypoint",),
        cmd=(),
        env=("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8"),
        uid=999,
        volumes=("/var/lib/mysql",),
        exposed=("3306/tcp",),
    ),
}


def recipe(name: str) -> ImageRecipe:
    """The recipe for ``name``.

    Raises:
        InputError: no such image.
    """
    try:
        return IMAGES[name]
    except KeyError:
        raise InputError(
            f"no image recipe named {name!r}",
            resolution=f"known images: {', '.join(sorted(IMAGES))}",
        ) from None


def _entrypoint_bytes(name: str) -> bytes:
    return (resources.files("atoll.apps") / "image_data" / "entrypoint.sh").read_bytes()


def image_inputs(
    name: str, suite: str, mirror: str = DEFAULT_MIRROR, epoch: int = DEFAULT_EPOCH
) -> dict[str, object]:
    """Everything the image depends on (its cache key is ``sha256_of`` of this)."""
    r = recipe(name)
    return {
        "name": name,
        "suite": suite,
        "mirror": mirror,
        "epoch": epoch,
        "packages": list(r.packages),
        "user": r.user,
        "entrypoint": list(r.entrypoint),
        "env": list(r.env),
        "entrypoint_sha256": hashlib.sha256(_entrypoint_bytes(name)).hexdigest(),
        "format": 2,  # 2: the build host's /etc/hostname and resolv.conf replaced
    }


def default_tag(name: str, suite: str) -> str:
    """The tag the image is loaded under: ``atoll/<name>:<suite>``."""
    return f"atoll/{name}:{suite}"


def _sources(suite: str, mirror: str) -> list[str]:
    out = [f"deb {mirror} {suite} main"]
    if suite in ("bookworm", "trixie", "bullseye"):
        out.append(f"deb {mirror} {suite}-updates main")
        sec = DEFAULT_SECURITY if mirror == DEFAULT_MIRROR else mirror.rstrip("/") + "-security"
        out.append(f"deb {sec} {suite}-security main")
    return out


def _rootfs(r: ImageRecipe, suite: str, mirror: str, epoch: int, out: Path, work: Path,
            deb_cache: DebCache | None = None) -> None:
    require_tool("mmdebstrap")
    entry = work / "atoll-entrypoint"
    entry.write_bytes(_entrypoint_bytes(r.name))
    entry.chmod(0o755)
    uid = r.uid
    user_hook = (
        f'echo "mysql:x:{uid}:" >> "$1/etc/group"; '
        f'echo "mysql:x:{uid}:{uid}:MariaDB Server:/nonexistent:/usr/sbin/nologin" '
        '>> "$1/etc/passwd"; '
        'echo "mysql:*:19000:0:99999:7:::" >> "$1/etc/shadow"'
    )
    argv: list[str | os.PathLike[str]] = [
        "mmdebstrap",
        "--variant=minbase",
        "--format=tar",
        "--quiet",
        "--include=" + ",".join(r.packages),
        "--dpkgopt=path-exclude=/usr/share/doc/*",
        "--dpkgopt=path-exclude=/usr/share/man/*",
        "--dpkgopt=path-exclude=/usr/share/info/*",
        "--dpkgopt=path-exclude=/usr/share/locale/*",
        "--dpkgopt=path-include=/usr/share/locale/locale.alias",
        f"--essential-hook={user_hook}",
        *(deb_cache.mmdebstrap_args() if deb_cache is not None else []),
        f"--customize-hook=copy-in {entry} /usr/local/sbin",
        # mmdebstrap copies these from the build machine; Docker mounts its own at run time
        '--customize-hook=echo localhost > "$1/etc/hostname"; : > "$1/etc/resolv.conf"',
        '--customize-hook=rm -rf "$1"/var/lib/mysql/* "$1"/var/lib/apt/lists/* '
        '"$1"/var/cache/apt/* "$1"/var/cache/ldconfig/aux-cache "$1"/var/log/*.log',
        suite,
        out,
        *_sources(suite, mirror),
    ]
    run(
        argv,
        env={"SOURCE_DATE_EPOCH": str(epoch)},
        what=f"build the {r.name} rootfs",
        resolution="check that the Debian mirror is reachable and the suite exists",
    )


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes, mtime: int) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = mtime
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))



def image_config(
    r: ImageRecipe, suite: str, inputs: dict[str, object], diff_id: str, epoch: int
) -> dict[str, Any]:
    """The image's config JSON (OCI/Docker image config), fixed by its inputs."""
    created = datetime.datetime.fromtimestamp(epoch, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "architecture": "amd64",
        "os": "linux",
        "created": created,
        "config": {
            "User": r.user,
            "Entrypoint": list(r.entrypoint),
            "Cmd": list(r.cmd) or None,
            "Env": list(r.env),
            "WorkingDir": "/",
            "Volumes": {v: {} for v in r.volumes},
            "ExposedPorts": {p: {} for p in r.exposed},
            "StopSignal": "SIGTERM",
            "Labels": {
                "io.atoll.image": r.name,
                "io.atoll.suite": suite,
                "io.atoll.inputs-sha256": canonjson.sha256_of(inputs),
            },
        },
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{diff_id}"]},
        "history": [{"created": created, "created_by": f"atoll app image build {r.name}"}],
    }


def write_docker_archive(
    layer: Path, diff_id: str, config: dict[str, Any], tag: str, out: Path, epoch: int
) -> str:
    """Write a ``docker load`` archive with one layer; return the image id (hex).

    The id is the sha256 of the canonical config, and every tar header is fixed
    (mtime ``epoch``, uid/gid 0), so equal inputs give equal bytes.
    """
    config_bytes = canonjson.dumps(config)
    image_id = hashlib.sha256(config_bytes).hexdigest()
    repo, _, version = tag.rpartition(":")
    manifest = [
        {"Config": f"{image_id}.json", "RepoTags": [tag], "Layers": [f"{diff_id}/layer.tar"]}
    ]
    with (
        fsutil.open_atomic(out, 0o644) as fh,
        tarfile.open(fileobj=fh, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        _add_bytes(tar, f"{image_id}.json", config_bytes, epoch)
        info = tar.gettarinfo(str(layer), arcname=f"{diff_id}/layer.tar")
        info.mtime, info.uid, info.gid, info.uname, info.gname = epoch, 0, 0, "", ""
        info.mode = 0o644
        with open(layer, "rb") as lf:
            tar.addfile(info, lf)
        _add_bytes(tar, "manifest.json", json.dumps(manifest).encode(), epoch)
        _add_bytes(tar, "repositories", json.dumps({repo: {version: image_id}}).encode(), epoch)
    return image_id


BUNDLE_DIR = Path("/usr/share/atoll/app-images")


def write_bundle_index(directory: Path) -> dict[str, str]:
    """Write ``index.json`` ({tag: archive file name}) for the archives in ``directory``."""
    index: dict[str, str] = {}
    for archive in sorted(Path(directory).glob("*.tar")):
        with tarfile.open(archive) as tar:
            member = tar.extractfile("manifest.json")
            assert member is not None
            for entry in json.load(member):
                for tag in entry.get("RepoTags") or []:
                    index[tag] = archive.name
    fsutil.atomic_write_json(Path(directory) / "index.json", index, 0o644)
    return index


def bundled_archive(tag: str, directory: Path = BUNDLE_DIR) -> Path | None:
    """The archive shipped in the OS image that holds ``tag``, if any."""
    try:
        index = json.loads((Path(directory) / "index.json").read_text())
    except (FileNotFoundError, ValueError):
        return None
    name = index.get(tag)
    return Path(directory) / name if isinstance(name, str) else None


def build_image(
    name: str,
    *,
    suite: str,
    out: Path,
    tag: str | None = None,
    mirror: str = DEFAULT_MIRROR,
    epoch: int | None = None,
    deb_cache: DebCache | None = None,
) -> dict[str, object]:
    """Build image ``name`` from ``suite`` packages into a ``docker load`` tar at ``out``.

    ``deb_cache``: reuse and keep the downloaded packages there (see
    ``atoll.compose.debcache``; the same bytes come out either way).

    Returns:
        ``{"tag", "image_id", "layer_sha256", "inputs", "out"}``.

    Raises:
        InputError: an unknown image, or no mmdebstrap.
        ToolError: mmdebstrap failed (e.g. the mirror is unreachable).
    """
    r = recipe(name)
    epoch = int(os.environ.get("SOURCE_DATE_EPOCH", DEFAULT_EPOCH)) if epoch is None else epoch
    tag = tag or default_tag(name, suite)
    out = Path(out).resolve()
    inputs = image_inputs(name, suite, mirror, epoch)
    with tempfile.TemporaryDirectory(prefix="atoll-image-", dir=out.parent) as tmp:
        work = Path(tmp)
        layer = work / "layer.tar"
        _rootfs(r, suite, mirror, epoch, layer, work, deb_cache)
        diff_id = fsutil.sha256_file(layer)
        config = image_config(r, suite, inputs, diff_id, epoch)
        image_id = write_docker_archive(layer, diff_id, config, tag, out, epoch)
    return {
        "tag": tag,
        "image_id": f"sha256:{image_id}",
        "layer_sha256": diff_id,
        "inputs": inputs,
        "out": str(out),
    }

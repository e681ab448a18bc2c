"""Remotes: the update servers a host trusts, each with its own TUF trust root.

Host layout::

    <sysroot>/atoll/state/remotes/<name>/
    ├── remote.json                  {"name", "url", "channel", "metadata_url", "targets_url"}
    ├── metadata -> metadata.N       trusted TUF metadata (swapped atomically, see client)
    └── metadata.N/                  root.json (the start of the chain of trust), timestamp,
                                     snapshot, targets; root_history/ (python-tuf's layout)

``url`` is the repository's base: metadata under ``url/metadata/`` and targets
under ``url/targets/`` unless ``metadata_url`` / ``targets_url`` say otherwise
(a CDN for targets, the metadata on a host of its own).
"""

from __future__ import annotations

import dataclasses
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuf.api import exceptions as tuf_exc
from tuf.api.metadata import Metadata

from atoll.core.errors import InputError
from atoll.core.fsutil import atomic_symlink, atomic_write, atomic_write_json, read_json
from atoll.store.repo import Repo

__all__ = ["Remote", "add_remote", "list_remotes", "load_remote", "remove_remote", "set_channel",
           "state_dir"]


def state_dir(sysroot: Path) -> Path:
    return Path(sysroot) / "atoll" / "state"


def _http_url(url: str, what: str) -> str:
    if not url.startswith(("http://", "https://")) or len(url) < 10 or any(
            c.isspace() for c in url):
        raise InputError(f"{what} {url!r} is not an http(s) URL",
                         resolution="e.g. https://updates.example.com/site/")
    return url.rstrip("/") + "/"


@dataclass(frozen=True)
class Remote:
    """A configured update server."""

    name: str
    url: str
    channel: str | None
    dir: Path
    metadata_url: str | None = None  # default: url + "metadata/"
    targets_url: str | None = None  # default: url + "targets/"

    @property
    def metadata(self) -> Path:
        return self.dir / "metadata"

    @property
    def metadata_base(self) -> str:
        return self.metadata_url or self.url + "metadata/"

    @property
    def targets_base(self) -> str:
        return self.targets_url or self.url + "targets/"

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "url": self.url, "channel": self.channel,
                "metadata_url": self.metadata_url, "targets_url": self.targets_url}


def add_remote(sysroot: Path, name: str, url: str, root_json: Path,
               channel: str | None = None, *, metadata_url: str | None = None,
               targets_url: str | None = None) -> Remote:
    """Store a remote and its trusted root (the start of the host's chain of trust).

    Raises:
        InputError: bad name or URL, unreadable or invalid root.json, or the remote exists.
    """
    Repo.check_ref(name)
    if "/" in name:
        raise InputError(f"remote name {name!r} must not contain '/'")
    url = _http_url(url, "URL")
    metadata_url = _http_url(metadata_url, "--metadata-url") if metadata_url else None
    targets_url = _http_url(targets_url, "--targets-url") if targets_url else None
    if channel is not None:
        Repo.check_ref(channel)
    try:
        data = Path(root_json).read_bytes()
        md = Metadata.from_bytes(data)
    except (OSError, ValueError, tuf_exc.RepositoryError) as exc:
        raise InputError(f"{root_json}: not a TUF root metadata file", details=str(exc)) from exc
    if md.signed.type != "root":
        raise InputError(f"{root_json}: is {md.signed.type} metadata, not root")
    try:
        md.verify_delegate("root", md)
    except tuf_exc.UnsignedMetadataError as exc:
        raise InputError(f"{root_json}: root is not signed by its own keys") from exc
    d = state_dir(sysroot) / "remotes" / name
    if (d / "remote.json").exists():
        raise InputError(f"remote {name} exists",
                         resolution=f"remove it first: atoll remote remove {name}")
    mdir = d / "metadata.0"
    mdir.mkdir(parents=True, exist_ok=True)
    atomic_write(mdir / "root.json", data)
    atomic_symlink("metadata.0", d / "metadata")
    remote = Remote(name, url, channel, d, metadata_url, targets_url)
    atomic_write_json(d / "remote.json", remote.to_json())
    return remote


def load_remote(sysroot: Path, name: str) -> Remote:
    """Raises: InputError: no such remote. HostStateError: not an atoll host."""
    if not (Path(sysroot) / "atoll").is_dir():
        from atoll.core.errors import HostStateError

        raise HostStateError(f"{sysroot}: not an atoll host (no {Path(sysroot) / 'atoll'})",
                             resolution="check --sysroot; create one with "
                             f"`atoll --sysroot {sysroot} init`")
    d = state_dir(sysroot) / "remotes" / name
    raw = read_json(d / "remote.json") if "/" not in name and name not in (".", "..") else None
    if raw is None:
        raise InputError(f"no remote {name!r} on {sysroot}",
                         resolution="list them with `atoll remote list`; add one with "
                         "`atoll remote add NAME URL --root root.json`")
    return Remote(str(raw["name"]), str(raw["url"]), raw.get("channel"), d,
                  raw.get("metadata_url"), raw.get("targets_url"))


def list_remotes(sysroot: Path) -> list[Remote]:
    """Every remote configured on the host, by name."""
    base = state_dir(sysroot) / "remotes"
    out = []
    for d in sorted(base.iterdir()) if base.is_dir() else []:
        if (d / "remote.json").is_file():
            out.append(load_remote(sysroot, d.name))
    return out


def set_channel(sysroot: Path, name: str, channel: str) -> Remote:
    """Make remote ``name`` follow ``channel`` (``atoll rebase``); the trust stays.

    Raises:
        InputError: no such remote, or a bad channel name.
    """
    Repo.check_ref(channel)
    remote = dataclasses.replace(load_remote(sysroot, name), channel=channel)
    atomic_write_json(remote.dir / "remote.json", remote.to_json())
    return remote


def remove_remote(sysroot: Path, name: str) -> Remote:
    """Forget a remote and its trusted metadata (the store keeps what was downloaded;
    ``store refs --delete remotes/NAME/...`` and ``store gc`` free it).

    Raises:
        InputError: no such remote.
    """
    remote = load_remote(sysroot, name)
    (remote.dir / "remote.json").unlink()  # first: a half-removed remote is no remote
    shutil.rmtree(remote.dir, ignore_errors=True)
    return remote

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
import logging
import re
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tuf.api import exceptions as tuf_exc
from tuf.api.metadata import Metadata
from tuf.ngclient import UpdaterConfig  # type: ignore[attr-defined]

from atoll.core.errors import DamagedStateError, InputError
from atoll.core.fsutil import (
    atomic_symlink,
    atomic_write,
    atomic_write_json,
    damaged,
    read_state_json,
)
from atoll.core.text import printable
from atoll.core.urls import check_http_url
from atoll.core.userfile import read_user_file
from atoll.store.repo import Repo

__all__ = ["ROOT_MAX_LENGTH", "Remote", "add_remote", "check_remote_name", "list_remotes",
           "load_remote",
           "remove_remote", "set_channel", "state_dir"]

log = logging.getLogger("atoll.update")
# The largest root.json a host accepts: python-tuf's own bound for root metadata.
ROOT_MAX_LENGTH = UpdaterConfig().root_max_length


def state_dir(sysroot: Path) -> Path:
    return Path(sysroot) / "atoll" / "state"


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


_REMOTE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


def check_remote_name(name: str) -> str:
    """Raises: InputError: not a remote's name (one word: it is a directory, the first
    part of its refs, and what comes before ':' in REMOTE:CHANNEL)."""
    if not _REMOTE_NAME.fullmatch(name) or name in ("heads", "remotes", "deploy"):
        raise InputError(f"invalid remote name '{printable(name[:80])}'"
                         + ("..." if len(name) > 80 else ""),
                         resolution="1 to 63 letters, digits, '.', '_' or '-', starting with a "
                         "letter or digit (no '/' or ':'), and not heads, remotes or deploy")
    return name


def add_remote(sysroot: Path, name: str, url: str, root_json: Path,
               channel: str | None = None, *, metadata_url: str | None = None,
               targets_url: str | None = None) -> Remote:
    """Store a remote and its trusted root (the start of the host's chain of trust).

    An expired root is accepted with a warning: the host walks from it to the newest
    root (TUF's client workflow), and only the final root must be unexpired.

    Raises:
        InputError: bad name or URL (see :func:`atoll.core.urls.check_http_url`),
            root.json unreadable, not a regular file, over ``ROOT_MAX_LENGTH`` bytes or
            not root metadata signed by its own keys, or the remote exists.
    """
    check_remote_name(name)
    url = check_http_url(url, "URL")
    metadata_url = check_http_url(metadata_url, "--metadata-url") if metadata_url else None
    targets_url = check_http_url(targets_url, "--targets-url") if targets_url else None
    if channel is not None:
        Repo.check_ref(channel)
    data = read_user_file(root_json, ROOT_MAX_LENGTH, "--root")
    try:
        md = Metadata.from_bytes(data)
    except (ValueError, tuf_exc.RepositoryError) as exc:
        raise InputError(f"{root_json}: not a TUF root metadata file", details=str(exc)) from exc
    if md.signed.type != "root":
        raise InputError(f"{root_json}: is {md.signed.type} metadata, not root")
    try:
        md.verify_delegate("root", md)
    except tuf_exc.UnsignedMetadataError as exc:
        raise InputError(f"{root_json}: root is not signed by its own keys") from exc
    if md.signed.is_expired(datetime.now(UTC)):
        log.warning("%s: this root (version %d) expired on %s; the host trusts it only as "
                    "the start of the chain: `update check` needs a newer, unexpired root on "
                    "the server (the publisher signs one with `atoll keys rotate root`)",
                    root_json, md.signed.version, md.signed.expires.strftime("%Y-%m-%d %H:%M"))
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
    fix = (f"add it again: `atoll remote remove --force {printable(name)}`, then `atoll remote "
           f"add {printable(name)} URL --root root.json`")
    raw = read_state_json(d / "remote.json", dict, resolution=fix) \
        if "/" not in name and name not in (".", "..") else None
    if raw is None:
        raise InputError(f"no remote '{printable(name)}' on {printable(str(sysroot))}",
                         resolution="list them with `atoll remote list`; add one with "
                         "`atoll remote add NAME URL --root root.json`")
    fields = ("name", "url", "channel", "metadata_url", "targets_url")
    if not isinstance(raw.get("url"), str) or any(
            raw.get(k) is not None and not isinstance(raw[k], str) for k in fields):
        raise damaged(d / "remote.json", "a field is missing or not a string", fix)
    return Remote(name, str(raw["url"]), raw.get("channel"), d,
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
    ``store refs --delete REMOTE:CHANNEL`` and ``store gc`` free it). A remote whose
    remote.json is damaged is removed too (that is the way to replace it).

    Raises:
        InputError: no such remote.
    """
    try:
        remote = load_remote(sysroot, name)
    except DamagedStateError:
        remote = Remote(name, "", None, state_dir(sysroot) / "remotes" / name)
    (remote.dir / "remote.json").unlink()  # first: a half-removed remote is no remote
    shutil.rmtree(remote.dir, ignore_errors=True)
    return remote

"""The publishing side of TUF: root, targets, snapshot and timestamp metadata.

Built on python-tuf's Metadata API; every signature comes from a
securesystemslib signer. Consistent snapshots are on, so every file but
``timestamp.json`` has a content- or version-specific name and a CDN may cache
it forever::

    www/
    ├── metadata/
    │   ├── 1.root.json, 2.root.json ...   every root version (clients walk them)
    │   ├── root.json                      the newest root (to bootstrap a host)
    │   ├── <N>.targets.json, <N>.snapshot.json
    │   └── timestamp.json                 the only mutable file: re-signed by cron
    └── targets/<dir>/<sha256>.<name>      every target, prefixed with its hash
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from securesystemslib.signer import Signer  # type: ignore[attr-defined]
from tuf.api.metadata import (  # type: ignore[attr-defined]
    Metadata,
    MetaFile,
    Role,
    Root,
    Snapshot,
    TargetFile,
    Targets,
    Timestamp,
)
from tuf.api.serialization.json import JSONSerializer

from atoll.core.errors import InputError, RepositoryError
from atoll.repo.keys import ONLINE_ROLES, Policy
from atoll.repo.storage import Storage

__all__ = ["TufRepository", "target_url_path"]

_SER = JSONSerializer(compact=False)


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def target_url_path(path: str, sha256: str) -> str:
    """Where a target is stored with consistent snapshots: ``dir/<sha256>.<name>``."""
    d, _, name = path.rpartition("/")
    return f"{d}/{sha256}.{name}" if d else f"{sha256}.{name}"


class TufRepository:
    """Read and write the TUF metadata of a repository held in ``storage``."""

    def __init__(self, storage: Storage, policy: Policy | None = None):
        self.storage = storage
        self.policy = policy or Policy()

    # -- reading -------------------------------------------------------

    def _load(self, rel: str) -> Metadata[Any]:
        data = self.storage.get(rel)
        if data is None:
            raise RepositoryError(f"{rel} is missing from the repository",
                                  resolution="run `atoll publish` once after `atoll keys init`")
        return Metadata.from_bytes(data)

    def exists(self) -> bool:
        return self.storage.exists("metadata/root.json")

    def root(self) -> Metadata[Root]:
        return self._load("metadata/root.json")

    def timestamp(self) -> Metadata[Timestamp]:
        return self._load("metadata/timestamp.json")

    def snapshot(self) -> Metadata[Snapshot]:
        ver = self.timestamp().signed.snapshot_meta.version
        return self._load(f"metadata/{ver}.snapshot.json")

    def targets(self) -> Metadata[Targets]:
        ver = self.snapshot().signed.meta["targets.json"].version
        return self._load(f"metadata/{ver}.targets.json")

    # -- writing -------------------------------------------------------

    def _sign(self, md: Metadata[Any], signers: Sequence[Signer]) -> None:
        md.signatures.clear()
        for s in signers:
            md.sign(s, append=True)

    def _write(self, md: Metadata[Any], name: str) -> bytes:
        data = md.to_bytes(_SER)
        self.storage.put(f"metadata/{name}", data)
        return data

    def _write_root(self, md: Metadata[Root]) -> None:
        data = self._write(md, f"{md.signed.version}.root.json")
        self.storage.put("metadata/root.json", data)

    def init(self, root_signers: Sequence[Signer], online: Mapping[str, Sequence[Signer]]) -> None:
        """Create version 1 of every role (an empty targets role).

        Raises:
            InputError: the repository already exists.
        """
        if self.exists():
            raise InputError("the repository already has metadata",
                             resolution="rotate keys with `atoll keys rotate` instead")
        root = Root(expires=_now() + self.policy.expiry("root"), consistent_snapshot=True)
        for s in root_signers:
            root.add_key(s.public_key, "root")
        for role in ONLINE_ROLES:
            for s in online[role]:
                root.add_key(s.public_key, role)
        for role in ("root", *ONLINE_ROLES):
            root.roles[role].threshold = self.policy.thresholds.get(role, 1)
        md_root = Metadata(root)
        self._sign(md_root, root_signers)
        self._write_root(md_root)
        self._publish_targets(Targets(version=1, expires=_now()), online, bump=False)

    def _publish_targets(self, targets: Targets, online: Mapping[str, Sequence[Signer]],
                         *, bump: bool = True) -> None:
        targets.version += 1 if bump else 0
        targets.expires = _now() + self.policy.expiry("targets")
        md_t = Metadata(targets)
        self._sign(md_t, online["targets"])
        data = self._write(md_t, f"{targets.version}.targets.json")
        self._publish_snapshot(MetaFile(targets.version, len(data),
                                        {"sha256": hashlib.sha256(data).hexdigest()}), online)

    def _publish_snapshot(self, targets_meta: MetaFile | None,
                          online: Mapping[str, Sequence[Signer]]) -> None:
        if self.storage.exists("metadata/timestamp.json"):
            snap = self.snapshot().signed
            snap.version += 1
        else:
            snap = Snapshot(version=1, expires=_now())
        if targets_meta is not None:
            snap.meta["targets.json"] = targets_meta
        snap.expires = _now() + self.policy.expiry("snapshot")
        md_s = Metadata(snap)
        self._sign(md_s, online["snapshot"])
        data = self._write(md_s, f"{snap.version}.snapshot.json")
        self.resign_timestamp(online["timestamp"], MetaFile(
            snap.version, len(data), {"sha256": hashlib.sha256(data).hexdigest()}))

    def resign_timestamp(self, signers: Sequence[Signer], snapshot_meta: MetaFile | None = None,
                         ) -> Timestamp:
        """A new timestamp version with fresh expiry (``atoll timestamp``)."""
        if self.storage.exists("metadata/timestamp.json"):
            ts = self.timestamp().signed
            ts.version += 1
        else:
            ts = Timestamp(version=1, expires=_now())
        if snapshot_meta is not None:
            ts.snapshot_meta = snapshot_meta
        ts.expires = _now() + self.policy.expiry("timestamp")
        md = Metadata(ts)
        self._sign(md, signers)
        self._write(md, "timestamp.json")
        return ts

    def update_targets(self, online: Mapping[str, Sequence[Signer]],
                       add: Iterable[tuple[str, Path, dict[str, Any]]] = (),
                       remove: Iterable[str] = ()) -> Targets:
        """Add files as targets (stored under their hash-prefixed names), drop others.

        Args:
            add: (target path, local file, custom) triples.
            remove: target paths to drop from the metadata (their files stay).
        """
        targets = self.targets().signed
        for path in remove:
            targets.targets.pop(path, None)
        for path, src, custom in add:
            tf = TargetFile.from_file(path, str(src), ["sha256"])
            if custom:
                tf.unrecognized_fields["custom"] = custom
            self.storage.put_file("targets/" + target_url_path(path, tf.hashes["sha256"]), src)
            targets.targets[path] = tf
        self._publish_targets(targets, online)
        return targets

    def refresh(self, online: Mapping[str, Sequence[Signer]], *, margin: float = 0.5,
                ) -> dict[str, int]:
        """Keep every online role fresh: re-sign targets and snapshot when less than
        ``margin`` of their lifetime is left (a new targets version re-signs the snapshot,
        a new snapshot the timestamp), and the timestamp always. Signed targets (images,
        CVE data) keep their content; their metadata gets new versions and expiries.

        Returns:
            {role: new version} for each role re-signed.

        Raises:
            RepositoryError: the directory holds no repository (nothing is written).
        """
        if not self.exists() or not self.storage.exists("metadata/timestamp.json"):
            raise RepositoryError("no TUF repository here (metadata/root.json and "
                                  "metadata/timestamp.json are missing)",
                                  resolution="give --to the directory `atoll keys init` and "
                                  "`atoll publish` wrote")
        now = _now()

        def stale(role: str, expires: datetime) -> bool:
            return expires - now < self.policy.expiry(role) * margin

        before = self.versions()
        targets = self.targets().signed
        if stale("targets", targets.expires):
            self._publish_targets(targets, online)  # re-signs snapshot and timestamp
        elif stale("snapshot", self.snapshot().signed.expires):
            self._publish_snapshot(None, online)  # re-signs the timestamp
        else:
            self.resign_timestamp(online["timestamp"])
        after = self.versions()
        return {role: v for role, v in after.items() if v != before.get(role)}

    @staticmethod
    def now() -> datetime:
        """The time metadata expiries are counted from (a seam for tests)."""
        return _now()

    def versions(self) -> dict[str, int]:
        """The current version of each online role."""
        ts = self.timestamp().signed
        snap = self.snapshot().signed
        return {"timestamp": ts.version, "snapshot": snap.version,
                "targets": snap.meta["targets.json"].version}

    def expiries(self) -> dict[str, datetime]:
        """When each role's current metadata expires."""
        return {"root": self.root().signed.expires, "targets": self.targets().signed.expires,
                "snapshot": self.snapshot().signed.expires,
                "timestamp": self.timestamp().signed.expires}

    def rotate(self, role: str, old_root: Sequence[Signer], new_keys: Sequence[Signer],
               online: Mapping[str, Sequence[Signer]], threshold: int | None = None) -> int:
        """Replace every key of ``role`` with ``new_keys`` in a new root version.

        The new root is signed by the old root keys and (for a root rotation)
        the new ones, so clients can walk from the old to the new. Online
        roles are then re-signed with their new keys.

        Returns:
            The new root version.
        """
        md_root = self.root()
        root = md_root.signed
        for keyid in list(root.roles[role].keyids):
            root.revoke_key(keyid, role)
        for s in new_keys:
            root.add_key(s.public_key, role)
        if threshold is not None:
            root.roles[role].threshold = threshold
        if root.roles[role].threshold > len(new_keys):
            raise InputError(f"{role}: threshold {root.roles[role].threshold} "
                             f"> {len(new_keys)} keys")
        root.version += 1
        root.expires = _now() + self.policy.expiry("root")
        md = Metadata(root)
        self._sign(md, [*old_root, *(new_keys if role == "root" else ())])
        self._write_root(md)
        if role == "targets":
            self._publish_targets(self.targets().signed, online)
        elif role == "snapshot":
            self._publish_snapshot(None, online)
        elif role == "timestamp":
            self.resign_timestamp(online["timestamp"])
        return root.version

    def role_keyids(self, role: str) -> list[str]:
        r: Role = self.root().signed.roles[role]
        return list(r.keyids)

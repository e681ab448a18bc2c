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

Every public method that signs is one transaction: the new files are kept in
memory (targets: their paths), the whole result is verified as a host would
verify it (:func:`atoll.repo._verify.verify_publication`, against the root hosts
trust now), and only then written: targets, new root versions, targets and
snapshot metadata, ``timestamp.json``, and ``root.json`` last. When the check
fails, nothing in ``www/`` changes.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from securesystemslib.signer import Signer  # type: ignore[attr-defined]
from tuf.api import exceptions as tuf_exc
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
from atoll.repo._verify import verify_publication
from atoll.repo.keys import MIN_ROOT_EXPIRES, ONLINE_ROLES, Policy
from atoll.repo.storage import Storage

__all__ = ["TufRepository", "target_url_path"]

_SER = JSONSerializer(compact=False)


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def target_url_path(path: str, sha256: str) -> str:
    """Where a target is stored with consistent snapshots: ``dir/<sha256>.<name>``."""
    d, _, name = path.rpartition("/")
    return f"{d}/{sha256}.{name}" if d else f"{sha256}.{name}"


def _write_order(rel: str) -> tuple[int, int]:
    """New roots first (hosts walk them before anything else), then what each parent
    lists before the parent: targets, snapshot, ``timestamp.json``; ``root.json`` (only
    read to bootstrap a host) last, so a repository being created exists only whole."""
    name = rel.rpartition("/")[2]
    head, _, kind = name.partition(".")
    version = int(head) if head.isdigit() else 0
    if not head.isdigit():
        kind = name
    rank = {"root.json": 0 if version else 4, "targets.json": 1, "snapshot.json": 2,
            "timestamp.json": 3}.get(kind, 1)
    return rank, version


class TufRepository:
    """Read and write the TUF metadata of a repository held in ``storage``."""

    def __init__(self, storage: Storage, policy: Policy | None = None):
        self.storage = storage
        self.policy = policy or Policy()
        self._pending: dict[str, bytes] | None = None  # inside a transaction
        self._pending_files: list[tuple[str, Path]] = []
        self._pending_deletes: list[str] = []

    # -- transactions --------------------------------------------------

    def _get(self, rel: str) -> bytes | None:
        """A file as the repository will be: pending writes over what is published."""
        if self._pending is not None and rel in self._pending:
            return self._pending[rel]
        return self.storage.get(rel)

    @contextlib.contextmanager
    def transaction(self, before_write: Callable[[], None] | None = None) -> Iterator[None]:
        """Collect every write of the block; at its end verify the result as a host
        would and write it, or write nothing (nested: the outer one decides).

        Args:
            before_write: called once the result verified, before the first write (to
                put new keys in place first: keys the published metadata trusts must
                never be lost to a failure half-way).

        Raises:
            RepositoryError: a host would refuse the result (nothing is written).
        """
        if self._pending is not None:
            yield
            return
        self._pending, self._pending_files, self._pending_deletes = {}, [], []
        try:
            started = _now()
            yield
            pending, files = self._pending, self._pending_files
            verify_publication(self.storage.get, self._get, started,
                               min_root_left=timedelta(seconds=MIN_ROOT_EXPIRES))
            if before_write is not None:
                before_write()
            for rel, src in files:
                self.storage.put_file(rel, src)

            for rel in sorted(pending, key=_write_order):
                self.storage.put(rel, pending[rel])
            for rel in self._pending_deletes:  # no longer signed: the new metadata is out
                self.storage.remove(rel)
        finally:
            self._pending, self._pending_files, self._pending_deletes = None, [], []

    # -- reading -------------------------------------------------------

    def _load(self, rel: str) -> Metadata[Any]:
        data = self._get(rel)
        if data is None:
            raise RepositoryError(f"{rel} is missing from the repository",
                                  resolution="run `atoll publish` once after `atoll keys init`")
        try:
            return Metadata.from_bytes(data)
        except (ValueError, tuf_exc.RepositoryError) as exc:
            raise RepositoryError(f"{rel} cannot be read: {exc}", details=type(exc).__name__,
                                  resolution="restore the repository directory from a backup"
                                  ) from None

    def exists(self) -> bool:
        return self._get("metadata/root.json") is not None

    def root(self) -> Metadata[Root]:
        return self._load("metadata/root.json")

    def timestamp(self) -> Metadata[Timestamp]:
        return self._load("metadata/timestamp.json")

    def _name(self, role: str, version: int) -> str:
        """A role's file name: ``N.role.json`` with consistent snapshots, else ``role.json``."""
        consistent = self.root().signed.consistent_snapshot
        return f"{version}.{role}.json" if consistent else f"{role}.json"

    def _load_role(self, role: str, version: int) -> Metadata[Any]:
        names = [f"metadata/{version}.{role}.json", f"metadata/{role}.json"]
        if not self.root().signed.consistent_snapshot:
            names.reverse()
        return self._load(next((n for n in names if self._get(n) is not None), names[0]))

    def snapshot(self) -> Metadata[Snapshot]:
        return self._load_role("snapshot", self.timestamp().signed.snapshot_meta.version)

    def targets(self) -> Metadata[Targets]:
        return self._load_role("targets", self.snapshot().signed.meta["targets.json"].version)

    # -- writing -------------------------------------------------------

    def _sign(self, md: Metadata[Any], signers: Sequence[Signer]) -> None:
        """Sign with ``signers``; for an online role only with those the repository's
        (new) root trusts for it, and at least its threshold of them."""
        role = md.signed.type
        if role != "root":
            signers = self.trusted_signers(role, signers)
        md.signatures.clear()
        for s in signers:
            md.sign(s, append=True)

    def trusted_signers(self, role: str, signers: Sequence[Signer]) -> list[Signer]:
        """The signers among ``signers`` that root gives ``role``.

        Raises:
            InputError: fewer than the role's threshold (keys of another repository, or
                replaced by a rotation).
        """
        r: Role = self.root().signed.roles[role]
        trusted = [s for s in signers if s.public_key.keyid in r.keyids]
        if len(trusted) < r.threshold:
            given = ", ".join(s.public_key.keyid[:12] for s in signers) or "none"
            raise InputError(
                f"the {role} keys given are not the ones root.json trusts for {role} "
                f"({len(trusted)} of the {r.threshold} needed)",
                details=f"given: {given}; root.json trusts: "
                + ", ".join(k[:12] for k in r.keyids),
                resolution="give --keys the key directory `atoll keys init` made for this "
                "repository (--to), or replace the role's keys with `atoll keys rotate "
                f"{role}` (needs the root keys)")
        return trusted

    def check_signers(self, online: Mapping[str, Sequence[Signer]]) -> None:
        """Fail early (before building anything) when the online keys cannot sign.

        Raises:
            InputError: see :meth:`trusted_signers`.
        """
        for role in ONLINE_ROLES:
            self.trusted_signers(role, online[role])

    def _write(self, md: Metadata[Any], name: str) -> bytes:
        data = md.to_bytes(_SER)
        rel = f"metadata/{name}"
        if self._pending is None:
            raise RuntimeError("metadata written outside a transaction")
        self._pending[rel] = data
        return data

    def _write_root(self, md: Metadata[Root]) -> None:
        data = self._write(md, f"{md.signed.version}.root.json")
        assert self._pending is not None
        self._pending["metadata/root.json"] = data

    def init(self, root_signers: Sequence[Signer], online: Mapping[str, Sequence[Signer]]) -> None:
        """Create version 1 of every role (an empty targets role).

        Raises:
            InputError: the repository already exists.
        """
        with self.transaction():
            self._init(root_signers, online)

    def _init(self, root_signers: Sequence[Signer], online: Mapping[str, Sequence[Signer]],
              ) -> None:
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
        data = self._write(md_t, self._name("targets", targets.version))
        self._publish_snapshot(MetaFile(targets.version, len(data),
                                        {"sha256": hashlib.sha256(data).hexdigest()}), online)

    def _publish_snapshot(self, targets_meta: MetaFile | None,
                          online: Mapping[str, Sequence[Signer]]) -> None:
        if self._get("metadata/timestamp.json") is not None:
            snap = self.snapshot().signed
            snap.version += 1
        else:
            snap = Snapshot(version=1, expires=_now())
        if targets_meta is not None:
            snap.meta["targets.json"] = targets_meta
        snap.expires = _now() + self.policy.expiry("snapshot")
        md_s = Metadata(snap)
        self._sign(md_s, online["snapshot"])
        data = self._write(md_s, self._name("snapshot", snap.version))
        self._resign_timestamp(online["timestamp"], MetaFile(
            snap.version, len(data), {"sha256": hashlib.sha256(data).hexdigest()}))

    def resign_timestamp(self, signers: Sequence[Signer]) -> Timestamp:
        """A new timestamp version with fresh expiry.

        Raises:
            RepositoryError: a host would refuse the result (nothing is written).
        """
        with self.transaction():
            return self._resign_timestamp(signers)

    def _resign_timestamp(self, signers: Sequence[Signer],
                          snapshot_meta: MetaFile | None = None) -> Timestamp:
        if self._get("metadata/timestamp.json") is not None:
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
                       remove: Iterable[str] = (), *, delete: bool = False) -> Targets:
        """Add files as targets (stored under their hash-prefixed names), drop others.

        Args:
            add: (target path, local file, custom) triples.
            remove: target paths to drop from the metadata.
            delete: also delete the files of the targets dropped (once the new metadata
                is written); else they stay.

        Raises:
            RepositoryError: a host would refuse the result (nothing is written).
        """
        with self.transaction():
            return self._update_targets(online, add, remove, delete)

    def _update_targets(self, online: Mapping[str, Sequence[Signer]],
                        add: Iterable[tuple[str, Path, dict[str, Any]]],
                        remove: Iterable[str], delete: bool = False) -> Targets:
        targets = self.targets().signed
        consistent = self.root().signed.consistent_snapshot
        for path in remove:
            gone = targets.targets.pop(path, None)
            if gone is not None and delete:
                self._pending_deletes.extend(
                    "targets/" + (target_url_path(path, h) if consistent else path)
                    for h in gone.hashes.values())
        for path, src, custom in add:
            tf = TargetFile.from_file(path, str(src), ["sha256"])
            if custom:
                tf.unrecognized_fields["custom"] = custom
            self._pending_files.append(
                ("targets/" + target_url_path(path, tf.hashes["sha256"]), Path(src)))
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
            RepositoryError: the directory holds no repository, or a host would refuse
                the result (nothing is written).
            MetadataExpiredError: root has expired (only the offline keys can fix it).
        """
        with self.transaction():
            return self._refresh(online, margin)

    def _refresh(self, online: Mapping[str, Sequence[Signer]], margin: float,
                 ) -> dict[str, int]:
        if not self.exists() or self._get("metadata/timestamp.json") is None:
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
            self._resign_timestamp(online["timestamp"])
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
               online: Mapping[str, Sequence[Signer]], threshold: int | None = None, *,
               before_write: Callable[[], None] | None = None) -> int:
        """Replace every key of ``role`` with ``new_keys`` in a new root version.

        The new root is signed by the old root keys and (for a root rotation)
        the new ones, so clients can walk from the old to the new. Online
        roles are then re-signed with their new keys.

        Args:
            before_write: see :meth:`transaction` (store the new keys).

        Returns:
            The new root version.

        Raises:
            InputError: ``threshold`` above the number of new keys.
            RepositoryError: a host would refuse the result (nothing is written).
        """
        with self.transaction(before_write):
            return self._rotate(role, old_root, new_keys, online, threshold)

    def _rotate(self, role: str, old_root: Sequence[Signer], new_keys: Sequence[Signer],
                online: Mapping[str, Sequence[Signer]], threshold: int | None) -> int:
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
            self._resign_timestamp(online["timestamp"])
        return root.version

    def role_keyids(self, role: str) -> list[str]:
        r: Role = self.root().signed.roles[role]
        return list(r.keyids)

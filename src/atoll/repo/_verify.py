"""The publisher's own check: would a host accept this repository? (pure)

Before a publishing command replaces anything in ``www/`` it runs
:func:`verify_publication` over the metadata it is about to write, with
python-tuf's Metadata API, the way a TUF client does (the specification's
client workflow, 5.3 to 5.6): starting from the root hosts trust now (the
published one), every new root version must be signed by a threshold of the
old root's keys and of its own, with a version one higher; the final root must
not be expired; timestamp, snapshot and targets must parse, be signed by a
threshold of the keys the final root gives their role, match the version,
length and hashes their parent lists, not roll back, and (when signed now) not
be expired. Each file must also fit the size a client accepts (``UpdaterConfig``).

The input is two views of the repository's files: ``old`` (what is published,
what hosts may have trusted) and ``new`` (the same with the pending writes). A
failure is a :class:`RepositoryError` that names the file and what a host would
say, and the caller then writes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from tuf.api import exceptions as tuf_exc
from tuf.api.metadata import Metadata, MetaFile, Root  # type: ignore[attr-defined]
from tuf.ngclient import UpdaterConfig  # type: ignore[attr-defined]

from atoll.core.errors import MetadataExpiredError, RepositoryError

__all__ = ["MAX_LENGTHS", "Reader", "verify_publication"]

Reader = Callable[[str], bytes | None]

_CFG = UpdaterConfig()
MAX_LENGTHS = {"root": _CFG.root_max_length, "timestamp": _CFG.timestamp_max_length,
               "snapshot": _CFG.snapshot_max_length, "targets": _CFG.targets_max_length}


def _refuse(rel: str, why: str, details: str | None = None) -> RepositoryError:
    return RepositoryError(
        f"refusing to publish metadata/{rel}: {why}", details=details,
        resolution="nothing in the repository directory was changed; fix the cause "
        "(the keys given, --threshold, --expires) and run the command again")


def _parse(rel: str, data: bytes | None, role: str) -> Metadata[Any]:
    if data is None:
        raise _refuse(rel, "the file is missing")
    if len(data) > MAX_LENGTHS[role]:
        raise _refuse(rel, f"{len(data)} bytes: hosts accept at most {MAX_LENGTHS[role]} "
                      f"for {role} metadata (fewer keys or targets)")
    try:
        md = Metadata.from_bytes(data)
    except (ValueError, tuf_exc.RepositoryError) as exc:
        raise _refuse(rel, "hosts could not read it (python-tuf refuses to parse it)",
                      f"{type(exc).__name__}: {exc}") from None
    if md.signed.type != role:
        raise _refuse(rel, f"is {md.signed.type} metadata, not {role}")
    return md


def _signed_by(root: Metadata[Root], role: str, md: Metadata[Any], rel: str,
               by: str = "") -> None:
    result = root.signed.get_verification_result(role, md.signed_bytes, md.signatures)
    if not result:
        raise _refuse(rel, f"signed by {len(result.signed)} of the {result.threshold} "
                      f"{role} keys {by or 'root.json'} trusts: hosts would refuse it",
                      "trusted keys: " + ", ".join(k[:12] for k in
                                                   root.signed.roles[role].keyids))


def _usable(root: Metadata[Root], rel: str) -> None:
    for name, role in root.signed.roles.items():
        if role.threshold > len(role.keyids):
            raise _refuse(rel, f"{name} needs {role.threshold} signatures but has only "
                          f"{len(role.keyids)} keys: nothing could ever be signed for it")


def _root_chain(old: Reader, new: Reader, now: datetime, min_root_left: timedelta,
                ) -> Metadata[Root]:
    """The final root, after walking every root version from the trusted one as a host
    does (5.3): each signed by a threshold of the previous root's keys and of its own."""
    old_data = old("metadata/root.json")
    if old_data is None:  # a new repository: 1.root.json signs itself
        trusted = _parse("1.root.json", new("metadata/1.root.json"), "root")
        if trusted.signed.version != 1:
            raise _refuse("1.root.json", f"has version {trusted.signed.version}, not 1")
        _signed_by(trusted, "root", trusted, "1.root.json", "itself")
        written = True
    else:
        trusted = _parse("root.json", old_data, "root")
        written = False
    for _ in range(_CFG.max_root_rotations):
        rel = f"{trusted.signed.version + 1}.root.json"
        data = new(f"metadata/{rel}")
        if data is None:
            break
        nxt = _parse(rel, data, "root")
        if nxt.signed.version != trusted.signed.version + 1:
            raise _refuse(rel, f"has version {nxt.signed.version}")
        _signed_by(trusted, "root", nxt, rel, f"version {trusted.signed.version} of root")
        _signed_by(nxt, "root", nxt, rel, "the new root itself")
        trusted, written = nxt, written or data != old(f"metadata/{rel}")
    rel = f"{trusted.signed.version}.root.json"
    new_data = new("metadata/root.json")
    if new_data != old_data and new_data != new(f"metadata/{rel}"):
        raise _refuse("root.json", f"is not the newest root ({rel})")
    _usable(trusted, rel)
    if trusted.signed.is_expired(now):
        raise MetadataExpiredError(
            f"root.json (version {trusted.signed.version}) expired on "
            f"{trusted.signed.expires:%Y-%m-%d %H:%M} UTC: hosts refuse everything signed "
            "under it", resolution="sign a new root with the offline root keys: "
            "`atoll keys rotate root --keys KEYS --to WWW --expires root=365d`")
    if written and trusted.signed.expires - now < min_root_left:
        when = trusted.signed.expires.strftime("%Y-%m-%d %H:%M:%S")
        raise _refuse(rel, f"the new root would expire on {when} UTC, in less than "
                      f"{min_root_left}: hosts would stop "
                      "updating before the next root is signed",
                      "give e.g. --expires root=365d")
    return trusted


def _old(data: bytes | None) -> Metadata[Any] | None:
    """Published metadata hosts may have trusted (None: absent or unreadable)."""
    if data is None:
        return None
    try:
        return Metadata.from_bytes(data)
    except (ValueError, tuf_exc.RepositoryError):
        return None


def _member(parent: MetaFile, rel: str, data: bytes | None) -> bytes:
    if data is None:
        raise _refuse(rel, "the file is missing")
    try:
        parent.verify_length_and_hashes(data)
    except tuf_exc.LengthOrHashMismatchError as exc:
        raise _refuse(rel, "does not match the length or hash its parent lists",
                      str(exc)) from None
    return data


def _fresh(md: Metadata[Any], rel: str, now: datetime, old: Reader, new: Reader) -> None:
    """Metadata signed now must not be expired (what was published before and is not
    rewritten may be: ``atoll timestamp`` renews it, ``keys rotate root`` need not)."""
    if new(f"metadata/{rel}") != old(f"metadata/{rel}") and md.signed.is_expired(now):
        raise _refuse(rel, f"expired on {md.signed.expires:%Y-%m-%d %H:%M:%S} UTC when signed")


def verify_publication(old: Reader, new: Reader, now: datetime, *,
                       min_root_left: timedelta = timedelta(days=1)) -> dict[str, int]:
    """Check the repository ``new`` as a host that trusts ``old`` would (module docstring).

    Args:
        old: bytes of a published file by path (``metadata/root.json``), None if absent.
        new: the same after the pending writes.
        now: the signing time (expiry is checked against it).
        min_root_left: a root written now must be valid at least this long.

    Returns:
        {role: version} of the new repository.

    Raises:
        RepositoryError: a host would refuse the new metadata (the message says why).
        MetadataExpiredError: the root hosts would end on is expired.
    """
    root = _root_chain(old, new, now, min_root_left)
    consistent = root.signed.consistent_snapshot

    ts = _parse("timestamp.json", new("metadata/timestamp.json"), "timestamp")
    _signed_by(root, "timestamp", ts, "timestamp.json")
    _fresh(ts, "timestamp.json", now, old, new)
    old_ts_data = old("metadata/timestamp.json")
    old_ts = _old(old_ts_data)
    if old_ts is not None and old_ts_data != new("metadata/timestamp.json") and \
            ts.signed.version <= old_ts.signed.version:
        raise _refuse("timestamp.json", f"version {ts.signed.version} does not follow the "
                      f"published version {old_ts.signed.version}: hosts would see a rollback")

    meta = ts.signed.snapshot_meta
    rel = f"{meta.version}.snapshot.json" if consistent else "snapshot.json"
    snap = _parse(rel, _member(meta, rel, new(f"metadata/{rel}")), "snapshot")
    _signed_by(root, "snapshot", snap, rel)
    if snap.signed.version != meta.version:
        raise _refuse(rel, f"has version {snap.signed.version}, timestamp lists {meta.version}")
    _fresh(snap, rel, now, old, new)
    if old_ts is not None:
        old_meta = old_ts.signed.snapshot_meta
        if meta.version < old_meta.version:
            raise _refuse(rel, f"version {meta.version} rolls back {old_meta.version}")
        old_rel = f"{old_meta.version}.snapshot.json" if consistent else "snapshot.json"
        old_snap = _old(old(f"metadata/{old_rel}"))
        for name, m in (old_snap.signed.meta.items() if old_snap is not None else ()):
            if name not in snap.signed.meta or snap.signed.meta[name].version < m.version:
                raise _refuse(rel, f"{name} rolls back from version {m.version}")

    tmeta = snap.signed.meta.get("targets.json")
    if tmeta is None:
        raise _refuse(rel, "lists no targets.json")
    trel = f"{tmeta.version}.targets.json" if consistent else "targets.json"
    targets = _parse(trel, _member(tmeta, trel, new(f"metadata/{trel}")), "targets")
    _signed_by(root, "targets", targets, trel)
    if targets.signed.version != tmeta.version:
        raise _refuse(trel, f"has version {targets.signed.version}, snapshot lists "
                      f"{tmeta.version}")
    _fresh(targets, trel, now, old, new)
    return {"root": root.signed.version, "timestamp": ts.signed.version,
            "snapshot": snap.signed.version, "targets": targets.signed.version}

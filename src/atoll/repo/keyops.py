"""The repository's key and metadata commands: ``keys init``, ``keys rotate``, ``timestamp``.

Each is all or nothing. Arguments are range-checked before anything is made
(thresholds from 1 to ``MAX_KEYS`` and never above the number of keys, expiries
from 1 s to ten years, a root valid at least a day, ``--expires`` only for roles
the command signs). New keys are made in memory; the metadata is signed and
verified as a host would verify it against the root hosts trust now
(:meth:`TufRepository.transaction`); only then are keys stored and metadata
written. ``keys init`` writes its key directory beside the target and renames
it into place; if the metadata then cannot be written, the keys go again.

``keys rotate`` stores the new keys before the new root is written (keys the
published root trusts are never lost), and retires the old ones after; signing
uses only the keys the root trusts for a role, so a rotation cut short leaves a
key directory that still signs.
"""

from __future__ import annotations

import logging
from typing import Any

from securesystemslib.signer import CryptoSigner  # type: ignore[attr-defined]

from atoll.core.errors import InputError
from atoll.repo.keys import (
    ONLINE_ROLES,
    ROLES,
    KeyDir,
    Policy,
    check_key_count,
    new_signers,
)
from atoll.repo.storage import Storage
from atoll.repo.tufrepo import TufRepository

__all__ = ["ROOT_WARN_DAYS", "init_repository", "online_signers", "refresh_repository",
           "rotate_keys"]

log = logging.getLogger("atoll.publish")
ROOT_WARN_DAYS = 30
# The roles each command signs (an --expires for any other would do nothing).
_ROTATE_SIGNS = {"root": ("root",), "timestamp": ("root", "timestamp"),
                 "snapshot": ("root", "snapshot", "timestamp"), "targets": ROLES}


def online_signers(keys: KeyDir) -> dict[str, list[Any]]:
    """The online keys of every online role.

    Raises:
        InputError: a role has none.
    """
    return {role: keys.signers(role) for role in ONLINE_ROLES}


def init_repository(storage: Storage, keys: KeyDir, *, threshold: int = 1,
                    online_threshold: int = 1, expires: list[str] | None = None) -> Policy:
    """Create keys (``threshold`` root keys, ``online_threshold`` per online role) and v1
    metadata, all or nothing (module docstring).

    Raises:
        InputError: a threshold out of range, a bad --expires, a key directory that is not
            empty, or metadata that exists already.
        RepositoryError: hosts would refuse the metadata (nothing is written).
    """
    check_key_count(threshold, "--threshold")
    check_key_count(online_threshold, "--online-threshold")
    policy = Policy({"root": threshold, **dict.fromkeys(ONLINE_ROLES, online_threshold)})
    policy = policy.override(expires or [], command="atoll keys init")
    if any(keys.role_dir("root").glob("*.pem")) if keys.role_dir("root").is_dir() else False:
        raise InputError(f"{keys.path} already holds root keys",
                         resolution="use `atoll keys rotate` to replace keys")
    tuf = TufRepository(storage, policy)
    if tuf.exists():
        raise InputError("the target directory already has TUF metadata",
                         resolution="give --to a new directory, or rotate keys with "
                         "`atoll keys rotate`")
    made: dict[str, list[CryptoSigner]] = {"root": new_signers(threshold)}
    made |= {role: new_signers(online_threshold) for role in ONLINE_ROLES}
    with keys.staged(made, policy) as install, tuf.transaction(before_write=install):
        tuf.init(made["root"], {role: made[role] for role in ONLINE_ROLES})
    return policy


def refresh_repository(storage: Storage, keys: KeyDir, *,
                       expires: list[str] | None = None) -> dict[str, Any]:
    """Keep the whole repository fresh (``atoll timestamp``, run from cron): re-sign the
    timestamp, and snapshot and targets when less than half their lifetime is left.

    Returns:
        {"resigned": {role: version}, "expires": {role: ISO time},
         "root_expires_in_days": N} (root is offline: it is never re-signed here).

    Raises:
        RepositoryError: no repository in ``storage``, or hosts would refuse the result.
        MetadataExpiredError: root has expired (``atoll keys rotate root`` fixes it).
        InputError: the online keys are missing or not the ones root trusts; a bad
            --expires (root is not signed here).
    """
    policy = keys.policy().override(expires or [], signs=ONLINE_ROLES,
                                    command="atoll timestamp")
    tuf = TufRepository(storage, policy)
    resigned = tuf.refresh(online_signers(keys))
    exp = tuf.expiries()
    days = (exp["root"] - tuf.now()).total_seconds() / 86400
    if days < ROOT_WARN_DAYS:
        log.warning("root.json expires in %s: sign a new root with the offline root keys "
                    "(atoll keys rotate root --keys KEYS --to WWW) before it does, or every "
                    "host stops updating", f"{days:.0f} days" if days >= 1 else
                    f"{days * 24:.0f} hours" if days * 24 >= 1 else "less than an hour")
    return {"resigned": resigned,
            "expires": {r: e.strftime("%Y-%m-%dT%H:%M:%SZ") for r, e in exp.items()},
            "root_expires_in_days": int(days)}


def rotate_keys(storage: Storage, keys: KeyDir, role: str, *, count: int | None = None,
                threshold: int | None = None, expires: list[str] | None = None,
                ) -> dict[str, Any]:
    """Replace every key of ``role``: a new root version signed by the old root keys
    (and, for root, the new ones); the replaced keys move to ``keys/retired/``.

    Args:
        count: how many new keys (default: the threshold).
        threshold: the role's new threshold (default: unchanged; stored in policy.json).
        expires: ``ROLE=DURATION`` for the roles this rotation signs (root, and the
            rotated online role with those it re-signs).

    Raises:
        InputError: unknown role, a count or threshold out of range (a threshold above
            the count), a bad --expires, or the (offline) root keys are not present.
        RepositoryError: hosts would refuse the result (nothing is written, no key moves).
    """
    if role not in ROLES:
        raise InputError(f"unknown role {role!r}", resolution=f"one of {', '.join(ROLES)}")
    if threshold is not None:
        check_key_count(threshold, "--threshold")
    if count is not None:
        check_key_count(count, "--count")
    stored = keys.policy()
    tuf = TufRepository(storage, stored)
    want = threshold if threshold is not None else tuf.root().signed.roles[role].threshold
    n = count if count is not None else want
    if want > n:
        raise InputError(f"--threshold {want} with {n} key(s): the {role} role would need more "
                         "signatures than it has keys", resolution=f"give --count {want} or more")
    policy = stored.override(expires or [], signs=_ROTATE_SIGNS[role],
                             command=f"atoll keys rotate {role}")
    tuf.policy = policy
    old_root = keys.signers("root")
    old_ids = tuf.role_keyids(role)
    old_files = {s.public_key.keyid for s in keys.signers(role, required=False)}
    new = new_signers(n)
    online = {r: (list(new) if r == role else keys.signers(r)) for r in ONLINE_ROLES}
    version = tuf.rotate(role, old_root, new, online, want,
                         before_write=lambda: keys.save(role, new))
    for keyid in old_files - {s.public_key.keyid for s in new}:
        keys.retire(role, keyid)
    if threshold is not None and stored.thresholds.get(role) != threshold:
        stored.thresholds[role] = threshold
        keys.save_policy(stored)
    return {"role": role, "root_version": version, "revoked": sorted(old_ids),
            "new": sorted(s.public_key.keyid for s in new)}

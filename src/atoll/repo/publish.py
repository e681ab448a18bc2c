"""Publish commits as TUF targets: pack, index, deltas, manifest, SBOM, channel pointer.

Targets of one published commit on channel ``<ref>``::

    refs/<ref>.json               the channel pointer; its signed ``custom`` (below)
                                  tells a client everything it needs to choose
    channels.json                 {"channels": {ref: commit}} for hosts without --channel
    packs/<commit>.pack           every object, in chunks (atoll.delta.pack)
    packs/<commit>.index          chunk offsets and sha256s, object -> chunk
    deltas/<from>-<commit>.delta  from each of the last N published commits
    manifests/<commit>.json       the package manifest (canonical JSON)
    sbom/<commit>.cdx.json        CycloneDX 1.5

``custom`` of ``refs/<ref>.json``::

    {"atoll": {"kind": "ref", "ref", "commit", "version", "timestamp",
               "history": [older commits, newest first],
               "deltas": {from: target path}, "pack", "index", "manifest", "sbom",
               "unpacked_size"}}

Targets of older commits leave the signed metadata when a newer commit is
published (their files stay in ``www/`` until removed by hand); deltas from
the last N commits of ``history`` stay.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from atoll.core import canonjson
from atoll.core.progress import progress
from atoll.delta.pack import write_pack
from atoll.delta.static import generate_delta
from atoll.repo.keys import ONLINE_ROLES, KeyDir, Policy
from atoll.repo.storage import Storage
from atoll.repo.tufrepo import TufRepository
from atoll.store.repo import Repo

__all__ = ["HISTORY", "PublishResult", "init_repository", "publish", "ref_target",
           "refresh_repository"]

log = logging.getLogger("atoll.publish")
HISTORY = 10
ROOT_WARN_DAYS = 30


def ref_target(ref: str) -> str:
    return f"refs/{ref}.json"


@dataclass
class PublishResult:
    ref: str
    commit: str
    changed: bool
    targets: dict[str, int] = field(default_factory=dict)
    deltas: dict[str, dict[str, int]] = field(default_factory=dict)
    targets_version: int = 0

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def online_signers(keys: KeyDir) -> dict[str, list[Any]]:
    return {role: keys.signers(role) for role in ONLINE_ROLES}


def init_repository(storage: Storage, keys: KeyDir, *, threshold: int = 1,
                    online_threshold: int = 1, expires: list[str] | None = None) -> Policy:
    """Create keys (``threshold`` root keys, ``online_threshold`` per online role) and v1 metadata.

    Raises:
        InputError: keys or metadata exist already, or a bad --expires.
    """
    from atoll.core.errors import InputError

    if keys.role_dir("root").exists() and any(keys.role_dir("root").glob("*.pem")):
        raise InputError(f"{keys.path} already holds root keys",
                         resolution="use `atoll keys rotate` to replace keys")
    policy = Policy().override(expires or [])
    policy.thresholds = {"root": threshold, **dict.fromkeys(ONLINE_ROLES, online_threshold)}
    tuf = TufRepository(storage, policy)
    if tuf.exists():
        raise InputError("the target directory already has TUF metadata")
    root = keys.generate("root", threshold)
    online = {role: keys.generate(role, online_threshold) for role in ONLINE_ROLES}
    keys.save_policy(policy)
    tuf.init(root, online)
    return policy


def _custom(tf: Any) -> dict[str, Any]:
    custom = tf.unrecognized_fields.get("custom") or {}
    return dict(custom.get("atoll", {}))


def publish(repo: Repo, ref: str, storage: Storage, keys: KeyDir, *, deltas: int = 3,
            expires: list[str] | None = None, level: int = 19,
            commit: str | None = None) -> PublishResult:
    """Publish the commit ``ref`` points at (see module docstring).

    Args:
        deltas: make static deltas from this many previously published commits.
        expires: ``ROLE=DURATION`` overrides of the key directory's policy.
        level: zstd level of packs and deltas (19: smallest; 3: fast, for tests).
        commit: publish this commit on channel ``ref`` instead of what ``ref`` points at.

    Raises:
        InputError: unknown ref, missing keys.
        RepositoryError: the target directory has no metadata (run `atoll keys init`).
    """
    repo.check_ref(ref)
    commit_id = repo.resolve(commit or ref)
    cobj = repo.read_commit(commit_id)
    tuf = TufRepository(storage, keys.policy().override(expires or []))
    online = online_signers(keys)
    targets = tuf.targets().signed
    prev_tf = targets.targets.get(ref_target(ref))
    prev = _custom(prev_tf) if prev_tf is not None else {}
    if prev.get("commit") == commit_id:
        return PublishResult(ref, commit_id, False, targets_version=targets.version)
    history = ([prev["commit"], *list(prev.get("history", []))]) if prev else []
    history = history[:HISTORY]
    with repo.lock.shared(), repo.staging_dir("publish-") as work, progress(f"publish {ref}"):
        add: list[tuple[str, Path, dict[str, Any]]] = []
        pack, index = f"packs/{commit_id}.pack", f"packs/{commit_id}.index"
        idx = write_pack(repo, commit_id, work / "pack", work / "index", level=level)
        add += [(pack, work / "pack", {}), (index, work / "index", {})]
        manifest = f"manifests/{commit_id}.json"
        (work / "manifest").write_bytes(canonjson.dumps(list(cobj.manifest)))
        sbom = f"sbom/{commit_id}.cdx.json"
        from atoll.repo.sbom import sbom_json  # publishing side only (cyclonedx)

        (work / "sbom").write_bytes(sbom_json(commit_id, cobj, name=ref))
        add += [(manifest, work / "manifest", {}), (sbom, work / "sbom", {})]
        result = PublishResult(ref, commit_id, True)
        delta_paths: dict[str, str] = {}
        for old in history[:deltas]:
            if not repo.has(old, "commit"):
                log.warning("publish: no delta from %s: not in %s", old[:12], repo.path)
                continue
            name = f"deltas/{old}-{commit_id}.delta"
            stats = generate_delta(repo, old, commit_id, work / f"{old}.delta", level=level)
            add.append((name, work / f"{old}.delta", {"atoll": {
                "kind": "delta", "from": old, "to": commit_id,
                "unpacked": stats.bytes_new + stats.meta_bytes}}))
            delta_paths[old] = name
            result.deltas[old] = stats.to_json()
        info = {
            "kind": "ref", "ref": ref, "commit": commit_id, "version": cobj.version,
            "timestamp": cobj.timestamp, "history": history, "deltas": delta_paths,
            "pack": pack, "index": index, "manifest": manifest, "sbom": sbom,
            "unpacked_size": sum(c.usize for c in idx.chunks),
        }
        (work / "ref").write_bytes(canonjson.dumps(info))
        add.append((ref_target(ref), work / "ref", {"atoll": info}))
        channels = {p[len("refs/"):-len(".json")]: _custom(t).get("commit")
                    for p, t in targets.targets.items() if p.startswith("refs/")}
        channels[ref] = commit_id
        (work / "channels").write_bytes(canonjson.dumps({"channels": channels}))
        add.append(("channels.json", work / "channels", {}))
        keep = {pack, index, manifest, sbom, *delta_paths.values()}
        for p, t in targets.targets.items():  # targets other channels still point at
            c = _custom(t)
            if c.get("kind") == "ref" and p != ref_target(ref):
                keep |= {c["pack"], c["index"], c["manifest"], c["sbom"], *c["deltas"].values()}
        old_paths = {prev.get(k) for k in ("pack", "index", "manifest", "sbom")} | set(
            prev.get("deltas", {}).values())
        remove = {p for p in old_paths if isinstance(p, str)} - keep
        new_targets = tuf.update_targets(online, add=add, remove=sorted(remove))
        result.targets = {p: new_targets.targets[p].length for p, _, _ in add}
        result.targets_version = new_targets.version
        return result


def refresh_repository(storage: Storage, keys: KeyDir, *,
                       expires: list[str] | None = None) -> dict[str, Any]:
    """Keep the whole repository fresh (``atoll timestamp``, run from cron): re-sign the
    timestamp, and snapshot and targets when less than half their lifetime is left.

    Returns:
        {"resigned": {role: version}, "expires": {role: ISO time},
         "root_expires_in_days": N} (root is offline: it is never re-signed here).

    Raises:
        RepositoryError: no repository in ``storage``.
        InputError: the online keys are missing.
    """
    tuf = TufRepository(storage, keys.policy().override(expires or []))
    resigned = tuf.refresh(online_signers(keys))
    exp = tuf.expiries()
    days = (exp["root"] - tuf.now()).total_seconds() / 86400
    if days < ROOT_WARN_DAYS:
        log.warning("root.json expires in %.0f days: sign a new root with the offline root "
                    "keys (atoll keys rotate root --keys KEYS --to WWW) before it does, or "
                    "every host stops updating", days)
    return {"resigned": resigned,
            "expires": {r: e.strftime("%Y-%m-%dT%H:%M:%SZ") for r, e in exp.items()},
            "root_expires_in_days": int(days)}


def rotate_keys(storage: Storage, keys: KeyDir, role: str, *, count: int | None = None,
                threshold: int | None = None) -> dict[str, Any]:
    """Replace every key of ``role``: a new root version signed by the old root keys
    (and, for root, the new ones); the replaced keys move to ``keys/retired/``.

    Raises:
        InputError: unknown role, or the (offline) root keys are not present.
    """
    from atoll.core.errors import InputError
    from atoll.repo.keys import ROLES

    if role not in ROLES:
        raise InputError(f"unknown role {role!r}", resolution=f"one of {', '.join(ROLES)}")
    policy = keys.policy()
    tuf = TufRepository(storage, policy)
    old_root = keys.signers("root")
    old_ids = tuf.role_keyids(role)
    n = count or threshold or policy.thresholds.get(role, 1)
    old_files = {s.public_key.keyid for s in keys.signers(role, required=False)}
    new = keys.generate(role, n)
    online = {r: ([*new] if r == role else keys.signers(r)) for r in ONLINE_ROLES}
    if role != "root":
        online[role] = new
    version = tuf.rotate(role, old_root if role != "root" else
                         [s for s in old_root if s.public_key.keyid in old_files],
                         new, online, threshold)
    for keyid in old_files:
        keys.retire(role, keyid)
    if threshold is not None:
        policy.thresholds[role] = threshold
        keys.save_policy(policy)
    return {"role": role, "root_version": version, "revoked": sorted(old_ids),
            "new": sorted(s.public_key.keyid for s in new)}

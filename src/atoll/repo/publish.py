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
from atoll.delta.cache import PublishCache
from atoll.delta.pack import write_pack
from atoll.delta.static import generate_delta
from atoll.repo.keyops import init_repository, online_signers, refresh_repository, rotate_keys
from atoll.repo.keys import ONLINE_ROLES, KeyDir
from atoll.repo.storage import Storage
from atoll.repo.tufrepo import TufRepository
from atoll.store.repo import Repo

# keys init, keys rotate and timestamp live in atoll.repo.keyops (re-exported here)
__all__ = ["HISTORY", "PublishResult", "init_repository", "publish", "ref_target",
           "refresh_repository", "rotate_keys"]

log = logging.getLogger("atoll.publish")
HISTORY = 10


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
    cache: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


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
        level: zstd level of packs and deltas (19: smallest; 3: fast, for tests); what
            is compressed already is stored at level 1 whatever this says, and what an
            earlier publish compressed is reused (``REPO/cache/publish``).
        commit: publish this commit on channel ``ref`` instead of what ``ref`` points at.

    Raises:
        InputError: unknown ref, missing keys.
        RepositoryError: the target directory has no metadata (run `atoll keys init`).
    """
    repo.check_ref(ref)
    commit_id = repo.resolve(commit or ref)
    cobj = repo.read_commit(commit_id)
    tuf = TufRepository(storage, keys.policy().override(expires or [], signs=ONLINE_ROLES,
                                                        command="atoll publish"))
    online = online_signers(keys)
    tuf.check_signers(online)  # before building anything: keys root.json does not trust
    targets = tuf.targets().signed
    prev_tf = targets.targets.get(ref_target(ref))
    prev = _custom(prev_tf) if prev_tf is not None else {}
    if prev.get("commit") == commit_id:
        return PublishResult(ref, commit_id, False, targets_version=targets.version)
    history = ([prev["commit"], *list(prev.get("history", []))]) if prev else []
    history = history[:HISTORY]
    cache = PublishCache(repo)
    with repo.lock.shared(), repo.staging_dir("publish-") as work, progress(f"publish {ref}"):
        add: list[tuple[str, Path, dict[str, Any]]] = []
        pack, index = f"packs/{commit_id}.pack", f"packs/{commit_id}.index"
        idx = write_pack(repo, commit_id, work / "pack", work / "index", level=level,
                         cache=cache)
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
            stats = generate_delta(repo, old, commit_id, work / f"{old}.delta", level=level,
                                   cache=cache)
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
        with progress(f"publish {ref}: sign and copy targets"):
            new_targets = tuf.update_targets(online, add=add, remove=sorted(remove))
        result.targets = {p: new_targets.targets[p].length for p, _, _ in add}
        result.targets_version = new_targets.version
        result.cache = {"hits": cache.hits, "misses": cache.misses, "pruned": cache.prune()}
        return result

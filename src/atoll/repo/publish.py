"""Publish commits as TUF targets: pack, index, deltas, manifest, SBOM, channel pointer.

Targets of one published commit on channel ``<ref>``::

    refs/<ref>.json               the channel pointer (the head); its signed ``custom``
                                  (below) tells a client everything it needs to choose
    releases/<ref>/<commit>.json  one signed version of the channel (the last N kept)
    channels.json                 {"channels": {ref: commit}} for hosts without --channel
    packs/<commit>.pack           every object, in chunks (atoll.delta.pack)
    packs/<commit>.index          chunk offsets and sha256s, object -> chunk
    deltas/<from>-<commit>.delta  from each of the last N published commits
    manifests/<commit>.json       the package manifest (canonical JSON)
    sbom/<commit>.cdx.json        CycloneDX 1.5
    cves/<commit>.json            the CVE report (atoll.security.report; docs/security.md)

``custom`` of ``refs/<ref>.json``::

    {"atoll": {"kind": "ref", "ref", "commit", "version", "timestamp", "sequence",
               "history": [older commits, newest first],
               "releases": [{"version", "commit", "sequence", "timestamp", "target"}],
               "deltas": {from: target path}, "pack", "index", "manifest", "sbom",
               "cves", "unpacked_size"}}

``custom`` of ``releases/<ref>/<commit>.json``: the same fields but ``history`` and
``releases``, with ``"kind": "release"``. ``sequence`` counts the channel's
publications (1, 2, ...): it is what "older" means to a host (a version string need
not sort). A channel keeps its last ``keep`` releases (the head is the newest);
an older release's targets (record, pack, index, manifest, SBOM, deltas to it)
leave the signed metadata and ``www/`` when a newer one is published, unless
another channel or kept release still lists them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from atoll.core import canonjson
from atoll.core.errors import InputError
from atoll.core.progress import progress
from atoll.delta.cache import PublishCache
from atoll.delta.pack import write_pack
from atoll.delta.static import SOLID_LEVEL, generate_delta, require_tools
from atoll.repo.keyops import init_repository, online_signers, refresh_repository, rotate_keys
from atoll.repo.keys import ONLINE_ROLES, KeyDir
from atoll.repo.storage import Storage
from atoll.repo.tufrepo import TufRepository
from atoll.store.repo import Repo

# keys init, keys rotate and timestamp live in atoll.repo.keyops (re-exported here)
__all__ = ["HISTORY", "KEEP", "MAX_KEEP", "PublishResult", "init_repository", "publish",
           "ref_target", "refresh_repository", "release_target", "rotate_keys"]

log = logging.getLogger("atoll.publish")
HISTORY = 10
KEEP = 5  # signed versions a channel keeps (atoll publish --keep)
MAX_KEEP = 100
_OWNED = ("packs/", "deltas/", "manifests/", "sbom/", "releases/", "cves/")  # what publish prunes


def ref_target(ref: str) -> str:
    return f"refs/{ref}.json"


def release_target(ref: str, commit: str) -> str:
    """The signed record of one version of channel ``ref``."""
    return f"releases/{ref}/{commit}.json"


@dataclass
class PublishResult:
    ref: str
    commit: str
    changed: bool
    targets: dict[str, int] = field(default_factory=dict)
    deltas: dict[str, dict[str, int]] = field(default_factory=dict)
    targets_version: int = 0
    cache: dict[str, int] = field(default_factory=dict)
    sequence: int = 0
    releases: list[dict[str, Any]] = field(default_factory=list)
    pruned: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _custom(tf: Any) -> dict[str, Any]:
    custom = tf.unrecognized_fields.get("custom") or {}
    return dict(custom.get("atoll", {}))


def publish(repo: Repo, ref: str, storage: Storage, keys: KeyDir, *, deltas: int = 3,
            expires: list[str] | None = None, level: int | None = None,
            commit: str | None = None, keep: int = KEEP,
            security_tracker: Path | None = None,
            advisory_lists: Sequence[Path] = ()) -> PublishResult:
    """Publish the commit ``ref`` points at (see module docstring).

    Args:
        deltas: make static deltas from this many previously published commits.
        expires: ``ROLE=DURATION`` overrides of the key directory's policy.
        level: zstd level of packs and deltas (19: smallest; 3: fast, for tests); None:
            by kind (packs: :func:`atoll.delta.pack.write_pack`'s levels; deltas:
            :data:`atoll.delta.static.SOLID_LEVEL`). What is compressed already is stored
            at level 1 whatever this says, and what an earlier publish compressed is
            reused (``REPO/cache/publish``).
        commit: publish this commit on channel ``ref`` instead of what ``ref`` points at.
        keep: signed versions the channel keeps (1 to :data:`MAX_KEEP`; the head is one);
            older ones are pruned from the metadata and from ``www/``.
        security_tracker: the Debian security tracker's JSON, for the open CVEs of the
            CVE report published beside the image (None: the changelogs' fixes only;
            docs/security.md).
        advisory_lists: the tracker's DSA/DLA lists (``data/DSA/list``...): each CVE of
            the report gets the advisories that fix it (needs ``security_tracker``).

    Raises:
        InputError: unknown ref, missing keys, ``keep`` out of range, a tracker file or
            advisory list that does not parse (nothing is published), advisory lists
            without a tracker file.
        RepositoryError: the target directory has no metadata (run `atoll keys init`).
    """
    repo.check_ref(ref)
    if advisory_lists and security_tracker is None:
        raise InputError("--dsa-list/--dla-list need --security-tracker",
                         resolution="give the tracker's JSON too: advisories are attached "
                         "to the CVEs it lists")
    if not 1 <= keep <= MAX_KEEP:
        raise InputError(f"--keep {keep}: give 1 to {MAX_KEEP} signed versions to keep")
    commit_id = repo.resolve(commit or ref)
    cobj = repo.read_commit(commit_id)
    tuf = TufRepository(storage, keys.policy().override(expires or [], signs=ONLINE_ROLES,
                                                        command="atoll publish"))
    online = online_signers(keys)
    tuf.check_signers(online)  # before building anything: keys root.json does not trust
    from atoll.security import build as cvebuild  # publishing side only (python-debian)
    from atoll.security.advisories import load_advisories
    from atoll.security.tracker import load_tracker

    tracker = load_tracker(security_tracker) if security_tracker is not None else None
    advisories = load_advisories(advisory_lists) if advisory_lists else None
    targets = tuf.targets().signed
    prev_tf = targets.targets.get(ref_target(ref))
    prev = _custom(prev_tf) if prev_tf is not None else {}
    if prev.get("commit") == commit_id:
        return PublishResult(ref, commit_id, False, targets_version=targets.version)
    history = ([prev["commit"], *list(prev.get("history", []))]) if prev else []
    history = history[:HISTORY]
    sequence = int(prev.get("sequence") or 0) + 1
    if history[:deltas]:
        require_tools()
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
        cves = cvebuild.cve_target(repo, commit_id, ref, since=prev.get("commit"),
                                   tracker=tracker, work=work, advisories=advisories)
        add.append(cves)
        result = PublishResult(ref, commit_id, True)
        delta_paths: dict[str, str] = {}
        for old in history[:deltas]:
            if not repo.has(old, "commit"):
                log.warning("publish: no delta from %s: not in %s", old[:12], repo.path)
                continue
            name = f"deltas/{old}-{commit_id}.delta"
            stats = generate_delta(repo, old, commit_id, work / f"{old}.delta",
                                   level=SOLID_LEVEL if level is None else level, cache=cache)
            add.append((name, work / f"{old}.delta", {"atoll": {
                "kind": "delta", "from": old, "to": commit_id,
                "unpacked": stats.bytes_new + stats.meta_bytes}}))
            delta_paths[old] = name
            result.deltas[old] = stats.to_json()
        base = {
            "ref": ref, "commit": commit_id, "version": cobj.version,
            "timestamp": cobj.timestamp, "sequence": sequence, "deltas": delta_paths,
            "pack": pack, "index": index, "manifest": manifest, "sbom": sbom,
            "cves": cves[0], "unpacked_size": sum(c.usize for c in idx.chunks),
        }
        release = {"kind": "release", **base}
        releases = kept_releases(targets.targets, ref, release, keep)
        listing: list[dict[str, Any]] = [
            {"version": r["version"], "commit": r["commit"], "sequence": r["sequence"],
             "timestamp": r["timestamp"], "target": release_target(ref, r["commit"])}
            for r in releases]
        info = {"kind": "ref", **base, "history": history, "releases": listing}
        (work / "release").write_bytes(canonjson.dumps(release))
        add.append((release_target(ref, commit_id), work / "release", {"atoll": release}))
        (work / "ref").write_bytes(canonjson.dumps(info))
        add.append((ref_target(ref), work / "ref", {"atoll": info}))
        channels = {p[len("refs/"):-len(".json")]: _custom(t).get("commit")
                    for p, t in targets.targets.items() if p.startswith("refs/")}
        channels[ref] = commit_id
        (work / "channels").write_bytes(canonjson.dumps({"channels": channels}))
        add.append(("channels.json", work / "channels", {}))
        keep_paths = {p for p, _, _ in add}
        for r in releases:
            keep_paths |= _files_of(r) | {release_target(ref, r["commit"])}
        for p, t in targets.targets.items():  # what other channels still list
            c = _custom(t)
            if c.get("kind") in ("ref", "release") and c.get("ref") != ref:
                keep_paths |= _files_of(c) | {p}
        remove = sorted(p for p in targets.targets
                        if p.startswith(_OWNED) and p not in keep_paths)
        result.sequence = sequence
        result.releases = listing
        result.pruned = remove
        with progress(f"publish {ref}: sign and copy targets"):
            new_targets = tuf.update_targets(online, add=add, remove=remove, delete=True)
        result.targets = {p: new_targets.targets[p].length for p, _, _ in add}
        result.targets_version = new_targets.version
        result.cache = {"hits": cache.hits, "misses": cache.misses, "pruned": cache.prune()}
        return result


def _files_of(c: dict[str, Any]) -> set[str]:
    """The targets a channel pointer or release record lists."""
    out = {c.get(k) for k in ("pack", "index", "manifest", "sbom", "cves")}
    out |= set((c.get("deltas") or {}).values())
    return {p for p in out if isinstance(p, str)}


def kept_releases(targets: dict[str, Any], ref: str, new: dict[str, Any],
                  keep: int) -> list[dict[str, Any]]:
    """The release records channel ``ref`` keeps once ``new`` is published: ``new`` and
    the newest ``keep - 1`` others by sequence (a commit published again replaces its
    older record), newest first. ``targets``: {path: TargetFile} as signed now."""
    others = [c for c in (_custom(t) for t in targets.values())
              if c.get("kind") == "release" and c.get("ref") == ref
              and c.get("commit") != new["commit"]]
    others.sort(key=lambda c: int(c.get("sequence") or 0), reverse=True)
    return [new, *others[:keep - 1]]

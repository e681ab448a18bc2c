"""The TUF client workflow, failure point by failure point: which roles and versions the
host trusts afterwards, and that its store, deployments and update.json are unchanged.

The specification (TUF 1.0, "Detailed client workflow") keeps each role as soon as it
verifies, root first, then timestamp, snapshot and targets: a rotated root (revoked
keys), a newer timestamp (freeze protection) and the version floors survive a later
failure, so that an attacker who later controls the network cannot withhold the new
root and make hosts trust the old keys again. Before each scenario the server has a
new root (the timestamp key rotated) and a new commit; the failure is injected at one
step. (A rolled-back timestamp is refused too: tests/unit/test_tuf_attacks.py; after a
timestamp key rotation the specification drops the old timestamp, 5.3.11.)
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from tuf.api.metadata import Metadata

from atoll.core.errors import AtollError, DownloadError, MetadataExpiredError, RepositoryError
from atoll.repo.publish import rotate_keys
from tests.integration.delivery_fixtures import snapshot_host, trusted_versions
from tests.unit.test_tuf_simulator import Sim


@pytest.fixture
def sim(tmp_path: Path) -> Sim:
    s = Sim(tmp_path)
    s.commit(1)
    s.publish()
    s.client().download()
    return s


def _versions(sim: Sim) -> dict[str, int]:
    """The newest version of each role the server now offers."""
    files = sim.storage.files
    ts = Metadata.from_bytes(files["metadata/timestamp.json"]).signed
    snap = Metadata.from_bytes(files[f"metadata/{ts.snapshot_meta.version}.snapshot.json"])
    return {"root": Metadata.from_bytes(files["metadata/root.json"]).signed.version,
            "timestamp": ts.version, "snapshot": ts.snapshot_meta.version,
            "targets": snap.signed.meta["targets.json"].version}


def _names(sim: Sim) -> dict[str, str]:
    v = _versions(sim)
    return {"timestamp": "metadata/timestamp.json",
            "snapshot": f"metadata/{v['snapshot']}.snapshot.json",
            "targets": f"metadata/{v['targets']}.targets.json"}


def _resign(sim: Sim, role: str, mutate: Callable[[Any], None] | None = None,
            signers: list[Any] | None = None) -> bytes:
    md = Metadata.from_bytes(sim.storage.files[_names(sim)[role]])
    if mutate:
        mutate(md.signed)
    md.signatures.clear()
    for s in signers if signers is not None else sim.keys.signers(role):
        md.sign(s, append=True)
    return bytes(md.to_bytes())


def _expire(signed: Any) -> None:
    signed.expires = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)


def _chain(sim: Sim, role: str, mutate: Callable[[Any], None]) -> dict[str, bytes]:
    """Re-sign ``role`` after ``mutate`` with its own keys, and every role above it so
    that they point at the new bytes: only ``role`` itself is then wrong."""
    import hashlib

    from tuf.api.metadata import MetaFile

    names = _names(sim)
    out = {names[role]: _resign(sim, role, mutate)}
    below, data = role, out[names[role]]
    for parent in ("snapshot", "timestamp")[("targets", "snapshot").index(role):]:
        meta = MetaFile(Metadata.from_bytes(data).signed.version, len(data),
                        {"sha256": hashlib.sha256(data).hexdigest()})

        def point(signed: Any, meta: MetaFile = meta, below: str = below) -> None:
            if signed.type == "timestamp":
                signed.snapshot_meta = meta
            else:
                signed.meta[f"{below}.json"] = meta

        md = Metadata.from_bytes(out.get(names[parent], sim.storage.files[names[parent]]))
        point(md.signed)
        md.signatures.clear()
        for s in sim.keys.signers(parent):
            md.sign(s, append=True)
        data = bytes(md.to_bytes())
        out[names[parent]] = data
        below = parent
    return out


def _stranger() -> list[Any]:
    from securesystemslib.signer import CryptoSigner

    return [CryptoSigner.generate_ed25519()]


# Each scenario: what to serve, the error, and which roles must be the *new* ones.
SCENARIOS: dict[str, tuple[Callable[[Sim], dict[str, bytes]], type[AtollError], set[str]]] = {
    "timestamp signed by a stranger": (
        lambda s: {_names(s)["timestamp"]: _resign(s, "timestamp", signers=_stranger())},
        RepositoryError, {"root"}),
    "timestamp signed by the revoked key": (
        lambda s: {_names(s)["timestamp"]: _resign(s, "timestamp", signers=s.old_ts_keys)},
        RepositoryError, {"root"}),
    "timestamp expired": (
        lambda s: {_names(s)["timestamp"]: _resign(s, "timestamp", _expire)},
        MetadataExpiredError, {"root"}),
    "snapshot signed by a stranger": (
        lambda s: {_names(s)["snapshot"]: _resign(s, "snapshot", signers=_stranger())},
        RepositoryError, {"root", "timestamp"}),
    "snapshot hash mismatch": (
        lambda s: {_names(s)["snapshot"]: _resign(
            s, "snapshot", lambda t: t.unrecognized_fields.update({"x": 1}))},
        RepositoryError, {"root", "timestamp"}),
    "snapshot version mismatch (mix and match)": (
        lambda s: {_names(s)["snapshot"]: s.old_files[s.old_names["snapshot"]]},
        RepositoryError, {"root", "timestamp"}),
    "snapshot expired": (
        lambda s: _chain(s, "snapshot", _expire),
        MetadataExpiredError, {"root", "timestamp"}),
    "snapshot 404": (
        lambda s: {_names(s)["snapshot"]: b"404"},
        DownloadError, {"root", "timestamp"}),
    "targets signed by a stranger": (
        lambda s: {_names(s)["targets"]: _resign(s, "targets", signers=_stranger())},
        RepositoryError, {"root", "timestamp", "snapshot"}),
    "targets expired": (
        lambda s: _chain(s, "targets", _expire),
        MetadataExpiredError, {"root", "timestamp", "snapshot"}),
    "targets 404": (
        lambda s: {_names(s)["targets"]: b"404"},
        DownloadError, {"root", "timestamp", "snapshot"}),
    "a target's bytes do not match its hash": (
        lambda s: {p: bytes([d[0] ^ 1]) + d[1:] for p, d in s.storage.files.items()
                   if p.startswith("targets/deltas/") and s.commits[1] in p},
        RepositoryError, {"root", "timestamp", "snapshot", "targets"}),
    "the channel's target is missing": (
        lambda s: {},  # the remote follows a channel the signed targets do not list
        RepositoryError, {"root", "timestamp", "snapshot", "targets"}),
}


@pytest.mark.parametrize("case", sorted(SCENARIOS))
def test_failure_point_keeps_what_verified(sim: Sim, case: str) -> None:
    serve, error, new_roles = SCENARIOS[case]
    before_versions = trusted_versions(sim.sysroot)
    sim.old_files = dict(sim.storage.files)  # type: ignore[attr-defined]
    sim.old_names = _names(sim)  # type: ignore[attr-defined]
    sim.old_ts_keys = sim.keys.signers("timestamp")  # type: ignore[attr-defined]
    rotate_keys(sim.storage, sim.keys, "timestamp")  # root v2 revokes the timestamp key
    sim.commit(2)
    sim.publish()
    offered = _versions(sim)
    new_names = _names(sim)
    overrides = serve(sim)
    for path, data in overrides.items():
        if data == b"404":
            sim.storage.files.pop(path)
        else:
            sim.fetcher.overrides[path] = data
    if case == "the channel's target is missing":
        from atoll.core.fsutil import atomic_write_json

        remote = sim.sysroot / "atoll/state/remotes/origin/remote.json"
        atomic_write_json(remote, {"name": "origin", "url": "http://sim.invalid/",
                                   "channel": "site/gone"})
    host_before = snapshot_host(sim.sysroot)
    with pytest.raises(error):
        sim.client().download()
    assert snapshot_host(sim.sysroot) == host_before  # store, update.json, deployments
    after = trusted_versions(sim.sysroot)
    for role in ("root", "timestamp", "snapshot", "targets"):
        want = offered[role] if role in new_roles else before_versions[role]
        assert after[role] == want, (role, after, offered, before_versions)
    # the new root is kept: the revoked timestamp key is refused from now on, even
    # when the attacker serves only old, validly signed metadata
    sim.fetcher.overrides.clear()
    for role, path in sim.old_names.items():  # type: ignore[attr-defined]
        sim.fetcher.overrides[new_names[role]] = sim.old_files[path]  # type: ignore[attr-defined]
    with pytest.raises(AtollError):
        sim.client().check()
    assert trusted_versions(sim.sysroot)["root"] == offered["root"]


def test_sha512_only_targets_and_no_consistent_snapshot(tmp_path: Path) -> None:
    """What the specification allows: targets hashed with sha512 only, and a root
    without consistent snapshots (targets under their plain names)."""
    from atoll.repo.tufrepo import TufRepository

    sim = Sim(tmp_path)
    sim.commit(1)
    sim.publish()
    tuf = TufRepository(sim.storage, sim.keys.policy())
    online = {r: sim.keys.signers(r) for r in ("targets", "snapshot", "timestamp")}
    # re-list every target with sha512 only, stored under its plain path
    targets = tuf.targets().signed
    import hashlib

    from tuf.api.metadata import TargetFile

    for path, tf in list(targets.targets.items()):
        sha = tf.hashes["sha256"]
        d, _, name = path.rpartition("/")
        data = sim.storage.files[f"targets/{d + '/' if d else ''}{sha}.{name}"]
        new = TargetFile(len(data), {"sha512": hashlib.sha512(data).hexdigest()}, path,
                         unrecognized_fields=dict(tf.unrecognized_fields))
        targets.targets[path] = new
        sim.storage.files[f"targets/{path}"] = data
    root_md = tuf.root()
    root_md.signed.consistent_snapshot = False
    root_md.signed.version += 1
    root_md.signatures.clear()
    for s in sim.keys.signers("root"):
        root_md.sign(s, append=True)
    with tuf.transaction():  # verified as a host would before anything is written
        tuf._write_root(root_md)
        tuf._publish_targets(targets, online)
    # non-consistent-snapshot metadata names: python-tuf fetches <role>.json
    assert "metadata/snapshot.json" in sim.storage.files
    assert "metadata/targets.json" in sim.storage.files
    out = sim.client().download()
    assert out["downloaded"] and out["target"]["commit"] == sim.commits[0]
    fetched_targets = {f for f in sim.fetcher.fetched if f.startswith("targets/")}
    assert fetched_targets  # under their plain names, as the root says
    assert fetched_targets <= {f"targets/{p}" for p in targets.targets}, fetched_targets


def test_unsupported_hash_algorithm_is_a_clear_error(sim: Sim) -> None:
    from atoll.repo.tufrepo import TufRepository

    tuf = TufRepository(sim.storage, sim.keys.policy())
    targets = tuf.targets().signed
    for tf in targets.targets.values():
        tf.hashes = {"md5": "0" * 32}
    online = {r: sim.keys.signers(r) for r in ("targets", "snapshot", "timestamp")}
    with tuf.transaction():
        tuf._publish_targets(targets, online)
    before = snapshot_host(sim.sysroot)
    with pytest.raises(RepositoryError, match="does not support: md5"):
        sim.client().check()
    assert snapshot_host(sim.sysroot) == before


def test_separate_metadata_and_targets_urls(tmp_path: Path) -> None:
    """Metadata on one server, targets on another (a CDN): remote add --targets-url."""
    from atoll.repo.client import UpdateClient
    from atoll.repo.remotes import add_remote
    from tests.unit.test_tuf_simulator import BASE

    sim = Sim(tmp_path)
    sim.commit(1)
    sim.publish()
    cdn = {f"cdn/{p[len('targets/'):]}": d for p, d in sim.storage.files.items()
           if p.startswith("targets/")}
    for p in list(sim.storage.files):
        if p.startswith("targets/"):
            del sim.storage.files[p]
    sim.storage.files.update(cdn)
    root = tmp_path / "root2.json"
    root.write_bytes(sim.storage.files["metadata/root.json"])
    add_remote(sim.sysroot, "cdn", BASE, root, channel="site/base",
               targets_url=BASE + "cdn/")
    out = UpdateClient(sim.sysroot, "cdn", fetcher=sim.fetcher).download()
    assert out["downloaded"]
    assert all(not f.startswith("targets/") for f in sim.fetcher.fetched)

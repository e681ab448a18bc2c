"""Attacks and faults against the client, on the in-memory repository simulator.

Each must be refused with a clear atoll error and leave the host's store,
trusted metadata and update.json exactly as they were.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from tuf.api.metadata import Metadata, Timestamp  # type: ignore[attr-defined]

from atoll.core.errors import (
    AtollError,
    DownloadError,
    MetadataExpiredError,
    RepositoryError,
)
from atoll.repo.keys import KeyDir
from atoll.repo.publish import init_repository, rotate_keys
from atoll.repo.storage import MemStorage
from atoll.store.repo import Repo
from tests.unit.test_tuf_simulator import Sim, snapshot_host


@pytest.fixture
def sim(tmp_path: Path) -> Sim:
    s = Sim(tmp_path)
    s.commit(1)
    s.publish()
    s.client().download()
    s.commit(2)
    s.publish()
    return s


def refused(sim: Sim, exc: type[AtollError], op: str = "download") -> AtollError:
    before = snapshot_host(sim.sysroot)
    with pytest.raises(exc) as info:
        getattr(sim.client(), op)()
    assert snapshot_host(sim.sysroot) == before
    return info.value


def _targets_path(sim: Sim, name: str) -> str:
    return next(p for p in sim.storage.files if p.startswith("targets/") and p.endswith(name))


def test_tampered_delta(sim: Sim) -> None:
    p = _targets_path(sim, f"{sim.commits[0]}-{sim.commits[1]}.delta")
    data = bytearray(sim.storage.files[p])
    data[len(data) // 2] ^= 0x55
    sim.fetcher.overrides[p] = bytes(data)
    err = refused(sim, RepositoryError)
    assert "do not match the signed hash" in err.brief


def test_tampered_pack_chunk(tmp_path: Path) -> None:
    sim = Sim(tmp_path)
    sim.commit(1)
    sim.publish()
    p = _targets_path(sim, f"{sim.commits[0]}.pack")
    data = bytearray(sim.storage.files[p])
    data[10] ^= 1
    sim.fetcher.overrides[p] = bytes(data)
    refused(sim, RepositoryError)


def test_target_not_in_signed_metadata(sim: Sim) -> None:
    # A file on the server that no signed metadata lists is never used.
    sim.storage.files["targets/refs/site/evil.json"] = b"{}"
    from atoll.core.fsutil import atomic_write_json

    atomic_write_json(sim.sysroot / "atoll/state/remotes/origin/remote.json",
                      {"name": "origin", "url": "http://sim.invalid/", "channel": "site/evil"})
    before = snapshot_host(sim.sysroot)
    with pytest.raises(RepositoryError, match="not in the signed metadata"):
        sim.client().download()
    assert snapshot_host(sim.sysroot) == before


def test_rollback_to_older_metadata(sim: Sim) -> None:
    old = dict(sim.storage.files)
    sim.commit(3)
    sim.publish()
    sim.client().check()  # the host has seen the newest timestamp
    sim.fetcher.overrides["metadata/timestamp.json"] = old["metadata/timestamp.json"]
    err = refused(sim, RepositoryError)
    assert "BadVersionNumberError" in (err.details or "")


def test_freeze_expired_timestamp(tmp_path: Path) -> None:
    sim = Sim(tmp_path)
    sim.commit(1)
    from atoll.repo.publish import publish

    publish(sim.repo, "site/base", sim.storage, sim.keys, expires=["timestamp=1s"])
    time.sleep(1.2)
    err = refused(sim, MetadataExpiredError, "check")
    assert "expired" in err.brief


def test_mix_and_match(sim: Sim) -> None:
    # Serve the snapshot of the previous publish under the current snapshot's name.
    ts: Metadata[Timestamp] = Metadata.from_bytes(sim.storage.files["metadata/timestamp.json"])
    v = ts.signed.snapshot_meta.version
    sim.fetcher.overrides[f"metadata/{v}.snapshot.json"] = sim.storage.files[
        f"metadata/{v - 1}.snapshot.json"]
    refused(sim, RepositoryError)


def test_endless_metadata(sim: Sim) -> None:
    sim.fetcher.endless.add("metadata/timestamp.json")
    refused(sim, DownloadError)


def test_endless_target(sim: Sim) -> None:
    p = _targets_path(sim, f"{sim.commits[0]}-{sim.commits[1]}.delta")
    sim.fetcher.endless.add(p)
    err = refused(sim, DownloadError)
    assert "more than the signed length" in err.brief or "signed length" in str(err.brief)


def _attacker_timestamp(sim: Sim, signers: Sequence[Any]) -> bytes:
    md = Metadata.from_bytes(sim.storage.files["metadata/timestamp.json"])
    md.signed.version += 1
    md.signed.expires = datetime.now(UTC) + timedelta(days=1)
    md.signatures.clear()
    for s in signers:
        md.sign(s, append=True)
    return bytes(md.to_bytes())


def test_signatures_below_threshold(tmp_path: Path) -> None:
    sim = Sim.__new__(Sim)
    sim.tmp = tmp_path
    sim.repo = Repo.create(tmp_path / "pubrepo")
    sim.keys = KeyDir(tmp_path / "keys")
    sim.storage = MemStorage()
    init_repository(sim.storage, sim.keys, online_threshold=2)
    from tests.unit.test_tuf_simulator import BASE, SimFetcher

    sim.fetcher = SimFetcher(sim.storage)
    sim.sysroot = tmp_path / "host"
    sim.commits = []
    (tmp_path / "root.json").write_bytes(sim.storage.files["metadata/root.json"])
    from atoll.repo.client import add_remote

    add_remote(sim.sysroot, "origin", BASE, tmp_path / "root.json", channel="site/base")
    sim.commit(1)
    sim.publish()
    sim.client().check()
    one_key = sim.keys.signers("timestamp")[:1]
    sim.fetcher.overrides["metadata/timestamp.json"] = _attacker_timestamp(sim, one_key)
    err = refused(sim, RepositoryError, "check")
    assert "UnsignedMetadataError" in (err.details or "")


def test_revoked_key_after_rotation(sim: Sim) -> None:
    old_key = sim.keys.signers("timestamp")
    rotate_keys(sim.storage, sim.keys, "timestamp")
    sim.client().check()  # the host learns the new root and the new timestamp key
    sim.fetcher.overrides["metadata/timestamp.json"] = _attacker_timestamp(sim, old_key)
    err = refused(sim, RepositoryError, "check")
    assert "UnsignedMetadataError" in (err.details or "")


def test_root_rotation_is_followed(sim: Sim) -> None:
    rotate_keys(sim.storage, sim.keys, "root")
    rotate_keys(sim.storage, sim.keys, "targets")
    sim.client().download()
    host = Repo.open(sim.sysroot / "atoll/repo")
    assert host.refs("remotes")["origin/site/base"] == sim.commits[1]
    trusted = sim.sysroot / "atoll/state/remotes/origin/metadata/root.json"
    assert Metadata.from_bytes(trusted.read_bytes()).signed.version == 3
    assert len(list((sim.keys.path / "retired").rglob("*.pem"))) == 2


def test_truncated_download_then_resume(sim: Sim) -> None:
    p = _targets_path(sim, f"{sim.commits[0]}-{sim.commits[1]}.delta")
    full = len(sim.storage.files[p])
    sim.fetcher.truncate[p] = full // 2
    err = refused(sim, DownloadError)
    assert "cut short" in err.brief
    del sim.fetcher.truncate[p]
    sim.fetcher.ranges.clear()
    sim.client().download()
    assert (p, full // 2) in sim.fetcher.ranges  # resumed, not restarted
    host = Repo.open(sim.sysroot / "atoll/repo")
    assert host.refs("remotes")["origin/site/base"] == sim.commits[1]

"""Key directory, policy and repository metadata on the publishing side."""

from __future__ import annotations

import os
import shutil
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from tuf.api.metadata import Metadata

from atoll.core.errors import InputError
from atoll.repo.keys import KeyDir, Policy, parse_duration
from atoll.repo.publish import init_repository, refresh_repository, rotate_keys
from atoll.repo.storage import DirStorage, MemStorage


def test_parse_duration() -> None:
    assert parse_duration("90d") == timedelta(days=90)
    assert parse_duration("12h") == timedelta(hours=12)
    assert parse_duration("3600") == timedelta(hours=1)
    for bad in ("", "0d", "1y", "-1d", "d"):
        with pytest.raises(InputError):
            parse_duration(bad)


def test_policy_override() -> None:
    p = Policy().override(["timestamp=2h", "targets=30d"])
    assert p.expires["timestamp"] == 7200 and p.expires["targets"] == 30 * 86400
    with pytest.raises(InputError):
        Policy().override(["nosuchrole=1d"])
    with pytest.raises(InputError):
        Policy().override(["timestamp"])


def test_init_layout_thresholds_and_expiry(tmp_path: Path) -> None:
    keys = KeyDir(tmp_path / "keys")
    www = DirStorage(tmp_path / "www")
    init_repository(www, keys, threshold=2, online_threshold=1, expires=["timestamp=6h"])
    roots = list((tmp_path / "keys/root").glob("*.pem"))
    assert len(roots) == 2
    for p in (tmp_path / "keys").rglob("*.pem"):
        assert stat.S_IMODE(p.stat().st_mode) == 0o600
    for role in ("targets", "snapshot", "timestamp"):
        assert len(list((tmp_path / f"keys/online/{role}").glob("*.pem"))) == 1
    root = Metadata.from_bytes((tmp_path / "www/metadata/1.root.json").read_bytes()).signed
    assert root.consistent_snapshot and root.roles["root"].threshold == 2
    assert len(Metadata.from_bytes(
        (tmp_path / "www/metadata/root.json").read_bytes()).signatures) == 2
    ts = Metadata.from_bytes((tmp_path / "www/metadata/timestamp.json").read_bytes()).signed
    left = ts.expires - datetime.now(UTC)
    assert timedelta(hours=5) < left <= timedelta(hours=6)
    with pytest.raises(InputError):
        init_repository(www, keys)


def test_timestamp_needs_only_online_keys(tmp_path: Path) -> None:
    keys = KeyDir(tmp_path / "keys")
    st = MemStorage()
    init_repository(st, keys)
    shutil.move(tmp_path / "keys/root", tmp_path / "offline-root")  # root key taken offline
    assert refresh_repository(st, keys)["resigned"] == {"timestamp": 2}
    with pytest.raises(InputError, match="no root keys"):
        rotate_keys(st, keys, "timestamp")
    shutil.move(tmp_path / "offline-root", tmp_path / "keys/root")
    out = rotate_keys(st, keys, "timestamp")
    assert out["root_version"] == 2
    assert list((tmp_path / "keys/retired/timestamp").glob("*.pem"))
    root2 = Metadata.from_bytes(st.files["metadata/2.root.json"])
    assert root2.signed.roles["timestamp"].keyids == out["new"]


def test_root_rotation_signed_by_old_and_new(tmp_path: Path) -> None:
    keys = KeyDir(tmp_path / "keys")
    st = MemStorage()
    init_repository(st, keys)
    old_root = Metadata.from_bytes(st.files["metadata/1.root.json"])
    rotate_keys(st, keys, "root")
    new_root = Metadata.from_bytes(st.files["metadata/2.root.json"])
    old_root.verify_delegate("root", new_root)  # the old keys vouch for the new root
    new_root.verify_delegate("root", new_root)  # and the new keys sign it too
    assert len(os.listdir(tmp_path / "keys/root")) == 1
    assert len(os.listdir(tmp_path / "keys/retired/root")) == 1

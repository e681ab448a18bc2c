"""The publishing side is all or nothing: it range-checks what it is given, verifies
everything it signs against the root hosts trust (python-tuf's Metadata API, as a
client would) before it replaces anything in the published directory, and writes
nothing (keys included) when that fails.

Reproductions of the hostile review of issue 13: thresholds of 0 or below, key
counts of 0 or 1000, keys the root does not trust, --expires overflows and roles a
command does not sign, keys init cut short, an expired root."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tuf.api.metadata import Metadata

from atoll.cli import main
from atoll.core.errors import InputError, MetadataExpiredError, RepositoryError
from atoll.repo.keyops import init_repository, refresh_repository, rotate_keys
from atoll.repo.keys import KeyDir
from atoll.repo.storage import DirStorage
from atoll.repo.tufrepo import TufRepository
from tests.unit.test_tuf_freshness import Clock, clock  # noqa: F401  (fixture)
from tests.unit.test_tuf_simulator import Sim


def tree(*roots: Path) -> dict[str, bytes | None]:
    """Every file (bytes) and directory (None) under ``roots``: to compare before/after."""
    out: dict[str, bytes | None] = {}
    for root in roots:
        if not root.exists():
            out[str(root)] = b"<absent>"
            continue
        for dirpath, dirs, files in os.walk(root):
            for d in dirs:
                out[os.path.join(dirpath, d)] = None
            for f in files:
                out[os.path.join(dirpath, f)] = Path(dirpath, f).read_bytes()
    return out


@pytest.fixture
def pub(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    keys, www = tmp_path / "keys", tmp_path / "www"
    assert main(["-q", "keys", "init", str(keys), "--to", str(www)]) == 0
    yield keys, www


def _run(*argv: str) -> int:
    return main(["-q", *argv])


# -- 1. numeric options are range-checked before anything is written ----------------------

@pytest.mark.parametrize("argv", [
    ["keys", "rotate", "targets", "--threshold", "0"],
    ["keys", "rotate", "targets", "--threshold", "-1"],
    ["keys", "rotate", "snapshot", "--threshold", "0"],
    ["keys", "rotate", "root", "--threshold", "0"],
    ["keys", "rotate", "timestamp", "--count", "0"],
    ["keys", "rotate", "timestamp", "--count", "1000"],
    ["keys", "rotate", "targets", "--threshold", "3", "--count", "2"],
    ["keys", "rotate", "targets", "--threshold", "33"],
])
def test_rotate_refuses_out_of_range_numbers_and_writes_nothing(
        pub: tuple[Path, Path], argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    keys, www = pub
    before = tree(keys, www)
    assert _run(*argv, "--keys", str(keys), "--to", str(www)) == 2
    assert tree(keys, www) == before
    assert "error:" in capsys.readouterr().err
    # the repository still works: hosts can read it, the publisher can sign
    assert _run("timestamp", "--to", str(www), "--keys", str(keys)) == 0


@pytest.mark.parametrize("argv", [
    ["--threshold", "0"], ["--threshold", "-1"], ["--online-threshold", "0"],
    ["--threshold", "1000"],
])
def test_keys_init_refuses_out_of_range_numbers_and_writes_nothing(
        tmp_path: Path, argv: list[str]) -> None:
    assert _run("keys", "init", str(tmp_path / "k"), "--to", str(tmp_path / "w"), *argv) == 2
    assert not (tmp_path / "k").exists() and not (tmp_path / "w").exists()


def test_the_publisher_verifies_what_it_signs_before_writing(pub: tuple[Path, Path]) -> None:
    """Past the argument checks, the verification against the trusted root catches what
    hosts would refuse: a threshold of 0 (python-tuf cannot parse it), a threshold above
    the keys, a root not signed by the trusted root keys; nothing is written."""
    keys, www = pub
    kd = KeyDir(keys)
    online = {r: kd.signers(r) for r in ("targets", "snapshot", "timestamp")}
    before = tree(keys, www)
    tuf = TufRepository(DirStorage(www), kd.policy())
    with pytest.raises(RepositoryError, match=r"cannot be read|hosts could not read it"):
        tuf.rotate("targets", kd.signers("root"), online["targets"], online, threshold=0)
    stranger = KeyDir(keys.parent / "stranger")
    stranger.generate("root")
    with pytest.raises(RepositoryError, match="signed by 0 of the 1 root keys"):
        tuf.rotate("timestamp", stranger.signers("root"), online["timestamp"], online)
    with pytest.raises(InputError, match="threshold 2 > 1 keys"):
        tuf.rotate("snapshot", kd.signers("root"), online["snapshot"], online, threshold=2)

    class Sneaky(TufRepository):
        def _sign(self, md: Any, signers: Any) -> None:  # signs with an untrusted key
            md.signatures.clear()
            md.sign(stranger.signers("root")[0])

    with pytest.raises(RepositoryError, match=r"timestamp keys root\.json trusts"):
        Sneaky(DirStorage(www), kd.policy()).resign_timestamp(online["timestamp"])
    assert tree(keys, www) == before


# -- 2. keys the root does not trust -----------------------------------------------------

def test_online_keys_the_root_does_not_trust_are_refused(pub: tuple[Path, Path],
                                                         tmp_path: Path) -> None:
    keys, www = pub
    assert _run("keys", "init", str(tmp_path / "keys2"), "--to", str(tmp_path / "www2")) == 0
    sim = Sim(tmp_path / "sim")  # a store with a commit to publish
    sim.commit(1)
    before = tree(keys, www)
    assert _run("timestamp", "--to", str(www), "--keys", str(tmp_path / "keys2")) == 2
    assert _run("publish", "site/base", "--repo", str(sim.repo.path), "--to", str(www),
                "--keys", str(tmp_path / "keys2"), "--level", "1") == 2
    assert tree(keys, www) == before
    # the right keys still publish, and every file verifies against the root
    assert _run("publish", "site/base", "--repo", str(sim.repo.path), "--to", str(www),
                "--keys", str(keys), "--level", "1") == 0


def test_missing_keys_never_send_the_publisher_to_keys_init(
        pub: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Review of issue 14: `timestamp --keys /nonexist` hinted `atoll keys init`, which
    makes a key set the published root does not trust."""
    keys, www = pub
    for where in (tmp_path / "nonexist", keys):
        if where == keys:
            for pem in (keys / "online/timestamp").glob("*.pem"):
                pem.unlink()
        capsys.readouterr()
        assert main(["timestamp", "--to", str(www), "--keys", str(where)]) == 2
        err = capsys.readouterr().err
        assert "keys init" not in err.split("hint:", 1)[1], err
        assert ("no key directory" in err) == (where != keys), err


# -- 4. durations and the roles a command signs -------------------------------------------

@pytest.mark.parametrize("argv", [
    ["timestamp", "--expires", "timestamp=99999999d"],
    ["timestamp", "--expires", "root=5d"],        # timestamp never signs root
    ["timestamp", "--expires", "timestamp=0s"],
    ["keys", "rotate", "timestamp", "--expires", "targets=30d"],  # not re-signed by it
    ["keys", "rotate", "root", "--expires", "root=1s"],           # a root must live a day
    ["keys", "rotate", "root", "--expires", "root=3651d"],
])
def test_expires_is_range_checked_per_command(pub: tuple[Path, Path], argv: list[str]) -> None:
    keys, www = pub
    before = tree(keys, www)
    assert _run(*argv, "--keys", str(keys), "--to", str(www)) == 2
    assert tree(keys, www) == before


@pytest.mark.parametrize("expires", ["timestamp=99999999d", "root=1s", "root=23h", "x=1d"])
def test_keys_init_with_a_bad_expiry_leaves_nothing(tmp_path: Path, expires: str) -> None:
    k, w = tmp_path / "k3", tmp_path / "w3"
    assert _run("keys", "init", str(k), "--to", str(w), "--expires", expires) == 2
    assert not k.exists() and not w.exists()
    assert _run("keys", "init", str(k), "--to", str(w)) == 0  # and a rerun works


def test_keys_init_cut_short_leaves_no_keys_and_no_repository(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    k, w = tmp_path / "keys", tmp_path / "www"
    real = DirStorage.put

    def full_disk(self: DirStorage, rel: str, data: bytes) -> None:
        if rel == "metadata/timestamp.json":
            raise OSError(28, "No space left on device", rel)
        real(self, rel, data)

    monkeypatch.setattr(DirStorage, "put", full_disk)
    with pytest.raises(OSError):
        init_repository(DirStorage(w), KeyDir(k))
    assert not k.exists()
    assert not (w / "metadata/root.json").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".keys.")]
    monkeypatch.setattr(DirStorage, "put", real)
    init_repository(DirStorage(w), KeyDir(k))  # nothing is in the way of a second try
    assert Metadata.from_bytes((w / "metadata/root.json").read_bytes()).signed.version == 1


def test_keys_init_into_a_directory_that_holds_files_is_refused(tmp_path: Path) -> None:
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys/notes.txt").write_text("x")
    with pytest.raises(InputError, match="already holds files"):
        init_repository(DirStorage(tmp_path / "www"), KeyDir(tmp_path / "keys"))
    assert not (tmp_path / "www").exists()
    (tmp_path / "empty").mkdir()
    init_repository(DirStorage(tmp_path / "www"), KeyDir(tmp_path / "empty"))
    assert list((tmp_path / "empty/root").glob("*.pem"))


def test_a_rotation_that_fails_verification_moves_no_key(pub: tuple[Path, Path]) -> None:
    keys, www = pub
    policy = json.loads((keys / "policy.json").read_text())
    policy["expires"]["root"] = 1  # an older atoll accepted root=1s
    (keys / "policy.json").write_text(json.dumps(policy))
    before = tree(keys, www)
    with pytest.raises(RepositoryError, match="the new root would expire"):
        rotate_keys(DirStorage(www), KeyDir(keys), "targets")
    assert tree(keys, www) == before
    out = rotate_keys(DirStorage(www), KeyDir(keys), "targets", expires=["root=365d"])
    assert out["root_version"] == 2
    assert [p.stem for p in (keys / "online/targets").glob("*.pem")] == out["new"]
    assert len(list((keys / "retired/targets").glob("*.pem"))) == 1


# -- 5. an expired root ------------------------------------------------------------------

def test_an_expired_root_is_named_and_fixed_by_rotating_root(
        tmp_path: Path, clock: Clock, caplog: pytest.LogCaptureFixture) -> None:  # noqa: F811
    sim = Sim(tmp_path)
    sim.commit(1)
    sim.publish()
    sim.client().download()
    clock.offset = dt.timedelta(days=366)  # the offline root's year is over
    # hosts: the hint names root and the command that fixes it
    with pytest.raises(MetadataExpiredError) as exc:
        sim.client().check()
    assert "root.json" in exc.value.brief
    assert "atoll keys rotate root" in (exc.value.resolution or "")
    # the cron command cannot fix it, says so, and writes nothing
    before = dict(sim.storage.files)
    with pytest.raises(MetadataExpiredError, match=r"root\.json .* expired") as exc:
        refresh_repository(sim.storage, sim.keys)
    assert "atoll keys rotate root" in (exc.value.resolution or "")
    assert sim.storage.files == before
    # the offline ceremony fixes it; then cron re-signs the expired online roles
    rotate_keys(sim.storage, sim.keys, "root", expires=["root=365d"])
    refresh_repository(sim.storage, sim.keys)
    assert sim.client().check()["downloaded"]


def test_remote_add_warns_about_an_expired_root(tmp_path: Path, clock: Clock,  # noqa: F811
                                                caplog: pytest.LogCaptureFixture) -> None:
    from atoll.repo.remotes import add_remote

    sim = Sim(tmp_path)
    root = tmp_path / "root.json"
    clock.offset = dt.timedelta(days=-400)  # a root signed long ago
    keys2, st2 = KeyDir(tmp_path / "k2"), DirStorage(tmp_path / "w2")
    init_repository(st2, keys2)
    root.write_bytes((tmp_path / "w2/metadata/root.json").read_bytes())
    logger = logging.getLogger("atoll.update")
    logger.addHandler(caplog.handler)
    try:
        add_remote(sim.sysroot, "old", "http://127.0.0.1:9/", root)
    finally:
        logger.removeHandler(caplog.handler)
    assert "expired" in caplog.text and "keys rotate root" in caplog.text


def test_expired_root_exit_codes(pub: tuple[Path, Path], clock: Clock,  # noqa: F811
                                 capsys: pytest.CaptureFixture[str]) -> None:
    keys, www = pub
    clock.offset = dt.timedelta(days=366)
    before = tree(keys, www)
    assert main(["timestamp", "--to", str(www), "--keys", str(keys)]) == 5  # was 0
    assert "keys rotate root" in capsys.readouterr().err
    assert tree(keys, www) == before
    assert _run("keys", "rotate", "root", "--keys", str(keys), "--to", str(www),
                "--expires", "root=30d") == 0
    assert _run("timestamp", "--to", str(www), "--keys", str(keys)) == 0
    root = Metadata.from_bytes((www / "metadata/root.json").read_bytes()).signed
    assert root.version == 2 and (root.expires - clock.now()).days in (29, 30)

"""A repository stays fresh for years without a new release: `atoll timestamp` (cron)
re-signs every online role near expiry. Clocks are controlled on both sides: the
publisher's (atoll.repo.tufrepo._now) and the host's (python-tuf's reference time)."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from atoll.core.errors import MetadataExpiredError, RepositoryError
from atoll.repo.publish import publish, refresh_repository
from atoll.repo.storage import DirStorage, MemStorage
from tests.unit.test_tuf_simulator import Sim


class Clock:
    """Now, plus an offset the test moves forward."""

    def __init__(self) -> None:
        self.offset = dt.timedelta()

    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC).replace(microsecond=0) + self.offset


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[Clock]:
    import tuf.ngclient._internal.trusted_metadata_set as tms

    import atoll.repo.tufrepo as tufrepo

    c = Clock()
    monkeypatch.setattr(tufrepo, "_now", c.now)

    class FakeDatetime(dt.datetime):
        @classmethod
        def now(cls, tz: dt.tzinfo | None = None) -> FakeDatetime:  # type: ignore[override]
            return c.now()  # type: ignore[return-value]

    monkeypatch.setattr(tms, "datetime", SimpleNamespace(datetime=FakeDatetime,
                                                         timezone=dt.timezone))
    yield c


def test_hosts_keep_updating_with_only_the_cron_command(tmp_path: Path, clock: Clock) -> None:
    sim = Sim(tmp_path)
    sim.commit(1)
    sim.publish()
    sim.client().download()
    # without the cron command the host stops a week after the release (snapshot: 7 d)
    clock.offset = dt.timedelta(days=8)
    with pytest.raises(MetadataExpiredError) as exc:
        sim.client().check()
    assert "atoll timestamp" in (exc.value.resolution or "")
    # one refresh fixes it (the timestamp and the expired snapshot are re-signed)
    out = refresh_repository(sim.storage, sim.keys)
    assert set(out["resigned"]) == {"timestamp", "snapshot"}
    assert sim.client().check()["downloaded"]
    # cron (here every 3 days) until the offline root's year is over: never expired,
    # nothing republished (root itself is re-signed offline: see the next tests)
    resigned_targets = 0
    for day in range(8, 362, 3):
        clock.offset = dt.timedelta(days=day)
        out = refresh_repository(sim.storage, sim.keys)
        resigned_targets += "targets" in out["resigned"]
        view = sim.client().check()
        assert view["downloaded"] and view["target"]["commit"] == sim.commits[0]
    assert resigned_targets >= 360 // 45 - 1  # targets (90 d) re-signed at half-life


def test_refresh_only_re_signs_what_is_near_expiry(tmp_path: Path, clock: Clock) -> None:
    sim = Sim(tmp_path)
    sim.commit(1)
    sim.publish()
    assert refresh_repository(sim.storage, sim.keys)["resigned"].keys() == {"timestamp"}
    clock.offset = dt.timedelta(days=4)  # past half of the snapshot's 7 days
    assert refresh_repository(sim.storage, sim.keys)["resigned"].keys() == {
        "timestamp", "snapshot"}
    clock.offset = dt.timedelta(days=50)  # past half of the targets' 90 days
    assert refresh_repository(sim.storage, sim.keys)["resigned"].keys() == {
        "timestamp", "snapshot", "targets"}


def test_root_near_expiry_is_said_loudly(tmp_path: Path, clock: Clock,
                                         caplog: pytest.LogCaptureFixture) -> None:
    sim = Sim(tmp_path)
    sim.commit(1)
    sim.publish()
    clock.offset = dt.timedelta(days=350)
    import logging

    logger = logging.getLogger("atoll.publish")
    logger.addHandler(caplog.handler)  # "atoll" may not propagate (atoll.core.log)
    try:
        out = refresh_repository(sim.storage, sim.keys)
    finally:
        logger.removeHandler(caplog.handler)
    assert out["root_expires_in_days"] <= 15
    assert "atoll keys rotate root" in caplog.text


def test_publishing_an_unchanged_commit_with_short_expiries(tmp_path: Path,
                                                            clock: Clock) -> None:
    sim = Sim(tmp_path)
    sim.commit(1)
    publish(sim.repo, "site/base", sim.storage, sim.keys,
            expires=["targets=2d", "snapshot=1d", "timestamp=1h"])
    sim.client().download()
    clock.offset = dt.timedelta(days=3)
    with pytest.raises(MetadataExpiredError):
        sim.client().check()
    refresh_repository(sim.storage, sim.keys,
                       expires=["targets=2d", "snapshot=1d", "timestamp=1h"])
    assert sim.client().check()["downloaded"]


def test_timestamp_on_a_directory_without_a_repository_changes_nothing(tmp_path: Path) -> None:
    sim = Sim(tmp_path)  # keys exist
    empty = tmp_path / "not-a-repo"
    empty.mkdir()
    with pytest.raises(RepositoryError):
        refresh_repository(DirStorage(empty), sim.keys)
    assert list(empty.iterdir()) == []
    p = subprocess.run([sys.executable, "-m", "atoll.cli", "timestamp", "--to", str(empty),
                        "--keys", str(sim.keys.path)], capture_output=True, text=True)
    assert p.returncode == 4 and "no TUF repository" in p.stderr, p.stderr
    assert list(empty.iterdir()) == []
    assert MemStorage().get("metadata/root.json") is None

"""Resuming a download: from a server that ignores HTTP Range, and after a power cut
damaged the part already on disk."""

from __future__ import annotations

from pathlib import Path

import pytest

from atoll.core.errors import DownloadError, RepositoryError
from atoll.store.repo import Repo
from tests.unit.test_tuf_attacks import _targets_path
from tests.unit.test_tuf_simulator import Sim


@pytest.fixture
def sim(tmp_path: Path) -> Sim:
    s = Sim(tmp_path)
    s.commit(1)
    s.publish()
    s.client().download()
    s.commit(2)
    s.publish()
    return s


def _cut(sim: Sim) -> tuple[str, int]:
    p = _targets_path(sim, f"{sim.commits[0]}-{sim.commits[1]}.delta")
    full = len(sim.storage.files[p])
    sim.fetcher.truncate[p] = full // 2
    with pytest.raises(DownloadError, match="cut short"):
        sim.client().download()
    del sim.fetcher.truncate[p]
    return p, full


def test_server_that_ignores_ranges(sim: Sim) -> None:
    _cut(sim)
    sim.fetcher.ignore_ranges = True  # answers 200 from byte 0 to the resume request
    out = sim.client().download()
    assert out["target"]["commit"] == sim.commits[1]
    host = Repo.open(sim.sysroot / "atoll/repo")
    assert host.refs("remotes")["origin/site/base"] == sim.commits[1]


def test_a_damaged_part_is_fetched_again_from_the_start(sim: Sim) -> None:
    p, full = _cut(sim)
    part = next((sim.sysroot / "atoll/cache/downloads/origin").glob("*.part"))
    part.write_bytes(b"\0" * part.stat().st_size)  # what a power cut can leave
    sim.fetcher.ranges.clear()
    out = sim.client().download()
    assert out["target"]["commit"] == sim.commits[1]
    starts = [start for rel, start in sim.fetcher.ranges if rel == p]
    assert starts == [full // 2, 0]  # resumed, did not verify, fetched again once


def test_a_fresh_download_that_does_not_verify_is_tampering(sim: Sim) -> None:
    p = _targets_path(sim, f"{sim.commits[0]}-{sim.commits[1]}.delta")
    data = bytearray(sim.storage.files[p])
    data[-1] ^= 1
    sim.fetcher.overrides[p] = bytes(data)
    with pytest.raises(RepositoryError, match="do not match the signed hash"):
        sim.client().download()


@pytest.mark.parametrize(("headers", "start", "end", "want"), [
    ({"Content-Range": "bytes 100-199/200", "Content-Length": "100"}, 100, None, 100),
    ({"Content-Range": "bytes 100-149/200"}, 100, 149, 50),
    ({"Content-Range": "bytes 100-199/*"}, 100, None, 100),
    # review of issue 13: a 206 with the range asked for, but the whole file's length
    ({"Content-Range": "bytes 100-199/200", "Content-Length": "200"}, 100, None, None),
    ({"Content-Range": "bytes 0-199/200", "Content-Length": "200"}, 100, None, None),
    ({"Content-Range": "bytes 100-199/200"}, 100, 149, None),  # more than asked
    ({}, 100, None, None),  # no Content-Range: where the bytes start is unknown
    ({"Content-Range": "bytes */200"}, 100, None, None),
    ({"Content-Range": "items 100-199/200"}, 100, None, None),
])
def test_a_206_must_be_the_range_asked_for(headers: dict[str, str], start: int,
                                           end: int | None, want: int | None) -> None:
    from atoll.repo.fetch import _partial_length

    assert _partial_length(headers, start, end) == want

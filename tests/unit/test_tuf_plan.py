"""Pure parts of the client: download plan, range merging, package view, versions."""

from __future__ import annotations

import subprocess

import pytest

from atoll.repo.plan import ChannelInfo, choose, merge_ranges
from atoll.store.packages import compare_versions, package_view

INFO = ChannelInfo("site/base", "c" * 64, "2", 0, {"a" * 64: "deltas/a-c.delta",
                                                    "b" * 64: "deltas/b-c.delta"},
                   "packs/c.pack", "packs/c.index", "m", "s", 1000)


def test_already_have_commit() -> None:
    p = choose(INFO, have_commit=True, have_commits=[], delta_lengths={}, pack_length=9,
               chunk_lengths=None)
    assert p.method == "none" and p.download_bytes == 0


def test_cheapest_delta_wins() -> None:
    p = choose(INFO, have_commit=False, have_commits=["a" * 64, "b" * 64],
               delta_lengths={"deltas/a-c.delta": 500, "deltas/b-c.delta": 200},
               pack_length=900, chunk_lengths=None)
    assert (p.method, p.delta_from, p.download_bytes) == ("delta", "b" * 64, 200)


def test_chunks_when_cheaper_than_delta_or_pack() -> None:
    p = choose(INFO, have_commit=False, have_commits=["a" * 64],
               delta_lengths={"deltas/a-c.delta": 500}, pack_length=900,
               chunk_lengths={3: 100, 1: 50})
    assert (p.method, p.chunks, p.download_bytes) == ("chunks", [1, 3], 150)


def test_whole_pack_when_most_chunks_missing() -> None:
    p = choose(INFO, have_commit=False, have_commits=[], delta_lengths={}, pack_length=900,
               chunk_lengths={0: 400, 1: 400})
    assert p.method == "pack" and p.download_bytes == 900
    p = choose(INFO, have_commit=False, have_commits=[], delta_lengths={}, pack_length=900,
               chunk_lengths=None)
    assert p.method == "pack"


def test_channel_info_requires_atoll_fields() -> None:
    from atoll.core.errors import RepositoryError

    with pytest.raises(RepositoryError):
        ChannelInfo.from_custom({"atoll": {"commit": "x"}}, "site/base")


def test_merge_ranges() -> None:
    assert merge_ranges([(100, 10), (0, 50), (60, 10)], gap=20) == [(0, 70), (100, 10)]
    assert merge_ranges([(0, 10), (1000, 10)], gap=20) == [(0, 10), (1000, 10)]
    assert merge_ranges([(0, 10), (10, 10)], gap=0, max_span=15) == [(0, 10), (10, 10)]


@pytest.mark.parametrize(("a", "b"), [
    ("1.0", "1.1"), ("1.0~rc1", "1.0"), ("2.36-9+deb12u4", "2.36-9+deb12u9"),
    ("2.0", "1:1.0"), ("6.1.0-26", "6.1.0-28"), ("3.0.11-1~deb12u2", "3.0.15-1~deb12u1"),
    ("1.2a", "1.2b"), ("1.0", "1.0.1"), ("9.2p1-2+deb12u3", "9.2p1-2+deb12u5"),
])
def test_compare_versions_matches_dpkg(a: str, b: str) -> None:
    assert compare_versions(a, b) < 0 and compare_versions(b, a) > 0
    assert compare_versions(a, a) == 0
    assert subprocess.run(["dpkg", "--compare-versions", a, "lt", b]).returncode == 0


def test_package_view() -> None:
    old = [{"name": "a", "version": "1"}, {"name": "b", "version": "2"},
           {"name": "c", "version": "1.0"}, {"name": "d", "version": "5"}]
    new = [{"name": "b", "version": "3"}, {"name": "c", "version": "1.0~rc1"},
           {"name": "d", "version": "5"}, {"name": "e", "version": "1"}]
    v = package_view(old, new)
    assert v["added"] == [{"name": "e", "version": "1"}]
    assert v["removed"] == [{"name": "a", "version": "1"}]
    assert v["upgraded"] == [{"name": "b", "old": "2", "new": "3"}]
    assert v["downgraded"] == [{"name": "c", "old": "1.0", "new": "1.0~rc1"}]
    assert package_view(None, new)["added"][0]["name"] == "b"

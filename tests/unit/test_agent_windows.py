"""Maintenance windows: parsing, next window, time zones and DST edges."""

from __future__ import annotations

import datetime as dt

import pytest

from atoll.agent.windows import next_window, parse_window

UTC = dt.UTC


def t(s: str) -> dt.datetime:
    return dt.datetime.fromisoformat(s).replace(tzinfo=UTC)


def test_parse_forms() -> None:
    w = parse_window("Mon-Fri 22:00-23:30 UTC")
    assert w.days == frozenset(range(5))
    assert parse_window("Sat,Sun 01:00-05:00 America/New_York").days == frozenset({5, 6})
    assert parse_window("Fri-Mon 01:00-02:00 UTC").days == frozenset({4, 5, 6, 0})


@pytest.mark.parametrize("text, problem", [
    ("Sat 02:00-04:00", "expected"),
    ("Caturday 02:00-04:00 UTC", "unknown day"),
    ("Sat 25:00-26:00 UTC", "not a time"),
    ("Sat 02:00-04:00 Mars/Olympus", "unknown time zone"),
    ("Sat 02:00-02:00 UTC", "empty"),
])
def test_parse_errors(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_window(text)


def test_next_window_in_berlin_winter_and_summer() -> None:
    w = [parse_window("Sat 02:00-04:00 Europe/Berlin")]
    # Wed 2026-12-02: next is Sat 2026-12-05 02:00 CET = 01:00 UTC
    c = next_window(w, t("2026-12-02T12:00:00"))
    assert c is not None
    assert (c.start, c.end) == (t("2026-12-05T01:00:00"), t("2026-12-05T03:00:00"))
    # in summer CEST (+2): 00:00 UTC
    c = next_window(w, t("2026-07-01T12:00:00"))
    assert c is not None and c.start == t("2026-07-04T00:00:00")


def test_inside_a_window_starts_now() -> None:
    w = [parse_window("Sat 02:00-04:00 Europe/Berlin")]
    c = next_window(w, t("2026-12-05T02:00:00"))
    assert c is not None
    assert (c.start, c.end) == (t("2026-12-05T02:00:00"), t("2026-12-05T03:00:00"))


def test_window_crossing_midnight() -> None:
    w = [parse_window("Sun 23:00-01:00 UTC")]
    c = next_window(w, t("2026-12-07T00:30:00"))  # Monday 00:30: still Sunday's window
    assert c is not None
    assert (c.start, c.end) == (t("2026-12-07T00:30:00"), t("2026-12-07T01:00:00"))


def test_spring_forward_gap_shortens_the_window() -> None:
    # 2027-03-28 Europe/Berlin: 02:00 CET jumps to 03:00 CEST. 02:00-04:00 lasts 1 hour.
    w = [parse_window("Sun 02:00-04:00 Europe/Berlin")]
    c = next_window(w, t("2027-03-27T12:00:00"))
    assert c is not None
    assert c.start == t("2027-03-28T01:00:00") and c.end == t("2027-03-28T02:00:00")
    assert c.end - c.start == dt.timedelta(hours=1)


def test_fall_back_repeated_hour_lengthens_the_window() -> None:
    # 2026-10-25 Europe/Berlin: 03:00 CEST falls back to 02:00 CET. 02:00-04:00 lasts 3 hours.
    w = [parse_window("Sun 02:00-04:00 Europe/Berlin")]
    c = next_window(w, t("2026-10-24T12:00:00"))
    assert c is not None
    assert c.start == t("2026-10-25T00:00:00") and c.end == t("2026-10-25T03:00:00")


def test_new_york_dst() -> None:
    w = [parse_window("Sun 01:00-03:00 America/New_York")]
    # 2026-11-01: 02:00 EDT falls back to 01:00 EST: 01:00 is ambiguous, first occurrence (EDT)
    c = next_window(w, t("2026-10-31T12:00:00"))
    assert c is not None and c.start == t("2026-11-01T05:00:00")
    assert c.end == t("2026-11-01T08:00:00")


def test_too_short_window_is_skipped_with_reason() -> None:
    w = [parse_window("Sat 02:00-02:20 UTC"), parse_window("Sun 02:00-04:00 UTC")]
    c = next_window(w, t("2026-12-02T12:00:00"), needed=dt.timedelta(minutes=30))
    assert c is not None and c.start == t("2026-12-06T02:00:00")
    assert len(c.skipped) == 1 and "20 min left" in c.skipped[0] and "took 30 min" in c.skipped[0]


def test_several_windows_pick_the_earliest() -> None:
    w = [parse_window("Sun 02:00-04:00 UTC"), parse_window("Thu 22:00-23:00 UTC")]
    c = next_window(w, t("2026-12-02T12:00:00"))  # Wednesday
    assert c is not None and c.window == "Thu 22:00-23:00 UTC"


def test_naive_now_refused() -> None:
    with pytest.raises(ValueError):
        next_window([parse_window("Sun 02:00-04:00 UTC")], dt.datetime(2026, 1, 1))

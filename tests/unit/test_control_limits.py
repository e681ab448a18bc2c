"""The control plane's per-host budgets (atoll.control.limits): token buckets."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from atoll.control.limits import Bucket, Buckets, HostLimits


def test_a_bucket_gives_its_burst_then_one_per_period() -> None:
    b = Buckets(Bucket(3, 2.0))
    assert [b.take("h", 100.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert b.take("h", 100.0) == pytest.approx(2.0)  # nothing taken: wait 2 s
    assert b.take("h", 101.0) == pytest.approx(1.0)
    assert b.take("h", 102.0) == 0.0
    assert b.take("other", 102.0) == 0.0  # per key
    assert Buckets(Bucket.parse("off")).take("h", 0.0) == 0.0


@pytest.mark.parametrize("text", ["30/0", "30/nan", "30/inf", "30/-1", "0/2", "30", "a/2",
                                  "30/2x", "30/100000", "2000000/1"])
def test_a_bad_budget_is_refused(text: str) -> None:
    # "30/0" would silently mean no limit; "30/inf" would lock a host out for good
    with pytest.raises(ValueError, match="BURST/SECONDS"):
        Bucket.parse(text)
    assert Bucket.parse("30/2") == Bucket(30, 2.0) and Bucket.parse("off").every_s == 0


@given(st.lists(st.floats(min_value=0, max_value=50, allow_nan=False), max_size=200),
       st.integers(1, 10), st.floats(min_value=0.1, max_value=10))
def test_never_more_than_the_burst_plus_the_refill(gaps: list[float], burst: int,
                                                   every: float) -> None:
    b, now, taken = Buckets(Bucket(burst, every)), 0.0, 0
    for gap in gaps:
        now += gap
        taken += b.take("h", now) == 0.0
    assert taken <= burst + now / every + 1e-9


def test_parse() -> None:
    assert Bucket.parse("30/2") == Bucket(30, 2.0)
    for bad in ("30", "x/2", "0/2", "5/-1"):
        with pytest.raises(ValueError):
            Bucket.parse(bad)


def test_events_over_the_budget_are_counted_and_summarized_later() -> None:
    limits = HostLimits(events=Bucket(3, 10.0))
    keep, summary = limits.admit("h", 0.0, ["boot", "app-health", "app-health", "db-role"])
    assert keep == [True, True, True, False] and summary is None
    keep, summary = limits.admit("h", 1.0, ["app-health"])
    assert keep == [False] and summary is None  # no budget yet for the summary either
    keep, summary = limits.admit("h", 20.0, ["version"])
    assert summary == {"db-role": 1, "app-health": 1} and keep == [True]

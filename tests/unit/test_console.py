"""The console's pure parts: the login wait, the fleet filter, CSRF tokens, the plots."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from atoll.control.console import plots
from atoll.control.console.audit_views import AuditFilter
from atoll.control.console.users import FREE_FAILURES, MAX_WAIT, csrf_token, login_wait
from atoll.control.console.views import STATES, FleetFilter
from atoll.control.errors import ApiError

NOW = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)


def test_the_first_failures_cost_nothing_then_the_wait_doubles() -> None:
    assert login_wait(FREE_FAILURES - 1, NOW, NOW) == dt.timedelta(0)
    assert login_wait(FREE_FAILURES, NOW, NOW) == dt.timedelta(minutes=1)
    assert login_wait(FREE_FAILURES + 1, NOW, NOW) == dt.timedelta(minutes=2)
    assert login_wait(FREE_FAILURES + 3, NOW, NOW) == dt.timedelta(minutes=8)
    assert login_wait(FREE_FAILURES + 50, NOW, NOW) == MAX_WAIT
    # counted from the last failure
    later = NOW + dt.timedelta(seconds=45)
    assert login_wait(FREE_FAILURES, NOW, later) == dt.timedelta(seconds=15)
    assert login_wait(FREE_FAILURES, NOW, NOW + dt.timedelta(hours=2)) == dt.timedelta(0)
    assert login_wait(FREE_FAILURES + 9, None, NOW) == dt.timedelta(0)


@given(failures=st.integers(0, 10_000), after_s=st.integers(0, 10_000),
       more_s=st.integers(0, 10_000))
def test_the_wait_is_bounded_and_only_shrinks_with_time(failures: int, after_s: int,
                                                         more_s: int) -> None:
    first = login_wait(failures, NOW, NOW + dt.timedelta(seconds=after_s))
    second = login_wait(failures, NOW, NOW + dt.timedelta(seconds=after_s + more_s))
    assert dt.timedelta(0) <= second <= first <= MAX_WAIT
    assert login_wait(failures + 1, NOW, NOW) >= login_wait(failures, NOW, NOW)


def test_the_fleet_filter_is_parsed_and_given_back() -> None:
    f = FleetFilter.parse({"label": "site=ams", "version": "2", "state": "rolled-back",
                           "page": "3"})
    assert f == FleetFilter(("site", "ams"), "2", "rolled-back", 3)
    assert FleetFilter.parse(f.query()) == f
    assert f.query(1) == {"label": "site=ams", "version": "2", "state": "rolled-back"}
    assert FleetFilter.parse({}) == FleetFilter()
    assert FleetFilter.parse({"label": " ", "state": "", "version": ""}) == FleetFilter()
    assert FleetFilter.parse({"label": "role="}).label == ("role", "")
    g = FleetFilter.parse({"days": "7", "by": "role", "page": "2"})
    assert (g.days, g.by) == (7, "role")
    assert g.query() == {"days": "7", "by": "role", "page": "2"}
    assert FleetFilter.parse(g.query()) == g


@pytest.mark.parametrize("query", [{"label": "site"}, {"label": "Site=x"},
                                   {"label": "=x"}, {"state": "staged"},
                                   {"page": "0"}, {"page": "-1"}, {"page": "x"},
                                   {"page": "99999999"}, {"days": "3"}, {"days": "x"},
                                   {"by": "Site"}, {"by": "a b"},
                                   {"page": "\u00b9"}])  # a digit to isdigit, not to int
def test_a_bad_filter_is_refused(query: dict[str, str]) -> None:
    with pytest.raises(ApiError) as err:
        FleetFilter.parse(query)
    assert err.value.status == 422


@pytest.mark.parametrize("query", [{"since": "0001-01-01T00:00+01:00"},  # year 0 in UTC
                                   {"until": "9999-12-31T23:00-05:00"},  # year 10000
                                   {"since": "yesterday"}, {"until": "2026-13-01"},
                                   {"page": "-1"}, {"page": "99999999"},
                                   {"page": "\u00b2"}])  # was a 500 (int("²") fails)
def test_a_bad_audit_filter_is_refused(query: dict[str, str]) -> None:
    """Out-of-range times were a 500 (OverflowError) on the Audit page and its CSV."""
    with pytest.raises(ApiError) as err:
        AuditFilter.parse(query)
    assert err.value.status == 422


def test_the_audit_filter_takes_the_extreme_days() -> None:
    until = AuditFilter.parse({"until": "2026-12-01"}).until
    assert until == dt.datetime(2026, 12, 2, tzinfo=dt.UTC)  # through that day
    assert AuditFilter.parse({"until": "9999-12-31"}).until is None  # the last day: no bound
    assert AuditFilter.parse({"since": "0001-01-01"}).since == dt.datetime(
        1, 1, 1, tzinfo=dt.UTC)


def test_states_are_the_status_vocabulary() -> None:
    # docs/states.md: update.state values, plus lost, rolled-back and unknown
    assert set(STATES) == {"lost", "rolled-back", "up-to-date", "available", "downloaded",
                           "prepared", "pending", "unknown"}


def test_csrf_tokens_depend_on_the_secret_and_the_purpose() -> None:
    a = csrf_token("secret-a")
    assert a == csrf_token("secret-a") and len(a) == 64
    assert a != csrf_token("secret-b")
    assert a != csrf_token("secret-a", "login")


def test_version_points_fold_the_rest_and_end_now() -> None:
    hour = dt.timedelta(hours=1)
    samples = [(NOW - 3 * hour, f"v{i}", 1) for i in range(10)] + \
              [(NOW - 2 * hour, "v0", 5), (NOW - 2 * hour, "", 2)]
    series, points = plots.version_points(samples, {"v0": 4, None: 1, "v9": 2}, NOW, 1)
    # most hosts now first, then the most ever; beyond MAX_SERIES: one "other"
    assert series[:3] == ["v0", "v9", plots.NONE]
    assert len(series) == plots.MAX_SERIES + 1 and series[-1] == plots.OTHER
    assert [p.total for p in points] == [10, 7, 7]
    assert points[0].hosts[plots.OTHER] == 10 - (plots.MAX_SERIES - 1)
    assert points[-1].live and points[-1].time == NOW
    # days > 2: each day's last sample
    day = plots.version_points([(NOW - 30 * hour, "a", 1), (NOW - 27 * hour, "a", 2)],
                               {"a": 3}, NOW, 30)[1]
    assert [(p.time, p.hosts) for p in day] == [(NOW - 27 * hour, {"a": 2}), (NOW, {"a": 3})]
    plot = plots.versions_plot(["a"], day, NOW - dt.timedelta(days=30), NOW, 30)
    assert plot["drawn"] and plot["areas"][0]["path"].startswith("M")
    assert [t["label"] for t in plot["y_ticks"]] == ["0", "2", "5"]
    assert not plots.versions_plot(["a"], day[-1:], NOW - dt.timedelta(days=1), NOW, 1)["drawn"]


def test_the_waves_plot_splits_each_wave_by_where_its_hosts_stand() -> None:
    plot = plots.waves_plot([
        {"index": 0, "hosts": 2, "phases": {"succeeded": 1, "failed": 1}},
        {"index": 1, "hosts": 4, "phases": {"at-target": 1, "in-flight": 1, "queued": 2}}])
    first, second = plot["bars"]
    assert [(p["part"], p["hosts"]) for p in first["parts"]] == [("done", 1), ("failed", 1)]
    assert first["text"] == "1 of 2 done, 0 in flight, 1 failed"
    assert [(p["part"], p["hosts"]) for p in second["parts"]] == [
        ("done", 1), ("in flight", 1), ("waiting", 2)]
    # widths are shares of the largest wave; parts follow each other
    assert sum(p["width"] for p in second["parts"]) == plots.BAR_W
    assert second["parts"][1]["x"] == second["parts"][0]["x"] + second["parts"][0]["width"]

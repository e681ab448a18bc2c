"""The console's pure parts: the login wait, the fleet filter, CSRF tokens."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

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


@pytest.mark.parametrize("query", [{"label": "site"}, {"label": "Site=x"},
                                   {"label": "=x"}, {"state": "staged"},
                                   {"page": "0"}, {"page": "-1"}, {"page": "x"},
                                   {"page": "99999999"}])
def test_a_bad_filter_is_refused(query: dict[str, str]) -> None:
    with pytest.raises(ApiError) as err:
        FleetFilter.parse(query)
    assert err.value.status == 422


def test_states_are_the_status_vocabulary() -> None:
    # docs/states.md: update.state values, plus lost, rolled-back and unknown
    assert set(STATES) == {"lost", "rolled-back", "up-to-date", "available", "downloaded",
                           "prepared", "pending", "unknown"}


def test_csrf_tokens_depend_on_the_secret_and_the_purpose() -> None:
    a = csrf_token("secret-a")
    assert a == csrf_token("secret-a") and len(a) == 64
    assert a != csrf_token("secret-b")
    assert a != csrf_token("secret-a", "login")

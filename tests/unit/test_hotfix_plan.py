"""Hotfix lifecycle decisions (atoll.deploy.hotfixplan): drop, keep, block, expiry."""

from __future__ import annotations

import datetime as dt
import subprocess

import pytest
from hypothesis import given
from hypothesis import strategies as st

from atoll.deploy.hotfixplan import Hotfix, decide, parse_time, plan_for_base
from atoll.store.packages import compare_versions

NOW = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
SHA = "a" * 64


def hf(name: str = "openssl", version: str = "3.0.15-1~deb12u1", kind: str = "fast-track",
       expires: dt.datetime | None = None, state: str = "active") -> Hotfix:
    return Hotfix(name=name, version=version, kind=kind, sha256=SHA,  # type: ignore[arg-type]
                  added="2026-11-30T00:00:00Z", expires=expires,
                  state=state)  # type: ignore[arg-type]


def test_fast_track_dropped_when_base_ships_that_version_or_newer() -> None:
    h = hf()
    assert decide(h, "3.0.15-1~deb12u1", NOW).action == "drop"
    assert decide(h, "3.0.16-1~deb12u1", NOW).action == "drop"
    d = decide(h, "3.0.14-1~deb12u2", NOW)
    assert d.action == "keep" and "3.0.14-1~deb12u2" in d.why
    assert decide(h, None, NOW).action == "keep"


def test_tilde_sorts_before_release() -> None:
    # ~ sorts before everything: a base with 1.0~rc1 has not caught up with 1.0
    assert decide(hf(version="1.0"), "1.0~rc1", NOW).action == "keep"
    assert decide(hf(version="1.0~rc1"), "1.0", NOW).action == "drop"


def test_pin_stays_until_the_base_is_newer_then_blocks() -> None:
    pin = hf(kind="pin")
    assert decide(pin, "3.0.15-1~deb12u1", NOW).action == "keep"  # same version: kept
    assert decide(pin, "3.0.11-1", NOW).action == "keep"
    assert decide(pin, None, NOW).action == "keep"
    d = decide(pin, "3.0.16-1", NOW)
    assert d.action == "block"
    assert "atoll hotfix remove openssl" in d.why and "3.0.16-1" in d.why


def test_expired_pin_is_dropped_even_when_it_would_block() -> None:
    pin = hf(kind="pin", expires=NOW - dt.timedelta(seconds=1))
    d = decide(pin, "9.9-1", NOW)
    assert d.action == "drop" and d.why.startswith("expired")
    assert decide(hf(kind="pin", expires=NOW + dt.timedelta(days=1)), None, NOW).action == "keep"
    assert decide(hf(kind="pin", expires=NOW), None, NOW).action == "drop"  # at expiry: gone


def test_plan_for_base_sorts_and_ignores_dropped_records() -> None:
    records = [hf("a1", "2.0"), hf("b1", "1.0", kind="pin"), hf("c1", "5.0", kind="pin"),
               hf("d1", "1.0", state="dropped")]
    manifest = [{"name": "a1", "version": "2.0"}, {"name": "c1", "version": "6.0"},
                {"name": "d1", "version": "0.1"}]
    p = plan_for_base(records, manifest, NOW)
    assert [h.name for h in p.keep] == ["b1"]
    assert [h.name for h, _ in p.drop] == ["a1"]
    assert [h.name for h, _ in p.block] == ["c1"]


def test_record_round_trip_and_bad_records() -> None:
    h = hf(kind="pin", expires=parse_time("2027-01-31"))
    assert Hotfix.from_json(h.to_json()) == h
    assert h.to_json()["expires"] == "2027-01-31T00:00:00Z"
    for bad, field in (({"name": "Bad Name"}, "name"), ({"version": "x y"}, "version"),
                       ({"kind": "forever"}, "kind"), ({"sha256": "00"}, "sha256"),
                       ({"expires": "soon"}, "expires")):
        with pytest.raises(ValueError, match=field):
            Hotfix.from_json(h.to_json() | bad)


versions = st.from_regex(r"(?:[0-9]:)?[0-9]{1,3}(?:\.[0-9a-z~+]{1,4}){0,2}(?:-[0-9a-z.~+]{1,4})?",
                         fullmatch=True)


@given(versions, versions, st.sampled_from(["fast-track", "pin"]))
def test_decisions_follow_debian_version_order(mine: str, base: str, kind: str) -> None:
    """A fast-track hotfix is kept exactly while the base is older; a pin is kept while
    the base is not newer and blocks otherwise; nothing is silently dropped for a pin."""
    d = decide(hf(version=mine, kind=kind), base, NOW)
    cmp = compare_versions(base, mine)
    if kind == "fast-track":
        assert d.action == ("drop" if cmp >= 0 else "keep")
    else:
        assert d.action == ("block" if cmp > 0 else "keep")


@pytest.mark.parametrize(("a", "b"), [
    ("1.0~rc1", "1.0"), ("1:0.1", "2.0"), ("1.0-1", "1.0-1+deb12u1"),
    ("3.0.11-1~deb12u2", "3.0.15-1~deb12u1"), ("1.0", "1.0")])
def test_version_order_agrees_with_dpkg(a: str, b: str) -> None:
    """The order used above is dpkg's own (dpkg --compare-versions)."""
    lt = subprocess.run(["dpkg", "--compare-versions", a, "lt", b]).returncode == 0
    eq = subprocess.run(["dpkg", "--compare-versions", a, "eq", b]).returncode == 0
    c = compare_versions(a, b)
    assert (c < 0) == lt and (c == 0) == eq


def test_relationship_names_and_essential_packages() -> None:
    from atoll.deploy.hotfix import _essential, _names

    assert _names("sed (<< 5), libc6:any | foo, bar (>= 1:2.0-1)") == ("sed", "libc6", "foo",
                                                                       "bar")
    assert _names("") == ()
    status = ("Package: sed\nEssential: yes\nStatus: install ok installed\nVersion: 4.9-1\n\n"
              "Package: less\nStatus: install ok installed\nVersion: 590-2\n\n"
              "Package: gone\nEssential: yes\nStatus: deinstall ok config-files\n")
    assert _essential(status) == {"sed"}


def test_times_past_the_datetime_range_are_value_errors() -> None:
    """A tampered hotfixes.json or an --expires at the edge of the calendar is a clear
    error (ValueError, which the callers turn into theirs), never an OverflowError."""
    for text in ("9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+01:00"):
        with pytest.raises(ValueError, match="out of range"):
            parse_time(text)
    record = hf(kind="pin").to_json() | {"expires": "9999-12-31T23:59:59-01:00"}
    with pytest.raises(ValueError, match="expires is not a time"):
        Hotfix.from_json(record)

"""Checkmk local check and Prometheus metrics for the booted commit's open CVEs."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

from atoll.monitor.facts import CveFact, parse_host_status
from atoll.monitor.localchecks import OK, UNKNOWN, WARN, host_checks
from atoll.monitor.metrics import Snapshot, families

NOW = dt.datetime(2026, 11, 29, 12, 0, tzinfo=dt.UTC)
BASE = parse_host_status({"booted": {"id": "abc.0", "commit": "abc" * 21 + "a",
                                     "version": "1"}})
COUNTS = (("unimportant", 4), ("low", 0), ("medium", 2), ("high", 1), ("not yet assigned", 1))


def cve_check(cves: CveFact | None) -> list[object]:
    return [c for c in host_checks(replace(BASE, cves=cves), NOW) if c.name == "atoll CVEs"]


def test_local_check_per_urgency_and_age() -> None:
    fact = CveFact(COUNTS, NOW - dt.timedelta(hours=3), NOW + dt.timedelta(days=4), True, 3)
    (c,) = cve_check(fact)
    assert c.state == WARN  # an open high CVE
    assert c.summary.startswith("8 open CVE(s) (1 not yet assigned, 1 high, 2 medium, "
                                "4 unimportant), 3 fixed in a newer Debian version; data 3h 0m")
    assert "cves_high=1" in c.perfdata and "cves_not_yet_assigned=1" in c.perfdata
    assert c.line().startswith('1 "atoll CVEs" cves_unimportant=4|')
    calm = replace(fact, open_counts=(("unimportant", 4), ("high", 0)))
    assert cve_check(calm)[0].state == OK
    stale = replace(calm, expires=NOW - dt.timedelta(minutes=1))
    assert cve_check(stale)[0].state == WARN and "stale" in cve_check(stale)[0].summary
    assert cve_check(CveFact())[0].state == UNKNOWN
    assert cve_check(None) == []  # facts that were not read from a host


def test_prometheus_families() -> None:
    fact = CveFact(COUNTS, NOW, NOW + dt.timedelta(days=7), True, 3)
    fams = {f.name: f for f in families(Snapshot(replace(BASE, cves=fact), None, NOW))}
    samples = {s.labels["urgency"]: s.value for s in fams["atoll_cves_open"].samples}
    assert samples == dict(COUNTS)
    assert fams["atoll_cve_report_expires_timestamp_seconds"].samples[0].value \
        == (NOW + dt.timedelta(days=7)).timestamp()

"""Checkmk local check and Prometheus metrics for the booted commit's open CVEs."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from pathlib import Path

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


def test_a_report_without_tracker_data_is_not_zero_cves() -> None:
    """A report published without --security-tracker lists no open CVE because it knows
    none: Checkmk says UNKNOWN and Prometheus has no atoll_cves_open (never 0)."""
    fact = CveFact((), NOW, NOW + dt.timedelta(days=7), True, 0, open_known=False)
    (c,) = cve_check(fact)
    assert c.state == UNKNOWN and "open CVEs unknown" in c.summary
    fams = {f.name for f in families(Snapshot(replace(BASE, cves=fact), None, NOW))}
    assert "atoll_cves_open" not in fams
    assert "atoll_cve_report_generated_timestamp_seconds" in fams


def test_cve_list_section_without_tracker_data(tmp_path: Path) -> None:
    """`atoll cve list --json`: a kept report without tracker data has open_known false and
    open/open_counts null; the text says the open CVEs are unknown, not "0 open CVEs"."""
    import json

    from atoll.cli.cve import _section
    from atoll.core import canonjson
    from atoll.security import host

    commit = "c" * 64
    doc = {"kind": "atoll-cves", "format": 1, "commit": commit, "ref": "site/db",
           "release": "bookworm", "generated": "2026-11-28T12:00:00Z",
           "expires": "2026-12-05T12:00:00Z", "tracker": None, "open": [],
           "fixes": {"since": None, "cves": [{"cve": "CVE-2026-1", "source": "openssl",
                                              "version": "3.0.22-1", "urgency": None,
                                              "from": ["changelog"]}], "missing": []}}
    host.save_report(tmp_path, commit, canonjson.dumps(doc))
    s = host.section(tmp_path, commit, NOW, fixes=True)
    assert s is not None
    assert s["open_known"] is False and s["open"] is None and s["open_counts"] is None
    assert s["summary"] == "this update fixes 1 CVE, 1 medium (1 not yet assigned, counted " \
        "as medium)"
    # --unassigned moves the unrated ones: the counts follow the operator's choice
    high = host.section(tmp_path, commit, NOW, fixes=True, unassigned="high")
    assert high is not None and high["fixes_counts"]["high"] == 1
    assert high["fixes_counts"]["not yet assigned"] == 0 and high["unassigned_as"] == "high"
    text = "\n".join(_section("booted", s, fixes=True))
    assert "open CVEs unknown" in text and "0 open" not in text
    json.dumps(s)  # the --json view


def test_a_damaged_kept_report_is_unknown_not_gone(tmp_path: Path) -> None:
    """A kept report that does not read makes the check UNKNOWN with the reason; the
    service never silently vanishes from Checkmk."""
    from atoll.monitor.facts import _cves
    from atoll.security import host

    commit = "c" * 64
    path = host.report_file(tmp_path, commit)
    path.parent.mkdir(parents=True)
    path.write_text('{"kind": "atoll-cves", "format": 1, "commit": "' + commit + '"}')
    fact = _cves(tmp_path, commit)
    assert fact is not None and fact.problem and not fact.report
    (c,) = cve_check(fact)
    assert c.state == UNKNOWN and "does not read" in c.summary
    path.write_text("{truncated")
    fact = _cves(tmp_path, commit)
    assert fact is not None and fact.problem and cve_check(fact)[0].state == UNKNOWN

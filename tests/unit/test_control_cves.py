"""CVEs across the fleet from stored check-ins (atoll.control.cves, pure) and the
``cves`` part of a check-in (docs/control-plane.md)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from pydantic import ValidationError

from atoll.control.cves import HostCves, at_least, brief, summarize
from atoll.control.protocol import CveFacts

NOW = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)


def facts(open_cves: list[tuple[str, str | None, str | None]], *, source: str = "tracker",
          expires: str = "2026-12-05T00:00:00Z", fixes: dict[str, int] | None = None,
          ) -> dict[str, Any]:
    """A stored check-in whose ``cves`` lists these (id, urgency, fixed version)."""
    counts = dict.fromkeys(("unimportant", "low", "medium", "high", "not yet assigned"), 0)
    for _, urgency, _ in open_cves:
        counts[(urgency or "not yet assigned").rstrip("*")] += 1
    doc: dict[str, Any] = {
        "source": source, "generated": "2026-11-28T12:00:00Z", "expires": expires,
        "open": counts if source == "tracker" else None,
        "open_cves": [{"cve": c, "urgency": u, "fixed_version": f} for c, u, f in open_cves]}
    if fixes is not None:
        doc["update"] = {"commit": "c" * 64, "source": "changelog", "fixes": fixes,
                         "fixes_total": sum(fixes.values())}
    CveFacts.model_validate(doc)  # what the server would have accepted
    return {"status": {}, "cves": doc}


def test_summary_counts_hosts_per_urgency_and_ranks_cves_by_hosts() -> None:
    hosts = [
        HostCves("a", "acme", facts([("CVE-1", "high", "1.1"), ("CVE-2", "low", None)])),
        HostCves("b", "acme", facts([("CVE-1", "high", None), ("CVE-3", None, None)],
                                    fixes={"high": 1})),
        HostCves("c", "beta", facts([("CVE-2", "low", None)], expires="2026-12-01T11:00:00Z")),
        HostCves("d", "beta", facts([], source="changelog")),
        HostCves("e", "beta", {"status": {}}),  # an agent that reports no CVEs
    ]
    out = summarize(hosts, NOW)
    assert (out["hosts"], out["with_data"]) == (5, 3)
    assert out["exposed"] == {"unimportant": 0, "low": 2, "medium": 0, "high": 2,
                              "not yet assigned": 1}
    assert out["distinct"] == {"unimportant": 0, "low": 1, "medium": 0, "high": 1,
                               "not yet assigned": 1}
    assert out["update_fixes"]["high"] == 1
    # most hosts first; at equal count the more urgent first, then by id
    assert [(c["cve"], c["hosts"], c["fixed"]) for c in out["top"]] == [
        ("CVE-1", 2, 1), ("CVE-2", 2, 0), ("CVE-3", 1, 0)]
    assert out["stale"] == [{"name": "c", "customer": "beta",
                             "expires": "2026-12-01T11:00:00Z", "age_seconds": 3 * 86400}]
    assert [(w["name"], w["source"]) for w in out["without_data"]] == [
        ("d", "changelog"), ("e", "unreported")]
    assert [c["cve"] for c in summarize(hosts, NOW, top=1)["top"]] == ["CVE-1"]


def test_a_cve_takes_its_highest_urgency_across_hosts() -> None:
    hosts = [HostCves("a", "x", facts([("CVE-9", None, None)])),
             HostCves("b", "x", facts([("CVE-9", "medium", None)])),
             HostCves("c", "x", facts([("CVE-9", "low**", None)]))]
    top = summarize(hosts, NOW)["top"]
    assert top == [{"cve": "CVE-9", "urgency": "medium", "hosts": 3, "fixed": 0}]


def test_an_empty_fleet_and_junk_in_old_reports() -> None:
    out = summarize([], NOW)
    assert out["hosts"] == 0 and out["top"] == [] and out["exposed"]["high"] == 0
    junk = {"cves": {"source": "tracker", "open": {"high": 1}, "open_cves": [1, {"x": 2}],
                     "expires": "not a time"}}
    out = summarize([HostCves("a", "x", junk)], NOW)
    assert out["exposed"]["high"] == 1 and out["top"] == [] and out["stale"] == []


def test_brief_and_the_at_least_filter() -> None:
    report = facts([("CVE-1", "medium", None)], expires="2026-12-01T12:00:00Z")
    b = brief(report, NOW)
    assert b["source"] == "tracker" and b["open"]["medium"] == 1 and b["stale"] is True
    assert b["age_seconds"] == 3 * 86400 and b["update"] is None
    assert at_least(report, "low") and at_least(report, "medium")
    assert not at_least(report, "high")
    assert not at_least(facts([("CVE-1", None, None)]), "unimportant")  # unrated
    assert not at_least({"status": {}}, "unimportant")
    assert brief(None, NOW)["source"] == "unreported"


def test_checkin_cves_are_bounded_and_typed() -> None:
    with pytest.raises(ValidationError):
        CveFacts.model_validate({"source": "tracker", "open": {"critical": 1}})
    with pytest.raises(ValidationError):
        CveFacts.model_validate({"source": "tracker", "open": {"high": -1}})
    with pytest.raises(ValidationError):
        CveFacts.model_validate({"source": "elsewhere"})
    with pytest.raises(ValidationError):
        CveFacts.model_validate({"source": "tracker", "open_cves": [
            {"cve": f"CVE-2026-{i}"} for i in range(5001)]})


def test_a_checkin_too_large_drops_the_least_urgent_ids_first() -> None:
    from atoll.agent.control import fit_checkin

    ids = [{"cve": f"CVE-2026-{i:05}", "urgency": "high" if i < 10 else "unimportant"}
           for i in range(4000)]
    doc = {"host_id": "h", "cves": {"source": "tracker", "open": {"high": 10},
                                    "open_cves": list(ids)}}
    assert fit_checkin(dict(doc), 10**7) == fit_checkin(dict(doc), 10**7)  # fits: as is
    body = fit_checkin(doc, 20_000)
    assert len(body) <= 20_000 and doc["cves"]["open_cves_truncated"] is True
    kept = doc["cves"]["open_cves"]
    assert kept == ids[:len(kept)] and len(kept) >= 10  # the most urgent stay
    assert doc["cves"]["open"] == {"high": 10}

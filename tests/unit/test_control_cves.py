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


@pytest.mark.parametrize("cve", [
    "<script>alert(1)</script>", "CVE-2026-1\x1b[2J", "CVE-2026-1\n", "CVE 2026 1",
    "CVE-\u0662\u0660\u0662\u0666-\u0661", "C" * 41, "", "-CVE-2026-1"])
def test_a_cve_id_not_of_a_tracker_ids_shape_is_refused(cve: str) -> None:
    """No markup, control character, whitespace or other script reaches a page or a
    terminal through a host's CVE ids; real ids (and TEMP ones) pass."""
    with pytest.raises(ValidationError):
        CveFacts.model_validate({"source": "tracker", "open_cves": [{"cve": cve}]})
    for good in ("CVE-2023-44487", "TEMP-0000000-A1B2C3", "CVE-2026-1"):
        CveFacts.model_validate({"source": "tracker", "open_cves": [{"cve": good}]})


def test_absurd_counts_and_odd_timestamps() -> None:
    from atoll.control.protocol import MAX_CVE_COUNT

    CveFacts.model_validate({"source": "tracker", "open": {"high": 10**9 // 100}})
    for bad in ({"open": {"high": MAX_CVE_COUNT + 1}},
                {"update": {"source": "tracker", "fixes_total": 10**24}}):
        with pytest.raises(ValidationError):
            CveFacts.model_validate({"source": "tracker", **bad})
    # a stored id of another shape (from before the check) is not listed
    report = facts([("CVE-2026-1", "high", None)])
    report["cves"]["open_cves"].append({"cve": "<b>x</b>", "urgency": "high"})
    assert [t["cve"] for t in summarize([HostCves("a", "c", report)], NOW)["top"]] == [
        "CVE-2026-1"]
    # other scripts' digits, a missing zero, a leap second: no time (not stale, no age)
    for odd in ("\u0662\u0660\u0662\u0666-12-05T00:00:00Z", "2026-1-5T00:00:00Z",
                "2026-12-31T23:59:60Z",
                "2026-13-01T00:00:00Z", "9999-99-99"):
        got = brief({"cves": {"source": "tracker", "generated": odd, "expires": odd}}, NOW)
        assert (got["stale"], got["age_seconds"]) == (None, None), odd


def test_the_agent_leaves_out_ids_the_control_plane_would_refuse() -> None:
    """One odd key in the tracker's data must not get the host's check-ins refused."""
    from atoll.security.host import _sendable

    def entry(cve: str, fixed: str | None = None) -> dict[str, Any]:
        return {"cve": cve, "urgency": "high", "source": "x", "fixed_version": fixed}

    ok = [entry("CVE-2023-44487"), entry("TEMP-0000000-A1B2C3", "1.0")]
    bad = [entry("CVE-2023-1 <b>"), entry("C" * 41), entry("CVE-2023-2", "1" * 201)]
    assert [_sendable(c) for c in ok + bad] == [True, True, False, False, False]
    for c in ok:
        CveFacts.model_validate({"source": "tracker", "open_cves": [c]})
    for c in bad:
        with pytest.raises(ValidationError):
            CveFacts.model_validate({"source": "tracker", "open_cves": [c]})


def test_fleet_host_escapes_what_the_host_wrote() -> None:
    from atoll.cli.fleet import _cve_lines

    got = brief({"cves": {"source": "tracker", "open": {"high": 1},
                          "expires": "\x1b]0;owned\x07soon"}}, NOW)
    text = "\n".join(_cve_lines(got))
    assert "\x1b" not in text and "\x07" not in text and "\\x1b]0;owned" in text

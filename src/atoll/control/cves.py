"""CVEs across the fleet, from the check-ins the control plane keeps (pure; the
``cves`` part of a check-in, atoll.control.protocol.CveFacts, docs/control-plane.md).

Nothing here asks a host or the tracker: each host's last report says what its
booted deployment's signed CVE report said when it checked in. Data is stale
when its ``expires`` has passed by the server's clock (the host's own ``stale``
flag is as of its check-in).

``brief(report, now)``, per host (``atoll fleet hosts --json``)::

    {"source": "tracker"|"changelog"|"none"|"unreported", "open": {urgency: n} | null,
     "stale": bool | null, "expires", "age_seconds",
     "update": {"commit", "source", "fixes": {urgency: n} | null, "fixes_total"} | null}

``summarize(hosts, now)``, fleet-wide (``atoll fleet cves``)::

    {"hosts": n, "with_data": n (source tracker),
     "exposed": {urgency: hosts with at least one open CVE of it},
     "distinct": {urgency: distinct open CVE ids},
     "update_fixes": {urgency: hosts whose update fixes at least one of it},
     "top": [{"cve", "urgency", "hosts", "fixed": hosts where a fix exists}],
     "stale": [{"name", "customer", "expires", "age_seconds"}],
     "without_data": [{"name", "customer", "source"}],
     "truncated": [host names whose id list the agent cut short]}
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from atoll.control.protocol import CVE_ID
from atoll.security.urgency import ORDER, UNASSIGNED, normalize

__all__ = ["WORDS", "HostCves", "at_least", "brief", "summarize"]

WORDS = (*ORDER, UNASSIGNED)


@dataclass(frozen=True)
class HostCves:
    name: str
    customer: str
    report: Mapping[str, Any] | None  # the host's stored check-in (``cves`` read from it)


def _facts(report: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    cves = (report or {}).get("cves")
    return cves if isinstance(cves, Mapping) else None


_TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z")  # ASCII only
_ID = re.compile(CVE_ID)


def _time(text: Any) -> dt.datetime | None:
    """``YYYY-MM-DDTHH:MM:SSZ`` as a UTC datetime; None for anything else (strptime alone
    takes other digits than ASCII ones and a missing leading zero)."""
    if not isinstance(text, str) or _TIME.fullmatch(text) is None:
        return None
    try:
        return dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)
    except ValueError:
        return None


def _age(facts: Mapping[str, Any], now: dt.datetime) -> int | None:
    generated = _time(facts.get("generated"))
    return None if generated is None else int((now - generated).total_seconds())


def _stale(facts: Mapping[str, Any], now: dt.datetime) -> bool | None:
    expires = _time(facts.get("expires"))
    return None if expires is None else now >= expires


def _counts(value: Any) -> dict[str, int] | None:
    if not isinstance(value, Mapping):
        return None
    return {u: int(value.get(u) or 0) for u in WORDS}


def brief(report: Mapping[str, Any] | None, now: dt.datetime) -> dict[str, Any]:
    """One host's CVE facts without the id list (shape: module docstring)."""
    facts = _facts(report)
    if facts is None:
        return {"source": "unreported", "open": None, "stale": None, "expires": None,
                "age_seconds": None, "update": None}
    upd = facts.get("update")
    return {"source": facts.get("source", "none"), "open": _counts(facts.get("open")),
            "stale": _stale(facts, now), "expires": facts.get("expires"),
            "age_seconds": _age(facts, now),
            "update": None if not isinstance(upd, Mapping) else {
                "commit": upd.get("commit"), "source": upd.get("source"),
                "fixes": _counts(upd.get("fixes")), "fixes_total": upd.get("fixes_total")}}


def at_least(report: Mapping[str, Any] | None, urgency: str) -> bool:
    """Whether the host has an open CVE at ``urgency`` (one of ORDER) or above; ``not yet
    assigned`` ones do not count (no urgency to compare), nor hosts without data."""
    opened = _counts((_facts(report) or {}).get("open"))
    if opened is None:
        return False
    return any(opened[u] for u in ORDER[ORDER.index(urgency):])


def _word(urgency: Any) -> str:
    w = normalize(str(urgency or ""))
    return "unimportant" if w == "end-of-life" else w if w in ORDER else UNASSIGNED


def summarize(hosts: Iterable[HostCves], now: dt.datetime, *, top: int = 20) -> dict[str, Any]:
    """The fleet-wide view (shape: module docstring); ``top``: how many CVEs to list,
    most hosts first (then highest urgency, then id)."""
    exposed = dict.fromkeys(WORDS, 0)
    fixes = dict.fromkeys(WORDS, 0)
    by_cve: dict[str, dict[str, Any]] = {}
    stale: list[dict[str, Any]] = []
    without: list[dict[str, Any]] = []
    truncated: list[str] = []
    n = with_data = 0
    for h in hosts:
        n += 1
        facts = _facts(h.report)
        source = "unreported" if facts is None else str(facts.get("source", "none"))
        if facts is not None and _stale(facts, now):
            stale.append({"name": h.name, "customer": h.customer,
                          "expires": facts.get("expires"), "age_seconds": _age(facts, now)})
        upd = facts.get("update") if facts is not None else None
        upd_fixes = _counts(upd.get("fixes")) if isinstance(upd, Mapping) else None
        for u in WORDS:
            if upd_fixes and upd_fixes[u]:
                fixes[u] += 1
        opened = _counts(facts.get("open")) if facts is not None else None
        if source != "tracker" or opened is None:
            without.append({"name": h.name, "customer": h.customer, "source": source})
            continue
        with_data += 1
        for u in WORDS:
            if opened[u]:
                exposed[u] += 1
        if facts is not None and facts.get("open_cves_truncated"):
            truncated.append(h.name)
        for c in (facts or {}).get("open_cves") or []:
            if not isinstance(c, Mapping) or not isinstance(c.get("cve"), str) \
                    or _ID.fullmatch(c["cve"]) is None:  # a report stored before the check
                continue
            entry = by_cve.setdefault(c["cve"], {"cve": c["cve"], "urgency": _word(
                c.get("urgency")), "hosts": 0, "fixed": 0})
            entry["hosts"] += 1
            entry["fixed"] += 1 if c.get("fixed_version") else 0
            w = _word(c.get("urgency"))
            if entry["urgency"] == UNASSIGNED or (
                    w != UNASSIGNED and ORDER.index(w) > ORDER.index(entry["urgency"])):
                entry["urgency"] = w
    distinct = dict.fromkeys(WORDS, 0)
    for e in by_cve.values():
        distinct[e["urgency"]] += 1

    def order(e: dict[str, Any]) -> tuple[int, int, str]:
        w = e["urgency"]
        return (-e["hosts"], -(ORDER.index(w) if w in ORDER else -1), e["cve"])

    return {"hosts": n, "with_data": with_data, "exposed": exposed, "distinct": distinct,
            "update_fixes": fixes, "top": sorted(by_cve.values(), key=order)[:top],
            "stale": sorted(stale, key=lambda s: (s["customer"], s["name"])),
            "without_data": sorted(without, key=lambda s: (s["customer"], s["name"])),
            "truncated": sorted(truncated)}

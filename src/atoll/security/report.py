"""The CVE report published beside an image (pure; host side).

One signed TUF target per published commit, ``cves/<commit>.json`` (canonical
JSON; its path is in the channel pointer's ``custom.atoll.cves``)::

    {"kind": "atoll-cves", "format": 1,
     "commit": str, "ref": str, "release": "bookworm" ("": the commit records no suite),
     "generated": ISO 8601 UTC,       # when atoll computed it
     "expires": ISO 8601 UTC,         # after this the data is stale (hosts say so)
     "tracker": {"name", "sha256", "size", "taken"} | null,   # the tracker file used
     "advisory_lists": [{"name", "sha256", "size", "advisories"}] | null,  # DSA/DLA lists
     "open": [{"cve", "source", "source_version", "packages", "status", "urgency",
               "fixed_version", "scope", "description", "from": ["tracker"],
               "advisories": ["DSA-5558-1", ...]}],   # only with advisory lists
     "fixes": {"since": commit | null,        # the previously published image
               "cves": [{"cve", "source", "version", "urgency", "from":
                         ["changelog"] | ["tracker"] | ["changelog", "tracker"],
                         "advisories": [...]}],
               "missing": [sources whose changelog was not found]}}

``from`` says where each fact came from: ``tracker`` (the Debian security
tracker's data the publisher was given) or ``changelog`` (the Debian changelog
in the new package's ``.deb``). docs/security.md has the rules.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from atoll.core.errors import RepositoryError
from atoll.security.urgency import ORDER, UNASSIGNED, normalize, rank
from atoll.store.packages import compare_versions

__all__ = ["FORMAT", "KIND", "WORDS", "age_seconds", "check_report", "counts", "fixes_summary",
           "is_stale", "open_for_manifest", "qualifies", "report_path", "unassigned_note",
           "unknown_sources"]

KIND = "atoll-cves"
FORMAT = 1


def report_path(commit: str) -> str:
    """The target path of a commit's CVE report."""
    return f"cves/{commit}.json"


def _time(text: Any, what: str) -> datetime:
    try:
        return datetime.strptime(str(text), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError as exc:
        raise RepositoryError(f"CVE report: {what}: not an ISO 8601 UTC time: {text!r}") from exc


def check_report(raw: Any, commit: str | None = None) -> dict[str, Any]:
    """``raw`` if it has the report's shape (and is ``commit``'s, when given).

    Raises:
        RepositoryError: a wrong kind, format, commit, time or list (the report is
            signed: a bad one is the repository's fault, not the host's).
    """
    if not isinstance(raw, dict) or raw.get("kind") != KIND:
        raise RepositoryError("not an atoll CVE report")
    if raw.get("format") != FORMAT:
        raise RepositoryError(f"CVE report format {raw.get('format')!r} is not {FORMAT}",
                              resolution="update atoll on this host")
    if commit is not None and raw.get("commit") != commit:
        raise RepositoryError(f"CVE report is for commit {str(raw.get('commit'))[:12]}, "
                              f"not {commit[:12]}")
    _time(raw.get("generated"), "generated")
    _time(raw.get("expires"), "expires")
    fixes = raw.get("fixes")
    if not isinstance(raw.get("open"), list) or not isinstance(fixes, dict) \
            or not isinstance(fixes.get("cves"), list):
        raise RepositoryError("CVE report: open and fixes.cves must be lists")
    for key in ("commit", "ref", "release"):
        _typed(raw.get(key), str, key)
    tracker = raw.get("tracker")
    if tracker is not None and not isinstance(tracker, dict):
        raise RepositoryError(f"CVE report: tracker: expected an object or null, got "
                              f"{type(tracker).__name__}")
    _typed(fixes.get("since"), str | None, "fixes.since")
    missing = fixes.get("missing", [])
    if not isinstance(missing, list) or not all(isinstance(m, str) for m in missing):
        raise RepositoryError("CVE report: fixes.missing must be a list of strings")
    for where, items, fields in (("open", raw["open"], _OPEN), ("fixes.cves", fixes["cves"], _FIX)):
        for i, item in enumerate(items):
            if not isinstance(item, dict) or not isinstance(item.get("cve"), str):
                raise RepositoryError(f"CVE report: {where}[{i}]: an entry without a CVE id")
            for key, kind in fields:
                _typed(item.get(key), kind, f"{where}[{i}].{key} ({item['cve']})")
            sources = item.get("from", [])
            if not isinstance(sources, list) or not all(isinstance(f, str) for f in sources):
                raise RepositoryError(f"CVE report: {where}[{i}].from ({item['cve']}): "
                                      "expected a list of strings")
            for key in ("packages", "advisories"):
                names = item.get(key, [])
                if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                    raise RepositoryError(f"CVE report: {where}[{i}].{key} ({item['cve']}): "
                                          "expected a list of strings")
    return raw


# the fields hosts read from each entry, and their types (None: may be absent or null)
_OPEN = (("source", str), ("source_version", str), ("status", str), ("urgency", str | None),
         ("fixed_version", str | None), ("scope", str | None), ("description", str | None))
_FIX = (("source", str), ("version", str | None), ("urgency", str | None))


def _typed(value: Any, kind: Any, where: str) -> None:
    if not isinstance(value, kind):
        raise RepositoryError(f"CVE report: {where}: unexpected {type(value).__name__} "
                              f"{str(value)[:40]!r}",
                              resolution="the repository published a malformed report: "
                              "tell its publisher (`atoll publish` writes well-formed ones)")


def age_seconds(report: Mapping[str, Any], now: datetime) -> int:
    """Seconds since the report was generated."""
    return int((now - _time(report["generated"], "generated")).total_seconds())


def is_stale(report: Mapping[str, Any], now: datetime) -> bool:
    """True once the report's ``expires`` has passed."""
    return now >= _time(report["expires"], "expires")


WORDS = (*ORDER, UNASSIGNED)  # the buckets of counts(), lowest first


def _word(c: Mapping[str, Any]) -> str:
    w = normalize(str(c.get("urgency") or ""))
    return "unimportant" if w == "end-of-life" else w if w in ORDER else UNASSIGNED


def counts(cves: list[Mapping[str, Any]], *, unassigned: str | None = None) -> dict[str, int]:
    """How many CVEs of each urgency (:data:`WORDS`: the tracker's order, then ``not yet
    assigned`` for a CVE the tracker has not rated or the report has no urgency for),
    each CVE id once (its highest urgency). ``unassigned`` (an urgency of :data:`ORDER`):
    count those in that urgency instead, as the ``security-only`` policy does (the
    ``not yet assigned`` bucket is then 0)."""
    best: dict[str, str] = {}
    for c in cves:
        w, had = _word(c), best.get(c["cve"])
        if w == UNASSIGNED and unassigned is not None:
            w = unassigned
        rated = w != UNASSIGNED
        if had is None or (rated and (had == UNASSIGNED or ORDER.index(w) > ORDER.index(had))):
            best[c["cve"]] = w
    tally = Counter(best.values())
    return {u: tally.get(u, 0) for u in WORDS}


def fixes_summary(report: Mapping[str, Any], *, unassigned: str | None = None) -> str:
    """"this update fixes 7 CVEs, 2 high" (urgencies present, highest first; with
    ``unassigned``, unrated CVEs are counted in that urgency and the count says so:
    "…, 3 medium (1 not yet assigned, counted as medium)")."""
    cves = report["fixes"]["cves"]
    by = counts(cves, unassigned=unassigned)
    total = sum(by.values())
    parts = [f"{by[u]} {u}" for u in (*reversed(ORDER), UNASSIGNED) if by[u]]
    noun = "CVE" if total == 1 else "CVEs"
    text = f"this update fixes {total} {noun}" + (f", {', '.join(parts)}" if parts else "")
    if unassigned is not None:
        text += unassigned_note(cves, unassigned)
    return text


def unassigned_note(cves: list[Mapping[str, Any]], unassigned: str) -> str:
    """" (2 not yet assigned, counted as medium)", or "" when every CVE is rated."""
    n = counts(cves)[UNASSIGNED]
    return f" ({n} not yet assigned, counted as {unassigned})" if n else ""


def qualifies(booted: Mapping[str, Any] | None, update: Mapping[str, Any], threshold: str,
              *, unassigned: str = "medium") -> list[str]:
    """The CVEs at or above ``threshold`` that the update fixes (empty: it does not
    qualify under the ``security-only`` policy).

    Fixed: named in the update's ``fixes``, or open in the booted image's report and
    no longer open in the update's, when the update's report was computed from the same
    tracker file or a newer one (``booted`` None, or the update's report without tracker
    data or from an older file: ``fixes`` only; a CVE is never "fixed" by missing data).
    """
    need = rank(threshold, unassigned=unassigned)
    still_open = {c["cve"] for c in update["open"]}
    fixed = list(update["fixes"]["cves"])
    if booted is not None and _knows_as_much(update, booted):
        fixed += [c for c in booted["open"] if c["cve"] not in still_open]
    return sorted({c["cve"] for c in fixed
                   if c["cve"] not in still_open
                   and rank(c.get("urgency"), unassigned=unassigned) >= need})


def _knows_as_much(update: Mapping[str, Any], booted: Mapping[str, Any]) -> bool:
    """Whether the update's ``open`` list can say a CVE open in the booted image is gone:
    it was computed from the same tracker file as the booted report's, or a newer one.
    A report without tracker data lists no open CVE because it knows none, and one from
    an older file does not know CVEs published since: neither fixes anything by omission.
    """
    u, b = update.get("tracker"), booted.get("tracker")
    if not isinstance(u, dict) or not isinstance(b, dict):
        return False
    return bool(u.get("sha256") and u.get("sha256") == b.get("sha256")) \
        or str(u.get("taken") or "") >= str(b.get("taken") or "~")


def open_for_manifest(report: Mapping[str, Any], manifest: list[Mapping[str, str]]
                      ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The report's open CVEs re-read against another manifest of the same image (a
    hotfix derivation of the report's commit): ``(open, closed)``.

    The tracker's data in the report is per source package version: an open entry with
    a ``fixed_version`` is closed when every binary package of its source in
    ``manifest`` comes from that version or a newer one (``dpkg --compare-versions``
    order), or when none of them is installed any more. An entry whose source version
    changed but is still older than the fix stays open with the new
    ``source_version``; an entry without a fix (``fixed_version`` null) stays open.
    CVEs of a source the report's commit did not hold are not known (the report was
    computed for that commit's sources only): :func:`unknown_sources` names them. An
    empty ``manifest`` is a commit whose manifest was lost, not one without packages:
    nothing is closed then (every open entry is returned as it is).

    Returns:
        ``open``: the report's ``open`` entries still open (copies; ``source_version``
        as in ``manifest``); ``closed``: ``{"cve", "source", "version" (the manifest's
        source version, null: no longer installed), "fixed_version", "urgency",
        "from": ["tracker"]}``, sorted by CVE then source.
    """
    if not manifest:
        return [dict(c) for c in report["open"]], []
    versions = _source_versions(manifest)
    still: list[dict[str, Any]] = []
    closed: list[dict[str, Any]] = []
    for c in report["open"]:
        now = versions.get(c["source"], set())
        fix = c.get("fixed_version")
        if now == {c.get("source_version")}:
            still.append(dict(c))
            continue
        if not now or (fix and all(compare_versions(v, fix) >= 0 for v in now)):
            closed.append({"cve": c["cve"], "source": c["source"],
                           "version": max(now, key=_VersionKey) if now else None,
                           "fixed_version": fix, "urgency": c.get("urgency"),
                           "from": ["tracker"]})
            continue
        still.append(dict(c) | {"source_version": min(now, key=_VersionKey)})
    closed.sort(key=lambda c: (c["cve"], c["source"]))
    return still, closed


def _source_versions(manifest: list[Mapping[str, str]]) -> dict[str, set[str]]:
    """Each source package's versions in ``manifest`` (binary name and version when the
    entry names no source)."""
    versions: dict[str, set[str]] = {}
    for p in manifest:
        src = p.get("source") or p["name"]
        versions.setdefault(src, set()).add(p.get("source_version") or p["version"])
    return versions


def unknown_sources(base_manifest: list[Mapping[str, str]],
                    manifest: list[Mapping[str, str]]) -> list[dict[str, Any]]:
    """The source packages of ``manifest`` (a hotfix derivation of the base) whose CVEs
    the base's report cannot know: a source the base does not hold (its report was
    computed for the base's sources only) and one at a version *older* than the base's
    (CVEs fixed between the two are resolved for the base, so not in its report).

    Returns:
        ``[{"source", "version" (the oldest in ``manifest``), "base_version" (the
        oldest in the base, null: not in the base)}]``, sorted by source; [] when
        ``base_manifest`` is empty (the base's manifest is not known: nothing to say).
    """
    if not base_manifest:
        return []
    base, now = _source_versions(base_manifest), _source_versions(manifest)
    out = []
    for src in sorted(now):
        oldest = min(now[src], key=_VersionKey)
        had = min(base[src], key=_VersionKey) if src in base else None
        if had is None or compare_versions(oldest, had) < 0:
            out.append({"source": src, "version": oldest, "base_version": had})
    return out


class _VersionKey:
    """A sort key in Debian version order."""

    def __init__(self, version: str) -> None:
        self.version = version

    def __lt__(self, other: _VersionKey) -> bool:
        return compare_versions(self.version, other.version) < 0

"""Computing CVE facts on the publishing side: at compose (changelogs) and at
publish (the tracker's data, the report target); python-debian through
``tracker`` and ``changelog``.

On disk, beside the store: the changelog facts of each composed commit (the
``.deb`` files they were read from may be trimmed later; a few KB each, which
``store gc`` does not remove yet)::

    REPO/cves/<commit>.changelog.json   {"commit", "parent", "changelog": {"cves",
                                         "sources", "missing"}}  (changelog_fixes)
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from atoll.core import canonjson
from atoll.core.errors import AtollError, InputError
from atoll.core.fsutil import atomic_write, read_state_json
from atoll.security.advisories import AdvisoryIndex, attach
from atoll.security.changelog import DebLookup, changelog_fixes
from atoll.security.report import FORMAT, KIND
from atoll.security.tracker import TrackerData, open_cves
from atoll.store.repo import Repo

__all__ = ["DEFAULT_VALID_FOR", "MAX_CHAIN", "build_report", "cve_target", "make_report",
           "record_changelog_fixes"]

log = logging.getLogger("atoll.security")

DEFAULT_VALID_FOR = timedelta(days=7)
MAX_CHAIN = 50  # commits walked back from a published commit to the previous one


def _record(repo: Repo, commit: str) -> Path:
    return repo.path / "cves" / f"{commit}.changelog.json"


def record_changelog_fixes(repo: Repo, old: str | None, new: str, lookup: DebLookup) -> None:
    """Write the CVEs ``new`` fixes over ``old`` by the changelogs (see module docstring).

    Nothing is written for a first commit (``old`` None or not in the store), nor when
    the changelogs cannot be compared (logged: the commit is made; its report then lists
    the commit under ``fixes.missing``).
    """
    if old is None or not repo.has(old, "commit"):
        return
    try:
        fixes = changelog_fixes(repo.read_commit(old).manifest,
                                repo.read_commit(new).manifest, lookup)
    except AtollError as exc:
        log.warning("compose: no changelog CVEs for %s: %s", new[:12], exc)
        return
    path = _record(repo, new)
    path.parent.mkdir(mode=0o755, exist_ok=True)
    atomic_write(path, canonjson.dumps({"commit": new, "parent": old, "changelog": fixes}))
    log.info("compose: %d CVEs fixed by changelogs of %d upgraded sources (%d without one)",
             len({c["cve"] for c in fixes["cves"]}), len(fixes["sources"]),
             len(fixes["missing"]))


def _changelog_since(repo: Repo, commit: str, since: str) -> tuple[list[dict[str, Any]],
                                                                   list[str]]:
    """The changelog CVEs of every commit from ``since`` (excluded) to ``commit``; none
    when ``since`` is not an ancestor (another lineage: the chain's CVEs would be
    relative to something else), with the reason under ``missing``."""
    cves: list[dict[str, Any]] = []
    missing: list[str] = []
    cur: str | None = commit
    for _ in range(MAX_CHAIN):
        if cur == since:
            return cves, missing
        if cur is None:  # since is not an ancestor: what was fixed since it is unknown
            return [], [f"commit {since[:12]} is not an ancestor of {commit[:12]}: the "
                        "changelogs cannot say what changed since it"]
        rec = read_state_json(_record(repo, cur), dict, default=None,
                              resolution="remove it: the report then lists that commit "
                                         "under fixes.missing")
        if rec is None:
            missing.append(f"commit {cur[:12]}: no changelog record (composed without a "
                           "package cache?)")
        else:
            cves += rec["changelog"]["cves"]
            missing += rec["changelog"]["missing"]
        cur = rec["parent"] if rec is not None else (
            repo.read_commit(cur).parent if repo.has(cur, "commit") else None)
    missing.append(f"more than {MAX_CHAIN} commits since {since[:12]}")
    return cves, missing


def build_report(repo: Repo, commit: str, ref: str, *, since: str | None,
                 tracker: TrackerData | None, now: datetime,
                 valid_for: timedelta = DEFAULT_VALID_FOR,
                 advisories: AdvisoryIndex | None = None) -> dict[str, Any]:
    """The CVE report of ``commit`` from the publisher's store (shape:
    :mod:`atoll.security.report`).

    Args:
        since: the commit published before on this channel (None: the first).
        tracker: the tracker's data (None: no open CVEs are known, only changelog fixes).
        advisories: DSA/DLA lists: each CVE gets the ``advisories`` that fix it.
        now: the time the report is generated (UTC).

    Raises:
        InputError: the tracker's entries for one of the image's sources are malformed, or
            a tracker is given for a commit that records no suite (``atoll store commit``).
    """
    cobj = repo.read_commit(commit)
    changelog: list[dict[str, Any]] = []
    missing: list[str] = []
    prev = None
    if since is not None:
        changelog, missing = _changelog_since(repo, commit, since)
        if repo.has(since, "commit"):
            prev = list(repo.read_commit(since).manifest)
    suite = cobj.metadata.get("suite")
    if tracker is not None and not isinstance(suite, str):
        raise InputError(f"commit {commit[:12]} records no Debian suite: which release's "
                         "CVEs apply is unknown",
                         resolution="publish it without --security-tracker (its report then "
                         "has the changelogs' fixes only), or compose it with atoll")
    release = suite.split("-")[0] if isinstance(suite, str) else ""
    return make_report(commit, ref, release, list(cobj.manifest), since=since,
                       since_manifest=prev, changelog=changelog, missing=missing,
                       tracker=tracker, now=now, valid_for=valid_for, advisories=advisories)


def make_report(commit: str, ref: str, release: str, manifest: list[dict[str, str]], *,
                since: str | None, since_manifest: list[dict[str, str]] | None,
                changelog: list[dict[str, Any]], missing: list[str],
                tracker: TrackerData | None, now: datetime,
                valid_for: timedelta = DEFAULT_VALID_FOR,
                advisories: AdvisoryIndex | None = None) -> dict[str, Any]:
    """The report from its inputs (pure but for python-debian's version order).

    Args:
        changelog: ``{"cve", "source", "version"}`` named by the changelogs since ``since``.
        advisories: DSA/DLA lists (None: no entry gets ``advisories``, and the report's
            ``advisory_lists`` is null).
        since_manifest: the manifest of ``since`` (None: unknown; the tracker's view
            of what the update fixes is then left out).

    Raises:
        InputError: the tracker's entries for one of the image's sources are malformed.
    """
    open_now = open_cves(manifest, tracker, release) if tracker else []
    fixed: dict[tuple[str, str], dict[str, Any]] = {}
    for c in changelog:
        fixed[(c["cve"], c["source"])] = {"cve": c["cve"], "source": c["source"],
                                          "version": c["version"], "urgency": None,
                                          "from": ["changelog"]}
    if tracker is not None and since_manifest is not None:
        still = {c["cve"] for c in open_now}
        for c in open_cves(since_manifest, tracker, release):
            if c["cve"] in still:
                continue
            got = fixed.setdefault((c["cve"], c["source"]), {
                "cve": c["cve"], "source": c["source"], "version": c["fixed_version"],
                "urgency": None, "from": []})
            got["urgency"] = c["urgency"]
            got["from"] = sorted({*got["from"], "tracker"})
    if tracker is not None:
        for f in fixed.values():
            if f["urgency"] is None:
                urg = _urgency(tracker, f["source"], release, f["cve"])
                if urg is not None:
                    f["urgency"] = urg
                    f["from"] = sorted({*f["from"], "tracker"})
    tinfo = None if tracker is None else {"name": Path(tracker.name).name,
                                          "sha256": tracker.sha256, "size": tracker.size,
                                          "taken": tracker.taken}
    fixes = sorted(fixed.values(), key=lambda f: (f["cve"], f["source"]))
    if advisories is not None:
        attach(open_now, advisories, release)
        attach(fixes, advisories, release)
    stamp = "%Y-%m-%dT%H:%M:%SZ"
    return {"kind": KIND, "format": FORMAT, "commit": commit, "ref": ref, "release": release,
            "generated": now.astimezone(UTC).strftime(stamp),
            "expires": (now + valid_for).astimezone(UTC).strftime(stamp),
            "tracker": tinfo,
            "advisory_lists": None if advisories is None else advisories.info(),
            "open": open_now,
            "fixes": {"since": since, "cves": fixes, "missing": missing}}


def _urgency(tracker: TrackerData, source: str, release: str, cve: str) -> str | None:
    for e in tracker.entries(source, release):
        if e.cve == cve:
            return e.urgency
    return None


def cve_target(repo: Repo, commit: str, ref: str, *, since: str | None,
               tracker: TrackerData | None, work: Path,
               valid_for: timedelta = DEFAULT_VALID_FOR,
               advisories: AdvisoryIndex | None = None) -> tuple[str, Path, dict[str, Any]]:
    """The CVE report of ``commit`` as a target to publish: ``(path, file, custom)``
    (what :func:`atoll.repo.publish.publish` adds beside the pack and the manifest).

    Raises:
        InputError: the tracker's entries for one of the image's sources are malformed.
    """
    from atoll.security.report import report_path

    doc = build_report(repo, commit, ref, since=since, tracker=tracker,
                       now=datetime.now(UTC).replace(microsecond=0), valid_for=valid_for,
                       advisories=advisories)
    (work / "cves").write_bytes(canonjson.dumps(doc))
    return report_path(commit), work / "cves", {"atoll": {
        "kind": "cves", "commit": commit, "generated": doc["generated"],
        "expires": doc["expires"]}}

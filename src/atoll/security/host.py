"""CVE reports on a host: kept as downloaded, shown per deployment and update.

``atoll update check`` downloads the signed CVE report of the update it finds
(and of the booted commit, while the repository still signs it) beside the other
state::

    /atoll/state/cves/<commit>.json   the report as verified through TUF
                                      (shape: atoll.security.report)

Nothing here talks to the network or the tracker: hosts never need the tracker.
"""

from __future__ import annotations

import logging
import re
from datetime import datetime
from pathlib import Path
from typing import Any

from atoll.core import canonjson
from atoll.core.errors import AtollError, RepositoryError
from atoll.core.fsutil import atomic_write, read_state_json
from atoll.repo.remotes import state_dir
from atoll.security import report as rpt

__all__ = ["MAX_OPEN_CVES", "checkin_facts", "cve_view", "load_report", "policy_booted",
           "report_file", "save_report", "section", "update_data_note", "update_fixes"]

log = logging.getLogger("atoll.security")

_FIX = "run `atoll update check`: it downloads the signed CVE report again"
_COMMIT = re.compile(r"[0-9a-f]{64}")


def report_file(sysroot: Path, commit: str) -> Path:
    return state_dir(sysroot) / "cves" / f"{commit}.json"


def save_report(sysroot: Path, commit: str, data: bytes) -> dict[str, Any]:
    """Keep a verified report (bytes of the TUF target) for ``commit``.

    Raises:
        RepositoryError: not a CVE report of ``commit`` (a signed target of the wrong
            shape: nothing is written).
    """
    try:
        raw = canonjson.loads(data)
    except ValueError as exc:
        raise RepositoryError(f"CVE report of {commit[:12]}: not JSON") from exc
    doc = rpt.check_report(raw, commit)
    path = report_file(sysroot, commit)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, data)
    return doc


def load_report(sysroot: Path, commit: str) -> dict[str, Any] | None:
    """The kept report of ``commit``, or None.

    Raises:
        DamagedStateError: the file does not read; RepositoryError: not a report of it.
    """
    raw = read_state_json(report_file(sysroot, commit), dict, default=None, resolution=_FIX)
    return None if raw is None else rpt.check_report(raw, commit)


def section(sysroot: Path, commit: str | None, now: datetime, *, unassigned: str = "medium",
            fixes: bool = False) -> dict[str, Any] | None:
    """What one commit's report says, for ``cve list`` (None: no commit).

    Returns:
        ``{"commit", "report": bool, "generated", "expires", "age_seconds", "stale",
        "tracker", "open_known": bool, "open": [...], "open_counts": {urgency: n},
        "open_note", "unassigned_as", "derived"}`` plus, with ``fixes``, ``"fixes": [...],
        "fixes_counts", "summary"``. Counts put the tracker's ``not yet assigned`` in
        ``unassigned`` (as the ``security-only`` policy does); each CVE keeps the
        tracker's own word, and ``open_note`` says how many. A report published
        without tracker data knows no open CVE: ``open_known`` false, ``open`` and
        ``open_counts`` null (never an empty list that reads as "no CVEs").
        ``derived`` (null unless): a hotfix commit has no report of its own; its base's
        report is re-read against its manifest (:func:`atoll.security.report.
        open_for_manifest`): ``{"base", "base_version", "hotfixes": [{"name", "version",
        "kind"}], "closed": [CVEs the hotfix packages' versions fix], "unknown":
        [sources whose CVEs the base's report cannot know (:func:`atoll.security.report.
        unknown_sources`)], "note"}``; the times and tracker are the base report's.

    Raises:
        DamagedStateError, RepositoryError: a kept report does not read.
    """
    if commit is None:
        return None
    doc = load_report(sysroot, commit)
    derived = None
    if doc is None:
        derived = _hotfix_derivation(sysroot, commit)
        doc = None if derived is None else load_report(sysroot, derived["base"])
    if doc is None:
        return {"commit": commit, "report": False}
    known = doc.get("tracker") is not None
    opened = doc["open"]
    if derived is not None:
        manifest, base_manifest = derived.pop("manifest"), derived.pop("base_manifest")
        opened, closed = rpt.open_for_manifest(doc, manifest)
        unknown = rpt.unknown_sources(base_manifest, manifest)
        derived |= {"closed": closed, "unknown": unknown, "note": (
            f"from the base image's signed CVE data ({derived['base'][:12]}) applied to the "
            "hotfix's package versions" + ("" if known else
                                            " (the base's report has no tracker data)")
            + ("" if not unknown else "; not known for " + ", ".join(
                f"{u['source']} {u['version']} ("
                + ("not in the base" if u["base_version"] is None else
                   f"older than the base's {u['base_version']}") + ")" for u in unknown)))}
    out: dict[str, Any] = {
        "commit": commit, "report": True, "generated": doc["generated"],
        "expires": doc["expires"], "age_seconds": rpt.age_seconds(doc, now),
        "stale": rpt.is_stale(doc, now), "tracker": doc.get("tracker"),
        "open_known": known, "open": opened if known else None,
        "open_counts": rpt.counts(opened, unassigned=unassigned) if known else None,
        "open_note": rpt.unassigned_note(opened, unassigned) if known else "",
        "unassigned_as": unassigned, "derived": derived}
    if fixes:
        out |= {"fixes": doc["fixes"]["cves"], "fixes_missing": doc["fixes"].get("missing", []),
                "fixes_counts": rpt.counts(doc["fixes"]["cves"], unassigned=unassigned),
                "summary": rpt.fixes_summary(doc, unassigned=unassigned)}
    return out


def _hotfix_derivation(sysroot: Path, commit: str) -> dict[str, Any] | None:
    """``{"base", "base_version", "hotfixes": [{"name", "version", "kind"}], "manifest",
    "base_manifest"}`` of a hotfix commit of the host's store (None: not one, not in the
    store, or a commit that does not read, names no commit id as its base or has no
    manifest: logged, and shown as having no report). ``base_manifest`` is [] when the
    base commit is not in the store any more.
    """
    from atoll.deploy.sysroot import Sysroot

    try:
        repo = Sysroot(sysroot).repo
        if not repo.has(commit, "commit"):
            return None
        c = repo.read_commit(commit)
    except AtollError as exc:
        log.warning("CVE report of %s: %s", commit[:12], exc)
        return None
    meta = c.metadata.get("hotfix")
    if not isinstance(meta, dict) or not isinstance(meta.get("base"), str):
        return None
    if _COMMIT.fullmatch(meta["base"]) is None or not c.manifest:
        log.warning("CVE report of %s: a hotfix commit with %s", commit[:12],
                    "no manifest" if _COMMIT.fullmatch(meta["base"]) else "a damaged base id")
        return None
    base_manifest: list[Any] = []
    try:
        if repo.has(meta["base"], "commit"):
            base_manifest = list(repo.read_commit(meta["base"]).manifest)
    except AtollError as exc:
        log.warning("CVE report of %s: its base: %s", commit[:12], exc)
    pkgs = meta.get("packages")
    pkgs = pkgs if isinstance(pkgs, list) else []
    return {"base": meta["base"], "base_version": meta.get("base_version"),
            "hotfixes": [{k: p.get(k) for k in ("name", "version", "kind")}
                         for p in pkgs if isinstance(p, dict)],
            "manifest": list(c.manifest), "base_manifest": base_manifest}


def cve_view(sysroot: Path, now: datetime, *, unassigned: str = "medium") -> dict[str, Any]:
    """The booted deployment's open CVEs and what the update (pending, prepared,
    downloaded or available) fixes: ``{"booted": section, "update": section + "state"}``.

    Raises:
        HostStateError: not an atoll sysroot.
    """
    from atoll.deploy.status import host_status

    st = host_status(sysroot)
    booted = (st.get("booted") or {}).get("commit")
    upd = st.get("update") or {}
    upd_commit = upd.get("commit") if upd.get("state") not in (None, "up-to-date") else None
    update = section(sysroot, upd_commit, now, unassigned=unassigned, fixes=True)
    if update is not None:
        update["state"] = upd.get("state")
        update["version"] = upd.get("version")
    return {"booted": section(sysroot, booted, now, unassigned=unassigned),
            "update": update, "unassigned_as": unassigned}


MAX_OPEN_CVES = 5000  # as atoll.control.protocol.MAX_OPEN_CVES
_CVE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,39}")  # as atoll.control.protocol.CVE_ID
_SHORT = 200  # as atoll.control.protocol.Short


def _sendable(c: dict[str, Any]) -> bool:
    """Whether the control plane takes this id entry (it refuses a whole check-in that
    carries one it does not: an odd key in the tracker's data must not cut a host off)."""
    return isinstance(c["cve"], str) and _CVE_ID.fullmatch(c["cve"]) is not None and all(
        c[k] is None or (isinstance(c[k], str) and len(c[k]) <= _SHORT)
        for k in ("urgency", "source", "fixed_version"))


def _source(s: dict[str, Any]) -> str:
    return "none" if not s["report"] else "tracker" if s["open_known"] else "changelog"


def checkin_facts(sysroot: Path, now: datetime) -> dict[str, Any]:
    """What atolld reports to the control plane (``CveFacts`` of
    atoll.control.protocol): the booted commit's open CVEs per urgency (the tracker's
    own words: ``not yet assigned`` stays its own bucket), their ids (highest urgency
    first, at most :data:`MAX_OPEN_CVES`; an id the control plane would refuse, as one not
    of a tracker id's shape, is left out and ``open_cves_truncated`` says so; the counts
    stay whole), the data's age and expiry, where it came from
    (``tracker``, ``changelog`` or ``none``) and what the update fixes per urgency.

    Never raises: a report that does not read is ``{"source": "none", "error": ...}``.
    """
    from atoll.security.urgency import rank

    try:
        view = cve_view(sysroot, now)
    except AtollError as exc:
        return {"source": "none", "error": exc.brief[:1000]}
    booted = view["booted"]
    out: dict[str, Any] = {"source": "none", "commit": None}
    if booted is not None:
        out |= {"commit": booted["commit"], "source": _source(booted)}
    if booted is not None and booted["report"]:
        out |= {"generated": booted["generated"], "expires": booted["expires"],
                "age_seconds": booted["age_seconds"], "stale": booted["stale"]}
    if booted is not None and booted.get("open_known"):
        opened = booted["open"]
        out["open"] = rpt.counts(opened)
        ids: dict[str, dict[str, Any]] = {}
        for c in opened:  # one entry per CVE id (its highest urgency)
            had = ids.get(c["cve"])
            if had is None or rank(c.get("urgency"), unassigned="unimportant") > \
                    rank(had.get("urgency"), unassigned="unimportant"):
                ids[c["cve"]] = {"cve": c["cve"], "urgency": c.get("urgency"),
                                 "source": c.get("source"),
                                 "fixed_version": c.get("fixed_version")}
        ordered = sorted(ids.values(), key=lambda c: (
            -rank(c["urgency"], unassigned="unimportant"), str(c["cve"])))
        sendable = [c for c in ordered if _sendable(c)]
        out["open_cves"] = sendable[:MAX_OPEN_CVES]
        out["open_cves_truncated"] = len(sendable) != len(ordered) or \
            len(sendable) > MAX_OPEN_CVES
    upd = view["update"]
    if upd is not None:
        u: dict[str, Any] = {"commit": upd["commit"], "state": upd.get("state"),
                             "version": upd.get("version"), "source": _source(upd)}
        if upd["report"]:
            u["fixes"] = rpt.counts(upd["fixes"])
            u["fixes_total"] = len({c["cve"] for c in upd["fixes"]})
        out["update"] = u
    return out


def policy_booted(booted: dict[str, Any] | None) -> str | None:
    """The commit an update is compared with under the ``security-only`` policy, from
    :func:`cve_view`'s ``booted`` section: the booted commit, or for a hotfix deployment
    its base (as atolld counts it, atoll.agent.host: a hotfix commit has no report of
    its own, and comparing with none would count the update's changelog fixes only).
    """
    if booted is None:
        return None
    derived = booted.get("derived")
    return derived["base"] if isinstance(derived, dict) else booted.get("commit")


def update_fixes(sysroot: Path, booted: str | None, commit: str | None, threshold: str, *,
                 unassigned: str = "medium") -> tuple[str, ...] | None:
    """The CVEs at or above ``threshold`` that update ``commit`` fixes for a host running
    ``booted`` (:func:`atoll.security.report.qualifies`); None without a usable report of
    ``commit`` (a damaged one is logged and counts as none)."""
    if commit is None:
        return None
    try:
        upd = load_report(sysroot, commit)
        cur = load_report(sysroot, booted) if booted else None
    except AtollError as exc:
        log.warning("CVE report: %s", exc)
        return None
    if upd is None:
        return None
    return tuple(rpt.qualifies(cur, upd, threshold, unassigned=unassigned))


def update_data_note(sysroot: Path, commit: str | None, now: datetime, *,
                     unassigned: str = "medium") -> str:
    """What limits the update's CVE report, said in the ``security-only`` policy's wait
    reason so missing or old data never reads as "fixes nothing" ("": nothing to say).

    Never raises (a report that does not read is :func:`update_fixes`' "no report").
    """
    if commit is None:
        return ""
    try:
        doc = load_report(sysroot, commit)
    except AtollError:
        return ""
    if doc is None:
        return ""
    notes = []
    if doc.get("tracker") is None:
        notes.append("its CVE report has no tracker data (only changelogs: their CVEs count "
                     f"as not yet assigned = {unassigned})")
    if rpt.is_stale(doc, now):
        notes.append(f"its CVE data expired {doc['expires']} (the publisher's tracker data "
                     "is old: newer CVEs are not rated)")
    return "; ".join(notes)

"""The Debian security tracker's JSON, and the CVEs an image's packages carry.

Format (https://security-tracker.debian.org/tracker/data/json, documented at
https://security-team.debian.org/security_tracker.html)::

    {SOURCE_PACKAGE: {CVE_ID: {"description": str, "scope": "local"|"remote",
                               "debianbug": int,
                               "releases": {RELEASE: {
                                   "status": "open"|"resolved"|"undetermined",
                                   "repositories": {SUITE: VERSION},
                                   "fixed_version": VERSION,      # when resolved
                                   "urgency": "unimportant"|"low"|"medium"|"high"
                                              |"not yet assigned"|"end-of-life",
                                   "nodsa": str, "nodsa_reason": str}}}}}

Keys are source packages: binary packages are mapped to them through the
image's manifest (``source``, ``source_version``). A resolved entry whose
``fixed_version`` is ``0`` means the release was never affected.

The file is read once (at most :data:`MAX_BYTES`) and checked as far as it is
used: the top level and every entry of the source packages an image holds. It is
the operator's file, fetched over HTTPS by whoever gives it (the tracker signs
nothing); what atoll publishes from it is signed (docs/security.md).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from atoll.core.errors import InputError
from atoll.security.urgency import normalize

__all__ = ["MAX_BYTES", "STATUSES", "TrackerData", "TrackerEntry", "load_tracker", "open_cves",
           "parse_tracker", "version_compare"]

MAX_BYTES = 512 << 20  # the whole tracker (every release) is ~100 MB
STATUSES = ("open", "resolved", "undetermined")


def version_compare(a: str, b: str) -> int:
    """Debian version order (<0, 0, >0), python-debian's ``version_compare``.

    Raises:
        InputError: a string that is not a Debian version.
    """
    from debian.debian_support import version_compare as vc  # publishing side only

    try:
        return int(vc(a, b))
    except ValueError as exc:
        raise InputError(f"not a Debian version: {exc}") from exc


@dataclass(frozen=True)
class TrackerEntry:
    """One CVE of one source package in one release, as the tracker states it."""

    cve: str
    source: str
    release: str
    status: str  # one of STATUSES
    urgency: str  # normalized (atoll.security.urgency.normalize)
    fixed_version: str | None  # None while open or undetermined
    description: str = ""
    scope: str | None = None
    debianbug: int | None = None


@dataclass(frozen=True)
class TrackerData:
    """A parsed tracker file: the raw mapping, checked per source on use."""

    packages: Mapping[str, Any]
    name: str  # the file as the operator named it (for messages)
    sha256: str = ""
    size: int = 0  # bytes
    taken: str = ""  # ISO 8601 UTC: the file's mtime (when it was fetched)

    def _bad(self, where: str, problem: str) -> InputError:
        return InputError(f"{self.name}: {where}: {problem}",
                          resolution="give the tracker's JSON as downloaded from "
                                     "https://security-tracker.debian.org/tracker/data/json")

    def entries(self, source: str, release: str) -> list[TrackerEntry]:
        """The CVEs of ``source`` the tracker lists for ``release`` (sorted by id).

        Raises:
            InputError: an entry of ``source`` that does not have the tracker's shape.
        """
        cves = self.packages.get(source)
        if cves is None:
            return []
        if not isinstance(cves, dict):
            raise self._bad(source, f"expected an object of CVEs, got {_kind(cves)}")
        out = []
        for cve, info in sorted(cves.items()):
            where = f"{source}.{cve}"
            if not isinstance(info, dict):
                raise self._bad(where, f"expected an object, got {_kind(info)}")
            releases = info.get("releases", {})
            if not isinstance(releases, dict):
                raise self._bad(f"{where}.releases", f"expected an object, got {_kind(releases)}")
            rel = releases.get(release)
            if rel is None:
                continue
            where = f"{where}.releases.{release}"
            if not isinstance(rel, dict):
                raise self._bad(where, f"expected an object, got {_kind(rel)}")
            status = rel.get("status")
            if status not in STATUSES:
                raise self._bad(f"{where}.status",
                                f"{status!r} is not one of {', '.join(STATUSES)}")
            fixed = rel.get("fixed_version")
            if fixed is not None and not isinstance(fixed, str):
                raise self._bad(f"{where}.fixed_version", f"expected a string, got {_kind(fixed)}")
            if status == "resolved" and not fixed:
                raise self._bad(f"{where}.fixed_version", "missing in a resolved entry")
            urgency = rel.get("urgency", "not yet assigned")
            if not isinstance(urgency, str):
                raise self._bad(f"{where}.urgency", f"expected a string, got {_kind(urgency)}")
            desc, scope, bug = info.get("description", ""), info.get("scope"), info.get("debianbug")
            if not isinstance(desc, str) or not isinstance(scope, str | None) \
                    or not isinstance(bug, int | None) or isinstance(bug, bool):
                raise self._bad(where.rsplit(".releases", 1)[0],
                                "description/scope must be strings, debianbug a number")
            out.append(TrackerEntry(cve, source, release, status, normalize(urgency),
                                    fixed if status == "resolved" else None, desc, scope, bug))
        return out


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
            type(None): "null"}.get(type(value), "a number")


def parse_tracker(data: bytes, name: str = "tracker") -> TrackerData:
    """Parse the tracker's JSON held in memory (checks the top level only).

    Raises:
        InputError: not JSON (a truncated download says where it ends), or not an object
            of source packages.
    """
    try:
        raw = json.loads(data)
    except UnicodeDecodeError as exc:
        raise InputError(f"{name}: not UTF-8 JSON: {exc}") from exc
    except json.JSONDecodeError as exc:
        hint = ("" if data.rstrip().endswith(b"}")
                else " (the file ends before the JSON does: a truncated download?)")
        raise InputError(f"{name}: not JSON: line {exc.lineno} column {exc.colno}: "
                         f"{exc.msg}{hint}",
                         resolution="download the tracker's JSON again") from exc
    except RecursionError as exc:
        raise InputError(f"{name}: JSON nested too deeply for the tracker's format") from exc
    if not isinstance(raw, dict):
        raise InputError(f"{name}: expected an object of source packages, got {_kind(raw)}",
                         resolution="give https://security-tracker.debian.org/tracker/data/json")
    return TrackerData(raw, name)


def load_tracker(path: Path, *, max_bytes: int = MAX_BYTES) -> TrackerData:
    """Read and parse a tracker file (see :func:`parse_tracker`).

    Raises:
        InputError: missing, larger than ``max_bytes``, not JSON, not the tracker's shape.
    """
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            if st.st_size > max_bytes:
                raise InputError(f"{path}: {st.st_size >> 20} MiB: larger than the "
                                 f"{max_bytes >> 20} MiB a security tracker file may be",
                                 resolution="give the tracker's JSON, not another file")
            data = f.read(max_bytes + 1)
    except FileNotFoundError as exc:
        raise InputError(f"{path}: no such file",
                         resolution="download https://security-tracker.debian.org/tracker/"
                                    "data/json and give that file") from exc
    except IsADirectoryError as exc:
        raise InputError(f"{path}: is a directory, not the tracker's JSON") from exc
    if len(data) > max_bytes:
        raise InputError(f"{path}: larger than the {max_bytes >> 20} MiB a tracker file may be")
    parsed = parse_tracker(data, str(path))
    taken = datetime.fromtimestamp(int(st.st_mtime), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    # the hash of the bytes parsed, not of the file read again (it may change meanwhile)
    return TrackerData(parsed.packages, str(path), hashlib.sha256(data).hexdigest(),
                       len(data), taken)


def open_cves(manifest: Iterable[Mapping[str, str]], data: TrackerData,
              release: str) -> list[dict[str, Any]]:
    """The CVEs the packages of a manifest carry in ``release``, by the tracker.

    A source package at version V carries a CVE when the tracker's entry for the
    release is ``open`` or ``undetermined``, or ``resolved`` with a ``fixed_version``
    newer than V (``0``: never affected).

    Returns:
        sorted by CVE then source: ``{"cve", "source", "source_version", "packages"
        (binary names), "status", "urgency", "fixed_version" (None: no fix in the
        release yet), "scope", "description", "from": ["tracker"]}``.

    Raises:
        InputError: a tracker entry of one of these sources is malformed, or a fixed
            version is not a Debian version.
    """
    by_source: dict[tuple[str, str], list[str]] = {}
    for p in manifest:
        src = p.get("source") or p["name"]
        ver = p.get("source_version") or p["version"]
        by_source.setdefault((src, ver), []).append(p["name"])
    out = []
    for (src, ver), binaries in sorted(by_source.items()):
        for e in data.entries(src, release):
            if e.status == "resolved":
                assert e.fixed_version is not None
                if e.fixed_version == "0":
                    continue
                try:
                    newer = version_compare(ver, e.fixed_version) >= 0
                except InputError as exc:
                    raise data._bad(f"{src}.{e.cve}.releases.{release}.fixed_version",
                                    f"{e.fixed_version!r} against the image's {src} {ver!r}: "
                                    f"{exc.brief}") from exc
                if newer:
                    continue
            out.append({"cve": e.cve, "source": src, "source_version": ver,
                        "packages": sorted(set(binaries)), "status": e.status,
                        "urgency": e.urgency, "fixed_version": e.fixed_version,
                        "scope": e.scope, "description": e.description,
                        "from": ["tracker"]})
    return sorted(out, key=lambda c: (c["cve"], c["source"]))

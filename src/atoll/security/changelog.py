"""The CVEs a new package version fixes, from the Debian changelog in its ``.deb``.

What apt-listchanges shows: the changelog entries newer than the installed
version, up to and including the new one. Debian's security uploads name the
CVEs they fix in their entries (``* CVE-2024-0727 (...)``), so no tracker is
needed to say what an update fixes. The changelog is read from the ``.deb``
(``usr/share/doc/<package>/changelog.Debian.gz``, or ``changelog.gz`` for a
native package) because images drop ``/usr/share/doc``; python-debian parses
both the archive and the changelog (https://www.debian.org/doc/debian-policy/ch-source.html#debian-changelog-debian-changelog).

A source package's changelog is the same in each of its binary packages: the
first ``.deb`` of the source that has one is read (binary packages whose doc
directory is a link to another's have none).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from atoll.core.errors import InputError
from atoll.security.tracker import version_compare

__all__ = ["CVE_RE", "DebLookup", "changelog_fixes", "cves_between", "read_changelog"]

log = logging.getLogger("atoll.security.changelog")

CVE_RE = re.compile(r"\bCVE-\d{4}-\d{4,}\b")
# (package, version, architecture) -> the .deb, or None when the cache lacks it
DebLookup = Callable[[str, str, str], Path | None]


def read_changelog(deb: Path) -> Any | None:
    """The Debian changelog in a ``.deb`` (a ``debian.changelog.Changelog``), or None
    when the package ships none (its doc directory links to another package's).

    Raises:
        InputError: the file is not a Debian binary package.
    """
    from debian.arfile import ArError  # publishing side only (python-debian)
    from debian.debfile import DebError, DebFile

    try:
        return DebFile(str(deb)).changelog()
    except (ArError, DebError, OSError, EOFError, ValueError) as exc:
        raise InputError(f"{deb}: not a readable Debian package: {exc}") from exc


def cves_between(changelog: Any, old: str | None, new: str) -> list[dict[str, str]]:
    """The CVE ids named by the changelog entries in ``(old, new]``.

    Args:
        changelog: a ``debian.changelog.Changelog``.
        old: the version installed before (None: a new package; nothing is "fixed").
        new: the version installed now.

    Returns:
        ``[{"cve", "version" (the entry naming it, the oldest if several),
        "upload_urgency" (that upload's urgency field), "distribution"}]`` sorted by id.
    """
    if old is None:
        return []
    found: dict[str, dict[str, str]] = {}
    for block in changelog:  # newest first
        ver = str(block.version)
        if version_compare(ver, old) <= 0:
            break
        if version_compare(ver, new) > 0:
            continue
        for cve in CVE_RE.findall("\n".join(block.changes())):
            found[cve] = {"cve": cve, "version": ver,
                          "upload_urgency": str(block.urgency or ""),
                          "distribution": str(block.distributions or "")}
    return [found[k] for k in sorted(found)]


def changelog_fixes(old: Iterable[Mapping[str, str]], new: Iterable[Mapping[str, str]],
                    lookup: DebLookup) -> dict[str, Any]:
    """The CVEs fixed between two manifests, by the changelogs of the upgraded sources.

    Args:
        old, new: package manifests (``name``, ``version``, ``architecture``,
            ``source``, ``source_version``).
        lookup: finds the ``.deb`` of a package version (the compose's package cache).

    Returns:
        ``{"cves": [{"cve", "source", "version", "upload_urgency", "distribution",
        "from": ["changelog"]}], "sources": {source: {"old", "new", "deb"}},
        "missing": [sources whose changelog was not found]}``.

    A ``.deb`` that does not read is skipped (logged), as one the lookup lacks.
    """
    def sources(manifest: Iterable[Mapping[str, str]]) -> dict[str, str]:
        return {(p.get("source") or p["name"]): (p.get("source_version") or p["version"])
                for p in manifest}

    new_list = list(new)
    before, after = sources(old), sources(new_list)
    cves: list[dict[str, Any]] = []
    seen: dict[str, dict[str, Any]] = {}
    missing: list[str] = []
    for src in sorted(before.keys() & after.keys()):
        if version_compare(after[src], before[src]) <= 0:
            continue
        binaries = sorted((p for p in new_list if (p.get("source") or p["name"]) == src),
                          key=lambda p: (p["name"] != src, p["name"]))
        deb = None
        for p in binaries:
            path = lookup(p["name"], p["version"], p["architecture"])
            if path is None:
                continue
            try:
                changelog = read_changelog(path)
            except InputError as exc:  # the cache is never trusted: a damaged file is skipped
                log.warning("%s", exc)
                continue
            if changelog is not None:
                deb = path
                break
        seen[src] = {"old": before[src], "new": after[src], "deb": deb.name if deb else None}
        if deb is None:
            missing.append(src)
            log.warning("no changelog for %s %s in the package cache: the CVEs it fixes "
                        "are not known from changelogs", src, after[src])
            continue
        for c in cves_between(changelog, before[src], after[src]):
            cves.append({**c, "source": src, "from": ["changelog"]})
    cves.sort(key=lambda c: (c["cve"], c["source"]))
    return {"cves": cves, "sources": seen, "missing": missing}

"""Package manifests: Debian version order and the changes between two manifests (pure).

A manifest is a list of ``{"name", "version", "architecture", "source",
"source_version"}`` read from dpkg's status (:func:`read_manifest`). One shape of
changes everywhere (``store diff``, ``update check``, ``status -v``, ``db diff``):
``{"added": [{name, version}], "removed": [{name, version}], "upgraded": [{name, old,
new}], "downgraded": [{name, old, new}]}``.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

__all__ = ["compare_versions", "package_view", "parse_dpkg_status", "read_manifest",
           "sbom_serial"]

# the namespace of the SBOMs' serial numbers (UUIDv5 of the commit id)
_SBOM_NS = uuid.UUID("6c1b7e0e-7d1a-4a43-9a0f-2f3f6b6f9a10")


def sbom_serial(commit_id: str) -> uuid.UUID:
    """The serial number of a commit's CycloneDX SBOM, the same wherever it is made (the
    publisher's :mod:`atoll.repo.sbom`, a host's :mod:`atoll.deploy.hostsbom`): a UUIDv5
    of the commit id."""
    return uuid.uuid5(_SBOM_NS, commit_id)


def _order(c: str) -> int:
    if c == "~":
        return -1
    if c.isdigit():
        return 0
    if c.isalpha():
        return ord(c)
    return ord(c) + 256


def _verrevcmp(a: str, b: str) -> int:
    i = j = 0
    while i < len(a) or j < len(b):
        while (i < len(a) and not a[i].isdigit()) or (j < len(b) and not b[j].isdigit()):
            ac = _order(a[i]) if i < len(a) and not a[i].isdigit() else 0
            bc = _order(b[j]) if j < len(b) and not b[j].isdigit() else 0
            if ac != bc:
                return ac - bc
            i, j = i + 1, j + 1
        di = i
        while i < len(a) and a[i].isdigit():
            i += 1
        dj = j
        while j < len(b) and b[j].isdigit():
            j += 1
        x, y = int(a[di:i] or 0), int(b[dj:j] or 0)
        if x != y:
            return x - y
    return 0


def compare_versions(a: str, b: str) -> int:
    """Debian version order (``dpkg --compare-versions``): <0, 0 or >0."""
    def split(v: str) -> tuple[int, str, str]:
        epoch, _, rest = v.rpartition(":") if ":" in v else ("0", "", v)
        upstream, _, rev = rest.rpartition("-") if "-" in rest else (rest, "", "")
        return int(epoch or 0), upstream, rev

    ea, ua, ra = split(a)
    eb, ub, rb = split(b)
    if ea != eb:
        return ea - eb
    return _verrevcmp(ua, ub) or _verrevcmp(ra, rb)


def package_view(old: list[dict[str, str]] | None, new: list[dict[str, str]]) -> dict[str, Any]:
    """Added / removed / upgraded / downgraded packages between two manifests
    (``old`` None: everything is added)."""
    a = {p["name"]: p for p in old or []}
    b = {p["name"]: p for p in new}
    both = sorted(a.keys() & b.keys())

    def moved(sign: int) -> list[dict[str, str]]:
        return [{"name": n, "old": a[n]["version"], "new": b[n]["version"]} for n in both
                if compare_versions(b[n]["version"], a[n]["version"]) * sign > 0]

    return {
        "added": [{"name": n, "version": b[n]["version"]} for n in sorted(b.keys() - a.keys())],
        "removed": [{"name": n, "version": a[n]["version"]} for n in sorted(a.keys() - b.keys())],
        "upgraded": moved(1),
        "downgraded": moved(-1),
    }


def parse_dpkg_status(text: str) -> list[dict[str, str]]:
    """Installed packages from dpkg's status file, sorted by name.

    Each entry: name, version, architecture, source, source_version.
    """
    out = []
    for para in text.split("\n\n"):
        fields: dict[str, str] = {}
        key = None
        for line in para.splitlines():
            if line.startswith((" ", "\t")) and key:
                continue  # continuation lines (descriptions, conffiles)
            k, sep, v = line.partition(":")
            if sep:
                key = k.strip()
                fields[key] = v.strip()
        if "Package" not in fields or not fields.get("Status", "").endswith(" installed"):
            continue
        source = fields.get("Source", fields["Package"])
        name, _, rest = source.partition(" ")
        src_version = rest.strip("() ") or fields.get("Version", "")
        out.append({
            "name": fields["Package"],
            "version": fields.get("Version", ""),
            "architecture": fields.get("Architecture", ""),
            "source": name,
            "source_version": src_version,
        })
    return sorted(out, key=lambda p: (p["name"], p["architecture"]))


def read_manifest(rootfs: Path) -> list[dict[str, str]]:
    """The manifest of a tree's dpkg database ([] when it has none): a rootfs as dpkg
    left it, or atoll's layout (/usr/share/atoll/dpkg)."""
    for candidate in ("var/lib/dpkg/status", "usr/share/atoll/dpkg/status"):
        p = Path(rootfs) / candidate
        if p.is_file():
            return parse_dpkg_status(p.read_text(errors="replace"))
    return []

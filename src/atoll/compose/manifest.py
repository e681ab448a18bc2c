"""Read the package manifest from a rootfs's dpkg status database (pure parsing)."""

from __future__ import annotations

from pathlib import Path

__all__ = ["parse_dpkg_status", "read_manifest"]


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
    for candidate in ("var/lib/dpkg/status", "usr/share/atoll/dpkg/status"):
        p = Path(rootfs) / candidate
        if p.is_file():
            return parse_dpkg_status(p.read_text(errors="replace"))
    return []

"""A CycloneDX SBOM of a commit, from its package manifest (cyclonedx-python-lib)."""

from __future__ import annotations

from datetime import UTC, datetime

from cyclonedx.model.bom import Bom
from cyclonedx.model.component import Component, ComponentType
from cyclonedx.output.json import JsonV1Dot5
from packageurl import PackageURL

from atoll.store.objects import Commit
from atoll.store.packages import sbom_serial

__all__ = ["sbom_json"]


def sbom_json(commit_id: str, commit: Commit, *, name: str) -> bytes:
    """CycloneDX 1.5 JSON: the image as the described component, each Debian package in it.

    Deterministic: serial number and timestamp derive from the commit.
    """
    bom = Bom(serial_number=sbom_serial(commit_id))
    bom.metadata.timestamp = datetime.fromtimestamp(commit.timestamp, UTC)
    root = Component(name=name, version=commit.version or commit_id[:12],
                     type=ComponentType.OPERATING_SYSTEM, bom_ref=f"atoll-commit:{commit_id}")
    bom.metadata.component = root
    comps = []
    for p in commit.manifest:
        qualifiers = {"arch": p.get("architecture", "")} if p.get("architecture") else {}
        purl = PackageURL("deb", "debian", p["name"], p.get("version", ""), qualifiers)
        c = Component(name=p["name"], version=p.get("version", ""),
                      type=ComponentType.LIBRARY, purl=purl, bom_ref=str(purl))
        bom.components.add(c)
        comps.append(c)
    bom.register_dependency(root, comps)
    return JsonV1Dot5(bom).output_as_string(indent=1).encode()

"""A CycloneDX SBOM of a commit, from its package manifest (cyclonedx-python-lib)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from cyclonedx.model.bom import Bom
from cyclonedx.model.component import Component, ComponentType
from cyclonedx.output.json import JsonV1Dot5
from packageurl import PackageURL

from atoll.store.objects import Commit

__all__ = ["sbom_json"]

_NS = uuid.UUID("6c1b7e0e-7d1a-4a43-9a0f-2f3f6b6f9a10")


def sbom_json(commit_id: str, commit: Commit, *, name: str) -> bytes:
    """CycloneDX 1.5 JSON: the image as the described component, each Debian package in it.

    Deterministic: serial number and timestamp derive from the commit.
    """
    bom = Bom(serial_number=uuid.uuid5(_NS, commit_id))
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

"""The CycloneDX 1.5 SBOM of a commit made on a host (a hotfix derivation), in the
standard library only: hosts do not carry cyclonedx-python-lib (publishing side only,
``atoll.agent.feature.PUBLISHER_ONLY``), which makes the published SBOMs
(:mod:`atoll.repo.sbom`). The same document as that one for the same commit: the image
as the described component (``operating-system``, ``bom-ref`` ``atoll-commit:ID``),
each Debian package of the manifest a ``library`` with its package URL
(``pkg:deb/debian/NAME@VERSION?arch=ARCH``), serial number and timestamp derived from
the commit; ``tests/integration/test_hotfix.py`` checks both against each other and
against the CycloneDX 1.5 schema.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from urllib.parse import quote

from atoll.store.packages import sbom_serial

__all__ = ["purl", "sbom_json"]


def purl(p: Mapping[str, str]) -> str:
    """A manifest entry's package URL, encoded as packageurl-python encodes it."""
    out = f"pkg:deb/debian/{quote(p['name'], safe='')}@{quote(p.get('version', ''), safe=':')}"
    arch = p.get("architecture")
    return out + (f"?arch={quote(arch, safe=':')}" if arch else "")


def sbom_json(commit_id: str, *, name: str, version: str, timestamp: int,
              manifest: Sequence[Mapping[str, str]]) -> bytes:
    """CycloneDX 1.5 JSON of one commit (deterministic).

    Args:
        name: the described image's name; ``version`` its version (the commit's, else
            the short id); ``timestamp`` the commit's time (seconds since the epoch).
    """
    root = f"atoll-commit:{commit_id}"
    comps = {purl(p): {"bom-ref": purl(p), "name": p["name"], "purl": purl(p),
                       "type": "library", "version": p.get("version", "")}
             for p in manifest}
    ordered = sorted(comps.values(), key=lambda c: (c["name"], c["version"], c["purl"]))
    refs = sorted(c["bom-ref"] for c in ordered)  # dependencies: by reference
    doc = {"$schema": "http://cyclonedx.org/schema/bom-1.5.schema.json",
           "bomFormat": "CycloneDX", "specVersion": "1.5",
           "serialNumber": f"urn:uuid:{sbom_serial(commit_id)}", "version": 1,
           "metadata": {"timestamp": datetime.fromtimestamp(timestamp, UTC).isoformat(),
                        "component": {"bom-ref": root, "name": name,
                                      "type": "operating-system",
                                      "version": version or commit_id[:12]}},
           "components": ordered,
           "dependencies": [{"ref": root, "dependsOn": refs}, *({"ref": r} for r in refs)]}
    return json.dumps(doc, indent=1, sort_keys=True).encode()

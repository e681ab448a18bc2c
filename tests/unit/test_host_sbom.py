"""The host's SBOM writer (stdlib only) gives the document cyclonedx-python-lib gives
at publish, and it is valid CycloneDX 1.5."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator

from atoll.deploy.hostsbom import sbom_json
from atoll.repo.sbom import sbom_json as published


@dataclass
class _Commit:
    timestamp: int = 1732000000
    version: str = "7"
    manifest: list[dict[str, str]] = field(default_factory=lambda: [
        {"name": "libstdc++6", "version": "12.2.0-14+deb12u1", "architecture": "amd64"},
        {"name": "less", "version": "590-2.1~deb12u2+atoll1", "architecture": "amd64"},
        {"name": "tzdata", "version": "2025b-0+deb12u1", "architecture": "all"},
        {"name": "libc6", "version": "1:2.36-9+deb12u10"}])


def test_the_host_sbom_is_the_published_one() -> None:
    c = _Commit()
    ours = sbom_json("ab" * 32, name="atoll 7 + hotfixes", version=c.version,
                     timestamp=c.timestamp, manifest=c.manifest)
    theirs = published("ab" * 32, c, name="atoll 7 + hotfixes")  # type: ignore[arg-type]
    assert json.loads(ours) == json.loads(theirs)
    assert JsonStrictValidator(SchemaVersion.V1_5).validate_str(ours.decode()) is None

"""The treefile: what an image is made of, as people write it (YAML).

Example (``examples/base.yaml``)::

    ref: site/base
    version: "2026.11.1"
    suite: bookworm
    mirror: http://deb.debian.org/debian
    components: [main]
    security: true
    updates: true
    variant: minbase
    packages: [iputils-ping, less]
    features: []
    files:
      - path: /etc/motd
        content: "managed by atoll\\n"
    source_date_epoch: 1732000000
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from atoll.core import canonjson
from atoll.core.errors import InputError
from atoll.core.spec import SingleLine, Spec, load_spec

__all__ = ["FileSpec", "Treefile", "load_treefile", "security_only", "treefile_hash"]

_PKG_RE = re.compile(r"^[a-z0-9][a-z0-9+.-]+(:[a-z0-9-]+)?(=[A-Za-z0-9.+~:-]+)?$")


class FileSpec(Spec):
    path: str = Field(description="absolute path in the image, e.g. /etc/motd")
    content: str | None = Field(None, description="literal content")
    source: str | None = Field(None, description="file to copy, relative to the treefile")
    mode: str = Field("0644", description="octal permission bits")

    @field_validator("path")
    @classmethod
    def _path(cls, v: str) -> str:
        parts = v.split("/")
        if not v.startswith("/") or ".." in parts or v == "/":
            raise ValueError("must be an absolute path inside the image, without '..'")
        if v.startswith(("/var/", "/proc/", "/sys/", "/dev/", "/run/", "/tmp/")):
            raise ValueError("/var, /run, /tmp and kernel filesystems are not part of an image")
        return v

    @field_validator("mode")
    @classmethod
    def _mode(cls, v: str) -> str:
        if not re.fullmatch(r"0?[0-7]{3,4}", v):
            raise ValueError("must be octal permission bits such as 0644")
        return v

    @model_validator(mode="after")
    def _one_source(self) -> FileSpec:
        if (self.content is None) == (self.source is None):
            raise ValueError("give exactly one of content or source")
        return self


class Treefile(Spec):
    ref: SingleLine = Field(description="ref the commit goes to, e.g. site/base")
    version: SingleLine = Field(description="human version recorded in the commit")
    suite: str = Field("bookworm", description="Debian or Ubuntu suite")
    mirror: str = Field("http://deb.debian.org/debian", description="apt mirror URL")
    security_mirror: str = Field("http://deb.debian.org/debian-security",
                                 description="mirror of <suite>-security")
    components: list[str] = Field(default_factory=lambda: ["main"])
    security: bool = Field(True, description="include <suite>-security updates")
    updates: bool = Field(True, description="include <suite>-updates")
    variant: Literal["essential", "apt", "minbase", "required", "important", "standard"] = (
        "minbase"
    )
    packages: list[str] = Field(default_factory=list)
    features: list[str] = Field(
        default_factory=list, description="image features (boot, docker...)"
    )
    files: list[FileSpec] = Field(default_factory=list)
    app_images: list[str] = Field(
        default_factory=list,
        description="app images built from the suite's packages and shipped in the image "
        "(/usr/share/atoll/app-images), for hosts with no registry; needs the docker feature",
    )
    source_date_epoch: int = Field(1700000000, ge=0, description="timestamp for reproducibility")
    subject: SingleLine = ""

    @field_validator("packages")
    @classmethod
    def _packages(cls, v: list[str]) -> list[str]:
        for p in v:
            if not _PKG_RE.match(p):
                raise ValueError(f"{p!r} is not a Debian package name")
        return v

    @field_validator("app_images")
    @classmethod
    def _app_images(cls, v: list[str], info: ValidationInfo) -> list[str]:
        from atoll.apps.image import IMAGES  # the apps layer knows the recipes

        for name in v:
            if name not in IMAGES:
                raise ValueError(f"unknown app image {name!r} (known: {', '.join(sorted(IMAGES))})")
        if v and "docker" not in info.data.get("features", []):
            raise ValueError("needs the docker feature (features: [docker])")
        return v

    @field_validator("mirror", "security_mirror")
    @classmethod
    def _url(cls, v: str) -> str:
        if not re.match(r"^(https?|file)://", v):
            raise ValueError("must be an http(s):// or file:// URL")
        return v.rstrip("/")

    @field_validator("ref")
    @classmethod
    def _ref(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)*", v):
            raise ValueError("letters, digits, '.', '_', '-' with '/' separators")
        return v

    def apt_sources(self) -> list[str]:
        comps = " ".join(self.components)
        lines = [f"deb {self.mirror} {self.suite} {comps}"]
        if self.updates:
            lines.append(f"deb {self.mirror} {self.suite}-updates {comps}")
        if self.security:
            lines.append(f"deb {self.security_mirror} {self.suite}-security {comps}")
        return lines


def security_only(tf: Treefile) -> Treefile:
    """``tf`` composed from the point release and ``<suite>-security`` only, without
    ``<suite>-updates`` (``atoll compose --security-only``; docs/security.md). The archive
    keeps only current versions, so this is the security-only image that can be built."""
    return tf.model_copy(update={"updates": False, "security": True})


def load_treefile(path: Path) -> Treefile:
    """Load and validate a treefile; ``source`` files must exist.

    Raises:
        SpecError: ``file:line: field: problem`` for each problem.
    """
    tf = load_spec(path, Treefile)
    for f in tf.files:
        if f.source is not None and not (Path(path).parent / f.source).is_file():
            raise InputError(f"{path}: files: {f.path}: source {f.source} does not exist")
    return tf


def treefile_hash(tf: Treefile, base: Path) -> str:
    """sha256 over the treefile's content and every file it adds."""
    data = tf.model_dump(mode="json")
    digests = {}
    for f in tf.files:
        if f.source is not None:
            digests[f.path] = hashlib.sha256((base / f.source).read_bytes()).hexdigest()
    return canonjson.sha256_of({"treefile": data, "sources": digests})

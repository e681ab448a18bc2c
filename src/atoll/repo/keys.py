"""Signing keys of an update repository (ed25519, via securesystemslib).

Layout::

    keys/
    ├── policy.json                  thresholds and expiry per role (canonical JSON)
    ├── root/<keyid>.pem             root keys: keep this directory offline
    ├── online/<role>/<keyid>.pem    targets, snapshot, timestamp: on the publishing host
    └── retired/<role>/<keyid>.pem   keys replaced by a rotation (kept for audit)

Private keys are PKCS#8 PEM, mode 0600. Only the public half ever appears in
metadata, logs or output (as a key id).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.serialization import load_pem_private_key
from securesystemslib.signer import CryptoSigner  # type: ignore[attr-defined]

from atoll.core.errors import InputError
from atoll.core.fsutil import atomic_write, atomic_write_json, read_json

__all__ = [
    "DEFAULT_EXPIRES",
    "ONLINE_ROLES",
    "ROLES",
    "KeyDir",
    "Policy",
    "parse_duration",
]

ROLES = ("root", "targets", "snapshot", "timestamp")
ONLINE_ROLES = ("targets", "snapshot", "timestamp")
DEFAULT_EXPIRES = {"root": 365 * 86400, "targets": 90 * 86400, "snapshot": 7 * 86400,
                   "timestamp": 86400}
_DUR = re.compile(r"^(\d+)([smhdw]?)$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> timedelta:
    """``90d``, ``12h``, ``30m``, ``3600s`` or ``3600`` -> timedelta.

    Raises:
        InputError: not a duration.
    """
    m = _DUR.match(text.strip())
    if not m or int(m.group(1)) <= 0:
        raise InputError(f"{text!r} is not a duration", resolution="use e.g. 90d, 12h, 30m")
    return timedelta(seconds=int(m.group(1)) * _UNITS[m.group(2)])


@dataclass
class Policy:
    """Thresholds and expiry (seconds) per role."""

    thresholds: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ROLES, 1))
    expires: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_EXPIRES))

    def expiry(self, role: str) -> timedelta:
        return timedelta(seconds=self.expires[role])

    def override(self, specs: list[str]) -> Policy:
        """Apply ``ROLE=DURATION`` overrides (from ``--expires``)."""
        out = Policy(dict(self.thresholds), dict(self.expires))
        for spec in specs:
            role, sep, dur = spec.partition("=")
            if not sep or role not in ROLES:
                raise InputError(f"--expires {spec!r}: expected ROLE=DURATION",
                                 resolution=f"ROLE is one of {', '.join(ROLES)}")
            out.expires[role] = int(parse_duration(dur).total_seconds())
        return out

    def to_json(self) -> dict[str, Any]:
        return {"thresholds": self.thresholds, "expires": self.expires}


class KeyDir:
    """A directory of signing keys (see module docstring)."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def role_dir(self, role: str) -> Path:
        return self.path / "root" if role == "root" else self.path / "online" / role

    @property
    def policy_path(self) -> Path:
        return self.path / "policy.json"

    def policy(self) -> Policy:
        raw = read_json(self.policy_path)
        if raw is None:
            return Policy()
        return Policy(dict(raw["thresholds"]), {**DEFAULT_EXPIRES, **raw["expires"]})

    def save_policy(self, policy: Policy) -> None:
        atomic_write_json(self.policy_path, policy.to_json())

    def generate(self, role: str, count: int = 1) -> list[CryptoSigner]:
        """Create ``count`` new ed25519 keys for ``role`` and store them (0600)."""
        d = self.role_dir(role)
        d.mkdir(parents=True, exist_ok=True, mode=0o700)
        out = []
        for _ in range(count):
            signer = CryptoSigner.generate_ed25519()
            atomic_write(d / f"{signer.public_key.keyid}.pem", signer.private_bytes, 0o600)
            out.append(signer)
        return out

    def signers(self, role: str, *, required: bool = True) -> list[CryptoSigner]:
        """The private keys present for ``role``.

        Raises:
            InputError: none present (e.g. the offline root directory is not mounted).
        """
        d = self.role_dir(role)
        out = []
        if d.is_dir():
            for p in sorted(d.glob("*.pem")):
                key = load_pem_private_key(p.read_bytes(), password=None)
                out.append(CryptoSigner(key))
        if not out and required:
            where = "the offline root key directory" if role == "root" else "the online keys"
            raise InputError(f"no {role} keys in {d}",
                             resolution=f"mount {where} at {d}, or run `atoll keys init`")
        return out

    def retire(self, role: str, keyid: str) -> None:
        """Move a replaced key to ``retired/<role>/``."""
        src = self.role_dir(role) / f"{keyid}.pem"
        dest = self.path / "retired" / role
        dest.mkdir(parents=True, exist_ok=True, mode=0o700)
        if src.exists():
            os.replace(src, dest / src.name)

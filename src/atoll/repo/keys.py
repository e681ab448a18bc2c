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

import contextlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.serialization import load_pem_private_key
from securesystemslib.signer import CryptoSigner  # type: ignore[attr-defined]

from atoll.core.errors import InputError
from atoll.core.fsutil import atomic_write, atomic_write_json, fsync_dir
from atoll.core.userfile import read_user_file

__all__ = [
    "DEFAULT_EXPIRES",
    "MAX_EXPIRES",
    "MAX_KEYS",
    "MIN_ROOT_EXPIRES",
    "ONLINE_ROLES",
    "ROLES",
    "KeyDir",
    "Policy",
    "check_key_count",
    "new_signers",
    "parse_duration",
]

ROLES = ("root", "targets", "snapshot", "timestamp")
ONLINE_ROLES = ("targets", "snapshot", "timestamp")
DEFAULT_EXPIRES = {"root": 365 * 86400, "targets": 90 * 86400, "snapshot": 7 * 86400,
                   "timestamp": 86400}
# Expiry is what makes a frozen or replayed repository visible to hosts: ten years is
# the most any role may be signed for (and keeps every date far from datetime's range).
MAX_EXPIRES = 3650 * 86400
# A root is signed offline and hosts start their chain of trust from it: one that
# expires within a day would stop every host before anyone signs the next.
MIN_ROOT_EXPIRES = 86400
# Keys per role (and so the most signatures one metadata file carries): a threshold
# above a handful is a ceremony nobody runs, and every signature makes each file larger
# (a timestamp is bounded at 16 KiB by clients).
MAX_KEYS = 32
MAX_KEY_FILE = 64 * 1024  # a PEM ed25519 private key is ~120 bytes
_DUR = re.compile(r"^(\d{1,12})([smhdw]?)$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> timedelta:
    """``90d``, ``12h``, ``30m``, ``3600s`` or ``3600`` -> timedelta (1 s to 10 years).

    Raises:
        InputError: not a duration, or outside 1 s .. ``MAX_EXPIRES``.
    """
    m = _DUR.match(text.strip())
    if not m or int(m.group(1)) <= 0:
        raise InputError(f"{text!r} is not a duration", resolution="use e.g. 90d, 12h, 30m")
    seconds = int(m.group(1)) * _UNITS[m.group(2)]
    if seconds > MAX_EXPIRES:
        raise InputError(f"{text!r} is longer than {MAX_EXPIRES // 86400} days, the longest "
                         "metadata may be signed for",
                         resolution="use e.g. root=365d, targets=90d, snapshot=7d, "
                         "timestamp=1d")
    return timedelta(seconds=seconds)


def check_key_count(value: object, what: str, *, low: int = 1, top: int = MAX_KEYS) -> int:
    """A threshold or a number of keys: an integer from ``low`` to ``top``.

    TUF: a role's threshold is the number of its keys whose signatures a file needs,
    so it is at least 1 and at most the number of keys.

    Raises:
        InputError: not an integer in range.
    """
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= top:
        raise InputError(f"{what} {value!r}: must be a whole number from {low} to {top}",
                         resolution="a threshold needs at least one signature, and as "
                         "many keys as the threshold")
    return value


@dataclass
class Policy:
    """Thresholds and expiry (seconds) per role."""

    thresholds: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ROLES, 1))
    expires: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_EXPIRES))

    def expiry(self, role: str) -> timedelta:
        return timedelta(seconds=self.expires[role])

    def override(self, specs: Iterable[str], *, signs: Sequence[str] = ROLES,
                 command: str = "this command") -> Policy:
        """Apply ``ROLE=DURATION`` overrides (from ``--expires``).

        Args:
            signs: the roles the command signs; an override of any other role would
                silently do nothing, so it is refused.
            command: the command, for messages.

        Raises:
            InputError: not ROLE=DURATION, a bad duration, a role the command does not
                sign, or a root expiry under ``MIN_ROOT_EXPIRES``.
        """
        out = Policy(dict(self.thresholds), dict(self.expires))
        for spec in specs:
            role, sep, dur = spec.partition("=")
            if not sep or role not in ROLES:
                raise InputError(f"--expires {spec!r}: expected ROLE=DURATION",
                                 resolution=f"ROLE is one of {', '.join(ROLES)}")
            if role not in signs:
                hint = ("root is signed offline: `atoll keys rotate root --expires root=365d`"
                        if role == "root" else f"{command} signs {', '.join(signs)}")
                raise InputError(f"--expires {spec!r}: {command} does not sign {role}",
                                 resolution=hint)
            seconds = int(parse_duration(dur).total_seconds())
            if role == "root" and seconds < MIN_ROOT_EXPIRES:
                raise InputError(
                    f"--expires {spec!r}: a root must be valid for at least "
                    f"{MIN_ROOT_EXPIRES // 3600} h: hosts would stop updating before the "
                    "next root is signed", resolution="give e.g. --expires root=365d")
            out.expires[role] = seconds
        return out

    def check(self, source: str) -> Policy:
        """Every threshold and expiry in range (``source`` names where they came from).

        Raises:
            InputError: a threshold outside 1 .. ``MAX_KEYS``, or an expiry outside
                1 s .. ``MAX_EXPIRES``.
        """
        for role in ROLES:
            check_key_count(self.thresholds.get(role), f"{source}: {role} threshold")
            secs = self.expires.get(role)
            if not isinstance(secs, int) or isinstance(secs, bool) or not (
                    0 < secs <= MAX_EXPIRES):
                raise InputError(f"{source}: {role} expiry {secs!r} s: must be from 1 s to "
                                 f"{MAX_EXPIRES // 86400} days")
        return self

    def to_json(self) -> dict[str, Any]:
        return {"thresholds": self.thresholds, "expires": self.expires}


def new_signers(count: int) -> list[CryptoSigner]:
    """``count`` new ed25519 keys, in memory only (:meth:`KeyDir.save` stores them)."""
    return [CryptoSigner.generate_ed25519() for _ in range(count)]


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
        """The stored policy (defaults when there is none), checked.

        Raises:
            InputError: policy.json unreadable or out of range.
        """
        if not self.policy_path.exists():
            return Policy()
        try:
            raw = json.loads(read_user_file(self.policy_path, MAX_KEY_FILE, "key policy"))
            policy = Policy({**dict.fromkeys(ROLES, 1), **dict(raw["thresholds"])},
                            {**DEFAULT_EXPIRES, **dict(raw["expires"])})
        except (ValueError, KeyError, TypeError) as exc:
            raise InputError(f"{self.policy_path}: not a key policy ({exc})") from None
        return policy.check(str(self.policy_path))

    def save_policy(self, policy: Policy) -> None:
        atomic_write_json(self.policy_path, policy.to_json())

    def save(self, role: str, signers: Sequence[CryptoSigner]) -> None:
        """Store keys of ``role`` (PKCS#8 PEM, 0600; written whole and synced)."""
        d = self.role_dir(role)
        d.mkdir(parents=True, exist_ok=True, mode=0o700)
        for signer in signers:
            atomic_write(d / f"{signer.public_key.keyid}.pem", signer.private_bytes, 0o600)

    def generate(self, role: str, count: int = 1) -> list[CryptoSigner]:
        """Create ``count`` new ed25519 keys for ``role`` and store them (0600)."""
        out = new_signers(check_key_count(count, "key count"))
        self.save(role, out)
        return out

    def signers(self, role: str, *, required: bool = True) -> list[CryptoSigner]:
        """The private keys present for ``role``.

        Raises:
            InputError: none present (e.g. the offline root directory is not mounted),
                or a file that is not a PEM private key.
        """
        d = self.role_dir(role)
        out = []
        if d.is_dir():
            for p in sorted(d.glob("*.pem")):
                data = read_user_file(p, MAX_KEY_FILE, f"{role} key")
                try:
                    key = load_pem_private_key(data, password=None)
                except (ValueError, TypeError) as exc:
                    raise InputError(f"{p}: not an unencrypted PEM private key ({exc})") \
                        from None
                out.append(CryptoSigner(key))
        if not out and required:
            # Never suggest `keys init` here: a new key set is not the one the published
            # root trusts, so everything signed with it would be refused by hosts.
            if not self.path.is_dir():
                raise InputError(f"no key directory {self.path}",
                                 resolution="give --keys this repository's key directory "
                                 "(a new key set would not be trusted by its published root)")
            where = "the offline root key directory" if role == "root" else "the online keys"
            raise InputError(f"no {role} keys in {d}",
                             resolution=f"mount {where} of this repository at {d}")
        return out

    def retire(self, role: str, keyid: str) -> None:
        """Move a replaced key to ``retired/<role>/``."""
        src = self.role_dir(role) / f"{keyid}.pem"
        dest = self.path / "retired" / role
        dest.mkdir(parents=True, exist_ok=True, mode=0o700)
        if src.exists():
            os.replace(src, dest / src.name)

    def is_empty(self) -> bool:
        """True when the directory is missing or holds nothing."""
        return not self.path.exists() or (self.path.is_dir() and not any(self.path.iterdir()))

    @contextlib.contextmanager
    def staged(self, keys: Mapping[str, Sequence[CryptoSigner]], policy: Policy,
               ) -> Iterator[Callable[[], None]]:
        """Keys and policy written into a temporary directory beside this one; the
        block gets ``install``, which renames it into place. Whatever happens in the block
        before ``install``, nothing is left behind; if the block fails after it, the
        directory is taken away again (``keys init`` is all or nothing).

        Raises:
            InputError: this directory exists and is not empty.
        """
        if not self.is_empty():
            raise InputError(f"{self.path} already holds files",
                             resolution="give `atoll keys init` a new (or empty) directory; "
                             "replace keys with `atoll keys rotate`")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.", dir=self.path.parent))
        installed = False

        def install() -> None:
            nonlocal installed
            if self.path.exists():
                self.path.rmdir()  # empty (checked above)
            os.rename(tmp, self.path)
            installed = True
            fsync_dir(self.path.parent)

        try:
            os.chmod(tmp, 0o700)
            staging = KeyDir(tmp)
            for role, signers in keys.items():
                staging.save(role, signers)
            staging.save_policy(policy)
            yield install
        except BaseException:
            shutil.rmtree(self.path if installed else tmp, ignore_errors=True)
            raise

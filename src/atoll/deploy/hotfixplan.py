"""Hotfix lifecycle decisions: pure functions over hotfix records and a base manifest.

A hotfix is one Debian package laid over a base commit on the host (``atoll hotfix
add``). What happens to it when the base moves is decided here, apart from I/O:

- a **fast-track** hotfix is dropped once the base ships its version or a newer one
  (Debian version order, :func:`atoll.store.packages.compare_versions`);
- a **pin** stays, re-applied on top of each new base, until removed or expired; a
  base that ships a *newer* version than the pin blocks the update (the operator
  decides: remove the pin, or keep the old base);
- an expired pin is dropped at the next base update (until then the deployment that
  carries it keeps it, and ``hotfix list`` says it expired).

:func:`plan_for_base` is what an update calls; :func:`decide` the rule for one hotfix.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from atoll.store.packages import compare_versions

if TYPE_CHECKING:
    from atoll.store.repo import Repo

__all__ = ["KINDS", "BasePlan", "Decision", "Hotfix", "base_of", "decide", "plan_for_base",
           "valid_name"]

KINDS = ("fast-track", "pin")
Kind = Literal["fast-track", "pin"]
Action = Literal["keep", "drop", "block"]

_NAME = re.compile(r"[a-z0-9][a-z0-9+.-]+")
_VERSION = re.compile(r"(?:[0-9]+:)?[0-9][A-Za-z0-9.+~:-]*")


def valid_name(name: str) -> bool:
    """A Debian package name (policy 5.6.1: lower case, digits, ``+ - .``; >= 2 chars)."""
    return bool(_NAME.fullmatch(name))


def _valid_version(v: str) -> bool:
    return bool(_VERSION.fullmatch(v))


@dataclass(frozen=True)
class Hotfix:
    """One hotfix record (``atoll/state/hotfixes.json``).

    ``expires`` is an aware UTC time or None; ``added`` an ISO 8601 UTC string;
    ``sha256`` the .deb's digest (the file is kept under ``atoll/state/hotfixes/``);
    ``state`` is ``active`` or ``dropped`` (with ``why``: the base caught up, or it
    expired).
    """

    name: str
    version: str
    kind: Kind
    sha256: str
    added: str
    reason: str = ""
    expires: dt.datetime | None = None
    architecture: str = ""
    state: Literal["active", "dropped"] = "active"
    why: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "kind": self.kind,
                "sha256": self.sha256, "added": self.added, "reason": self.reason,
                "expires": (self.expires.strftime("%Y-%m-%dT%H:%M:%SZ")
                            if self.expires else None),
                "architecture": self.architecture, "state": self.state, "why": self.why}

    @classmethod
    def from_json(cls, d: Any) -> Hotfix:
        """Raises: ValueError: not a hotfix record (what is wrong, by field)."""
        if not isinstance(d, dict):
            raise ValueError("a hotfix is not an object")
        name, version = d.get("name"), d.get("version")
        if not isinstance(name, str) or not valid_name(name):
            raise ValueError(f"name: {str(name)[:80]!r} is not a package name")
        if not isinstance(version, str) or not _valid_version(version):
            raise ValueError(f"{name}: version {str(version)[:80]!r} is not a Debian version")
        if d.get("kind") not in KINDS:
            raise ValueError(f"{name}: kind is not one of {', '.join(KINDS)}")
        sha = d.get("sha256")
        if not isinstance(sha, str) or not re.fullmatch(r"[0-9a-f]{64}", sha):
            raise ValueError(f"{name}: sha256 is not 64 hex digits")
        for key in ("added", "reason", "architecture", "why"):
            if not isinstance(d.get(key, ""), str):
                raise ValueError(f"{name}: {key} is not a string")
        if d.get("state", "active") not in ("active", "dropped"):
            raise ValueError(f"{name}: state is not active or dropped")
        exp = d.get("expires")
        expires = None
        if exp is not None:
            try:
                expires = parse_time(exp) if isinstance(exp, str) else None
            except ValueError:
                expires = None
            if expires is None:
                raise ValueError(f"{name}: expires is not a time")
        return cls(name=name, version=version, kind=d["kind"], sha256=sha,
                   added=d.get("added", ""), reason=d.get("reason", ""), expires=expires,
                   architecture=d.get("architecture", ""), state=d.get("state", "active"),
                   why=d.get("why", ""))

    def expired(self, now: dt.datetime) -> bool:
        return self.expires is not None and self.expires <= now


def parse_time(text: str) -> dt.datetime:
    """``2026-12-31`` (midnight UTC) or an ISO 8601 time (no zone: UTC), as aware UTC.

    Raises: ValueError: not a date or time.
    """
    t = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.UTC)
    try:
        return t.astimezone(dt.UTC)
    except OverflowError:  # 9999-12-31T23:00-01:00: past what a datetime holds
        raise ValueError(f"{text!r}: out of range") from None


@dataclass(frozen=True)
class Decision:
    action: Action
    why: str


def decide(h: Hotfix, base_version: str | None, now: dt.datetime) -> Decision:
    """What a new base means for ``h``.

    Args:
        base_version: the version of ``h.name`` the new base ships (None: not in it).
        now: an aware time, for the pin's expiry.

    Returns:
        keep (re-apply on the new base), drop (with why), or block (the update waits;
        why says what to do).
    """
    if h.expired(now):
        return Decision("drop", f"expired {h.to_json()['expires']}")
    if base_version is None:
        return Decision("keep", f"the base does not ship {h.name}")
    cmp = compare_versions(base_version, h.version)
    if h.kind == "fast-track":
        if cmp >= 0:
            return Decision("drop", f"the base ships {h.name} {base_version} (>= {h.version})")
        return Decision("keep", f"the base ships {h.name} {base_version} (< {h.version})")
    if cmp > 0:
        return Decision("block", f"pinned {h.name} {h.version} but the new base ships the newer "
                        f"{base_version}: remove the pin (`atoll hotfix remove {h.name}`) to take "
                        "the update, or stay on the current base")
    return Decision("keep", f"pinned {h.name} {h.version} (the base ships {base_version})")


@dataclass(frozen=True)
class BasePlan:
    """What to do with the active hotfixes on a new base: ``keep`` (re-applied, in
    order), ``drop`` and ``block`` (each with its reason). Blocked: the update waits."""

    keep: tuple[Hotfix, ...]
    drop: tuple[tuple[Hotfix, str], ...]
    block: tuple[tuple[Hotfix, str], ...]


def plan_for_base(hotfixes: list[Hotfix], manifest: list[dict[str, str]] | tuple[
        dict[str, str], ...], now: dt.datetime) -> BasePlan:
    """Decide for every *active* hotfix against a new base's package manifest (dropped
    records are ignored: they are history)."""
    shipped = {p.get("name"): p.get("version", "") for p in manifest}
    keep: list[Hotfix] = []
    drop: list[tuple[Hotfix, str]] = []
    block: list[tuple[Hotfix, str]] = []
    for h in hotfixes:
        if h.state != "active":
            continue
        d = decide(h, shipped.get(h.name), now)
        if d.action == "keep":
            keep.append(h)
        elif d.action == "drop":
            drop.append((h, d.why))
        else:
            block.append((h, d.why))
    return BasePlan(tuple(keep), tuple(drop), tuple(block))


def base_of(repo: Repo, commit: str) -> tuple[str, list[dict[str, Any]]]:
    """(base commit, the hotfix packages it carries) of ``commit`` (itself and [] when
    it is no hotfix derivation). Pure but for reading the commit object, so that
    the update path asks it without loading the hotfix machinery (dpkg, compose).

    Raises: StoreError, CorruptObjectError (the commit is missing or damaged)."""
    meta = repo.read_commit(commit).metadata.get("hotfix")
    if isinstance(meta, dict) and isinstance(meta.get("base"), str):
        pkgs = meta.get("packages")
        return meta["base"], [p for p in pkgs if isinstance(p, dict)] \
            if isinstance(pkgs, list) else []
    return commit, []

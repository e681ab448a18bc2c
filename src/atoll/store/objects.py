"""Object model and ids. Pure: no I/O beyond reading what it is given.

Three kinds of object, each named by the sha256 of its canonical form:

file
    ``sha256(b"atoll-file\\0" + canonjson(meta) + b"\\0" + content)`` where
    ``meta`` is ``{"type": "reg"|"lnk", "mode", "uid", "gid", "xattrs"}``
    (xattrs as ``{name: base64(value)}``). For a symlink the content is its
    target. The id therefore covers content, mode, ownership and xattrs such
    as ``security.capability`` (ping).
dirtree
    canonical JSON ``{"entries": {name: entry}}``; an entry is
    ``{"t": "f", "id": FILE}`` or ``{"t": "d", "id": DIRTREE, "meta": DIRMETA}``
    where DIRMETA is ``{"mode", "uid", "gid", "xattrs"}``.
commit
    canonical JSON with the root dirtree id and root DIRMETA, parent, version,
    timestamp, subject, the package manifest and free-form metadata.
"""

from __future__ import annotations

import base64
import hashlib
import re
import stat
from dataclasses import dataclass, field
from typing import Any

from atoll.core import canonjson
from atoll.core.errors import CorruptObjectError, StoreError

__all__ = [
    "FILE_PREFIX",
    "Commit",
    "DirEntry",
    "DirMeta",
    "FileMeta",
    "check_name",
    "file_header",
    "is_object_id",
]

FILE_PREFIX = b"atoll-file\0"


_OBJECT_ID = re.compile(r"[0-9a-f]{64}")


def is_object_id(value: str) -> bool:
    """Whether ``value`` is an object id: 64 lower-case hex digits (sha256)."""
    return _OBJECT_ID.fullmatch(value) is not None


_UNSAFE_NAMES = frozenset(("", ".", ".."))


def check_name(name: str) -> str:
    """Refuse directory entry names that could escape a checkout."""
    if name in ("", ".", "..") or "/" in name or "\0" in name:
        raise StoreError(f"refusing unsafe file name {name!r} in a dirtree object")
    return name


def _xattrs_json(xattrs: dict[str, bytes]) -> dict[str, str]:
    return {k: base64.b64encode(v).decode() for k, v in sorted(xattrs.items())}


def _xattrs_from_json(data: dict[str, str]) -> dict[str, bytes]:
    return {k: base64.b64decode(v) for k, v in data.items()}


@dataclass(frozen=True)
class FileMeta:
    """What a file object's id covers besides its content."""

    kind: str  # "reg" or "lnk"
    mode: int  # permission bits incl. setuid/setgid/sticky (no type bits)
    uid: int
    gid: int
    xattrs: dict[str, bytes] = field(default_factory=dict, hash=False)

    @classmethod
    def from_stat(cls, st: Any, xattrs: dict[str, bytes]) -> FileMeta:
        if stat.S_ISREG(st.st_mode):
            kind = "reg"
        elif stat.S_ISLNK(st.st_mode):
            kind = "lnk"
        else:
            raise StoreError("not a regular file or symlink")
        mode = stat.S_IMODE(st.st_mode) if kind == "reg" else 0o777
        return cls(kind, mode, st.st_uid, st.st_gid, xattrs)

    def to_json(self) -> dict[str, Any]:
        return {
            "type": self.kind,
            "mode": self.mode,
            "uid": self.uid,
            "gid": self.gid,
            "xattrs": _xattrs_json(self.xattrs),
        }


def file_header(meta: FileMeta) -> bytes:
    return FILE_PREFIX + canonjson.dumps(meta.to_json()) + b"\0"


def file_hasher(meta: FileMeta) -> Any:
    h = hashlib.sha256()
    h.update(file_header(meta))
    return h


@dataclass(frozen=True)
class DirMeta:
    mode: int
    uid: int
    gid: int
    xattrs: dict[str, bytes] = field(default_factory=dict, hash=False)

    def to_json(self) -> dict[str, Any]:
        return {"mode": self.mode, "uid": self.uid, "gid": self.gid,
                "xattrs": _xattrs_json(self.xattrs)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DirMeta:
        return cls(int(data["mode"]), int(data["uid"]), int(data["gid"]),
                   _xattrs_from_json(data.get("xattrs", {})))


@dataclass(frozen=True)
class DirEntry:
    name: str
    is_dir: bool
    id: str
    meta: DirMeta | None = None  # directories only

    def to_json(self) -> dict[str, Any]:
        if self.is_dir:
            assert self.meta is not None
            return {"t": "d", "id": self.id, "meta": self.meta.to_json()}
        return {"t": "f", "id": self.id}


def dirtree_bytes(entries: list[DirEntry]) -> bytes:
    return canonjson.dumps({"entries": {e.name: e.to_json() for e in entries}})


def _object_id(value: Any, what: str) -> str:
    if not isinstance(value, str) or not is_object_id(value):
        raise CorruptObjectError(f"{what}: {value!r} is not an object id")
    return value


def parse_dirtree(data: bytes) -> list[DirEntry]:
    """Parse a dirtree object's bytes.

    Raises:
        CorruptObjectError: not canonical JSON of the expected shape, an unsafe name,
            or an entry id that is not an object id.
    """
    try:
        raw = canonjson.loads(data)
        items = sorted(raw["entries"].items())
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CorruptObjectError(f"malformed dirtree object: {exc}") from exc
    # Deploy parses every dirtree of a commit (thousands): the checks are inline, and
    # the functions that word the errors run only for an entry that fails them.
    out = []
    fullmatch = _OBJECT_ID.fullmatch
    for name, ent in items:
        try:
            if name in _UNSAFE_NAMES or "/" in name or "\0" in name:
                check_name(name)
            kind = ent["t"]
            oid = ent["id"]
            if type(oid) is not str or fullmatch(oid) is None:
                _object_id(oid, f"dirtree entry {name!r}")
            if kind == "f":
                out.append(DirEntry(name, False, oid))
            elif kind == "d":
                out.append(DirEntry(name, True, oid, DirMeta.from_json(ent["meta"])))
            else:
                raise CorruptObjectError(f"unknown dirtree entry type {kind!r} for {name!r}")
        except CorruptObjectError:
            raise
        except (StoreError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise CorruptObjectError(f"malformed dirtree entry {name!r}: {exc}") from exc
    return out


@dataclass(frozen=True)
class Commit:
    """A commit object: one complete tree plus what describes it."""

    tree: str
    root: DirMeta
    parent: str | None
    version: str
    timestamp: int
    subject: str = ""
    manifest: tuple[dict[str, str], ...] = ()
    metadata: dict[str, Any] = field(default_factory=dict, hash=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "tree": self.tree,
            "root": self.root.to_json(),
            "parent": self.parent,
            "version": self.version,
            "timestamp": self.timestamp,
            "subject": self.subject,
            "manifest": list(self.manifest),
            "metadata": self.metadata,
        }

    def to_bytes(self) -> bytes:
        return canonjson.dumps(self.to_json())

    @classmethod
    def from_bytes(cls, data: bytes) -> Commit:
        """Raises: CorruptObjectError: not a commit object."""
        try:
            raw = canonjson.loads(data)
            parent = raw.get("parent")
            return cls(
                tree=_object_id(raw["tree"], "commit tree"),
                root=DirMeta.from_json(raw["root"]),
                parent=None if parent is None else _object_id(parent, "commit parent"),
                version=str(raw.get("version", "")),
                timestamp=int(raw.get("timestamp", 0)),
                subject=str(raw.get("subject", "")),
                manifest=tuple(dict(p) for p in raw.get("manifest", ())),
                metadata=dict(raw.get("metadata", {})),
            )
        except CorruptObjectError:
            raise
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise CorruptObjectError(f"malformed commit object: {exc}") from exc

    def packages(self) -> dict[str, dict[str, str]]:
        return {p["name"]: p for p in self.manifest}

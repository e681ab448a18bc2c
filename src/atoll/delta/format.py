"""The static delta file: layout, bounds, header (shared by the writer and the reader).

Format 2 (written since the client imports in bounded memory; docs/delivery.md)::

    b"ATOLL-DELTA-2\\n"
    u64 big-endian length, then a zstd frame: the header (canonical JSON)
    u64 big-endian length, then the *solid* stream: zstd frames, window <= 16 MiB
    patch frames, back to back (their lengths are in the header)

Header::

    {"format": 2, "from": FROM, "to": TO,
     "meta": [[id, kind, size], ...],            dirtrees and the commit, in the solid stream
     "files": [{"id", "meta", "size", "how": "raw"}                 in the solid stream
               | {"id", "meta", "size", "how": "bsdiff", "base", "raw": [3 lengths]}  solid
               | {"id", "meta", "size", "how": "patch", "base", "clen", "segs"}
               | {"id", "meta", "size", "how": "gzip", "base", "clen", "segs", "usize",
                  "level", "base_gz" | "dict": [file ids]}
               | {"id", "meta", "size", "how": "xz", "base", "clen", "segs", "usize",
                  "options", "offset", "xz_raw", "base_xz": offset | null}, ...]}

A patch is a list of *segments* ``[clen, usize, base_offset, base_length]``:
each is one zstd frame of at most :data:`SEG_MAX` bytes of content,
compressed with a window of at most :data:`SEG_BASE_MAX` bytes of the base
stream as raw-content dictionary (``zstd --patch-from``); windows only move
forward. The base stream is the base file; for ``gzip`` its decompressed
content (``base_gz``) or the listed files concatenated (``dict``); for ``xz``
the base with its xz stream (at ``base_xz``) decompressed.

Format 1 (``ATOLL-DELTA-1``, still read): the same, but one solid frame of a
window up to 128 MiB and each patch one frame whose dictionary is the whole
base stream (``clen``, no ``segs``; ``base_xz`` a boolean).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import IO, Any

import zstandard

from atoll.core import canonjson
from atoll.core.errors import CorruptObjectError
from atoll.delta._util import check_kind

__all__ = [
    "BSPATCH_IN_MEMORY",
    "FORMAT",
    "MAGIC",
    "MAGIC_V1",
    "META_MAX",
    "SEG_BASE_MAX",
    "SEG_MAX",
    "SOLID_WINDOW_LOG",
    "SOLID_WINDOW_MAX",
    "DeltaHeader",
    "read_header",
    "write_header",
]

FORMAT = 2
MAGIC = b"ATOLL-DELTA-2\n"
MAGIC_V1 = b"ATOLL-DELTA-1\n"
# The solid stream's zstd window: what the host's decoder holds while reading it.
SOLID_WINDOW_LOG = 24
SOLID_WINDOW_MAX = 1 << SOLID_WINDOW_LOG
# A patch segment: content out, and the window of the base used as its dictionary.
SEG_MAX = 8 << 20
SEG_BASE_MAX = 16 << 20
# bsdiff entries up to this (base + blocks + result) are applied in memory, larger
# ones in batches.
BSPATCH_IN_MEMORY = 16 << 20
# A dirtree, commit or bsdiff control block larger than this is not plausible.
META_MAX = 64 << 20
_U64 = struct.Struct(">Q")
_MAX_HEADER = 256 << 20


@dataclass
class DeltaHeader:
    """The parsed header of a delta file."""

    from_commit: str
    to_commit: str
    meta: list[tuple[str, str, int]]
    files: list[dict[str, Any]]
    offsets: dict[str, int] = field(default_factory=dict)
    format: int = FORMAT

    @property
    def unpacked_size(self) -> int:
        return sum(m[2] for m in self.meta) + sum(int(f["size"]) for f in self.files)


def write_header(fh: IO[bytes], header: dict[str, Any], solid_length: int) -> None:
    """Write the magic, the header and the solid stream's length (the stream follows)."""
    data = zstandard.ZstdCompressor(level=19).compress(canonjson.dumps(header))
    fh.write(MAGIC + _U64.pack(len(data)) + data + _U64.pack(solid_length))


def read_header(fh: IO[bytes]) -> DeltaHeader:
    """Parse a delta's header (format 1 or 2); ``fh`` is left at the solid stream.

    Raises:
        CorruptObjectError: not a delta, or a malformed header.
    """
    try:
        magic = fh.read(len(MAGIC))
        if magic not in (MAGIC, MAGIC_V1):
            raise ValueError("bad magic")
        (hlen,) = _U64.unpack(fh.read(8))
        if hlen > _MAX_HEADER:
            raise ValueError("header too large")
        raw = canonjson.loads(zstandard.ZstdDecompressor().decompress(
            fh.read(hlen), max_output_size=_MAX_HEADER))
        (slen,) = _U64.unpack(fh.read(8))
        version = 1 if magic == MAGIC_V1 else 2
        if int(raw.get("format", 1)) != version:
            raise ValueError(f"format {raw.get('format')!r} in a version {version} file")
        hdr = DeltaHeader(str(raw["from"]), str(raw["to"]),
                          [(str(i), check_kind(str(k)), int(n)) for i, k, n in raw["meta"]],
                          list(raw["files"]), format=version)
        start = fh.tell()
        hdr.offsets = {"solid": start, "patches": start + slen}
        return hdr
    except (ValueError, KeyError, TypeError, AttributeError, struct.error,
            zstandard.ZstdError) as exc:
        raise CorruptObjectError(f"not a valid atoll delta: {exc}") from exc

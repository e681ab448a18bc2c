"""Files the host can rebuild: compressed streams the host can reproduce exactly.

* a gzip file that ``gzip -n -LEVEL`` reproduces (an initrd);
* a file with an embedded xz stream that ``xz OPTIONS`` reproduces (a kernel
  ``vmlinuz``: the x86 boot stub, then the kernel compressed by the kernel's
  ``scripts/xz_wrap.sh``: ``xz --check=crc32 --x86 --lzma2=dict=32MiB``).

A compressed initrd changes completely between kernels, so a binary diff of
the compressed bytes is useless. When ``gzip -n -LEVEL`` (GNU gzip, run through
atoll's command gateway) recompresses the decompressed content to the very same
bytes, a delta ships a diff of the *decompressed* content and the host rebuilds
the file; its object id is verified as for any other file. The generator only
chooses this when it reproduced the file itself; a host whose gzip differs
fails the id check and falls back to fetching the object.
"""

from __future__ import annotations

import gzip
import lzma
import zlib
from collections.abc import Iterable, Iterator

from atoll.core.run import pipe, run

__all__ = [
    "GZIP_LEVELS",
    "MEMORY_MARGIN",
    "MIN_SIZE",
    "XZ_OPTIONS",
    "available_memory",
    "cpio_members",
    "find_xz",
    "gunzip",
    "gzip_level",
    "regzip",
    "regzip_pieces",
    "rexz",
    "rexz_pieces",
    "xz_options",
]

GZIP_LEVELS = (6, 9)
MIN_SIZE = 1 << 20


def gunzip(content: bytes) -> bytes | None:
    """The decompressed content of a single-member ``gzip -n`` stream, else None."""
    # Header: magic, deflate, no flags (no name/comment/extra), mtime 0 (-n).
    if content[:4] != b"\x1f\x8b\x08\x00" or content[4:8] != b"\0\0\0\0":
        return None
    try:
        return gzip.decompress(content)
    except (OSError, EOFError, zlib.error):
        return None


def regzip(raw: bytes, level: int) -> bytes:
    """``gzip -n -LEVEL`` of ``raw``.

    Raises:
        ToolError: gzip failed.
    """
    return run(["gzip", "-n", f"-{level}"], input=raw, what="gzip", timeout=600).stdout


def regzip_pieces(pieces: Iterable[bytes | memoryview], level: int) -> Iterator[bytes]:
    """``gzip -n -LEVEL`` of a stream (the host's rebuild: bounded memory).

    Raises:
        ToolError: gzip failed.
    """
    return pipe(["gzip", "-n", f"-{level}"], pieces, what="gzip")


def gzip_level(content: bytes, raw: bytes) -> int | None:
    """The gzip level that reproduces ``content`` from ``raw`` exactly, if any."""
    for level in GZIP_LEVELS:
        if regzip(raw, level) == content:
            return level
    return None


def cpio_members(data: bytes) -> list[tuple[str, int, int]]:
    """(name, offset, size) of every member of a ``newc`` cpio archive (or concatenation).

    An initramfs is such an archive; most of its members are files of the
    image itself (kernel modules, libraries), which a delta uses as the
    dictionary to rebuild it. Stops quietly at the first thing that is not a
    newc header.
    """
    out = []
    pos = 0
    while pos + 110 <= len(data):
        if data[pos:pos + 6] != b"070701":
            nxt = data.find(b"070701", pos)  # zero padding between archives
            if nxt < 0 or data[pos:nxt].strip(b"\0"):
                break
            pos = nxt
            continue
        try:
            fsize = int(data[pos + 54:pos + 62], 16)
            namesize = int(data[pos + 94:pos + 102], 16)
        except ValueError:
            break
        name = data[pos + 110:pos + 110 + namesize - 1].decode("utf-8", "replace")
        pos = (pos + 110 + namesize + 3) & ~3
        out.append((name, pos, fsize))
        pos = (pos + fsize + 3) & ~3
    return out


# Option sets tried, first the kernel's (scripts/xz_wrap.sh on x86), then xz's defaults.
XZ_OPTIONS: tuple[tuple[str, ...], ...] = (
    ("--check=crc32", "--x86", "--lzma2=dict=32MiB"),
    ("--check=crc64",),
    ("--check=crc64", "-9"),
)


def find_xz(content: bytes) -> tuple[int, int, bytes] | None:
    """(offset, length, decompressed) of the first xz stream inside ``content``."""
    start = content.find(b"\xfd7zXZ\x00")
    if start < 0:
        return None
    dec = lzma.LZMADecompressor(format=lzma.FORMAT_XZ)
    try:
        raw = dec.decompress(content[start:])
    except lzma.LZMAError:
        return None
    if not dec.eof:
        return None
    return start, len(content) - start - len(dec.unused_data), raw


def rexz(raw: bytes, options: list[str]) -> bytes:
    """``xz OPTIONS -c`` of ``raw``.

    Raises:
        ToolError: xz failed.
    """
    return run(["xz", *options, "-c"], input=raw, what="xz", timeout=1800).stdout


def rexz_pieces(pieces: Iterable[bytes | memoryview], options: list[str]) -> Iterator[bytes]:
    """``xz OPTIONS -c`` of a stream (the host's rebuild: bounded memory in atoll; xz
    itself needs what its options say: 370 MiB for the kernel's 32 MiB dictionary).

    xz runs with ``--memlimit-compress`` set to the memory the host has available
    (less :data:`MEMORY_MARGIN`) and ``--no-adjust``: on a host that cannot spare
    it, xz refuses at once (it would otherwise shrink its dictionary and give other
    bytes) instead of pushing the database out of memory.

    Raises:
        ToolError: xz failed, or refused for lack of memory.
    """
    limit = []
    avail = available_memory()
    if avail is not None:
        limit = [f"--memlimit-compress={max(avail - MEMORY_MARGIN, 1 << 20)}", "--no-adjust"]
    return pipe(["xz", *options, *limit, "-c"], pieces, what="xz")


MEMORY_MARGIN = 64 << 20


def available_memory() -> int | None:
    """``MemAvailable`` of /proc/meminfo, in bytes (None when unknown)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def xz_options(stream: bytes, raw: bytes) -> list[str] | None:
    """The option set of :data:`XZ_OPTIONS` that reproduces ``stream`` from ``raw``."""
    for opts in XZ_OPTIONS:
        if rexz(raw, list(opts)) == stream:
            return list(opts)
    return None

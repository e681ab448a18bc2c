"""Static deltas between two commits: generate and apply.

File format (one file, ``deltas/<from>-<to>.delta`` on the update server)::

    b"ATOLL-DELTA-1\\n"
    u64 big-endian length, then a zstd frame: the header (canonical JSON)
    u64 big-endian length, then a zstd frame: the *solid* stream
    patch frames, back to back (their lengths are in the header)

Header::

    {"format": 1, "from": FROM, "to": TO,
     "meta": [[id, kind, size], ...],            dirtrees and the commit, in the solid stream
     "files": [{"id", "meta", "size", "how": "raw"}                 in the solid stream
               | {"id", "meta", "size", "how": "patch", "base", "clen"}
               | {"id", "meta", "size", "how": "bsdiff", "base", "raw": [3 lengths]}  solid
               | {"id", "meta", "size", "how": "gzip", "base", "clen", "usize",
                  "level", "base_gz" | "dict": [file ids]}
               | {"id", "meta", "size", "how": "xz", "base", "clen", "usize",
                  "options", "offset", "xz_raw", "base_xz"}, ...]}

The solid stream is one zstd frame holding the meta objects then every raw
file's content, in header order, so many small files compress together. A
patch is the new content compressed with the paired old file as a raw-content
dictionary (what ``zstd --patch-from`` does). Per file the generator keeps
the smaller of patch and plain compression. A gzip file that ``gzip -n -LEVEL``
reproduces (an initrd) may instead ship as a patch of its *decompressed*
content, rebuilt on the host (``how: gzip``, see :mod:`atoll.delta.recompress`);
when it is an initramfs (a cpio archive) whose members are files of the new
tree, the dictionary is those files (``dict``), so the patch is nearly empty.
Inputs above :data:`CLI_MIN` are diffed with the ``zstd`` command. A file may
also ship as bsdiff blocks (``how: bsdiff``; bsdiff4, each block zstd -19)
when that is smaller: on kernel modules it usually is.

Apply rebuilds every object and hands it to the store, which verifies its id
(:meth:`Repo.import_file_object`; sha256 of dirtrees and the commit); the
commit object is written last, only once everything it reaches is present.
"""

from __future__ import annotations

import hashlib
import struct
import tempfile
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import bsdiff4.core  # type: ignore[import-untyped]
import zstandard

from atoll.core import canonjson
from atoll.core.errors import CorruptObjectError, HostStateError, StoreError
from atoll.core.fsutil import open_atomic
from atoll.core.progress import progress, track
from atoll.core.run import require_tool, run
from atoll.delta._util import (
    check_kind,
    commit_files,
    commit_objects,
    meta_from_json,
    raw_dict,
    window_log_for,
)
from atoll.delta.pairing import FileInfo, pair_files
from atoll.delta.recompress import (
    MIN_SIZE,
    cpio_members,
    find_xz,
    gunzip,
    gzip_level,
    regzip,
    rexz,
    xz_options,
)
from atoll.store.objects import Commit, parse_dirtree
from atoll.store.repo import Repo

__all__ = [
    "MAGIC",
    "DeltaHeader",
    "DeltaStats",
    "apply_delta",
    "generate_delta",
    "read_header",
    "repo_missing",
]

MAGIC = b"ATOLL-DELTA-1\n"
SOLID_LEVEL = 19
PATCH_LEVEL = 12
# A patch must be at most this fraction of a plain compression to be kept.
PATCH_GAIN = 0.9
# Above this (base + new bytes), patches are made with the zstd command.
CLI_MIN = 8 << 20
# Up to this (base + new bytes), bsdiff is tried too (memory: ~9x the base).
BSDIFF_MAX = 64 << 20
_U64 = struct.Struct(">Q")
_MAX_HEADER = 256 << 20


@dataclass
class DeltaStats:
    """What went into a delta."""

    size: int = 0
    files_raw: int = 0
    files_patched: int = 0
    files_rebuilt: int = 0
    meta_objects: int = 0
    meta_bytes: int = 0
    bytes_new: int = 0
    bytes_patch: int = 0

    def to_json(self) -> dict[str, int]:
        return dict(self.__dict__)


@dataclass
class DeltaHeader:
    """The parsed header of a delta file."""

    from_commit: str
    to_commit: str
    meta: list[tuple[str, str, int]]
    files: list[dict[str, Any]]
    offsets: dict[str, int] = field(default_factory=dict)

    @property
    def unpacked_size(self) -> int:
        return sum(m[2] for m in self.meta) + sum(int(f["size"]) for f in self.files)


def _patch(content: bytes, base: bytes, level: int = PATCH_LEVEL, cli_level: int = 19) -> bytes:
    if len(content) + len(base) > CLI_MIN:
        return _patch_cli(content, base, cli_level)
    params = zstandard.ZstdCompressionParameters.from_level(
        level, window_log=window_log_for(len(base) + len(content)))
    cctx = zstandard.ZstdCompressor(dict_data=raw_dict(base), compression_params=params)
    return cctx.compress(content)


def _bsdiff(content: bytes, base: bytes) -> tuple[int, bytes, list[int]]:
    """bsdiff's control/diff/extra blocks (bsdiff4).

    On kernel modules (relocations shift every address a little) this is ~35 %
    smaller than a zstd patch: bsdiff's byte-wise differences compress to nearly
    nothing. The blocks go into the delta's solid stream (compressed together
    with every other file's: another ~15 % smaller than a frame each).

    Returns:
        (size estimate: each block at zstd -19, the blocks joined and compressed
        at level 1 to hold them cheaply until written, the blocks' lengths)
    """
    blocks = bsdiff4.core.diff(base, content)
    est = sum(len(zstandard.ZstdCompressor(level=19).compress(b)) for b in blocks)
    packed = zstandard.ZstdCompressor(level=1).compress(b"".join(blocks))
    return est, packed, [len(b) for b in blocks]


def _bspatch(base: bytes, size: int, joined: bytes, lengths: list[int]) -> bytes:
    blocks = []
    pos = 0
    for n in lengths:
        blocks.append(joined[pos:pos + n])
        pos += n
    if pos != len(joined) or len(blocks) != 3:
        raise CorruptObjectError("delta: malformed bsdiff entry")
    try:
        out: bytes = bsdiff4.core.patch(base, size, *blocks)
    except ValueError as exc:
        raise CorruptObjectError(f"delta: bsdiff patch does not apply: {exc}") from exc
    return out


def _patch_cli(content: bytes, base: bytes, level: int) -> bytes:
    """``zstd --patch-from`` (the CLI: its prefix mode with long-distance matching finds
    matches in a large base that a python dictionary's hash tables miss: a 128 MB
    initrd patch is 10 MB instead of 27 MB; the decompressed kernel 4.4 MB at
    level 19, 8 MB at level 12). The frame decompresses with the base as a
    raw-content dictionary."""
    require_tool("zstd")
    with tempfile.TemporaryDirectory(prefix="patch-") as d:
        bp, np_ = Path(d) / "base", Path(d) / "new"
        bp.write_bytes(base)
        np_.write_bytes(content)
        wl = window_log_for(len(base) + len(content)) + 1
        return run(["zstd", "-q", "-c", f"-{min(19, max(level, 9))}", f"--long={wl}",
                    f"--patch-from={bp}", np_], what="zstd --patch-from", timeout=3600).stdout


def generate_delta(repo: Repo, from_commit: str, to_commit: str, out: Path, *,
                   level: int = SOLID_LEVEL) -> DeltaStats:
    """Write the static delta ``from_commit`` -> ``to_commit`` to ``out`` (atomically).

    Args:
        repo: holds both commits completely.
        level: zstd level of the solid stream (patches use min(level, PATCH_LEVEL)).

    Raises:
        StoreError: a commit or object is missing.

    Returns:
        Counts and sizes of what went in.
    """
    old_objs = commit_objects(repo, from_commit)
    have = {(o.id, o.kind) for o in old_objs}
    new_objs = [o for o in commit_objects(repo, to_commit) if (o.id, o.kind) not in have]
    meta = [o for o in new_objs if o.kind != "file"]
    meta.sort(key=lambda o: o.kind == "commit")  # the commit last
    new_files = {o.id: o for o in new_objs if o.kind == "file"}
    infos = [f for f in commit_files(repo, to_commit) if f.id in new_files]
    first: dict[str, FileInfo] = {}
    for f in infos:  # one entry per object, at its first path
        first.setdefault(f.id, f)
    infos = list(first.values())
    pairs = pair_files(commit_files(repo, from_commit), infos)
    stats = DeltaStats()

    plevel = max(9, min(level, PATCH_LEVEL))
    new_paths = {f.path: f for f in commit_files(repo, to_commit)}

    def members_dict(raw: bytes) -> list[str]:
        """New-tree files identical to members of an (initramfs) cpio archive."""
        ids = []
        for name, off, size in cpio_members(raw):
            n = name.lstrip("./")
            for cand in (n, "usr/" + n):
                fi = new_paths.get(cand)
                if fi is not None and fi.size == size and not fi.is_link and size >= 64:
                    if repo.read_file_content(fi.id) == raw[off:off + size]:
                        ids.append(fi.id)
                    break
        return ids

    def decide(fid: str) -> tuple[str, tuple[bytes, dict[str, Any]] | None]:
        base = pairs.get(fid)
        if base is None:
            return fid, None
        content = repo.read_file_content(fid)
        old = repo.read_file_content(base.id)
        best: tuple[bytes, dict[str, Any]] | None = None
        plain = len(zstandard.ZstdCompressor(level=3).compress(content))
        patch = _patch(content, old, plevel)
        if len(patch) < plain * PATCH_GAIN:
            best = (patch, {"how": "patch"})
        if len(content) + len(old) <= BSDIFF_MAX:
            est, packed, lengths = _bsdiff(content, old)
            if est < min(len(patch), plain * PATCH_GAIN):
                best = (packed, {"how": "bsdiff", "raw": lengths, "_est": est})
                patch = b"\0" * est  # only its length is compared below
        raw = gunzip(content) if len(content) >= MIN_SIZE else None
        if raw is not None:
            lvl = gzip_level(content, raw)
            if lvl is not None:
                how: dict[str, Any] = {"how": "gzip", "level": lvl, "usize": len(raw)}
                ids = members_dict(raw)
                if ids and sum(new_files_size[i] for i in ids) * 2 >= len(raw):
                    dictionary = b"".join(repo.read_file_content(i) for i in ids)
                    how["dict"] = ids
                else:
                    old_raw = gunzip(old)
                    dictionary = old if old_raw is None else old_raw
                    how["base_gz"] = old_raw is not None
                # With the new tree's files as dictionary the matches are exact and
                # long: level 12 is as good as 19 (0.35 MB) at a twentieth of the time.
                gz = _patch(raw, dictionary, plevel, 12 if "dict" in how else 19)
                if len(gz) < min(len(patch), plain) * PATCH_GAIN:
                    best = (gz, how)
        xz = find_xz(content) if len(content) >= MIN_SIZE and raw is None else None
        if xz is not None:
            off, length, xraw = xz
            opts = xz_options(content[off:off + length], xraw)
            if opts is not None:
                expanded = content[:off] + xraw + content[off + length:]
                old_xz = find_xz(old)
                old_exp = old if old_xz is None else (
                    old[:old_xz[0]] + old_xz[2] + old[old_xz[0] + old_xz[1]:])
                px = _patch(expanded, old_exp, plevel)
                if len(px) < min(len(patch), plain) * PATCH_GAIN:
                    best = (px, {"how": "xz", "options": opts, "offset": off,
                                 "xz_raw": len(xraw), "usize": len(expanded),
                                 "base_xz": old_xz is not None})
        return fid, best

    new_files_size = {f.id: f.size for f in new_paths.values()}
    old_stack = threading.stack_size(256 << 20)  # bsdiff's suffix sort recurses deeply
    try:
        with ThreadPoolExecutor(2) as pool:
            patches = dict(track(pool.map(decide, [f.id for f in infos]),
                                 f"delta from {from_commit[:12]}: patches", unit="files",
                                 total=len(infos)))
    finally:
        threading.stack_size(old_stack)
    # Files rebuilt from other files of the new tree come last, after those are in.
    infos.sort(key=lambda f: (patches.get(f.id) or (b"", {}))[1].get("how") in ("gzip", "xz"))
    entries: list[dict[str, Any]] = []
    with progress(f"delta from {from_commit[:12]}: compress", sum(f.size for f in infos),
                  unit="bytes") as step, tempfile.TemporaryFile(dir=repo.tmp) as solid, \
            tempfile.TemporaryFile(dir=repo.tmp) as patch_area:
        params = zstandard.ZstdCompressionParameters.from_level(
            level, window_log=27, enable_ldm=True, threads=2)
        writer = zstandard.ZstdCompressor(compression_params=params).stream_writer(
            solid, closefd=False)
        meta_rows = []
        for o in meta:
            data = repo.read_meta_object(o.id, o.kind)
            writer.write(data)
            meta_rows.append([o.id, o.kind, len(data)])
            stats.meta_objects += 1
            stats.meta_bytes += len(data)
        for f in infos:
            content = repo.read_file_content(f.id)
            entry: dict[str, Any] = {"id": f.id, "meta": repo.file_meta(f.id).to_json(),
                                     "size": len(content)}
            stats.bytes_new += len(content)
            step.advance(len(content))
            chosen = patches.get(f.id)
            if chosen is None:
                entry["how"] = "raw"
                writer.write(content)
                stats.files_raw += 1
            elif chosen[1]["how"] == "bsdiff":
                packed, how = chosen
                entry.update(how="bsdiff", base=pairs[f.id].id, raw=how["raw"])
                writer.write(zstandard.ZstdDecompressor().decompress(
                    packed, max_output_size=sum(how["raw"])))
                stats.files_patched += 1
                stats.bytes_patch += how["_est"]
            else:
                p, how = chosen
                entry.update(how, base=pairs[f.id].id, clen=len(p))
                patch_area.write(p)
                stats.files_patched += 1
                stats.files_rebuilt += how["how"] in ("gzip", "xz")
                stats.bytes_patch += len(p)
            entries.append(entry)
        writer.flush(zstandard.FLUSH_FRAME)
        writer.close()  # type: ignore[no-untyped-call]
        header = zstandard.ZstdCompressor(level=19).compress(canonjson.dumps({
            "format": 1, "from": from_commit, "to": to_commit, "meta": meta_rows,
            "files": entries,
        }))
        with open_atomic(out) as fh:
            fh.write(MAGIC + _U64.pack(len(header)) + header)
            fh.write(_U64.pack(solid.tell()))
            for part in (solid, patch_area):
                part.seek(0)
                while chunk := part.read(1 << 20):
                    fh.write(chunk)
            stats.size = fh.tell()
    return stats


def read_header(fh: IO[bytes]) -> DeltaHeader:
    """Parse a delta's header; ``fh`` is left at the start of the solid stream.

    Raises:
        CorruptObjectError: not a delta, or a malformed header.
    """
    try:
        if fh.read(len(MAGIC)) != MAGIC:
            raise ValueError("bad magic")
        (hlen,) = _U64.unpack(fh.read(8))
        if hlen > _MAX_HEADER:
            raise ValueError("header too large")
        raw = canonjson.loads(zstandard.ZstdDecompressor().decompress(
            fh.read(hlen), max_output_size=_MAX_HEADER))
        (slen,) = _U64.unpack(fh.read(8))
        hdr = DeltaHeader(str(raw["from"]), str(raw["to"]),
                          [(str(i), check_kind(str(k)), int(n)) for i, k, n in raw["meta"]],
                          list(raw["files"]))
        start = fh.tell()
        hdr.offsets = {"solid": start, "patches": start + slen}
        return hdr
    except (ValueError, KeyError, TypeError, struct.error, zstandard.ZstdError) as exc:
        raise CorruptObjectError(f"not a valid atoll delta: {exc}") from exc


def _read_exact(reader: IO[bytes], n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = reader.read(n - len(buf))
        if not chunk:
            raise CorruptObjectError("delta ends early: solid stream is short")
        buf += chunk
    return bytes(buf)


def _iter_files(repo: Repo, fh: IO[bytes], hdr: DeltaHeader,
                metas: dict[tuple[str, str], bytes]) -> Iterator[tuple[dict[str, Any], bytes]]:
    fh.seek(hdr.offsets["solid"])
    reader = zstandard.ZstdDecompressor(max_window_size=1 << 27).stream_reader(
        fh, read_across_frames=False, closefd=False)
    for oid, kind, size in hdr.meta:
        metas[(oid, kind)] = _read_exact(reader, size)
    for f in hdr.files:
        if f["how"] == "raw":
            yield f, _read_exact(reader, int(f["size"]))
        elif f["how"] == "bsdiff":
            lengths = [int(n) for n in f["raw"]]
            joined = _read_exact(reader, sum(lengths))
            yield f, _bspatch(repo.read_file_content(str(f["base"])), int(f["size"]), joined,
                              lengths)
        elif f["how"] not in ("patch", "gzip", "xz"):
            raise CorruptObjectError(f"delta: unknown method {f['how']!r} for {f['id']}")
    pos = hdr.offsets["patches"]
    for f in hdr.files:
        if f["how"] not in ("patch", "gzip", "xz"):
            continue
        fh.seek(pos)
        clen = int(f["clen"])
        pos += clen
        size = int(f["usize"]) if f["how"] in ("gzip", "xz") else int(f["size"])
        if f.get("dict"):
            try:
                base = b"".join(repo.read_file_content(str(i)) for i in f["dict"])
            except OSError as exc:
                raise CorruptObjectError(f"delta: dictionary of {f['id']} incomplete") from exc
        else:
            base = repo.read_file_content(str(f["base"]))
        if f["how"] == "xz" and f.get("base_xz"):
            found = find_xz(base)
            if found is None:
                raise CorruptObjectError(f"delta: base {f['base']} holds no xz stream")
            base = base[:found[0]] + found[2] + base[found[0] + found[1]:]
        if f["how"] == "gzip" and f.get("base_gz"):
            unzipped = gunzip(base)
            if unzipped is None:
                raise CorruptObjectError(f"delta: base {f['base']} is not a gzip stream")
            base = unzipped
        window = 1 << min(31, window_log_for(len(base) + size) + 1)
        dctx = zstandard.ZstdDecompressor(dict_data=raw_dict(base), max_window_size=window)
        data = dctx.decompress(fh.read(clen), max_output_size=size)
        del base, dctx
        if f["how"] == "gzip":
            data = regzip(data, int(f["level"]))
        elif f["how"] == "xz":
            off, n = int(f["offset"]), int(f["xz_raw"])
            data = data[:off] + rexz(data[off:off + n], [str(o) for o in f["options"]]) \
                + data[off + n:]
        yield f, data


def apply_delta(repo: Repo, path: Path, *, expect: tuple[str, str] | None = None) -> str:
    """Import the commit a delta carries into ``repo``; returns its id.

    Args:
        expect: (from, to) the caller trusts (from signed metadata); refuse others.

    Raises:
        HostStateError: the repo lacks the delta's from-commit or a patch base.
        CorruptObjectError: the delta is malformed or rebuilds an object whose
            id does not match (nothing of it is kept).
    """
    with repo.transaction(f"import of delta {path.name}"):
        return _apply_delta(repo, path, expect)


def _apply_delta(repo: Repo, path: Path, expect: tuple[str, str] | None) -> str:
    with open(path, "rb") as fh:
        hdr = read_header(fh)
        if expect is not None and (hdr.from_commit, hdr.to_commit) != expect:
            raise CorruptObjectError(
                f"delta is {hdr.from_commit[:12]}->{hdr.to_commit[:12]}, "
                f"expected {expect[0][:12]}->{expect[1][:12]}")
        if not repo.has(hdr.from_commit, "commit"):
            raise HostStateError(f"delta needs commit {hdr.from_commit[:12]}, not in {repo.path}")
        missing = sorted({str(f["base"]) for f in hdr.files
                          if (f["how"] in ("patch", "bsdiff", "xz")
                              or (f["how"] == "gzip" and not f.get("dict")))
                          and not repo.has(str(f["base"]), "file")})
        if missing:
            raise HostStateError(f"delta needs {len(missing)} file object(s) the store lacks",
                                 details="\n".join(missing[:20]),
                                 resolution="run `atoll store fsck`; pull without delta")
        metas: dict[tuple[str, str], bytes] = {}
        try:
            for f, content in track(_iter_files(repo, fh, hdr, metas),
                                    f"import delta to {hdr.to_commit[:12]}", unit="files",
                                    total=len(hdr.files)):
                repo.import_file_object(str(f["id"]), meta_from_json(f["meta"]), content)
        except zstandard.ZstdError as exc:
            raise CorruptObjectError(f"delta {path.name}: bad compressed data: {exc}") from exc
    for (oid, kind), data in metas.items():
        if hashlib.sha256(data).hexdigest() != oid:
            raise CorruptObjectError(f"{kind} object {oid}: content does not match its id")
    need = repo_missing(repo, hdr.to_commit, metas)
    if need:
        raise StoreError(f"delta to {hdr.to_commit[:12]} is incomplete: "
                         f"{len(need)} objects missing", details="\n".join(need[:20]))
    for (_oid, kind), data in metas.items():
        if kind == "dirtree":
            repo.write_meta_object(data, kind)
    repo.write_meta_object(metas[(hdr.to_commit, "commit")], "commit")
    return hdr.to_commit


def repo_missing(repo: Repo, commit: str, pending: dict[tuple[str, str], bytes]) -> list[str]:
    """Objects ``commit`` reaches that neither ``repo`` nor ``pending`` hold."""
    raw = pending.get((commit, "commit"))
    if raw is None and repo.has(commit, "commit"):
        raw = repo.read_meta_object(commit, "commit")
    if raw is None:
        return [f"commit {commit}"]
    stack = [Commit.from_bytes(raw).tree]
    out: list[str] = []
    done: set[str] = set()
    while stack:
        t = stack.pop()
        if t in done:
            continue
        done.add(t)
        data = pending.get((t, "dirtree"))
        if data is None:
            if not repo.has(t, "dirtree"):
                out.append(f"dirtree {t}")
                continue
            data = repo.read_meta_object(t, "dirtree")
        for e in parse_dirtree(data):
            if e.is_dir:
                stack.append(e.id)
            elif not repo.has(e.id, "file"):
                out.append(f"file {e.id}")
    return out


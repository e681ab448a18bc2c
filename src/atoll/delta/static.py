"""Static deltas between two commits: generate and apply.

The file format (version 2; version 1 is still read) is in
:mod:`atoll.delta.format`. In short: a header, a *solid* zstd stream holding the
new dirtrees, the commit, every new file without a useful partner and the
bsdiff blocks of files diffed that way, so many small files compress together;
then *patch* frames: a new file (or its decompressed form) compressed with
windows of its paired old file as raw-content dictionaries (what ``zstd
--patch-from`` does), in segments a host can decompress in bounded memory.

Per paired file the generator keeps the smallest of: a zstd patch, bsdiff
blocks (on kernel modules, whose relocations shift every address a little,
usually this), plain compression in the solid stream; a gzip file that ``gzip
-n -LEVEL`` reproduces (an initrd) or a file with an xz stream that ``xz``
reproduces (a kernel) may instead ship as a patch of its *decompressed*
content, rebuilt on the host (:mod:`atoll.delta.recompress`); it is then diffed
as compressed bytes only if at least half of them are the same as the old file's
(4 KiB blocks at the same offset from its start or its end; a stream that changed
differs throughout); an initramfs's
dictionary is the new tree's own files that are members of its cpio archive.
Patches of inputs above :data:`CLI_MIN` are made with the ``zstd`` command, after
bsdiff, and only when a trial at a cheaper level shows they can beat it.

Each file's choice is kept in the publishing repository's cache
(:mod:`atoll.delta.cache`), keyed by both files' ids and the settings, so a
later delta with the same pair (the next publish's delta from the same old
commit) does not diff it again.

Apply (:mod:`atoll.delta._apply`) streams every object into the store, which
verifies its id (:meth:`Repo.import_file_stream`; sha256 of dirtrees and the
commit); the commit object is written last, only once everything it reaches
is present.
"""

from __future__ import annotations

import math
import struct
import tempfile
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zstandard

from atoll.core import canonjson
from atoll.core.fsutil import open_atomic
from atoll.core.progress import progress, track
from atoll.core.run import require_tool, run
from atoll.delta import _bsdiff
from atoll.delta import format as fmt
from atoll.delta._apply import apply as _apply
from atoll.delta._apply import repo_missing
from atoll.delta._util import (
    ObjectRef,
    commit_files,
    commit_objects,
    raw_dict,
    window_log_for,
)
from atoll.delta.cache import PublishCache
from atoll.delta.format import FORMAT, MAGIC, DeltaHeader, read_header, write_header
from atoll.delta.pairing import FileInfo, pair_files
from atoll.delta.recompress import (
    MIN_SIZE,
    cpio_members,
    find_xz,
    gunzip,
    gzip_level,
    xz_options,
)
from atoll.store.repo import WORKERS, Repo

__all__ = [
    "MAGIC",
    "DeltaHeader",
    "DeltaStats",
    "apply_delta",
    "generate_delta",
    "member_windows",
    "proportional_windows",
    "read_header",
    "repo_missing",
    "require_tools",
]

SOLID_LEVEL = 19
PATCH_LEVEL = 12
# A patch must be at most this fraction of a plain compression to be kept.
PATCH_GAIN = 0.9
# Above this (window + new bytes), patch segments are made with the zstd command
# (prefix mode finds what python's dictionary mode misses there), at this level.
CLI_MIN = 8 << 20
CLI_LEVEL = 19
# A level-CLI_LEVEL patch takes ~13x as long as one at CLI_TRIAL_LEVEL and is at most
# a quarter smaller (0.80-0.92 on the 22 changed binaries above CLI_MIN of
# bench_delta's db pair): when bsdiff is already smaller than the trial allows, it is not made.
CLI_TRIAL_LEVEL = 12
CLI_TRIAL_GAIN = 0.75
# Up to this (base + new bytes), bsdiff is tried too (memory: ~5x the base + ~4x the new
# in a worker process, ~2x the new here).
BSDIFF_MAX = 64 << 20
# zstd level of the size estimate that decides between bsdiff and the others (the
# blocks go into the solid stream, compressed at the delta's level with the rest).
BSDIFF_EST_LEVEL = 19
# A twentieth of the time; its size / BSDIFF_EST_LEVEL's was within 0.94-1.19 on 400
# changed files of bench_delta's db pair: outside this range it decides alone.
BSDIFF_ROUGH_LEVEL = 9
BSDIFF_ROUGH_RANGE = (0.9, 1.25)

Window = tuple[int, int, int, int]  # content [a, b) with base window [s, e)


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
    bytes_patch: int = 0  # bsdiff blocks: their size at the level that decided
    cached: int = 0

    def to_json(self) -> dict[str, int]:
        return dict(self.__dict__)


# -- patches in segments ---------------------------------------------------------

def proportional_windows(n: int, m: int) -> list[Window]:
    """Segments of ``n`` bytes of new content and the window of an ``m``-byte base
    each is diffed against: the whole base when it fits; else the base around the
    same relative position (a new build of a file keeps its layout), moving forward.

    Returns:
        ``(a, b, s, e)``: content ``[a, b)``, at most ``SEG_MAX`` bytes, with base
        ``[s, e)``, at most ``SEG_BASE_MAX`` bytes (:mod:`atoll.delta.format`);
        ``s`` and ``e`` never decrease.
    """
    if n <= fmt.SEG_MAX and m <= fmt.SEG_BASE_MAX:
        return [(0, n, 0, m)]
    out = []
    for i in range(max(1, math.ceil(n / fmt.SEG_MAX))):
        a, b = i * fmt.SEG_MAX, min(n, (i + 1) * fmt.SEG_MAX)
        if m <= fmt.SEG_BASE_MAX:
            s, e = 0, m
        else:
            centre = (a + b) / 2 * m / max(n, 1)
            s = max(0, min(int(centre - fmt.SEG_BASE_MAX / 2), m - fmt.SEG_BASE_MAX))
            e = s + fmt.SEG_BASE_MAX
        out.append((a, b, s, e))
    return out


def member_windows(n: int, members: list[tuple[int, int, int]]) -> list[Window]:
    """Segments of an archive of ``n`` bytes whose members ``(offset, size, dict_offset)``
    (in archive order) are the dictionary, concatenated: each segment's window is
    exactly the members it holds.

    Returns:
        as :func:`proportional_windows` (windows at most :data:`~atoll.delta.format.SEG_MAX` bytes).
    """
    out = []
    prev_e = 0
    for i in range(max(1, math.ceil(n / fmt.SEG_MAX))):
        a, b = i * fmt.SEG_MAX, min(n, (i + 1) * fmt.SEG_MAX)
        inside = [(off, size, d) for off, size, d in members if off < b and off + size > a]
        if inside:
            off, _size, d = inside[0]
            s = d + max(0, a - off)
            off, size, d = inside[-1]
            e = d + min(size, b - off)
            s, e = max(s, prev_e), max(e, prev_e)
        else:
            s = e = prev_e
        prev_e = e
        out.append((a, b, s, e))
    return out


def _frame(content: bytes, base: bytes, level: int, cli_level: int) -> bytes:
    """One zstd frame of ``content`` with ``base`` as raw-content dictionary."""
    if not base:
        return zstandard.ZstdCompressor(level=level).compress(content)
    if len(content) + len(base) > CLI_MIN:
        return _patch_cli(content, base, cli_level)
    params = zstandard.ZstdCompressionParameters.from_level(
        level, window_log=window_log_for(len(base) + len(content)))
    cctx = zstandard.ZstdCompressor(dict_data=raw_dict(base), compression_params=params)
    return cctx.compress(content)


def _patch(content: bytes, base: bytes, level: int, cli_level: int | None = None,
           windows: list[Window] | None = None) -> tuple[bytes, list[list[int]]]:
    """A segmented patch: the frames back to back, and ``[clen, usize, s, e - s]``
    per segment (see :mod:`atoll.delta.format`)."""
    frames = []
    segs = []
    for a, b, s, e in windows or proportional_windows(len(content), len(base)):
        f = _frame(content[a:b], base[s:e], level, cli_level or CLI_LEVEL)
        frames.append(f)
        segs.append([len(f), b - a, s, e - s])
    return b"".join(frames), segs


def _patch_to_beat(content: bytes, base: bytes, level: int,
                   rival: _Bsdiff | None) -> tuple[bytes, list[list[int]]] | None:
    """:func:`_patch`, or None when a trial at :data:`CLI_TRIAL_LEVEL` shows that it
    cannot be smaller than ``rival`` (None: no trial). The trial is made only when a
    segment would use the ``zstd`` command."""
    windows = proportional_windows(len(content), len(base))
    if rival is not None and any(b - a + e - s > CLI_MIN for a, b, s, e in windows):
        trial, _segs = _patch(content, base, level, CLI_TRIAL_LEVEL, windows)
        if rival.below(len(trial) * CLI_TRIAL_GAIN):
            return None
    return _patch(content, base, level, windows=windows)


def _aligned_same(a: bytes, b: bytes, block: int = 4096) -> int:
    """The bytes of ``a`` in ``block``-sized blocks equal to ``b``'s at the same offset,
    counted from the start or from the end, whichever finds more."""
    ma, mb = memoryview(a), memoryview(b)
    n = min(len(a), len(b))
    head = sum(block for i in range(0, n - block + 1, block)
               if ma[i:i + block] == mb[i:i + block])
    tail = sum(block for i in range(block, n + 1, block)
               if ma[len(a) - i:len(a) - i + block] == mb[len(b) - i:len(b) - i + block])
    return max(head, tail)


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


class _Bsdiff:
    """bsdiff's control/diff/extra blocks of a file (:mod:`atoll.delta._bsdiff`:
    bsdiff4's blocks, found faster), and their size.

    On kernel modules (relocations shift every address a little) this is ~35 %
    smaller than a zstd patch: bsdiff's byte-wise differences compress to nearly
    nothing. The blocks go into the delta's solid stream (compressed together
    with every other file's: another ~15 % smaller than a frame each).

    Their size is what each block compresses to at :data:`BSDIFF_EST_LEVEL`; that
    takes about half as long as the diff, so it is measured only when the size at
    :data:`BSDIFF_ROUGH_LEVEL` (within :data:`BSDIFF_ROUGH_RANGE` of it) cannot
    settle a comparison.
    """

    def __init__(self, content: bytes, base: bytes,
                 diff: Callable[[bytes, bytes], tuple[bytes, bytes, bytes]] = _bsdiff.diff):
        self.blocks: list[bytes] = list(diff(base, content))
        self.lengths = [len(b) for b in self.blocks]
        self.rough = self._size(BSDIFF_ROUGH_LEVEL)
        self.exact: int | None = None

    def _size(self, level: int) -> int:
        return sum(len(zstandard.ZstdCompressor(level=level).compress(b))
                   for b in self.blocks)

    def below(self, n: float) -> bool:
        """Whether the blocks' size is below ``n`` bytes."""
        lo, hi = BSDIFF_ROUGH_RANGE
        if self.exact is None:
            if self.rough / hi >= n:
                return False
            if self.rough / lo < n:
                return True
            self.exact = self._size(BSDIFF_EST_LEVEL)
        return self.exact < n

    def size(self) -> int:
        """The blocks' size, or its rough estimate if it was never needed."""
        return self.rough if self.exact is None else self.exact

    def packed(self) -> bytes:
        """The blocks joined and compressed at level 1, to hold them cheaply until
        they are written."""
        return zstandard.ZstdCompressor(level=1).compress(b"".join(self.blocks))


# -- the cache of per-file choices ------------------------------------------------

_U32 = struct.Struct(">I")
Choice = tuple[bytes, dict[str, Any]] | None


def _encode_choice(choice: Choice) -> bytes:
    head = canonjson.dumps(None if choice is None else choice[1])
    return _U32.pack(len(head)) + head + (b"" if choice is None else choice[0])


def _decode_choice(data: bytes) -> Choice:
    (n,) = _U32.unpack_from(data)
    how = canonjson.loads(data[4:4 + n])
    return None if how is None else (data[4 + n:], dict(how))


# -- generate --------------------------------------------------------------------

def require_tools() -> None:
    """Raise InputError if what :func:`generate_delta` needs is not installed (detools,
    the ``zstd`` command): before a publish does any work."""
    _bsdiff.require()
    require_tool("zstd")


@dataclass
class _Plan:
    """What a delta ``from`` -> ``to`` carries (:func:`_plan`)."""

    meta: list[ObjectRef]  # the new dirtrees, then the commit
    files: list[FileInfo]  # one per new file object, at its first path
    paths: dict[str, FileInfo]  # every file of ``to``, by path
    pairs: dict[str, FileInfo]  # new file id -> the old file it is diffed against


def _plan(repo: Repo, from_commit: str, to_commit: str) -> _Plan:
    have = {(o.id, o.kind) for o in commit_objects(repo, from_commit)}
    new_objs = [o for o in commit_objects(repo, to_commit) if (o.id, o.kind) not in have]
    meta = [o for o in new_objs if o.kind != "file"]
    meta.sort(key=lambda o: o.kind == "commit")  # the commit last
    new_files = {o.id for o in new_objs if o.kind == "file"}
    paths = {f.path: f for f in commit_files(repo, to_commit)}
    first: dict[str, FileInfo] = {}
    for f in paths.values():  # one entry per new object, at its first path
        if f.id in new_files:
            first.setdefault(f.id, f)
    files = list(first.values())
    return _Plan(meta, files, paths, pair_files(commit_files(repo, from_commit), files))


def generate_delta(repo: Repo, from_commit: str, to_commit: str, out: Path, *,
                   level: int = SOLID_LEVEL, cache: PublishCache | None = None) -> DeltaStats:
    """Write the static delta ``from_commit`` -> ``to_commit`` to ``out`` (atomically).

    Args:
        repo: holds both commits completely.
        level: zstd level of the solid stream (patches use min(level, PATCH_LEVEL)).
        cache: reuse (and keep) per-file choices of earlier publishes.

    Raises:
        StoreError: a commit or object is missing.
        ToolError: ``zstd``, ``gzip`` or ``xz`` failed.

    Returns:
        Counts and sizes of what went in.
    """
    plan = _plan(repo, from_commit, to_commit)
    meta, infos, new_paths, pairs = plan.meta, plan.files, plan.paths, plan.pairs
    stats = DeltaStats()
    # Largest first: the long ones (an initrd, a kernel) overlap the many small ones.
    order = sorted(infos, key=lambda f: -f.size)
    # the workers end first when an error or ^C leaves the block: threads waiting on them
    # return at once
    with ThreadPoolExecutor(WORKERS) as pool, _bsdiff.Workers(WORKERS, repo.tmp) as workers:
        decide = _decider(repo, pairs, new_paths, max(9, min(level, PATCH_LEVEL)), cache,
                          stats, workers.diff)
        patches = dict(track(pool.map(decide, [f.id for f in order]),
                             f"delta from {from_commit[:12]}: patches", unit="files",
                             total=len(order)))
    # Files rebuilt from other files of the new tree come last, after those are in.
    infos.sort(key=lambda f: (patches.get(f.id) or (b"", {}))[1].get("how") in ("gzip", "xz"))
    entries: list[dict[str, Any]] = []
    with progress(f"delta from {from_commit[:12]}: compress", sum(f.size for f in infos),
                  unit="bytes") as step, tempfile.TemporaryFile(dir=repo.tmp) as solid, \
            tempfile.TemporaryFile(dir=repo.tmp) as patch_area:
        params = zstandard.ZstdCompressionParameters.from_level(
            level, window_log=fmt.SOLID_WINDOW_LOG, enable_ldm=True, threads=WORKERS)
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
            entry: dict[str, Any] = {"id": f.id, "meta": repo.file_meta(f.id).to_json(),
                                     "size": f.size}
            stats.bytes_new += f.size
            step.advance(f.size)
            chosen = patches.get(f.id)
            if chosen is None:
                entry["how"] = "raw"
                content = repo.read_file_content(f.id)
                if len(content) != f.size:
                    entry["size"] = len(content)
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
        header = {"format": FORMAT, "from": from_commit, "to": to_commit, "meta": meta_rows,
                  "files": entries}
        with open_atomic(out) as fh:
            write_header(fh, header, solid.tell())
            for part in (solid, patch_area):
                part.seek(0)
                while chunk := part.read(1 << 20):
                    fh.write(chunk)
            stats.size = fh.tell()
    return stats


def _decider(repo: Repo, pairs: dict[str, FileInfo], new_paths: dict[str, FileInfo],
             plevel: int, cache: PublishCache | None, stats: DeltaStats,
             bsdiff: Callable[[bytes, bytes], tuple[bytes, bytes, bytes]] = _bsdiff.diff,
             ) -> Callable[[str], tuple[str, Choice]]:
    """The function that chooses, per new file, how it travels (None: raw, in the
    solid stream), through the cache; ``bsdiff`` makes bsdiff's blocks
    (:func:`atoll.delta._bsdiff.diff`, or a :class:`~atoll.delta._bsdiff.Workers`'s)."""
    new_sizes = {f.id: f.size for f in new_paths.values()}
    lock = threading.Lock()

    def members_dict(raw: bytes) -> list[tuple[str, int, int]]:
        """(id, offset, size) of new-tree files identical to members of an (initramfs)
        cpio archive, in archive order."""
        out = []
        for name, off, size in cpio_members(raw):
            n = name.lstrip("./")
            for cand in (n, "usr/" + n):
                fi = new_paths.get(cand)
                if fi is not None and fi.size == size and not fi.is_link and size >= 64:
                    if repo.read_file_content(fi.id) == raw[off:off + size]:
                        out.append((fi.id, off, size))
                    break
        return out

    def rebuilt(content: bytes, old: bytes, limit: float) -> Choice:
        """A reproducible gzip file or xz stream as a patch of its decompressed form,
        if smaller than ``limit`` bytes."""
        if len(content) < MIN_SIZE:
            return None
        raw = gunzip(content)
        if raw is not None:
            lvl = gzip_level(content, raw)
            if lvl is None:
                return None
            how: dict[str, Any] = {"how": "gzip", "level": lvl, "usize": len(raw)}
            members = members_dict(raw)
            if members and sum(new_sizes[i] for i, _o, _s in members) * 2 >= len(raw):
                ids = [i for i, _o, _s in members]
                dictionary = b"".join(repo.read_file_content(i) for i in ids)
                how["dict"] = ids
                spans, d = [], 0
                for _i, off, size in members:
                    spans.append((off, size, d))
                    d += size
                windows = member_windows(len(raw), spans)
            else:
                old_raw = gunzip(old)
                dictionary = old if old_raw is None else old_raw
                how["base_gz"] = old_raw is not None
                windows = proportional_windows(len(raw), len(dictionary))
            # With the new tree's files as dictionary the matches are exact and
            # long: level 12 is as good as 19 (0.35 MB) at a twentieth of the time.
            gz, gsegs = _patch(raw, dictionary, plevel, 12 if "dict" in how else CLI_LEVEL,
                               windows)
            return (gz, how | {"segs": gsegs}) if len(gz) < limit else None
        xz = find_xz(content)
        if xz is None:
            return None
        off, length, xraw = xz
        opts = xz_options(content[off:off + length], xraw)
        if opts is None:
            return None
        expanded = content[:off] + xraw + content[off + length:]
        old_xz = find_xz(old)
        old_exp = old if old_xz is None else (
            old[:old_xz[0]] + old_xz[2] + old[old_xz[0] + old_xz[1]:])
        px, xsegs = _patch(expanded, old_exp, plevel)
        if len(px) >= limit:
            return None
        return (px, {"how": "xz", "options": opts, "offset": off, "xz_raw": len(xraw),
                     "usize": len(expanded), "segs": xsegs,
                     "base_xz": None if old_xz is None else old_xz[0]})

    def direct(content: bytes, old: bytes,
               limit: float) -> tuple[Choice, Callable[[float], bool]]:
        """The smaller of bsdiff and a zstd patch if below ``limit`` bytes, and whether
        it is below a given number of bytes."""
        diff = _Bsdiff(content, old, bsdiff) if len(content) + len(old) <= BSDIFF_MAX else None
        if diff is not None and diff.below(limit):
            found = _patch_to_beat(content, old, plevel, diff)
            if found is None or diff.below(len(found[0])):  # a patch wins a tie
                return (diff.packed(), {"how": "bsdiff", "raw": diff.lengths,
                                        "_est": diff.size()}), diff.below
        else:
            found = _patch_to_beat(content, old, plevel, None)
        if found is not None and len(found[0]) < limit:
            n = len(found[0])
            return (found[0], {"how": "patch", "segs": found[1]}), lambda x: n < x
        return None, lambda x: False

    def choose(fid: str, base: FileInfo) -> Choice:
        content = repo.read_file_content(fid)
        old = repo.read_file_content(base.id)
        limit = len(zstandard.ZstdCompressor(level=3).compress(content)) * PATCH_GAIN
        rebuild = rebuilt(content, old, limit)
        # A compressed stream that changed differs from its old version throughout
        # (the benchmark's vmlinuz and initrd: 0 and 2 % of 4 KiB blocks the same):
        # its compressed bytes are not worth diffing.
        if rebuild is not None and _aligned_same(content, old) < len(content) // 2:
            return rebuild
        best, below = direct(content, old, limit)
        # The rebuild must be a tenth smaller than the best diff, as a patch must be.
        if rebuild is not None and not below(math.floor(len(rebuild[0]) / PATCH_GAIN) + 1):
            return rebuild
        return best

    def decide(fid: str) -> tuple[str, Choice]:
        base = pairs.get(fid)
        if base is None:
            return fid, None
        key = None
        if cache is not None:
            key = cache.key("delta-file", new=fid, base=base.id, format=FORMAT,
                            plevel=plevel, seg=fmt.SEG_MAX, seg_base=fmt.SEG_BASE_MAX,
                            cli_min=CLI_MIN, bsdiff_max=BSDIFF_MAX,
                            trial=[CLI_TRIAL_LEVEL, CLI_TRIAL_GAIN],
                            bsdiff_est=BSDIFF_EST_LEVEL,
                            rough=[BSDIFF_ROUGH_LEVEL, *BSDIFF_ROUGH_RANGE],
                            gain=PATCH_GAIN, min_size=MIN_SIZE, rebuilt_diffed="same>=1/2")
            data = cache.get(key)
            if data is not None:
                try:
                    choice = _decode_choice(data)
                except (ValueError, struct.error):
                    choice = None
                else:
                    with lock:
                        stats.cached += 1
                    return fid, choice
        choice = choose(fid, base)
        if cache is not None and key is not None:
            cache.put(key, _encode_choice(choice))
        return fid, choice

    return decide


def apply_delta(repo: Repo, path: Path, *, expect: tuple[str, str] | None = None) -> str:
    """Import the commit a delta (format 1 or 2) carries into ``repo``; returns its id.

    Memory stays bounded for format 2 whatever the sizes of the files
    (:mod:`atoll.delta._apply` gives the bound).

    Args:
        expect: (from, to) the caller trusts (from signed metadata); refuse others.

    Raises:
        HostStateError: the repo lacks the delta's from-commit or a patch base.
        CorruptObjectError: the delta is malformed or rebuilds an object whose
            id does not match (nothing of it is kept).
        ToolError: ``gzip`` or ``xz`` failed while rebuilding a file.
    """
    with repo.transaction(f"import of delta {path.name}"):
        return _apply(repo, path, expect)

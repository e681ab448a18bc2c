"""Pair each new file of a commit with an old file to diff against (pure).

A kernel update moves every module to a new directory
(``usr/lib/modules/6.1.0-26-amd64/...`` -> ``.../6.1.0-28-amd64/...``), so
pairing by path alone finds nothing. Candidates, first match wins:

1. the same path in the old tree (a file changed in place);
2. the same path with every version-like component normalised
   (``6.1.0-26-amd64`` and ``6.1.0-28-amd64`` both become ``#``);
3. the same basename (also normalised) with the closest size, within a factor
   of 4 of the new file's size.

Files smaller than :data:`MIN_DIFF_SIZE` and symlinks are never paired: a
diff cannot beat plain compression there.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["MIN_DIFF_SIZE", "FileInfo", "normalise_path", "pair_files"]

MIN_DIFF_SIZE = 512

# A version inside a path: starts a word, has at least two dotted numbers, and
# takes the dash/plus/tilde/dot-separated suffix with it (6.1.0-26-amd64).
_VERSION_RE = re.compile(r"(?<![A-Za-z0-9])\d+(?:\.\d+)+(?:[-+~.][0-9A-Za-z]+)*")


@dataclass(frozen=True)
class FileInfo:
    """What pairing needs to know about a file object at a path."""

    path: str
    id: str
    size: int
    is_link: bool = False


def normalise_path(path: str) -> str:
    """``usr/lib/modules/6.1.0-26-amd64/x.ko`` -> ``usr/lib/modules/#/x.ko``."""
    return _VERSION_RE.sub("#", path)


def _basename(path: str) -> str:
    return normalise_path(path.rpartition("/")[2])


def pair_files(old: Iterable[FileInfo], new: Iterable[FileInfo]) -> dict[str, FileInfo]:
    """For each new file worth diffing, the old file to diff it against.

    Args:
        old: every file of the old commit.
        new: the files of the new commit whose objects the host lacks.

    Returns:
        new file id -> old file (only for files that found a partner).
    """
    old_list = [f for f in old if not f.is_link and f.size >= MIN_DIFF_SIZE]
    by_path: dict[str, FileInfo] = {f.path: f for f in old_list}
    by_norm: dict[str, FileInfo] = {}
    by_base: dict[str, list[FileInfo]] = {}
    for f in old_list:
        by_norm.setdefault(normalise_path(f.path), f)
        by_base.setdefault(_basename(f.path), []).append(f)
    out: dict[str, FileInfo] = {}
    for f in new:
        if f.is_link or f.size < MIN_DIFF_SIZE or f.id in out:
            continue
        partner = by_path.get(f.path) or by_norm.get(normalise_path(f.path))
        if partner is None:
            partner = _closest(by_base.get(_basename(f.path), ()), f.size)
        if partner is not None and partner.id != f.id:
            out[f.id] = partner
    return out


def _closest(cands: Iterable[FileInfo], size: int) -> FileInfo | None:
    best: FileInfo | None = None
    for c in cands:
        if not (size / 4 <= c.size <= size * 4):
            continue
        if best is None or abs(c.size - size) < abs(best.size - size):
            best = c
    return best


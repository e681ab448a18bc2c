"""What to download for an update (pure): a delta, missing chunks, or the whole pack."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from atoll.core.errors import RepositoryError

__all__ = [
    "ChannelInfo",
    "Plan",
    "choose",
    "compare_versions",
    "merge_ranges",
    "package_view",
]

# Above this share of the pack's chunks, fetch the whole pack (one request).
WHOLE_PACK_SHARE = 0.8


@dataclass(frozen=True)
class ChannelInfo:
    """The signed ``custom`` of ``refs/<channel>.json`` (see atoll.repo.publish)."""

    ref: str
    commit: str
    version: str
    timestamp: int
    deltas: dict[str, str]
    pack: str
    index: str
    manifest: str
    sbom: str
    unpacked_size: int

    @classmethod
    def from_custom(cls, custom: Any, ref: str) -> ChannelInfo:
        """Raises: RepositoryError: the signed metadata lacks atoll's fields."""
        try:
            c = custom["atoll"]
            return cls(str(c["ref"]), str(c["commit"]), str(c["version"]), int(c["timestamp"]),
                       {str(k): str(v) for k, v in dict(c["deltas"]).items()}, str(c["pack"]),
                       str(c["index"]), str(c["manifest"]), str(c["sbom"]),
                       int(c["unpacked_size"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise RepositoryError(f"channel {ref}: signed target lacks atoll metadata",
                                  details=repr(exc)) from exc


@dataclass
class Plan:
    """How to get ``commit``: ``method`` is none, delta, chunks or pack."""

    commit: str
    method: str
    download_bytes: int = 0
    delta: str | None = None
    delta_from: str | None = None
    chunks: list[int] = field(default_factory=list)
    unpacked: int = 0  # bytes the import adds to the store, at most

    def to_json(self) -> dict[str, Any]:
        return {"commit": self.commit, "method": self.method,
                "download_bytes": self.download_bytes, "delta": self.delta,
                "delta_from": self.delta_from, "chunks": len(self.chunks)}


def choose(info: ChannelInfo, *, have_commit: bool, have_commits: Iterable[str],
           delta_lengths: Mapping[str, int], pack_length: int,
           chunk_lengths: Mapping[int, int] | None) -> Plan:
    """Pick the cheapest way to ``info.commit`` from what the host has.

    Args:
        have_commit: the host's store already holds the target commit.
        have_commits: commits the host's store holds completely.
        delta_lengths: delta target path -> signed length.
        chunk_lengths: chunks the host lacks -> length (None: not computed,
            i.e. a delta is available and the index was not fetched).
    """
    if have_commit:
        return Plan(info.commit, "none")
    have = set(have_commits)
    best: Plan | None = None
    for frm, path in info.deltas.items():
        if frm in have and path in delta_lengths:
            p = Plan(info.commit, "delta", delta_lengths[path], delta=path, delta_from=frm)
            if best is None or p.download_bytes < best.download_bytes:
                best = p
    if chunk_lengths is not None:
        missing = sum(chunk_lengths.values())
        if missing >= WHOLE_PACK_SHARE * pack_length:
            p = Plan(info.commit, "pack", pack_length)
        else:
            p = Plan(info.commit, "chunks", missing, chunks=sorted(chunk_lengths))
        if best is None or p.download_bytes < best.download_bytes:
            best = p
    if best is None:
        return Plan(info.commit, "pack", pack_length)
    return best


def merge_ranges(spans: Iterable[tuple[int, int]], gap: int = 64 << 10,
                 max_span: int = 16 << 20) -> list[tuple[int, int]]:
    """Merge (offset, length) spans closer than ``gap`` into fewer requests."""
    out: list[tuple[int, int]] = []
    for off, n in sorted(spans):
        if out:
            o, m = out[-1]
            if off - (o + m) <= gap and off + n - o <= max_span:
                out[-1] = (o, max(m, off + n - o))
                continue
        out.append((off, n))
    return out


def _order(c: str) -> int:
    if c == "~":
        return -1
    if c.isdigit():
        return 0
    if c.isalpha():
        return ord(c)
    return ord(c) + 256


def _verrevcmp(a: str, b: str) -> int:
    i = j = 0
    while i < len(a) or j < len(b):
        while (i < len(a) and not a[i].isdigit()) or (j < len(b) and not b[j].isdigit()):
            ac = _order(a[i]) if i < len(a) and not a[i].isdigit() else 0
            bc = _order(b[j]) if j < len(b) and not b[j].isdigit() else 0
            if ac != bc:
                return ac - bc
            i, j = i + 1, j + 1
        di = i
        while i < len(a) and a[i].isdigit():
            i += 1
        dj = j
        while j < len(b) and b[j].isdigit():
            j += 1
        x, y = int(a[di:i] or 0), int(b[dj:j] or 0)
        if x != y:
            return x - y
    return 0


def compare_versions(a: str, b: str) -> int:
    """Debian version order (``dpkg --compare-versions``): <0, 0 or >0."""
    def split(v: str) -> tuple[int, str, str]:
        epoch, _, rest = v.rpartition(":") if ":" in v else ("0", "", v)
        upstream, _, rev = rest.rpartition("-") if "-" in rest else (rest, "", "")
        return int(epoch or 0), upstream, rev

    ea, ua, ra = split(a)
    eb, ub, rb = split(b)
    if ea != eb:
        return ea - eb
    return _verrevcmp(ua, ub) or _verrevcmp(ra, rb)


def package_view(old: list[dict[str, str]] | None, new: list[dict[str, str]]) -> dict[str, Any]:
    """Added / removed / upgraded / downgraded packages between two manifests
    (``old`` None: everything is added)."""
    a = {p["name"]: p for p in old or []}
    b = {p["name"]: p for p in new}
    both = sorted(a.keys() & b.keys())

    def moved(sign: int) -> list[dict[str, str]]:
        return [{"name": n, "old": a[n]["version"], "new": b[n]["version"]} for n in both
                if compare_versions(b[n]["version"], a[n]["version"]) * sign > 0]

    return {
        "added": [{"name": n, "version": b[n]["version"]} for n in sorted(b.keys() - a.keys())],
        "removed": [{"name": n, "version": a[n]["version"]} for n in sorted(a.keys() - b.keys())],
        "upgraded": moved(1),
        "downgraded": moved(-1),
    }

"""What to download for an update (pure): a delta, missing chunks, or the whole pack."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from atoll.core.errors import RepositoryError

__all__ = [
    "ChannelInfo",
    "DowngradeError",
    "Plan",
    "Release",
    "choose",
    "is_older",
    "merge_ranges",
    "pick_release",
]

# Above this share of the pack's chunks, fetch the whole pack (one request).
WHOLE_PACK_SHARE = 0.8


class DowngradeError(RepositoryError):
    """The version asked for is older than the one the host runs (and no operator
    allowed a downgrade)."""


@dataclass(frozen=True)
class Release:
    """One signed version of a channel, as the head's ``releases`` lists it."""

    version: str
    commit: str
    sequence: int
    timestamp: int
    target: str

    @classmethod
    def from_json(cls, d: Any) -> Release:
        """Raises: RepositoryError: not a release entry."""
        try:
            return cls(str(d["version"]), str(d["commit"]), int(d["sequence"]),
                       int(d["timestamp"]), str(d["target"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise RepositoryError("signed release list entry lacks atoll's fields",
                                  details=repr(exc)) from exc

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class ChannelInfo:
    """The signed ``custom`` of ``refs/<channel>.json`` or of one release record,
    ``releases/<channel>/<commit>.json`` (see atoll.repo.publish). ``sequence`` 0 and
    no ``releases``: published by an atoll without per-version targets."""

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
    sequence: int = 0
    releases: tuple[Release, ...] = ()

    @classmethod
    def from_custom(cls, custom: Any, ref: str) -> ChannelInfo:
        """Raises: RepositoryError: the signed metadata lacks atoll's fields."""
        try:
            c = custom["atoll"]
            return cls(str(c["ref"]), str(c["commit"]), str(c["version"]), int(c["timestamp"]),
                       {str(k): str(v) for k, v in dict(c["deltas"]).items()}, str(c["pack"]),
                       str(c["index"]), str(c["manifest"]), str(c["sbom"]),
                       int(c["unpacked_size"]), int(c.get("sequence") or 0),
                       tuple(Release.from_json(r) for r in c.get("releases") or ()))
        except (KeyError, TypeError, ValueError) as exc:
            raise RepositoryError(f"channel {ref}: signed target lacks atoll metadata",
                                  details=repr(exc)) from exc


def pick_release(info: ChannelInfo, version: str) -> Release:
    """The signed release of ``version`` the channel head lists (the newest publication
    when a version string was published twice). Pure.

    Raises:
        RepositoryError: the channel has no signed version ``version`` (never published,
            or pruned).
    """
    found = [r for r in info.releases if r.version == version or r.commit == version]
    if not found:
        kept = ", ".join(r.version for r in info.releases) or "none (an older publisher)"
        raise RepositoryError(
            f"channel {info.ref}: {version!r} is not a signed version of this channel",
            details=f"signed versions kept now: {kept}",
            resolution="choose one of the signed versions (`atoll fleet releases`), or "
            "publish it again")
    return max(found, key=lambda r: r.sequence)


def is_older(candidate: Release | ChannelInfo, running_sequence: int | None,
             running_timestamp: int | None) -> bool:
    """Whether ``candidate`` is older than what the host runs. Pure.

    "Older" is by the channel's signed publish sequence when the host knows the one it
    runs (from the signed release list, or recorded when it downloaded it); else by the
    commit's own timestamp (what the host's store says of its booted commit); with
    neither, nothing is older.
    """
    if running_sequence and candidate.sequence:
        return candidate.sequence < running_sequence
    if running_timestamp is not None:
        return candidate.timestamp < running_timestamp
    return False


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

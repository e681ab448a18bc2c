"""The reboot semaphore of one group, as pure data: owned, recursive, counting.

A group's semaphore has ``total_slots`` and a set of holders; each holder is a
client id with the time it took its slot, when known. The operations follow the
FleetLock protocol (Zincati / airlock):

* ``recursive_lock``: a holder locking again is a no-op (idempotent); a new
  id gets a slot when one is free, else the semaphore is full.
* ``unlock_if_held``: removes the id if it holds a slot; unlocking an id
  that holds nothing is fine and changes nothing.

The stored form is airlock's (``internal/lock/semaphore.go``), so an airlock
server and an atoll server can share one etcd::

    {"total_slots":2,"holders":["host-a","host-b"],"atoll_since":{"host-a":"2026-11-26T15:00:00Z"}}

``holders`` is sorted (airlock finds ids with ``sort.SearchStrings``; Go
compares UTF-8 bytes, which orders as Python compares code points). airlock's
``json.Unmarshal`` ignores ``atoll_since``, and drops it when it rewrites the
value: holders then have an unknown ``since`` (``None``). atoll's older form,
``{"holders":[{"id":..,"since":..}],"total_slots":N}``, is still read.

Nothing here does I/O; backends store ``to_json``.
"""

from __future__ import annotations

import datetime as dt
import enum
import json
from dataclasses import dataclass, replace
from typing import Any

from atoll.core.errors import StoreError

__all__ = [
    "Holder", "LockOutcome", "Semaphore", "merge", "recursive_lock", "unlock_if_held", "utcnow",
]

SINCE_FIELD = "atoll_since"
UINT64_MAX = 2**64 - 1
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def utcnow() -> dt.datetime:
    """The current time in UTC, to the second (what ``since`` records)."""
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def _fmt(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).strftime(_TIME_FORMAT)


def _parse_time(text: str) -> dt.datetime:
    return dt.datetime.strptime(text, _TIME_FORMAT).replace(tzinfo=dt.UTC)


@dataclass(frozen=True)
class Holder:
    """A client holding a reboot slot, and since when (None: unknown, airlock wrote it)."""

    id: str
    since: dt.datetime | None = None

    def to_dict(self) -> dict[str, str | None]:
        return {"id": self.id, "since": _fmt(self.since) if self.since else None}


@dataclass(frozen=True)
class Semaphore:
    """A counting semaphore with owned slots; holders are kept sorted by id."""

    total_slots: int
    holders: tuple[Holder, ...] = ()

    @property
    def free(self) -> int:
        """Slots free now (never negative, even after slots were lowered)."""
        return max(0, self.total_slots - len(self.holders))

    def holds(self, client_id: str) -> bool:
        """Whether ``client_id`` holds a slot."""
        return any(h.id == client_id for h in self.holders)

    def with_slots(self, total_slots: int) -> Semaphore:
        """The same holders under a new slot count (the config changed)."""
        return replace(self, total_slots=total_slots)

    def to_json(self) -> bytes:
        """The stored form: airlock's JSON, plus ``atoll_since`` for holders with a known since.

        Without known ``since`` values the bytes are what airlock's
        ``json.Marshal`` writes, e.g. ``{"total_slots":2,"holders":["a","b"]}``.
        """
        value: dict[str, Any] = {"total_slots": self.total_slots,
                                 "holders": [h.id for h in self.holders]}
        since = {h.id: _fmt(h.since) for h in self.holders if h.since is not None}
        if since:
            value[SINCE_FIELD] = since
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()

    @classmethod
    def from_json(cls, data: bytes | str, *, where: str) -> Semaphore:
        """Parse the stored form (airlock's, or atoll's older one); ``where`` names the key or row.

        Raises:
            StoreError: the stored value is not a semaphore.
        """
        try:
            raw: Any = json.loads(data)
            if not isinstance(raw, dict):
                raise TypeError(f"not a JSON object: {type(raw).__name__}")
            slots = raw["total_slots"]
            if not isinstance(slots, int) or isinstance(slots, bool) or not (
                    0 <= slots <= UINT64_MAX):
                raise ValueError(f"total_slots is {slots!r}")
            items = raw["holders"]
            if items is None:  # Go writes a nil slice as null
                items = []
            if not isinstance(items, list):
                raise TypeError(f"holders is {type(items).__name__}, not a list")
            known = raw.get(SINCE_FIELD)
            known = known if isinstance(known, dict) else {}  # atoll's annotation only
            holders: dict[str, Holder] = {}
            for item in items:
                if isinstance(item, str):  # airlock's form
                    holders[item] = Holder(item, _since(known.get(item)))
                elif isinstance(item, dict):  # atoll's older form
                    holder_id = item["id"]
                    if not isinstance(holder_id, str):
                        raise TypeError(f"holder id is {holder_id!r}")
                    holders[holder_id] = Holder(holder_id, _parse_time(item["since"]))
                else:
                    raise TypeError(f"holder is {item!r}")
        except (ValueError, KeyError, TypeError, RecursionError) as exc:
            raise StoreError(
                f"fleet lock state at {where} is not a semaphore",
                details=f"{type(exc).__name__}: {exc}",
                resolution="inspect the value; release the group's holders to rewrite it",
            ) from exc
        return cls(slots, tuple(holders[k] for k in sorted(holders)))


def _since(value: Any) -> dt.datetime | None:
    """A known ``since`` from ``atoll_since``; anything unreadable there is unknown."""
    if not isinstance(value, str):
        return None
    try:
        return _parse_time(value)
    except ValueError:
        return None


def merge(*sems: Semaphore) -> Semaphore:
    """One semaphore holding every holder of ``sems`` (the first's slots; a known since wins).

    Used when a group's state is found in two places (atoll's old etcd key and
    airlock's): nobody loses a slot it holds.
    """
    holders: dict[str, Holder] = {}
    for sem in sems:
        for h in sem.holders:
            if h.id not in holders or holders[h.id].since is None:
                holders[h.id] = h
    return Semaphore(sems[0].total_slots, tuple(holders[k] for k in sorted(holders)))


class LockOutcome(enum.Enum):
    """What ``recursive_lock`` decided."""

    ACQUIRED = "acquired"
    ALREADY_HELD = "already_held"
    FULL = "full"


def recursive_lock(
    sem: Semaphore, client_id: str, now: dt.datetime
) -> tuple[Semaphore, LockOutcome]:
    """Lock a slot for ``client_id``; returns the new semaphore and the outcome.

    The semaphore is unchanged when the id already holds a slot or when it is full.
    """
    if sem.holds(client_id):
        return sem, LockOutcome.ALREADY_HELD
    if len(sem.holders) >= sem.total_slots:
        return sem, LockOutcome.FULL
    holders = tuple(sorted((*sem.holders, Holder(client_id, now)), key=lambda h: h.id))
    return replace(sem, holders=holders), LockOutcome.ACQUIRED


def unlock_if_held(sem: Semaphore, client_id: str) -> tuple[Semaphore, bool]:
    """Release ``client_id``'s slot if it holds one; returns (semaphore, whether it held)."""
    if not sem.holds(client_id):
        return sem, False
    return replace(sem, holders=tuple(h for h in sem.holders if h.id != client_id)), True

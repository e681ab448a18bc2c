"""The reboot semaphore of one group, as pure data: owned, recursive, counting.

A group's semaphore has ``total_slots`` and a set of holders; each holder is a
client id with the time it took its slot. The operations follow the FleetLock
protocol (Zincati / airlock):

* ``recursive_lock``: a holder locking again is a no-op (idempotent); a new
  id gets a slot when one is free, else the semaphore is full.
* ``unlock_if_held``: removes the id if it holds a slot; unlocking an id
  that holds nothing is fine and changes nothing.

Nothing here does I/O; backends store the JSON form (see ``to_json``).
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass, replace
from typing import Any

from atoll.core import canonjson
from atoll.core.errors import StoreError

__all__ = ["Holder", "LockOutcome", "Semaphore", "recursive_lock", "unlock_if_held", "utcnow"]


def utcnow() -> dt.datetime:
    """The current time in UTC, to the second (what ``since`` records)."""
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def _fmt(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Holder:
    """A client holding a reboot slot, and since when."""

    id: str
    since: dt.datetime

    def to_dict(self) -> dict[str, str]:
        return {"id": self.id, "since": _fmt(self.since)}


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
        """The stored form: canonical JSON ``{"holders": [...], "total_slots": N}``."""
        return canonjson.dumps(
            {"total_slots": self.total_slots, "holders": [h.to_dict() for h in self.holders]}
        )

    @classmethod
    def from_json(cls, data: bytes | str, *, where: str) -> Semaphore:
        """Parse the stored form; ``where`` names the key or row for the error.

        Raises:
            StoreError: the stored value is not a semaphore.
        """
        try:
            raw: Any = canonjson.loads(data)
            slots = raw["total_slots"]
            if not isinstance(slots, int) or isinstance(slots, bool) or slots < 0:
                raise ValueError(f"total_slots is {slots!r}")
            holders = []
            for item in raw["holders"]:
                since = dt.datetime.strptime(item["since"], "%Y-%m-%dT%H:%M:%SZ")
                holders.append(Holder(str(item["id"]), since.replace(tzinfo=dt.UTC)))
        except (ValueError, KeyError, TypeError) as exc:
            raise StoreError(
                f"fleet lock state at {where} is not a semaphore",
                details=f"{type(exc).__name__}: {exc}",
                resolution="inspect the value; release the group's holders to rewrite it",
            ) from exc
        return cls(slots, tuple(sorted(holders, key=lambda h: h.id)))


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

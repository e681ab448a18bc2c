"""Where FleetLock semaphores live: a small interface and a registry.

A backend stores one semaphore per group and offers compare-and-swap on it:
``load`` returns the semaphore and an opaque integer version (0: absent), ``store``
writes only if the version is still the one loaded. ``update`` builds the
read-modify-write loop on top, bounded in attempts and time, so every change
is one atomic transaction in the store.

Registered backends (``open_backend(kind, location)``):

========== =================================== =====================================
kind       location                            module
========== =================================== =====================================
etcd       ``http://127.0.0.1:2379[,URL...]``  ``atoll.fleet.backends.etcd``
embedded   a sqlite file, e.g. ``locks.db``    ``atoll.fleet.backends.embedded``
memory     ignored (tests, simulations)        ``atoll.fleet.backends.memory``
========== =================================== =====================================
"""

from __future__ import annotations

import abc
import importlib
import random
import threading
import time
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar, cast

from atoll.core.errors import AtollError, InputError, RuntimeBackendError
from atoll.fleet.semaphore import Semaphore

__all__ = ["BACKENDS", "Backend", "open_backend"]

T = TypeVar("T")

# kind -> "module:Class"; imported on use so that etcd's client loads only when asked for.
BACKENDS: dict[str, str] = {
    "etcd": "atoll.fleet.backends.etcd:EtcdBackend",
    "embedded": "atoll.fleet.backends.embedded:EmbeddedBackend",
    "memory": "atoll.fleet.backends.memory:MemoryBackend",
}

MAX_ATTEMPTS = 200
MAX_SECONDS = 15.0


class _Pending:
    """A change waiting for its group's next transaction."""

    def __init__(self, change: Callable[[Semaphore], tuple[Semaphore, Any]]) -> None:
        self.change = change
        self.result: Any = None
        self.error: AtollError | None = None
        self.done = False


class Backend(abc.ABC):
    """Stores one semaphore per group, with compare-and-swap."""

    kind: ClassVar[str]

    def __init__(self) -> None:
        """Subclasses call this first: it sets up the per-group commit queues."""
        self._guard = threading.Lock()
        self._queues: dict[str, list[_Pending]] = {}
        self._locks: dict[str, threading.Lock] = {}
        # what this process last read or wrote, per group: the first CAS attempt starts
        # from it instead of reading again (a stale entry only costs a failed CAS)
        self._seen: dict[str, tuple[Semaphore | None, int]] = {}

    @abc.abstractmethod
    def load(self, group: str) -> tuple[Semaphore | None, int]:
        """The group's semaphore and its version; ``(None, 0)`` when absent."""

    @abc.abstractmethod
    def store(self, group: str, sem: Semaphore, version: int) -> int | None:
        """Write ``sem`` if the stored version is still ``version``.

        Returns the new version, or None on conflict (someone else wrote).
        """

    @abc.abstractmethod
    def groups(self) -> list[str]:
        """Groups that have a stored semaphore, sorted."""

    @abc.abstractmethod
    def describe(self) -> str:
        """Where the state lives, for messages (no secrets)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""

    def update(
        self, group: str, slots: int, change: Callable[[Semaphore], tuple[Semaphore, T]],
        *, read_first: bool = True,
    ) -> T:
        """Apply ``change`` to the group's semaphore atomically and return its result.

        A missing semaphore starts empty with ``slots``; a stored one takes
        ``slots`` from the config. ``change`` is pure and may run several times
        (on conflicts); nothing is written when the semaphore does not change.

        With ``read_first``, answers that change nothing (slots full, already
        held) come from one read, without queueing behind writes; pass False
        for changes that usually write (a holder's release).

        Changes are committed with compare-and-swap, one store
        transaction each; changes to one group that arrive while a transaction
        is in flight in this process are applied in order and committed
        together in the next one (group commit), so a burst of hosts costs a
        few transactions, not one each. Between processes (two servers, a
        server and ``atoll fleetlock release``) the CAS keeps every change atomic.

        Raises:
            RuntimeBackendError: too many conflicts, or the store failed.
        """
        if read_first:
            current, _ = self.load(group)
            base = Semaphore(slots) if current is None else current.with_slots(slots)
            new, result = change(base)
            if new == current:
                return result
        mine = _Pending(change)
        with self._guard:
            self._queues.setdefault(group, []).append(mine)
            lock = self._locks.setdefault(group, threading.Lock())
        with lock:
            if not mine.done:
                with self._guard:
                    batch, self._queues[group] = self._queues[group], []
                self._commit(group, slots, batch)
        if mine.error is not None:
            raise mine.error
        return cast(T, mine.result)

    def _commit(self, group: str, slots: int, batch: list[_Pending]) -> None:
        deadline = time.monotonic() + MAX_SECONDS
        try:
            use_seen = True
            for attempt in range(MAX_ATTEMPTS):
                seen = self._seen.pop(group, None) if use_seen else None
                use_seen = False
                current, version = seen if seen is not None else self.load(group)
                sem = Semaphore(slots) if current is None else current.with_slots(slots)
                results = []
                for pending in batch:
                    sem, out = pending.change(sem)
                    results.append(out)
                if sem == current and seen is not None:
                    continue  # "nothing to do" is only believed from a fresh read
                written = None if sem == current else self.store(group, sem, version)
                if sem == current or written is not None:
                    if written is not None:
                        self._seen[group] = (sem, written)
                    for pending, out in zip(batch, results, strict=True):
                        pending.result, pending.done = out, True
                    return
                if time.monotonic() > deadline:
                    break
                time.sleep(random.uniform(0, 0.002 * min(attempt + 1, 10)))
            error: AtollError = RuntimeBackendError(
                f"fleet lock group {group!r}: too many concurrent changes in {self.describe()}",
                resolution="retry; if it persists, check the store's health",
            )
        except AtollError as exc:
            error = exc
        except Exception as exc:  # a bug: fail every waiter plainly rather than hang one
            error = RuntimeBackendError(f"fleet lock group {group!r}: internal error",
                                        details=f"{type(exc).__name__}: {exc}")
        for pending in batch:
            pending.error, pending.done = error, True

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_backend(kind: str, location: str = "", **options: Any) -> Backend:
    """Open a registered backend; ``options`` go to its constructor (etcd: ``timeout``,
    ``client_cert``, ``client_key``).

    Raises:
        InputError: unknown kind, or a location the backend cannot use.
        RuntimeBackendError: the store cannot be reached.
    """
    target = BACKENDS.get(kind)
    if target is None:
        raise InputError(f"unknown fleet lock backend {kind!r}",
                         resolution=f"use one of: {', '.join(sorted(BACKENDS))}")
    module_name, _, cls_name = target.partition(":")
    cls: Callable[..., Backend] = getattr(importlib.import_module(module_name), cls_name)
    return cls(location, **options)

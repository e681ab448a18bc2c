"""An in-memory backend: for unit tests and pure simulations (state dies with the process)."""

from __future__ import annotations

import threading

from atoll.fleet.backends import Backend
from atoll.fleet.semaphore import Semaphore

__all__ = ["MemoryBackend"]


class MemoryBackend(Backend):
    """Semaphores in a dict, versioned, guarded by a lock."""

    kind = "memory"

    def __init__(self, location: str = "") -> None:
        super().__init__()
        self._data: dict[str, tuple[Semaphore, int]] = {}
        self._lock = threading.Lock()
        self.writes = 0

    def load(self, group: str) -> tuple[Semaphore | None, int]:
        with self._lock:
            sem, version = self._data.get(group, (None, 0))
            return sem, version

    def store(self, group: str, sem: Semaphore, version: int) -> int | None:
        with self._lock:
            if self._data.get(group, (None, 0))[1] != version:
                return None
            self._data[group] = (sem, version + 1)
            self.writes += 1
            return version + 1

    def groups(self) -> list[str]:
        with self._lock:
            return sorted(self._data)

    def describe(self) -> str:
        return "memory"

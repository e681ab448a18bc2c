"""A value shared between concurrent callers: computed by one at a time (single
flight), kept ``max_age`` seconds."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["SharedValue"]

T = TypeVar("T")


class SharedValue(Generic[T]):
    """``produce()``'s result, kept ``max_age`` seconds; while one caller produces it,
    the others wait for that result instead of producing it again.

    A failing ``produce()`` raises to its caller and is not kept; the callers waiting
    for it then try again themselves.
    """

    def __init__(self, produce: Callable[[], T], max_age: float) -> None:
        self._produce = produce
        self._max_age = max_age
        self._cond = threading.Condition()
        self._value: T | None = None
        self._at = -math.inf
        self._busy = False

    def get(self) -> T:
        with self._cond:
            while True:
                if self._value is not None and time.monotonic() - self._at < self._max_age:
                    return self._value
                if not self._busy:
                    self._busy = True
                    break
                self._cond.wait()
        try:
            value = self._produce()
        except BaseException:
            with self._cond:
                self._busy = False
                self._cond.notify_all()
            raise
        with self._cond:
            self._value, self._at, self._busy = value, time.monotonic(), False
            self._cond.notify_all()
        return value

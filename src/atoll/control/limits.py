"""Per-host limits of the control plane: check-ins per host, and host events per host.

A host owns its machine (the customer has root on it), so nothing it sends may cost
the control plane without bound: a check-in loop, or a report that flips 64 apps'
health at every check-in, would otherwise fill the operators' database. Two token
buckets per host (pure, clock given; one per server instance, in memory):

* **check-ins**: ``burst`` at once, then one every ``every_s`` (``atoll fleet serve
  --checkin-limit``, default 30 then one per 2 s: atolld checks in every 300 s, plus
  an immediate follow-up after doing operators' requests). Over it: 429
  ``rate_limited`` with ``Retry-After``; nothing is recorded. A replayed check-in
  (409) gives its token back: a captured check-in sent again and again costs the
  host nothing.
* **host events** (``inventory.changes``: boot, rollback, version, app health...):
  ``burst`` then one every ``every_s`` (``--event-limit``, default 200 then one per
  10 s). The check-in is still recorded (the inventory shows the last report); events
  over the budget are counted and written as one ``events-dropped`` event (with the
  count and kinds) once the budget allows again. The server's own events about a host
  that the host's reports decide (``rollout-host-skipped``) come from the same budget.

With several server instances each keeps its own buckets (a host may get up to
instances x the limit); the database stays the one place that decides correctness.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

__all__ = ["Bucket", "Buckets"]

MAX_BURST = 1_000_000
MAX_EVERY_S = 86400.0


@dataclass(frozen=True)
class Bucket:
    """``burst`` tokens at most; one more every ``every_s`` seconds (0: no limit)."""

    burst: int = 30
    every_s: float = 2.0

    def __post_init__(self) -> None:
        if self.burst < 1 or not 0 <= self.every_s <= MAX_EVERY_S:  # also refuses nan
            raise ValueError("a bucket needs burst >= 1 and every_s >= 0")

    @classmethod
    def parse(cls, text: str) -> Bucket:
        """``BURST/SECONDS`` (``30/2``: 30 at once, then one every 2 s), or ``off``.

        Raises:
            ValueError: not that form.
        """
        if text == "off":
            return cls(1, 0.0)
        burst, sep, every = text.partition("/")
        form = f"{text!r}: BURST/SECONDS (e.g. 30/2: BURST 1..{MAX_BURST}, SECONDS " \
               f"over 0 up to {MAX_EVERY_S:.0f}), or off"
        try:
            b, e = int(burst), float(every)
        except ValueError:
            raise ValueError(form) from None
        # "30/0" is not "off" in disguise, and nan or inf would never refill (a host
        # locked out for good) or never empty: refused, as every bad value
        if not sep or not 1 <= b <= MAX_BURST or not 0 < e <= MAX_EVERY_S:
            raise ValueError(form)
        return cls(b, e)


class Buckets:
    """Token buckets by key (host id); thread-safe; at most ``max_keys`` kept (the
    least recently used go first, as full buckets)."""

    def __init__(self, bucket: Bucket, max_keys: int = 1_000_000) -> None:
        self.bucket = bucket
        self.max_keys = max_keys
        self._state: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)
        self._lock = threading.Lock()

    def take(self, key: str, now: float, n: int = 1) -> float:
        """Take ``n`` tokens at ``now`` (seconds, monotonic or epoch): 0.0 when taken,
        else the seconds until they would be (nothing taken)."""
        b = self.bucket
        if b.every_s == 0:
            return 0.0
        with self._lock:
            tokens, at = self._state.pop(key, (float(b.burst), now))
            tokens = min(float(b.burst), tokens + max(0.0, now - at) / b.every_s)
            if tokens >= n:
                tokens -= n
                wait = 0.0
            else:
                wait = (n - tokens) * b.every_s
            if len(self._state) >= self.max_keys:
                self._state.pop(next(iter(self._state)))
            self._state[key] = (tokens, now)
            return wait

    def refund(self, key: str, n: int = 1) -> None:
        """Give back ``n`` tokens taken for something that turned out not to count
        (at most up to ``burst``)."""
        if self.bucket.every_s == 0:
            return
        with self._lock:
            if key in self._state:
                tokens, at = self._state[key]
                self._state[key] = (min(float(self.bucket.burst), tokens + n), at)


class HostLimits:
    """The two per-host budgets of a server instance (module docstring)."""

    def __init__(self, checkins: Bucket | None = None, events: Bucket | None = None) -> None:
        self.checkins = Buckets(checkins or Bucket(30, 2.0))
        self.events = Buckets(events or Bucket(200, 10.0))
        self._dropped: dict[str, dict[str, int]] = {}  # host -> kind -> events dropped
        self._lock = threading.Lock()

    def checkin_wait(self, host: str, now: float) -> float:
        """0.0: this check-in may go on; else the seconds the host should wait."""
        return self.checkins.take(host, now)

    def checkin_refused(self, host: str) -> None:
        """A check-in that took a token was a replay: the token goes back, so whoever
        replays a captured check-in cannot spend the host's budget and lock it out."""
        self.checkins.refund(host)

    def admit_one(self, host: str, now: float, kind: str) -> bool:
        """Whether one event the *server* makes about a host because of what it reported
        (a rollout skipping it: the host can flip its channel or version at every
        check-in) is written: from the host's event budget, counted in its next
        ``events-dropped`` when over."""
        with self._lock:
            if self.events.take(host, now) == 0.0:
                return True
            counts = self._dropped.setdefault(host, {})
            counts[kind] = counts.get(kind, 0) + 1
            return False

    def admit(self, host: str, now: float,
              kinds: list[str]) -> tuple[list[bool], dict[str, int] | None]:
        """Which of a check-in's events (by kind, in order) are written, and the
        ``events-dropped`` summary to write first (kind -> count), if one is due."""
        with self._lock:
            summary = None
            pending = self._dropped.get(host)
            if pending and self.events.take(host, now) == 0.0:
                summary = self._dropped.pop(host)
            keep = []
            for kind in kinds:
                ok = self.events.take(host, now) == 0.0
                if not ok:
                    counts = self._dropped.setdefault(host, {})
                    counts[kind] = counts.get(kind, 0) + 1
                keep.append(ok)
            return keep, summary

"""Weekly maintenance windows with a time zone (pure).

A window is written ``DAYS HH:MM-HH:MM ZONE``, e.g. ``Sat 02:00-04:00 Europe/Berlin``,
``Mon-Fri 22:00-23:30 UTC`` or ``Sat,Sun 01:00-05:00 America/New_York``. A window
may cross midnight (``Sun 23:00-01:00``: starts Sunday, ends Monday).

Times are wall-clock times in the zone. Around DST changes:

- a start or end that does not exist (spring forward) is read with the offset
  before the change, so ``02:30`` on the day clocks jump 02:00→03:00 in Berlin
  is 03:30 local time: the window starts late and is shorter;
- a start or end that exists twice (fall back) means the first occurrence; a
  window spanning the repeated hour is one hour longer in real time.

Durations are always measured in real (UTC) time.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = ["Window", "WindowChoice", "next_window", "parse_window"]

DAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
_RE = re.compile(
    r"^\s*(?P<days>[A-Za-z,\-]+)\s+(?P<start>\d{1,2}:\d{2})\s*-\s*(?P<end>\d{1,2}:\d{2})"
    r"\s+(?P<zone>\S+)\s*$"
)


@dataclass(frozen=True)
class Window:
    days: frozenset[int]  # 0 = Monday
    start: dt.time
    end: dt.time
    zone: str
    text: str

    def occurrence(self, day: dt.date) -> tuple[dt.datetime, dt.datetime]:
        """The window that starts on local ``day``, as aware UTC datetimes."""
        tz = ZoneInfo(self.zone)
        start = dt.datetime.combine(day, self.start, tzinfo=tz)
        end_day = day + dt.timedelta(days=1) if self.end <= self.start else day
        end = dt.datetime.combine(end_day, self.end, tzinfo=tz)
        return start.astimezone(dt.UTC), end.astimezone(dt.UTC)


def _parse_days(text: str) -> frozenset[int]:
    out: set[int] = set()
    for part in text.lower().split(","):
        if "-" in part:
            a, b = part.split("-", 1)
            if a[:3] not in DAYS or b[:3] not in DAYS:
                raise ValueError(f"unknown day in {part!r}")
            i, j = DAYS.index(a[:3]), DAYS.index(b[:3])
            k = i
            while True:
                out.add(k)
                if k == j:
                    break
                k = (k + 1) % 7
        else:
            if part[:3] not in DAYS or len(part) < 3:
                raise ValueError(f"unknown day {part!r}")
            out.add(DAYS.index(part[:3]))
    return frozenset(out)


def _parse_time(text: str) -> dt.time:
    h, m = (int(x) for x in text.split(":"))
    if not (0 <= h <= 23 and 0 <= m <= 59):
        raise ValueError(f"{text}: not a time of day")
    return dt.time(h, m)


def parse_window(text: str) -> Window:
    """Parse ``DAYS HH:MM-HH:MM ZONE``.

    Raises:
        ValueError: with what is wrong (the caller adds where).
    """
    m = _RE.match(text)
    if not m:
        raise ValueError("expected 'DAYS HH:MM-HH:MM ZONE', e.g. 'Sat 02:00-04:00 Europe/Berlin'")
    try:
        ZoneInfo(m["zone"])
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {m['zone']!r}") from None
    start, end = _parse_time(m["start"]), _parse_time(m["end"])
    if start == end:
        raise ValueError("a window must not be empty")
    return Window(_parse_days(m["days"]), start, end, m["zone"], text.strip())


@dataclass(frozen=True)
class WindowChoice:
    start: dt.datetime
    end: dt.datetime
    window: str
    skipped: tuple[str, ...]  # why earlier windows were not chosen


def next_window(
    windows: list[Window],
    now: dt.datetime,
    *,
    needed: dt.timedelta = dt.timedelta(0),
    horizon_days: int = 15,
) -> WindowChoice | None:
    """The first window (possibly the current one) with at least ``needed`` left.

    Windows too short for ``needed`` (the last measured apply + reboot time) are
    skipped with a reason. Returns None when no window fits within the horizon.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    candidates: list[tuple[dt.datetime, dt.datetime, Window]] = []
    for w in windows:
        tz = ZoneInfo(w.zone)
        local_today = now.astimezone(tz).date()
        for offset in range(-1, horizon_days):
            day = local_today + dt.timedelta(days=offset)
            if day.weekday() in w.days:
                s, e = w.occurrence(day)
                if e > now:
                    candidates.append((s, e, w))
    candidates.sort(key=lambda c: (c[0], c[1]))
    skipped: list[str] = []
    for s, e, w in candidates:
        begin = max(s, now)
        if e - begin >= needed:
            return WindowChoice(begin, e, w.text, tuple(skipped))
        left = int((e - begin).total_seconds() // 60)
        skipped.append(
            f"{w.text} on {s.astimezone(ZoneInfo(w.zone)):%Y-%m-%d}: {left} min left, "
            f"an apply and reboot took {int(needed.total_seconds() // 60)} min last time"
        )
    return None

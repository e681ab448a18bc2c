"""The console's plots: inline SVG drawn on the server (no script; the CSP allows
no inline style, so colours are classes of ``static/console.css``). Pure: data in,
geometry out; the templates write the elements.

* :func:`version_points` and :func:`versions_plot`: the Fleet page's hosts per
  booted version over time, stacked areas;
* :func:`waves_plot`: the Rollout page's progress, one bar per wave.

Each plot has a ``<title>`` and a table with the same numbers beside it (the
accessible alternative, and what the tests read).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["HISTORY_DAYS", "MAX_SERIES", "OTHER", "version_points", "versions_plot",
           "waves_plot"]

HISTORY_DAYS = (1, 7, 30, 90)  # the Fleet page's choices (``days=``), default 30
MAX_SERIES = 7  # versions drawn apart; the rest are summed as OTHER
OTHER = "other versions"
NONE = "(none reported)"
WIDTH, HEIGHT = 720, 240
LEFT, RIGHT, TOP, BOTTOM = 56, 16, 12, 32


@dataclass(frozen=True)
class Point:
    """One moment: when, and hosts per series (every series named, 0 included)."""

    time: dt.datetime
    hosts: dict[str, int]
    live: bool = False  # now, from the inventory (not a stored sample)

    @property
    def total(self) -> int:
        return sum(self.hosts.values())


def version_points(samples: Iterable[tuple[dt.datetime, str, int]],
                   now_counts: Mapping[str | None, int], now: dt.datetime,
                   days: int) -> tuple[list[str], list[Point]]:
    """The series (versions, most hosts now first; beyond ``MAX_SERIES``, ``OTHER``)
    and the points: stored ``samples`` ``(bucket, version, hosts)`` summed over the
    scope, one point per hour when ``days`` <= 2, else per UTC day (the day's last
    sample: where the day ended); then now, from ``now_counts`` (the inventory).
    A version of ``""``/None is ``NONE``."""
    by_bucket: dict[dt.datetime, dict[str, int]] = {}
    for bucket, version, n in samples:
        row = by_bucket.setdefault(bucket, {})
        name = version or NONE
        row[name] = row.get(name, 0) + n
    if days > 2:  # the last bucket of each day
        last: dict[dt.date, dt.datetime] = {}
        for bucket in by_bucket:
            day = bucket.astimezone(dt.UTC).date()
            last[day] = max(last.get(day, bucket), bucket)
        by_bucket = {b: by_bucket[b] for b in sorted(last.values())}
    current = {(v or NONE): n for v, n in now_counts.items() if n}
    rank: dict[str, tuple[int, int]] = {}
    for row in [*by_bucket.values(), current]:
        for v, n in row.items():
            old = rank.get(v, (0, 0))
            rank[v] = (current.get(v, 0), max(old[1], n))
    ordered = sorted(rank, key=lambda v: (-rank[v][0], -rank[v][1], v))
    shown = ordered if len(ordered) <= MAX_SERIES + 1 else ordered[:MAX_SERIES]
    series = shown + ([OTHER] if len(shown) < len(ordered) else [])

    def fold(row: Mapping[str, int]) -> dict[str, int]:
        out = dict.fromkeys(series, 0)
        for v, n in row.items():
            out[v if v in out and v != OTHER else OTHER] += n
        return out

    points = [Point(b, fold(row)) for b, row in sorted(by_bucket.items())]
    points.append(Point(now, fold(current), live=True))
    return series, points


def _nice(n: int) -> int:
    """The smallest of 1, 2, 5 x 10^k that is >= n (an axis's top; 1 for nothing)."""
    k = 1
    while True:
        for m in (1, 2, 5):
            if m * k >= n:
                return m * k
        k *= 10


def _x(t: dt.datetime, start: dt.datetime, end: dt.datetime) -> float:
    span = (end - start).total_seconds() or 1.0
    return round(LEFT + (WIDTH - LEFT - RIGHT) * (t - start).total_seconds() / span, 1)


def _y(n: float, top: int) -> float:
    return round(HEIGHT - BOTTOM - (HEIGHT - TOP - BOTTOM) * n / top, 1)


def versions_plot(series: Sequence[str], points: Sequence[Point], start: dt.datetime,
                  end: dt.datetime, days: int) -> dict[str, Any]:
    """Stacked areas, one per series, over ``start``..``end``: ``{"width", "height",
    "areas": [{"name", "index", "path"}], "y_ticks": [{"y", "label"}], "x_ticks":
    [{"x", "label"}], "drawn"}`` (``drawn`` False: fewer than two points, nothing to
    join; the table still shows the one)."""
    top = _nice(max((p.total for p in points), default=0))
    areas = []
    if len(points) >= 2:
        below = [0] * len(points)
        for i, name in enumerate(series):
            above = [b + p.hosts.get(name, 0) for b, p in zip(below, points, strict=True)]
            upper = [f"{_x(p.time, start, end)},{_y(a, top)}"
                     for p, a in zip(points, above, strict=True)]
            lower = [f"{_x(p.time, start, end)},{_y(b, top)}"
                     for p, b in zip(points, below, strict=True)]
            areas.append({"name": name, "index": i,
                          "path": "M" + " L".join(upper + lower[::-1]) + " Z"})
            below = above
    fmt = "%H:%M" if days <= 2 else "%Y-%m-%d"
    x_ticks = [{"x": _x(t, start, end), "label": t.astimezone(dt.UTC).strftime(fmt),
                "anchor": anchor}
               for t, anchor in ((start, "start"), (start + (end - start) / 2, "middle"),
                                 (end, "end"))]
    y_ticks = [{"y": _y(n, top), "label": str(n)} for n in sorted({0, top // 2, top})]
    return {"width": WIDTH, "height": HEIGHT, "left": LEFT, "right": WIDTH - RIGHT,
            "top": TOP, "bottom": HEIGHT - BOTTOM, "areas": areas, "x_ticks": x_ticks,
            "y_ticks": y_ticks, "drawn": len(points) >= 2}


# a rollout's phases, in the bars' order
WAVE_PARTS = (("done", ("succeeded", "at-target")), ("in flight", ("in-flight",)),
              ("failed", ("failed",)), ("waiting", ("waiting", "queued")),
              ("off the path", ("skipped", "lost", "excluded")))
BAR_H, BAR_GAP, BAR_LEFT, BAR_W = 20, 8, 80, 560


def waves_plot(waves: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One bar per wave (``waves`` as :func:`atoll.control.rollout_ops.status` gives
    them), its hosts split by where they stand: done (succeeded or at the target),
    in flight, failed, waiting (queued or not applying yet), off the path (skipped,
    lost, excluded); widths are shares of the largest wave. ``{"width", "height",
    "bars": [{"wave", "y", "label", "parts": [{"part", "index", "x", "width", "hosts"}],
    "text"}]}``."""
    largest = max((int(w.get("hosts") or 0) for w in waves), default=0) or 1
    bars = []
    for row, w in enumerate(waves):
        phases = w.get("phases") or {}
        x, parts, counts = float(BAR_LEFT), [], {}
        for i, (part, names) in enumerate(WAVE_PARTS):
            n = sum(int(phases.get(name, 0)) for name in names)
            counts[part] = n
            if n:
                width = round(BAR_W * n / largest, 1)
                parts.append({"part": part, "index": i, "x": round(x, 1), "width": width,
                              "hosts": n})
                x += width
        y = TOP + row * (BAR_H + BAR_GAP)
        text = (f"{counts['done']} of {w.get('hosts', 0)} done, "
                f"{counts['in flight']} in flight, {counts['failed']} failed")
        bars.append({"wave": w.get("index", row), "y": y, "text_y": y + BAR_H - 5,
                     "label": f"wave {w.get('index', row)}", "parts": parts,
                     "text": text, "counts": counts, "end": round(x + 6, 1)})
    height = TOP + len(waves) * (BAR_H + BAR_GAP) + TOP
    return {"width": BAR_LEFT + BAR_W + 240, "height": height, "bar_h": BAR_H,
            "bars": bars, "parts": [p for p, _ in WAVE_PARTS]}

"""What the console's pages show, read from stored reports only (never from hosts).

Every query goes through the caller's :class:`~atoll.control.auth.Principal` and the
API's own scoping (:mod:`atoll.control.operations`): a host outside it does not exist.

A host's console state, one word per host (:data:`host_state`, one SQL expression, so
counts and filters agree), in this order: ``lost`` (not seen for ``--lost-after``),
``rolled-back`` (its last boot rolled back, docs/states.md), else its reported
``update.state`` (``up-to-date``, ``available``, ``downloaded``, ``prepared``,
``pending``), else ``unknown`` (no check-in yet).

The Fleet page also breaks its counts down by customer and by the values of one
label key (``by``, default ``site``: a rollout's group is chosen by labels, so any
key of a group, ``role`` say, is a breakdown too), each row by state and by booted
version; and plots the versions over time from the hourly samples
(:mod:`atoll.control.history`, :mod:`atoll.control.console.plots`). Every count is a
``GROUP BY`` in SQL over the caller's scope; Python only shapes the grouped rows.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Select, case, func, select
from sqlalchemy.orm import Session

from atoll.control import operations as ops
from atoll.control.auth import Principal
from atoll.control.console import plots
from atoll.control.errors import ApiError
from atoll.control.history import version_history
from atoll.control.inventory import hotfix_packages
from atoll.control.models import Event, Host, HostLabel

__all__ = ["PAGE_SIZE", "STATES", "FleetFilter", "breakdown", "fleet", "host_page",
           "host_state", "versions_over_time"]

PAGE_SIZE = 50
MAX_KEYS = 20  # label keys offered for the breakdown
ROW_VERSIONS = 3  # versions named per breakdown row (most hosts first), the rest counted
STATES = ("lost", "rolled-back", "pending", "prepared", "downloaded", "available",
          "up-to-date", "unknown")
host_state: ColumnElement[str] = case(
    (Host.lost.is_(True), "lost"),
    (Host.last_boot_result == "rolled-back", "rolled-back"),
    else_=func.coalesce(Host.update_state, "unknown"))
_KEY = r"[a-z0-9][a-z0-9._/-]{0,62}"
_LABEL = re.compile(rf"({_KEY})=(.{{0,200}})")


@dataclass(frozen=True)
class FleetFilter:
    """The fleet page's query string, checked: ``label`` ``KEY=VALUE``, ``page`` from 1,
    ``days`` the plot's span (one of :data:`plots.HISTORY_DAYS`, default 30), ``by`` the
    label key of the breakdown (default ``site``).

    Raises (:meth:`parse`):
        ApiError: 422, a filter that is not of its form.
    """

    label: tuple[str, str] | None = None
    version: str | None = None
    state: str | None = None
    page: int = 1
    days: int = 30
    by: str = "site"

    @classmethod
    def parse(cls, query: dict[str, str]) -> FleetFilter:
        label = None
        if raw := query.get("label", "").strip():
            m = _LABEL.fullmatch(raw)
            if m is None:
                raise ApiError(422, "invalid", "label: KEY=VALUE (a key of lower case "
                               "letters, digits, '.', '_', '/', '-')")
            label = (m.group(1), m.group(2))
        state = query.get("state", "").strip() or None
        if state is not None and state not in STATES:
            raise ApiError(422, "invalid", f"state: one of {', '.join(STATES)}")
        version = query.get("version", "").strip()[:200] or None
        page = query.get("page", "1").strip()
        if not (page.isascii() and page.isdigit()) or not 1 <= int(page) <= 1_000_000:
            raise ApiError(422, "invalid", "page: a number from 1")
        days = query.get("days", "30").strip()
        if days not in {str(d) for d in plots.HISTORY_DAYS}:
            raise ApiError(422, "invalid", "days: one of "
                           f"{', '.join(str(d) for d in plots.HISTORY_DAYS)}")
        by = query.get("by", "").strip() or "site"
        if not re.fullmatch(_KEY, by):
            raise ApiError(422, "invalid", "by: a label key (lower case letters, digits, "
                           "'.', '_', '/', '-')")
        return cls(label, version, state, int(page), int(days), by)

    def query(self, page: int | None = None) -> dict[str, str]:
        """The query string that gives this filter (on ``page``)."""
        out = {"label": f"{self.label[0]}={self.label[1]}" if self.label else "",
               "version": self.version or "", "state": self.state or "",
               "page": str(page or self.page), "days": str(self.days), "by": self.by}
        default = {"page": "1", "days": "30", "by": "site"}
        return {k: v for k, v in out.items() if v and default.get(k) != v}


def _scoped(p: Principal) -> Select[Any]:
    q = select(Host)
    if p.customer_ids is not None:
        q = q.where(Host.customer_id.in_(sorted(p.customer_ids)))
    return q


def _filtered(q: Select[Any], f: FleetFilter) -> Select[Any]:
    if f.label is not None:
        q = q.where(select(HostLabel.host_id).where(
            HostLabel.host_id == Host.id, HostLabel.key == f.label[0],
            HostLabel.value == f.label[1]).exists())
    if f.version is not None:
        q = q.where(Host.booted_version == f.version)
    if f.state is not None:
        q = q.where(host_state == f.state)
    return q


def fleet(s: Session, p: Principal, f: FleetFilter, *,
          now: dt.datetime | None = None) -> dict[str, Any]:
    """The fleet page: counts by state, by booted version and by customer over the
    caller's whole scope; the breakdowns by customer and by label ``f.by``
    (:func:`breakdown`); the versions over the last ``f.days`` days
    (:func:`versions_over_time`, ending at ``now``, aware UTC, default the
    system's clock); one page
    (``PAGE_SIZE``) of the hosts that match ``f``, by name."""
    # one GROUP BY (customer, state, version) gives every count of the page
    grouped = _grouped(s, _scoped(p), Host.customer_id)
    by_state: dict[str, int] = {}
    by_version_n: dict[str | None, int] = {}
    by_customer_n: dict[int, int] = {}
    for cid, state, version, n in grouped:
        by_state[state] = by_state.get(state, 0) + n
        by_version_n[version] = by_version_n.get(version, 0) + n
        by_customer_n[cid] = by_customer_n.get(cid, 0) + n
    by_version = sorted(by_version_n.items(), key=lambda row: (-row[1], row[0] or ""))
    by_customer = sorted(by_customer_n.items())
    matching = _filtered(_scoped(p), f)
    total = s.scalar(select(func.count()).select_from(matching.subquery())) or 0
    pages = max(1, math.ceil(total / PAGE_SIZE))
    rows = s.execute(matching.with_only_columns(Host, host_state)
                     .order_by(Host.name, Host.id)
                     .offset((min(f.page, pages) - 1) * PAGE_SIZE).limit(PAGE_SIZE)).all()
    labels = ops._labels(s, [h.id for h, _ in rows])
    customers = ops._customers(s)
    counted = sorted((customers.get(cid, f"#{cid}"), n) for cid, n in by_customer)
    by_label = breakdown(s, p, f.by)
    customer_rows = _rows(grouped, None, customers) if len(counted) > 1 else []
    return {
        "total_in_scope": sum(by_state.values()),
        "by_state": [(name, by_state.get(name, 0)) for name in STATES
                     if by_state.get(name)],
        "by_version": [(v or "(none reported)", n) for v, n in by_version],
        "by_customer": counted,
        "customer_rows": customer_rows,
        "by_label": by_label,
        "history": versions_over_time(s, p, f.days, now or dt.datetime.now(dt.UTC),
                                      dict(by_version)),
        "hosts": [{"id": h.id, "name": h.name, "customer": customers.get(h.customer_id, ""),
                   "state": st, "version": h.booted_version,
                   "pending_version": h.pending_version, "last_seen": h.last_seen,
                   "labels": labels[h.id]} for h, st in rows],
        "total": total, "page": min(f.page, pages), "pages": pages,
    }


def breakdown(s: Session, p: Principal, key: str) -> dict[str, Any]:
    """Counts per value of label ``key`` over ``p``'s scope, each by state and by booted
    version (one ``GROUP BY`` over value, state and version, whose few rows are summed
    here): ``{"key", "keys", "rows": [{"name", "label", "hosts", "states": {state: n},
    "versions": [(version, n)], "more_versions"}]}``, rows by name, versions most hosts
    first (``ROW_VERSIONS`` named, ``more_versions`` the rest's hosts); ``label``: the
    fleet filter that shows the row's hosts (None for the row of hosts without the
    label, named ``(no KEY label)``); ``keys``: the label keys in scope (at most
    ``MAX_KEYS``, the breakdown's choices). The per-customer rows are :func:`fleet`'s,
    from its own grouped counts."""
    scoped = _scoped(p)
    # per host, its label's value by the primary key (host, key): NULL without it.
    # Not an outer join: PostgreSQL, misjudging a customer's share before ANALYZE,
    # chose a nested loop over every host's label for it (400 ms at 10,000 hosts)
    value = (select(HostLabel.value).where(HostLabel.host_id == Host.id,
                                           HostLabel.key == key)
             .correlate(Host).scalar_subquery())
    out = _rows(_grouped(s, scoped, value), key, {})
    keys = list(s.scalars(select(HostLabel.key).where(
        HostLabel.host_id.in_(scoped.with_only_columns(Host.id))).distinct()
        .order_by(HostLabel.key).limit(MAX_KEYS)))
    return {"key": key, "keys": keys, "rows": out}


def _grouped(s: Session, q: Select[Any], group: Any) -> list[tuple[Any, str, str | None, int]]:
    """``(group, state, booted version, hosts)``: one ``GROUP BY`` over ``q``'s hosts."""
    return [(g, st, v, n) for g, st, v, n in s.execute(
        q.with_only_columns(group, host_state, Host.booted_version, func.count())
        .group_by(group, host_state, Host.booted_version))]


def _rows(grouped: list[tuple[Any, str, str | None, int]], key: str | None,
          names: dict[int, str]) -> list[dict[str, Any]]:
    """The breakdown's rows from :func:`_grouped`'s (few) rows: per customer (``key``
    None; ``names`` by id) or per value of label ``key`` (None: without the label)."""
    rows: dict[Any, dict[str, Any]] = {}
    for g, state, version, n in grouped:
        row = rows.setdefault(g, {"hosts": 0, "states": {}, "versions": {}})
        row["hosts"] += n
        row["states"][state] = row["states"].get(state, 0) + n
        v = version or "(none reported)"
        row["versions"][v] = row["versions"].get(v, 0) + n
    out = []
    for g, r in rows.items():
        if key is None:
            name, label = names.get(g, f"#{g}"), None
        elif g is None:
            name, label = f"(no {key} label)", None
        else:
            name, label = str(g), f"{key}={g}"
        versions = sorted(r["versions"].items(), key=lambda vn: (-vn[1], vn[0]))
        out.append({"name": name, "label": label, "hosts": r["hosts"], "states": r["states"],
                    "versions": versions[:ROW_VERSIONS],
                    "more_versions": sum(n for _, n in versions[ROW_VERSIONS:])})
    return sorted(out, key=lambda r: r["name"])


def versions_over_time(s: Session, p: Principal, days: int, now: dt.datetime,
                       now_counts: dict[str | None, int]) -> dict[str, Any]:
    """The plot of booted versions over the last ``days`` days in ``p``'s scope: the
    hourly samples summed in SQL (:func:`atoll.control.history.version_history`), one
    point per hour (``days`` <= 2) or per day, then now from ``now_counts`` (the
    inventory's counts by version). ``{"days", "series", "points", "plot"}``
    (:func:`atoll.control.console.plots.versions_plot`)."""
    start = now - dt.timedelta(days=days)
    series, points = plots.version_points(version_history(s, p, start, daily=days > 2),
                                          now_counts, now, days)
    return {"days": days, "choices": plots.HISTORY_DAYS, "series": series,
            "points": points, "plot": plots.versions_plot(series, points, start, now, days)}


def _shown_deployment(d: dict[str, Any]) -> dict[str, Any]:
    """A reported deployment for the Host page, its ``hotfix`` (an open field of the
    check-in: any JSON the host wrote) reduced to ``{"base": str | None, "packages":
    hotfix_packages(...)}`` (None: not a hotfix), so that no shape a host sends can
    break its page."""
    hf = d.get("hotfix")
    if not isinstance(hf, dict):
        return d | {"hotfix": None}
    base = hf.get("base")
    return d | {"hotfix": {"base": base if isinstance(base, str) else None,
                           "packages": hotfix_packages(hf)}}


def host_page(s: Session, p: Principal, host_id: str, events: int = 30, *,
              now: dt.datetime | None = None) -> dict[str, Any]:
    """The host page: the API's host detail (404 outside the caller's scope) and its
    ``events`` most recent events, newest first.

    Raises:
        ApiError: 404.
    """
    h = s.scalars(_scoped(p).where(Host.id == host_id)).first()
    if h is None:
        raise ApiError(404, "not_found", f"no host {host_id!r}")
    detail = ops.host_detail(s, p, h.id, now=now)  # now: judges the CVE data's age
    report = detail.get("report") or {}
    status = report.get("status") or {}
    detail["state"] = s.scalar(select(host_state).where(Host.id == h.id))
    detail["deployments"] = [_shown_deployment(d) for d in status.get("deployments") or []
                             if isinstance(d, dict)]
    detail["last_boot_report"] = status.get("last_boot") or {}
    detail["apps"] = [a for a in report.get("apps") or [] if isinstance(a, dict)]
    detail["policy"] = report.get("policy") or {}
    detail["events"] = [{"time": e.time, "kind": e.kind, "actor": e.actor, "data": e.data}
                        for e in s.scalars(select(Event).where(Event.host_id == h.id)
                                           .order_by(Event.id.desc()).limit(events))]
    return detail

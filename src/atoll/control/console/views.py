"""What the console's pages show, read from stored reports only (never from hosts).

Every query goes through the caller's :class:`~atoll.control.auth.Principal` and the
API's own scoping (:mod:`atoll.control.operations`): a host outside it does not exist.

A host's console state, one word per host (:data:`host_state`, one SQL expression, so
counts and filters agree), in this order: ``lost`` (not seen for ``--lost-after``),
``rolled-back`` (its last boot rolled back, docs/states.md), else its reported
``update.state`` (``up-to-date``, ``available``, ``downloaded``, ``prepared``,
``pending``), else ``unknown`` (no check-in yet).
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
from atoll.control.errors import ApiError
from atoll.control.models import Event, Host, HostLabel

__all__ = ["PAGE_SIZE", "STATES", "FleetFilter", "fleet", "host_page", "host_state"]

PAGE_SIZE = 50
STATES = ("lost", "rolled-back", "pending", "prepared", "downloaded", "available",
          "up-to-date", "unknown")
host_state: ColumnElement[str] = case(
    (Host.lost.is_(True), "lost"),
    (Host.last_boot_result == "rolled-back", "rolled-back"),
    else_=func.coalesce(Host.update_state, "unknown"))
_LABEL = re.compile(r"([a-z0-9][a-z0-9._/-]{0,62})=(.{0,200})")


@dataclass(frozen=True)
class FleetFilter:
    """The fleet page's query string, checked: ``label`` ``KEY=VALUE``, ``page`` from 1.

    Raises (:meth:`parse`):
        ApiError: 422, a filter that is not of its form.
    """

    label: tuple[str, str] | None = None
    version: str | None = None
    state: str | None = None
    page: int = 1

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
        if not page.isdigit() or not 1 <= int(page) <= 1_000_000:
            raise ApiError(422, "invalid", "page: a number from 1")
        return cls(label, version, state, int(page))

    def query(self, page: int | None = None) -> dict[str, str]:
        """The query string that gives this filter (on ``page``)."""
        out = {"label": f"{self.label[0]}={self.label[1]}" if self.label else "",
               "version": self.version or "", "state": self.state or "",
               "page": str(page or self.page)}
        return {k: v for k, v in out.items() if v and (k != "page" or v != "1")}


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


def fleet(s: Session, p: Principal, f: FleetFilter) -> dict[str, Any]:
    """The fleet page: counts by state, by booted version and by customer over the
    caller's whole scope, and one page (``PAGE_SIZE``) of the hosts that match ``f``, by name."""
    by_state = dict(s.execute(_scoped(p).with_only_columns(host_state, func.count())
                              .group_by(host_state)).all())
    by_version = sorted(s.execute(_scoped(p).with_only_columns(Host.booted_version,
                                                               func.count())
                                  .group_by(Host.booted_version)).all(),
                        key=lambda row: (-row[1], row[0] or ""))
    by_customer = sorted(s.execute(_scoped(p).with_only_columns(Host.customer_id,
                                                                func.count())
                                   .group_by(Host.customer_id)).all())
    matching = _filtered(_scoped(p), f)
    total = s.scalar(select(func.count()).select_from(matching.subquery())) or 0
    pages = max(1, math.ceil(total / PAGE_SIZE))
    rows = s.execute(matching.with_only_columns(Host, host_state)
                     .order_by(Host.name, Host.id)
                     .offset((min(f.page, pages) - 1) * PAGE_SIZE).limit(PAGE_SIZE)).all()
    labels = ops._labels(s, [h.id for h, _ in rows])
    customers = ops._customers(s)
    counted = sorted((customers.get(cid, f"#{cid}"), n) for cid, n in by_customer)
    return {
        "total_in_scope": sum(by_state.values()),
        "by_state": [(name, by_state.get(name, 0)) for name in STATES
                     if by_state.get(name)],
        "by_version": [(v or "(none reported)", n) for v, n in by_version],
        "by_customer": counted,
        "hosts": [{"id": h.id, "name": h.name, "customer": customers.get(h.customer_id, ""),
                   "state": st, "version": h.booted_version,
                   "pending_version": h.pending_version, "last_seen": h.last_seen,
                   "labels": labels[h.id]} for h, st in rows],
        "total": total, "page": min(f.page, pages), "pages": pages,
    }


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
    detail["deployments"] = [d for d in status.get("deployments") or []
                             if isinstance(d, dict)]
    detail["last_boot_report"] = status.get("last_boot") or {}
    detail["apps"] = [a for a in report.get("apps") or [] if isinstance(a, dict)]
    detail["policy"] = report.get("policy") or {}
    detail["events"] = [{"time": e.time, "kind": e.kind, "actor": e.actor, "data": e.data}
                        for e in s.scalars(select(Event).where(Event.host_id == h.id)
                                           .order_by(Event.id.desc()).limit(events))]
    return detail

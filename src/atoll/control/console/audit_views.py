"""The console's Audit page and its CSV export (``/audit``, ``/audit.csv``).

The audit log is the operators' actions: the events with a link in the audit chain
(:mod:`atoll.control.auditchain`), newest first, with their chain position (seq) and
hash. Every role may read it (viewer included: reading who did what is what a
viewer is for); a user sees the actions on the customers in its scope only, and the
fleet-wide ones (customers, tokens, console users: no customer) only when every
customer is in its scope, as :meth:`atoll.control.auth.Principal.sees` decides.

The CSV export has the same filter and scope; every cell goes through
:func:`atoll.control.auditchain.csv_cell` (no cell a spreadsheet would run as a formula).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from atoll.control import operations as ops
from atoll.control.auditchain import csv_cell
from atoll.control.auth import Principal
from atoll.control.db import Database
from atoll.control.errors import ApiError
from atoll.control.models import AuditLink, Customer, Event

__all__ = ["CSV_COLUMNS", "PAGE_SIZE", "AuditFilter", "audit_page", "csv_rows", "routes"]

PAGE_SIZE = 50
CSV_MAX_ROWS = 100_000
CSV_COLUMNS = ("seq", "time", "actor", "action", "customer", "host", "data", "hash")


def _time(raw: str, what: str) -> dt.datetime | None:
    raw = raw.strip()
    if not raw:
        return None
    try:
        t = dt.datetime.fromisoformat(raw)
        return t.replace(tzinfo=dt.UTC) if t.tzinfo is None else t.astimezone(dt.UTC)
    except (ValueError, OverflowError):  # overflow: in UTC, before year 1 or after 9999
        raise ApiError(422, "invalid", f"{what}: a date or time, e.g. 2026-12-01 or "
                       "2026-12-01T08:00Z") from None


@dataclass(frozen=True)
class AuditFilter:
    """The Audit page's query string: ``who`` (part of the actor), ``what`` (the
    action's kind), ``customer`` (a name), ``since``/``until`` (ISO 8601, UTC when no
    zone is given; ``until`` a date means through that day), ``page`` from 1.

    Raises (:meth:`parse`):
        ApiError: 422, a field that is not of its form.
    """

    who: str | None = None
    what: str | None = None
    customer: str | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    page: int = 1
    raw: tuple[tuple[str, str], ...] = ()

    @classmethod
    def parse(cls, query: dict[str, str]) -> AuditFilter:
        keep = {k: query.get(k, "").strip()[:200] for k in
                ("who", "what", "customer", "since", "until")}
        until = _time(keep["until"], "until")
        if until is not None and len(keep["until"]) == 10:  # a date: the whole day
            # (through 9999-12-31, the last day there is: no upper bound)
            until = until + dt.timedelta(days=1) if until.date() < dt.date.max else None
        page = query.get("page", "1").strip()
        if not (page.isascii() and page.isdigit()) or not 1 <= int(page) <= 1_000_000:
            raise ApiError(422, "invalid", "page: a number from 1")
        return cls(keep["who"] or None, keep["what"] or None, keep["customer"] or None,
                   _time(keep["since"], "since"), until, int(page),
                   tuple((k, v) for k, v in keep.items() if v))

    def text(self, name: str) -> str:
        """The field ``name`` as it was given (for the form), or ""."""
        return dict(self.raw).get(name, "")

    def query(self, page: int | None = None) -> dict[str, str]:
        """The query string that gives this filter (on ``page``; 1 is left out)."""
        out = dict(self.raw)
        if (page or self.page) != 1:
            out["page"] = str(page or self.page)
        return out


def _selected(s: Session, p: Principal, f: AuditFilter) -> Select[AuditLink, Event]:
    q = select(AuditLink, Event).join(Event, Event.id == AuditLink.event_id)
    if p.customer_ids is not None:
        q = q.where(Event.customer_id.in_(sorted(p.customer_ids)))
    if f.who is not None:
        q = q.where(Event.actor.contains(f.who, autoescape=True))
    if f.what is not None:
        q = q.where(Event.kind == f.what)
    if f.customer is not None:
        cid = s.scalar(select(Customer.id).where(Customer.name == f.customer))
        q = q.where(Event.customer_id == (cid if cid is not None else -1))
    if f.since is not None:
        q = q.where(Event.time >= f.since)
    if f.until is not None:
        q = q.where(Event.time < f.until)
    return q


def _entry(link: AuditLink, e: Event, customers: dict[int, str]) -> dict[str, Any]:
    return {"seq": link.seq, "time": e.time, "actor": e.actor, "action": e.kind,
            "customer": customers.get(e.customer_id, "") if e.customer_id is not None else "",
            "host": e.host_name or e.host_id or "",
            "data": json.dumps(e.data, sort_keys=True, separators=(", ", ": ")),
            "hash": link.hash}


def audit_page(s: Session, p: Principal, f: AuditFilter) -> dict[str, Any]:
    """One page (``PAGE_SIZE``) of the caller's audit entries matching ``f``, newest
    first: ``{"entries", "total", "page", "pages", "kinds", "customers"}``."""
    q = _selected(s, p, f)
    total = s.scalar(select(func.count()).select_from(q.subquery())) or 0
    pages = max(1, math.ceil(total / PAGE_SIZE))
    page = min(f.page, pages)
    customers = ops._customers(s)
    rows = s.execute(q.order_by(AuditLink.seq.desc()).offset((page - 1) * PAGE_SIZE)
                     .limit(PAGE_SIZE)).all()
    scoped = _selected(s, p, AuditFilter()).subquery()
    kinds = sorted(s.scalars(select(scoped.c.kind).distinct()))
    return {"entries": [_entry(link, e, customers) for link, e in rows], "total": total,
            "page": page, "pages": pages, "kinds": kinds,
            "customers": sorted(name for cid, name in customers.items() if p.sees(cid))}


def csv_rows(db: Database, p: Principal, f: AuditFilter,
             limit: int = CSV_MAX_ROWS) -> Iterator[str]:
    """The CSV export, a header and one line per entry (newest first, at most
    ``limit``), read in batches; every cell escaped with :func:`csv_cell`."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")

    def line(cells: Any) -> str:
        out.seek(0)
        out.truncate()
        writer.writerow([csv_cell(c) for c in cells])
        return out.getvalue()

    yield line(CSV_COLUMNS)
    before, sent = None, 0
    while sent < limit:
        with db.read() as s:
            q = _selected(s, p, f)
            if before is not None:
                q = q.where(AuditLink.seq < before)
            rows = s.execute(q.order_by(AuditLink.seq.desc())
                             .limit(min(1000, limit - sent))).all()
            customers = ops._customers(s)
        for link, e in rows:
            entry = _entry(link, e, customers)
            entry["time"] = e.time.astimezone(dt.UTC).isoformat(timespec="seconds")
            yield line(entry[c] for c in CSV_COLUMNS)
        if not rows:
            return
        sent += len(rows)
        before = rows[-1][0].seq


def routes(db: Database, page: Callable[..., Response], error: Callable[..., Response],
           current: Callable[[Request], Any], to_login: Callable[[Request], Response],
           csrf: Callable[[Request], str]) -> list[Route]:
    """``/audit`` and ``/audit.csv`` with the console's page helpers (:mod:`.web`)."""

    def parsed(request: Request) -> tuple[Any, AuditFilter | Response]:
        user = current(request)
        if user is None:
            return None, to_login(request)
        try:
            return user, AuditFilter.parse(dict(request.query_params))
        except ApiError as exc:
            return user, error(request, 422, exc.brief, user)

    def audit(request: Request) -> Response:
        user, f = parsed(request)
        if isinstance(f, Response):
            return f
        with db.read() as s:
            data = audit_page(s, user.principal, f)
        pages = {n: urlencode(f.query(n)) for n in (data["page"] - 1, data["page"] + 1)
                 if 1 <= n <= data["pages"]}
        return page(request, "audit.html", {
            "user": user, "csrf": csrf(request), "f": f,
            "audit": data, "pages": pages, "export": urlencode(f.query(1))})

    def audit_csv(request: Request) -> Response:
        user, f = parsed(request)
        if isinstance(f, Response):
            return f
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
        return StreamingResponse(csv_rows(db, user.principal, f),
                                 media_type="text/csv; charset=utf-8", headers={
                                     "Content-Disposition":
                                     f'attachment; filename="atoll-audit-{stamp}.csv"'})

    return [Route("/audit", audit), Route("/audit.csv", audit_csv)]

"""The console's Security page (``/security``): open CVEs and hotfixes across the
hosts in the user's scope, from what the hosts' check-ins stored (``hosts.report``:
the ``cves`` facts, atoll.control.protocol.CveFacts, and the booted deployment's
``hotfix`` in ``status``). Nothing here asks a host or the tracker.

Every number is an SQL aggregate over the JSON of the stored reports (SQLAlchemy's
JSON paths: ``json_extract`` on SQLite, ``#>>`` on PostgreSQL), so the page costs a
handful of queries whatever the fleet's size; only the listed rows (the worst hosts,
the hosts with hotfixes, the oldest data: each at most :data:`LIST_ROWS`) are read
one by one. Counts are the hosts' own (the tracker's urgency words; a host counts a
CVE id once, at its highest urgency): summing them over hosts counts a CVE once per
host exposed to it.

``security_page(s, principal, now)``::

    {"hosts": n, "with_data": n (source tracker), "stale": n (expires passed),
     "hotfix_hosts": n,
     "urgency": [{"urgency", "hosts": hosts with at least one, "open": sum over hosts}],
     "ages": [{"label", "hosts"}],            # age of each host's CVE data, in buckets
     "customers": [{"customer", "hosts", "with_data", "high", "medium", "hotfixes"}],
     "worst": [{"name", "id", "customer", "open": {urgency: n}, "age", "stale"}],
     "hotfixes": [{"name", "id", "customer", "version", "base_version",
                   "packages": [{"name", "version", "kind", "expires"}]}],
     "oldest": [{"name", "id", "customer", "generated", "age", "stale"}]}
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from sqlalchemy import and_, case, func, select
from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from atoll.control import operations as ops
from atoll.control.auth import Principal
from atoll.control.db import Database
from atoll.control.inventory import hotfix_packages
from atoll.control.models import Host
from atoll.security.urgency import ORDER, UNASSIGNED

__all__ = ["LIST_ROWS", "WORDS", "routes", "security_page"]

LIST_ROWS = 20
WORDS = (*reversed(ORDER), UNASSIGNED)  # highest first, as the page shows them
_STAMP = "%Y-%m-%dT%H:%M:%SZ"

_SOURCE = Host.report[("cves", "source")].as_string()
_GENERATED = Host.report[("cves", "generated")].as_string()
_EXPIRES = Host.report[("cves", "expires")].as_string()
_HOTFIX_BASE = Host.report[("status", "booted", "hotfix", "base")].as_string()
_TRACKER = _SOURCE == "tracker"


def _open(urgency: str) -> Any:
    """A host's open CVEs of ``urgency`` (0 without tracker data)."""
    return case((_TRACKER, func.coalesce(
        Host.report[("cves", "open", urgency)].as_integer(), 0)), else_=0)


def _count(cond: Any) -> Any:
    return func.coalesce(func.sum(case((cond, 1), else_=0)), 0)


def _age(generated: str | None, now: dt.datetime) -> str:
    """"3 days", "5 h", "12 min" ("-": unknown)."""
    try:
        t = dt.datetime.strptime(str(generated), _STAMP).replace(tzinfo=dt.UTC)
    except ValueError:
        return "-"
    s = int((now - t).total_seconds())
    return (f"{max(0, s) // 60} min" if s < 3600 else f"{s // 3600} h" if s < 2 * 86400
            else f"{s // 86400} days")


def security_page(s: Session, p: Principal, now: dt.datetime) -> dict[str, Any]:
    """The Security page's data for the hosts ``p`` may see (shape: module docstring)."""
    stamp = now.astimezone(dt.UTC).strftime(_STAMP)
    stale = and_(_EXPIRES.is_not(None), stamp >= _EXPIRES)
    day, week = ((now - d).astimezone(dt.UTC).strftime(_STAMP)
                 for d in (dt.timedelta(days=1), dt.timedelta(days=7)))
    has_data = and_(_SOURCE.is_not(None), _SOURCE != "none", _GENERATED.is_not(None))
    cols = [func.count(Host.id), _count(_TRACKER), _count(stale),
            _count(_HOTFIX_BASE.is_not(None)),
            _count(and_(has_data, day <= _GENERATED)),
            _count(and_(has_data, day > _GENERATED, week <= _GENERATED)),
            _count(and_(has_data, week > _GENERATED))]
    for u in WORDS:
        cols += [_count(_open(u) > 0), func.coalesce(func.sum(_open(u)), 0)]
    row = s.execute(ops._scoped(select(*cols), p)).one()
    n, with_data, n_stale, n_hotfix, fresh, recent, old = (int(v) for v in row[:7])
    urgency = [{"urgency": u, "hosts": int(row[7 + 2 * i]), "open": int(row[8 + 2 * i])}
               for i, u in enumerate(WORDS)]
    ages = [{"label": "under a day", "hosts": fresh}, {"label": "1 to 7 days", "hosts": recent},
            {"label": "over 7 days", "hosts": old},
            {"label": "no CVE data", "hosts": n - fresh - recent - old}]
    names = ops._customers(s)

    by_customer = s.execute(ops._scoped(select(
        Host.customer_id, func.count(Host.id), _count(_TRACKER), _count(_open("high") > 0),
        _count(_open("medium") > 0), _count(_HOTFIX_BASE.is_not(None))), p)
        .group_by(Host.customer_id)).all()
    customers = sorted(({"customer": names.get(cid, str(cid)), "hosts": int(h),
                         "with_data": int(d), "high": int(hi), "medium": int(me),
                         "hotfixes": int(hf)} for cid, h, d, hi, me, hf in by_customer),
                       key=lambda c: str(c["customer"]))

    opened = [_open(u) for u in WORDS]
    worst_rows = s.execute(ops._scoped(select(
        Host.id, Host.name, Host.customer_id, _GENERATED, stale.label("stale"), *opened), p)
        .where(_TRACKER).where(sum(opened[:-1]) > 0)  # rated CVEs only: "not yet
        .order_by(*(o.desc() for o in opened), Host.name)  # assigned" has no rank
        .limit(LIST_ROWS)).all()
    worst = [{"id": r[0], "name": r[1], "customer": names.get(r[2], ""),
              "age": _age(r[3], now), "stale": bool(r[4]),
              "open": dict(zip(WORDS, (int(v) for v in r[5:]), strict=True))}
             for r in worst_rows]

    hot_rows = s.execute(ops._scoped(select(
        Host.id, Host.name, Host.customer_id, Host.booted_version,
        Host.report[("status", "booted", "hotfix")]), p)
        .where(_HOTFIX_BASE.is_not(None)).order_by(Host.name).limit(LIST_ROWS)).all()
    hotfixes = [{"id": i, "name": name, "customer": names.get(cid, ""), "version": ver,
                 "base_version": hf.get("base_version") if isinstance(hf, dict) else None,
                 "packages": hotfix_packages(hf)} for i, name, cid, ver, hf in hot_rows]

    old_rows = s.execute(ops._scoped(select(
        Host.id, Host.name, Host.customer_id, _GENERATED, stale.label("stale")), p)
        .where(has_data).order_by(_GENERATED, Host.name).limit(LIST_ROWS)).all()
    oldest = [{"id": i, "name": name, "customer": names.get(cid, ""), "generated": g,
               "age": _age(g, now), "stale": bool(st)} for i, name, cid, g, st in old_rows]
    return {"hosts": n, "with_data": with_data, "stale": n_stale, "hotfix_hosts": n_hotfix,
            "urgency": urgency, "ages": ages, "customers": customers, "worst": worst,
            "hotfixes": hotfixes, "oldest": oldest}


def routes(db: Database, clock: Callable[[], dt.datetime], page: Callable[..., Response],
           current: Callable[[Request], Any], to_login: Callable[[Request], Response],
           csrf: Callable[[Request], str]) -> list[Route]:
    """``/security`` with the console's page helpers (:mod:`.web`)."""

    def security(request: Request) -> Response:
        user = current(request)
        if user is None:
            return to_login(request)
        with db.read() as s:
            data = security_page(s, user.principal, clock())
        return page(request, "security.html", {"user": user, "csrf": csrf(request),
                                               "sec": data, "rows": LIST_ROWS})

    return [Route("/security", security)]

"""How long the history (``events``) is kept: ``atoll fleet serve --event-retention``.

The database refuses to change an event, and to delete one younger than
``MIN_RETENTION`` (30 days, by the database's own clock: triggers of migration
``0003_retention``), so the recent history cannot be rewritten by anyone with the
server's credentials, a bug included. Operators' actions (the audit trail: every
event with a link in the audit chain, :mod:`atoll.control.auditchain`) are kept
whatever the retention. Older host and server events are
deleted by the server once they pass the configured retention (default 400 days,
at least 30; ``forever`` keeps everything): :func:`prune_events`, run by the server
every hour in batches, each batch its own transaction, and one ``events-pruned``
event (actor ``server``)
records how many went and up to when. The version samples
(:mod:`atoll.control.history`) past the same retention go in the same run
(:func:`prune_samples`; no event: they are derived counts). Archive first
(``pg_dump -t events``, or ``sqlite3 .backup``) if the older history must be kept
elsewhere.
"""

from __future__ import annotations

import datetime as dt
import logging

from sqlalchemy import delete, exists, select

from atoll.control.db import Database
from atoll.control.models import AuditLink, Event, VersionSample

__all__ = ["DEFAULT_RETENTION", "MIN_RETENTION", "prune_events", "prune_samples"]

log = logging.getLogger("atoll.control")
MIN_RETENTION = dt.timedelta(days=30)  # the triggers' number (migration 0003)
DEFAULT_RETENTION = dt.timedelta(days=400)
_BATCH = 5000
_MAX_BATCHES = 200  # a run deletes at most 1,000,000 events; the next goes on


def _cutoff(now: dt.datetime, retention: dt.timedelta) -> dt.datetime:
    """``now - retention``. Raises: ValueError: ``retention`` is below ``MIN_RETENTION``."""
    if retention < MIN_RETENTION:
        raise ValueError(f"the event retention is at least {MIN_RETENTION.days} days")
    return now - retention


def prune_events(db: Database, now: dt.datetime, retention: dt.timedelta) -> int:
    """Delete the host and server events older than ``now - retention`` (operators'
    actions are kept); returns how many.

    Raises:
        ValueError: ``retention`` is shorter than ``MIN_RETENTION``.
    """
    cutoff = _cutoff(now, retention)
    total = 0
    for _ in range(_MAX_BATCHES):
        with db.write() as s:
            ids = list(s.scalars(select(Event.id).where(
                Event.time < cutoff, Event.actor.not_like("operator:%"),
                ~exists().where(AuditLink.event_id == Event.id))
                .order_by(Event.id).limit(_BATCH)))
            if ids:
                s.execute(delete(Event).where(Event.id.in_(ids)))
        total += len(ids)
        if len(ids) < _BATCH:
            break
    if total:
        with db.write() as s:
            s.add(Event(time=now, actor="server", kind="events-pruned",
                        data={"count": total, "before": cutoff.isoformat(timespec="seconds"),
                              "retention_days": retention.days}))
        log.info("event retention: %d event(s) older than %s deleted", total,
                 cutoff.isoformat(timespec="seconds"))
    return total


def prune_samples(db: Database, now: dt.datetime, retention: dt.timedelta) -> int:
    """Delete the version samples older than ``now - retention``; returns how many.

    Raises:
        ValueError: ``retention`` is shorter than ``MIN_RETENTION``.
    """
    cutoff = _cutoff(now, retention)
    with db.write() as s:
        gone = s.execute(delete(VersionSample).where(VersionSample.bucket < cutoff))
    return int(gone.rowcount or 0)  # type: ignore[attr-defined]

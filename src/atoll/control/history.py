"""The fleet's versions over time: ``version_samples``, written by the server.

Once per ``BUCKET`` (an hour, UTC) the server counts the hosts of each customer by
booted version (one ``GROUP BY`` over ``hosts``, as the console's counts) and stores
one row per (hour, customer, version): :func:`record_versions`, run by the instance
that drives rollouts, at start and then every ``SAMPLE_S``; the first run in an hour
writes, the others find the hour sampled and write nothing (two instances at once:
the primary key keeps one). A sample says what the inventory held at that moment:
the last check-in of each host, lost hosts included (their last version), as the
Fleet page's counts. Hours the server did not run have no sample.

Samples are pruned with the events past ``--event-retention``
(:func:`atoll.control.retention.prune_samples`).

    version_samples   bucket (hour, UTC) | customer_id | version ("" none reported) | hosts
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from sqlalchemy import func, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from atoll.control.auth import Principal
from atoll.control.db import Database
from atoll.control.models import Host, VersionSample

__all__ = ["BUCKET", "SAMPLE_S", "bucket_of", "record_versions", "version_history"]

log = logging.getLogger("atoll.control")
BUCKET = dt.timedelta(hours=1)
SAMPLE_S = 60.0  # how often the server checks whether this hour has its sample


def bucket_of(t: dt.datetime) -> dt.datetime:
    """The start of ``t``'s hour (aware UTC)."""
    return t.astimezone(dt.UTC).replace(minute=0, second=0, microsecond=0)


def record_versions(db: Database, now: dt.datetime) -> int:
    """Store this hour's sample unless it has one; returns the rows written (0: the
    hour was sampled already, or there is no host)."""
    bucket = bucket_of(now)
    version = func.coalesce(Host.booted_version, "")
    try:
        with db.write() as s:
            if s.scalar(select(VersionSample.bucket)
                        .where(VersionSample.bucket == bucket).limit(1)) is not None:
                return 0
            rows = [{"bucket": bucket, "customer_id": cid, "version": v, "hosts": n}
                    for cid, v, n in s.execute(select(Host.customer_id, version, func.count())
                                               .group_by(Host.customer_id, version))]
            if rows:
                s.execute(insert(VersionSample), rows)
    except IntegrityError:  # another instance sampled this hour at the same moment
        return 0
    if rows:
        log.debug("version samples: %d row(s) for %s", len(rows), bucket.isoformat())
    return len(rows)


def version_history(s: Session, p: Principal, since: dt.datetime, *, daily: bool = False
                    ) -> list[tuple[dt.datetime, str, int]]:
    """The samples from ``since`` on, summed over ``p``'s customers: ``(bucket,
    version, hosts)`` ordered by bucket; ``daily``: only each UTC day's last bucket
    (where the day ended). SQL sums; Python only picks the buckets (at most 24 a day)."""
    scope = (VersionSample.customer_id.in_(sorted(p.customer_ids))
             if p.customer_ids is not None else None)
    where: list[Any] = [VersionSample.bucket >= since] + ([scope] if scope is not None else [])
    if daily:
        last: dict[dt.date, dt.datetime] = {}
        for bucket in s.scalars(select(VersionSample.bucket).where(*where).distinct()):
            day = bucket.astimezone(dt.UTC).date()
            last[day] = max(last.get(day, bucket), bucket)
        if not last:
            return []
        where.append(VersionSample.bucket.in_(sorted(last.values())))
    q = (select(VersionSample.bucket, VersionSample.version, func.sum(VersionSample.hosts))
         .where(*where).group_by(VersionSample.bucket, VersionSample.version)
         .order_by(VersionSample.bucket))
    return [(b, v, int(n)) for b, v, n in s.execute(q)]

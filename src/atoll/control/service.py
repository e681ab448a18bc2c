"""What hosts do to the control plane: enrol, check in; and the lost-host sweep.

Each function is one database transaction: everything it writes commits together
or not at all (a database that goes away in the middle leaves nothing half-written;
the caller answers 503). Concurrency-safe across server instances by conditional
updates (docs/control-plane.md, "Several servers"):

* ``checkin``: ``UPDATE hosts SET counter = c WHERE id = h AND counter < c`` first:
  of two check-ins with the same counter exactly one passes, whatever instance gets
  them, and the row stays locked (PostgreSQL) until the transaction ends;
* ``enrol``: the one-time token is spent by ``UPDATE ... WHERE used_at IS NULL``;
* ``mark_lost``: ``UPDATE ... WHERE lost = false ... RETURNING``: each lost host is
  marked, and its event written, by exactly one instance.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import time
import uuid
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError
from sqlalchemy import and_, delete, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from atoll.control import directives, inventory
from atoll.control.auth import ENROL_PREFIX, bearer, token_sha256
from atoll.control.db import Database
from atoll.control.errors import ApiError, conflict, forbidden, unauthorized
from atoll.control.limits import HostLimits
from atoll.control.models import Customer, EnrolToken, Event, Host, HostLabel, HostRequest, Manifest
from atoll.control.protocol import (
    STEPS,
    CheckIn,
    Directive,
    Enrolled,
    EnrolRequest,
    HostRequestOut,
    Target,
    manifest_digest,
    parse_signature,
    verify,
)
from atoll.control.rollout_store import HOST_EVENT_BUDGET

__all__ = ["FAULT_HOOKS", "checkin", "enrol", "invalid", "mark_lost", "record"]

log = logging.getLogger("atoll.control")
# Test seams: name -> callable run at that point of a transaction (a test stops the
# database there). Empty outside tests.
FAULT_HOOKS: dict[str, Callable[[], None]] = {}


def _point(name: str) -> None:
    hook = FAULT_HOOKS.get(name)
    if hook is not None:
        hook()


def record(session: Session, now: dt.datetime, actor: str, kind: str, data: dict[str, Any],
           *, host: Host | None = None, customer_id: int | None = None) -> None:
    """Append one event (in the caller's transaction)."""
    session.add(Event(time=now, actor=actor, kind=kind, data=data,
                      host_id=host.id if host else None, host_name=host.name if host else None,
                      customer_id=host.customer_id if host else customer_id))


def invalid(exc: ValidationError, what: str) -> ApiError:
    """A pydantic error as 400 (not JSON at all) or 422 (JSON, not valid), ``loc: msg``."""
    errors = exc.errors(include_url=False, include_input=False)
    if any(e.get("type") == "json_invalid" for e in errors):
        return ApiError(400, "malformed_json", f"{what}: the body is not JSON",
                        details=str(errors[0].get("msg", ""))[:500])
    lines = [f"{'.'.join(str(p) for p in e.get('loc', ())) or '(body)'}: {e.get('msg')}"
             for e in errors[:50]]
    return ApiError(422, "invalid", f"{what}: {len(errors)} invalid field(s)",
                    details="\n".join(lines))


# -- enrolment ---------------------------------------------------------------


def enrol(db: Database, authorization: str | None, body: bytes,
          now: dt.datetime) -> Enrolled:
    """Spend a one-time enrolment token and enrol the host that presents it.

    A token made for a host name (``enrol-token create --host NAME``) may enrol a host
    of that name that exists already: its key is replaced (a reinstalled host).

    Raises:
        ApiError: 401 (no, unknown, used, revoked or expired token), 400/422 (bad body),
            403 (the token is for another host name), 409 (the name is taken).
    """
    token = bearer(authorization, ENROL_PREFIX)
    if token is None:
        raise unauthorized("enrolment needs an enrolment token (Authorization: Bearer "
                           f"{ENROL_PREFIX}...)")
    try:
        req = EnrolRequest.model_validate_json(body)
    except ValidationError as exc:
        raise invalid(exc, "enrol") from None
    usable = (EnrolToken.secret_sha256 == token_sha256(token), EnrolToken.used_at.is_(None),
              EnrolToken.revoked_at.is_(None), EnrolToken.expires_at > now)
    with db.read() as s:  # anyone may knock: a wrong token never takes the write lock
        if s.scalar(select(EnrolToken.id).where(*usable)) is None:
            raise unauthorized("the enrolment token is unknown, used, revoked or expired",
                               "ask an operator for a new one (atoll fleet enrol-token "
                               "create)")
    with db.write() as s:
        spent = s.execute(
            update(EnrolToken)
            .where(*usable)  # again, under the write: spent once, whoever races
            .values(used_at=now)
            .returning(EnrolToken.id, EnrolToken.customer_id, EnrolToken.host_name,
                       EnrolToken.labels)).first()
        if spent is None:
            raise unauthorized("the enrolment token is unknown, used, revoked or expired",
                               "ask an operator for a new one (atoll fleet enrol-token create)")
        token_id, customer_id, host_name, labels = spent
        if host_name is not None and host_name != req.name:
            raise forbidden(f"this enrolment token is for host {host_name!r}, not {req.name!r}")
        customer = s.get_one(Customer, customer_id)
        host = s.scalars(select(Host).where(Host.customer_id == customer_id,
                                            Host.name == req.name).with_for_update()).first()
        if host is not None and host_name != req.name:
            raise conflict(f"a host named {req.name!r} is enrolled already for customer "
                           f"{customer.name!r}",
                           "prune the old one, or enrol with a token made for that host "
                           "(enrol-token create --host NAME) to replace its key")
        if host is not None:
            host.public_key, host.machine_id, host.counter = req.public_key, req.machine_id, 0
            kind = "re-enrolled"
        else:
            host = Host(id=str(uuid.uuid4()), customer_id=customer_id, name=req.name,
                        machine_id=req.machine_id, public_key=req.public_key, counter=0,
                        enrolled_at=now, lost=False, checkins=0, rollback_events=0)
            s.add(host)
            kind = "enrolled"
        for key, value in sorted((labels or {}).items()):
            s.merge(HostLabel(host_id=host.id, key=key, value=value))
        s.execute(update(EnrolToken).where(EnrolToken.id == token_id).values(host_id=host.id))
        record(s, now, f"host:{host.id}", kind,
               {"enrol_token": token_id, "machine_id": req.machine_id}, host=host)
        try:
            s.flush()
        except IntegrityError:  # the same name enrolled at the same moment elsewhere
            raise conflict(f"a host named {req.name!r} is enrolled already") from None
        return Enrolled(host_id=host.id, name=host.name, customer=customer.name)


# -- check-in ----------------------------------------------------------------


def _authenticate(db: Database, signature: str | None, body: bytes) -> str:
    parsed = parse_signature(signature)
    if parsed is None:
        raise unauthorized("a check-in must be signed (Atoll-Signature: "
                           "host=<id>;ed25519=<signature>)")
    host_id, sig = parsed
    with db.read() as s:
        key = s.scalar(select(Host.public_key).where(Host.id == host_id))
    if key is None or not verify(key, body, sig):
        raise unauthorized("unknown host, or the signature does not match its key",
                           "a host whose record was pruned enrols again")
    return host_id


def checkin(db: Database, signature: str | None, body: bytes, now: dt.datetime, *,
            directive_ttl: dt.timedelta, limits: HostLimits | None = None) -> Directive:
    """Verify, record and answer one check-in.

    ``limits``: the per-host budgets (:mod:`atoll.control.limits`; None: unlimited),
    counted on the monotonic clock (real rates, whatever ``now`` says).

    Raises:
        ApiError: 401 (unsigned, unknown host, bad signature), 400/422 (not a valid
            check-in), 403 (signed by one host, about another), 409 (a replayed or
            out-of-order counter), 422 (a manifest that does not match its sha256),
            429 (the host checks in faster than its budget; ``Retry-After``).
    """
    host_id = _authenticate(db, signature, body)  # nothing is parsed before this
    wait = limits.checkin_wait(host_id, time.monotonic()) if limits else 0.0
    if wait > 0:
        raise ApiError(429, "rate_limited", "check-in refused: this host checks in faster "
                       "than the server allows", resolution="wait for Retry-After seconds",
                       headers={"Retry-After": str(max(1, math.ceil(wait)))})
    try:
        report = CheckIn.model_validate_json(body)
    except ValidationError as exc:
        raise invalid(exc, "check-in") from None
    if report.host_id != host_id:
        raise forbidden("a host can report only for itself")
    if report.manifest is not None and (
            report.manifest_sha256 != manifest_digest(report.manifest)):
        raise ApiError(422, "invalid", "check-in: the manifest does not match manifest_sha256")
    with db.write() as s:
        moved = s.execute(update(Host).where(Host.id == host_id, Host.counter < report.counter)
                          .values(counter=report.counter))
        if moved.rowcount != 1:  # type: ignore[attr-defined]
            if limits:  # a replay spends nothing of the host's budget
                limits.checkin_refused(host_id)
            raise ApiError(409, "replay", "check-in refused: its counter is not larger than "
                           "the last one accepted (a replay, or an older check-in)")
        host = s.get_one(Host, host_id)
        return _record_checkin(s, host, report, now, directive_ttl, limits)


def _add_manifest(s: Session, sha256: str, now: dt.datetime,
                  packages: list[dict[str, Any]]) -> None:
    """Store a manifest once (``INSERT ... ON CONFLICT DO NOTHING``): hosts booting the
    same new image send it at the same moment, and on PostgreSQL all but one would
    otherwise fail on the primary key (a 500, the check-in lost)."""
    insert = postgresql.insert if s.get_bind().dialect.name == "postgresql" else sqlite.insert
    s.execute(insert(Manifest).values(sha256=sha256, created_at=now, packages=packages)
              .on_conflict_do_nothing(index_elements=[Manifest.sha256]))


def _drop_orphan_manifest(s: Session, sha256: str) -> None:
    """Delete manifest ``sha256`` when no host runs it any more (a host moved off it).
    A host owns its machine: one that reported a new manifest at every check-in would
    otherwise grow the table by up to 2 MiB a check-in, for good. A host that comes
    back to a deleted manifest (a rollback) is asked for it again (``manifest_wanted``)."""
    s.flush()  # this host's new manifest_sha256 first
    s.execute(delete(Manifest).where(
        Manifest.sha256 == sha256,
        ~select(Host.id).where(Host.manifest_sha256 == sha256).exists()))


def _record_checkin(s: Session, host: Host, report: CheckIn, now: dt.datetime,
                    ttl: dt.timedelta, limits: HostLimits | None = None) -> Directive:
    actor = f"host:{host.id}"
    stored = report.model_dump(mode="json", exclude={"manifest", "requests", "counter"})
    old, new = inventory.summarize(host.report), inventory.summarize(stored)
    assert new is not None
    if report.manifest is not None and report.manifest_sha256 is not None \
            and s.get(Manifest, report.manifest_sha256) is None:
        _add_manifest(s, report.manifest_sha256, now,
                      [p.model_dump(exclude_none=True) for p in report.manifest])
    wanted = (report.manifest_sha256 is not None and report.manifest is None
              and s.scalar(select(Manifest.sha256)
                           .where(Manifest.sha256 == report.manifest_sha256)) is None)
    if host.lost:
        record(s, now, actor, "found", {"last_seen": _iso(host.last_seen)}, host=host)
    for key, value in new.columns().items():
        setattr(host, key, value)
    host.report, host.last_seen, host.lost = stored, now, False
    previous, host.manifest_sha256 = host.manifest_sha256, report.manifest_sha256
    if previous is not None and previous != host.manifest_sha256:
        _drop_orphan_manifest(s, previous)
    host.checkins += 1
    changes = inventory.changes(old, new)
    keep, dropped = (limits.admit(host.id, time.monotonic(), [k for k, _ in changes])
                     if limits else ([True] * len(changes), None))
    if dropped:
        record(s, now, "server", "events-dropped",
               {"kinds": dropped, "count": sum(dropped.values()),
                "why": "the host's event budget (atoll fleet serve --event-limit)"}, host=host)
    for (kind, data), kept in zip(changes, keep, strict=True):
        if kept:
            record(s, now, actor, kind, data, host=host)
    for result in report.requests:
        done = s.execute(update(HostRequest)
                         .where(HostRequest.id == result.id, HostRequest.host_id == host.id,
                                HostRequest.state == "queued")
                         .values(state=result.result, message=result.message[:1000],
                                 completed_at=now)
                         .returning(HostRequest.kind)).first()
        if done is not None:
            record(s, now, actor, "request-" + result.result,
                   {"request": result.id, "kind": done[0], "message": result.message},
                   host=host)
    s.flush()
    _point("checkin:recorded")
    if limits is not None:  # rollout events this report causes: the host's event budget
        s.info[HOST_EVENT_BUDGET] = lambda kind: limits.admit_one(host.id, time.monotonic(),
                                                                  kind)
    decided = directives.decide_for_host(s, host, now)
    queued = s.scalars(select(HostRequest).where(HostRequest.host_id == host.id,
                                                 HostRequest.state == "queued")
                       .order_by(HostRequest.id)).all()
    target = decided.target
    return Directive(
        host_id=host.id, counter=report.counter,
        target=Target(channel=target.channel, version=target.version, commit=target.commit)
        if target else None,
        allow=[step for step in STEPS if step in decided.allow],
        reason=decided.reason,
        requests=[HostRequestOut.model_validate({"id": r.id, "kind": r.kind, "args": r.args})
                  for r in queued],
        manifest_wanted=wanted, expires=_iso(now + ttl) or "")


def _iso(t: dt.datetime | None) -> str | None:
    return t.astimezone(dt.UTC).isoformat(timespec="seconds") if t else None


# -- the lost-host sweep -----------------------------------------------------


def mark_lost(db: Database, now: dt.datetime, lost_after: dt.timedelta) -> list[str]:
    """Mark hosts not seen for ``lost_after`` as lost (an event each); returns their ids."""
    cutoff = now - lost_after
    with db.write() as s:
        rows = s.execute(
            update(Host)
            .where(Host.lost.is_(False),
                   or_(Host.last_seen < cutoff,
                       and_(Host.last_seen.is_(None), Host.enrolled_at < cutoff)))
            .values(lost=True)
            .returning(Host.id, Host.name, Host.customer_id, Host.last_seen)).all()
        for host_id, name, customer_id, last_seen in rows:
            s.add(Event(time=now, actor="server", kind="lost", host_id=host_id,
                        host_name=name, customer_id=customer_id,
                        data={"last_seen": _iso(last_seen),
                              "lost_after_s": int(lost_after.total_seconds())}))
    if rows:
        log.info("%d host(s) not seen for %s: marked lost", len(rows), lost_after)
    return [r[0] for r in rows]

"""What operators do through the API: read the inventory and history, act on hosts,
manage customers and tokens. Every action is authorized here against the caller's
:class:`atoll.control.auth.Principal` and recorded as an event (who, what, when).

Functions take a session the caller opened (``db.read()`` or ``db.write()``) and
return JSON-able dicts; they raise :class:`atoll.control.errors.ApiError`.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Select, and_, delete, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from atoll.control import cves
from atoll.control.auth import (
    ENROL_PREFIX,
    OPERATOR_PREFIX,
    Principal,
    bearer,
    new_token,
    token_sha256,
)
from atoll.control.errors import ApiError, conflict, forbidden, not_found, unauthorized
from atoll.control.inventory import booted_hotfix, hotfix_packages
from atoll.control.models import (
    ROLES,
    Customer,
    EnrolToken,
    Event,
    Host,
    HostLabel,
    HostRequest,
    Manifest,
    OperatorToken,
)
from atoll.control.service import record

__all__ = [
    "REQUEST_KINDS",
    "add_customer",
    "authenticate",
    "cancel_request",
    "create_enrol_token",
    "create_request",
    "create_token",
    "cve_summary",
    "get_host",
    "host_detail",
    "list_customers",
    "list_enrol_tokens",
    "list_events",
    "list_hosts",
    "list_tokens",
    "prune",
    "revoke_enrol_token",
    "revoke_token",
    "set_labels",
]

REQUEST_KINDS = ("cancel", "pin", "ack-rollback", "apply")
# used with fullmatch: "^...$" with match would let a trailing newline in ("k\n")
LABEL_KEY = re.compile(r"[a-z0-9]([a-z0-9._/-]{0,61}[a-z0-9])?")
MAX_ENROL_TTL = dt.timedelta(days=30)


def _iso(t: dt.datetime | None) -> str | None:
    return t.astimezone(dt.UTC).isoformat(timespec="seconds") if t else None


def authenticate(s: Session, authorization: str | None, now: dt.datetime) -> Principal:
    """The operator a bearer token stands for.

    Raises:
        ApiError: 401: no token, an unknown, revoked or expired one, or a token of
            another kind (an enrolment token).
    """
    token = bearer(authorization, OPERATOR_PREFIX)
    if token is None:
        if bearer(authorization, ENROL_PREFIX) is not None:
            raise unauthorized("an enrolment token is for enrolling a host, not for the API")
        raise unauthorized("an operator token is needed (Authorization: Bearer "
                           f"{OPERATOR_PREFIX}...)",
                           "give --token-file or ATOLL_FLEET_TOKEN_FILE (docs/control-plane.md)")
    row = s.scalars(select(OperatorToken).where(
        OperatorToken.secret_sha256 == token_sha256(token))).first()
    if row is None or row.revoked_at is not None or (
            row.expires_at is not None and row.expires_at <= now):
        raise unauthorized("the operator token is unknown, revoked or expired")
    ids = None if row.customer_ids is None else frozenset(int(i) for i in row.customer_ids)
    return Principal(row.name, row.role, ids)


def _require(p: Principal, role: str, *, everywhere: bool = False) -> None:
    if not p.may(role):
        # (p.name: a token's name, or console-NAME for a console user: no "token" here)
        raise forbidden(f"this needs the {role} role; {p.name!r} has the {p.role} role")
    if everywhere and not p.everywhere:
        raise forbidden(f"this needs a token whose scope is every customer; {p.name!r} is "
                        "limited to some")


def _customers(s: Session) -> dict[int, str]:
    return {cid: name for cid, name in s.execute(select(Customer.id, Customer.name))}


def _customer_id(s: Session, p: Principal, name: str) -> int:
    cid = s.scalar(select(Customer.id).where(Customer.name == name))
    if cid is None or not p.sees(cid):
        raise not_found(f"customer {name!r}")
    return cid


# -- customers ---------------------------------------------------------------


def list_customers(s: Session, p: Principal) -> list[dict[str, Any]]:
    counts = {cid: n for cid, n in s.execute(
        select(Host.customer_id, func.count()).group_by(Host.customer_id))}
    rows = s.scalars(select(Customer).order_by(Customer.name)).all()
    return [{"name": c.name, "hosts": counts.get(c.id, 0), "created_at": _iso(c.created_at),
             "created_by": c.created_by} for c in rows if p.sees(c.id)]


def add_customer(s: Session, p: Principal, name: str, now: dt.datetime) -> dict[str, Any]:
    _require(p, "admin", everywhere=True)
    if s.scalar(select(Customer.id).where(Customer.name == name)) is not None:
        raise conflict(f"customer {name!r} exists already")
    c = Customer(name=name, created_at=now, created_by=p.actor)
    s.add(c)
    try:
        s.flush()
    except IntegrityError:
        raise conflict(f"customer {name!r} exists already") from None
    record(s, now, p.actor, "customer-added", {"customer": name}, customer_id=c.id)
    return {"name": name, "hosts": 0, "created_at": _iso(now), "created_by": p.actor}


# -- operator tokens ---------------------------------------------------------


def _token_json(t: OperatorToken, names: dict[int, str]) -> dict[str, Any]:
    return {"name": t.name, "role": t.role,
            "customers": None if t.customer_ids is None
            else sorted(names.get(int(i), f"#{i}") for i in t.customer_ids),
            "created_at": _iso(t.created_at), "created_by": t.created_by,
            "expires_at": _iso(t.expires_at), "revoked_at": _iso(t.revoked_at)}


def create_token(s: Session, p: Principal | None, name: str, role: str,
                 customers: Sequence[str] | None, now: dt.datetime,
                 expires_at: dt.datetime | None = None) -> dict[str, Any]:
    """A new operator token; the secret is in the answer once, never again.

    ``p`` None: the bootstrap (``atoll fleet db init``), which has the database itself.
    """
    if p is not None:
        _require(p, "admin", everywhere=True)
    if role not in ROLES:
        raise ApiError(422, "invalid", f"role: one of {', '.join(ROLES)}")
    ids = None
    if customers is not None:
        found = {name: cid for name, cid in s.execute(
            select(Customer.name, Customer.id).where(Customer.name.in_(list(customers))))}
        missing = sorted(set(customers) - set(found))
        if missing:
            raise not_found(f"customer {', '.join(map(repr, missing))}")
        ids = sorted(found.values())
    if s.scalar(select(OperatorToken.id).where(OperatorToken.name == name)) is not None:
        raise conflict(f"a token named {name!r} exists already (names stay, even revoked)")
    secret, digest = new_token(OPERATOR_PREFIX)
    actor = p.actor if p else "server:bootstrap"
    t = OperatorToken(name=name, secret_sha256=digest, role=role, customer_ids=ids,
                      created_at=now, created_by=actor, expires_at=expires_at)
    s.add(t)
    try:
        s.flush()
    except IntegrityError:
        raise conflict(f"a token named {name!r} exists already") from None
    record(s, now, actor, "token-created", {"token": name, "role": role,
                                            "customers": list(customers or []) or None})
    return _token_json(t, _customers(s)) | {"token": secret}


def list_tokens(s: Session, p: Principal) -> list[dict[str, Any]]:
    _require(p, "admin", everywhere=True)
    names = _customers(s)
    return [_token_json(t, names)
            for t in s.scalars(select(OperatorToken).order_by(OperatorToken.name))]


def revoke_token(s: Session, p: Principal, name: str, now: dt.datetime) -> dict[str, Any]:
    _require(p, "admin", everywhere=True)
    t = s.scalars(select(OperatorToken).where(OperatorToken.name == name)).first()
    if t is None:
        raise not_found(f"token {name!r}")
    changed = t.revoked_at is None
    if changed:
        t.revoked_at = now
        record(s, now, p.actor, "token-revoked", {"token": name})
    return _token_json(t, _customers(s)) | {"changed": changed}


# -- enrolment tokens --------------------------------------------------------


def create_enrol_token(s: Session, p: Principal, customer: str, host_name: str | None,
                       labels: dict[str, str], ttl: dt.timedelta,
                       now: dt.datetime) -> dict[str, Any]:
    _require(p, "operator")
    cid = _customer_id(s, p, customer)
    if not dt.timedelta(minutes=1) <= ttl <= MAX_ENROL_TTL:
        raise ApiError(422, "invalid", "expires_in_s: between 60 s and 30 days")
    _check_labels(labels)
    secret, digest = new_token(ENROL_PREFIX)
    t = EnrolToken(secret_sha256=digest, customer_id=cid, host_name=host_name, labels=labels,
                   created_at=now, created_by=p.actor, expires_at=now + ttl)
    s.add(t)
    s.flush()
    record(s, now, p.actor, "enrol-token-created",
           {"enrol_token": t.id, "host_name": host_name, "labels": labels,
            "expires_at": _iso(t.expires_at)}, customer_id=cid)
    return {"id": t.id, "customer": customer, "host_name": host_name, "labels": labels,
            "expires_at": _iso(t.expires_at), "token": secret}


def _enrol_token_json(t: EnrolToken, names: dict[int, str], now: dt.datetime) -> dict[str, Any]:
    state = ("spent" if t.used_at is not None else "revoked" if t.revoked_at is not None
             else "expired" if t.expires_at <= now else "valid")
    return {"id": t.id, "customer": names.get(t.customer_id, f"#{t.customer_id}"),
            "host_name": t.host_name, "labels": t.labels, "state": state,
            "created_at": _iso(t.created_at), "created_by": t.created_by,
            "expires_at": _iso(t.expires_at), "used_at": _iso(t.used_at),
            "host_id": t.host_id, "revoked_at": _iso(t.revoked_at)}


def list_enrol_tokens(s: Session, p: Principal, now: dt.datetime, *,
                      customer: str | None = None, valid: bool = False) -> list[dict[str, Any]]:
    """Enrolment tokens in ``p``'s scope (of ``customer``; only the usable ones with
    ``valid``), oldest first; never their secrets (only their sha256 is stored)."""
    _require(p, "operator")
    q = select(EnrolToken).order_by(EnrolToken.id)
    if customer is not None:
        q = q.where(EnrolToken.customer_id == _customer_id(s, p, customer))
    elif p.customer_ids is not None:
        q = q.where(EnrolToken.customer_id.in_(sorted(p.customer_ids)))
    if valid:
        q = q.where(EnrolToken.used_at.is_(None), EnrolToken.revoked_at.is_(None),
                    EnrolToken.expires_at > now)
    names = _customers(s)
    return [_enrol_token_json(t, names, now) for t in s.scalars(q)]


def revoke_enrol_token(s: Session, p: Principal, token_id: int,
                       now: dt.datetime) -> dict[str, Any]:
    """Revoke an enrolment token not yet spent (an event); a spent, expired or revoked
    one is left as it is (``changed`` false).

    Raises:
        ApiError: 404 (no such token in ``p``'s scope), 403 (a viewer).
    """
    _require(p, "operator")
    t = s.scalars(select(EnrolToken).where(EnrolToken.id == token_id)
                  .with_for_update()).first()
    if t is None or not p.sees(t.customer_id):
        raise not_found(f"enrolment token {token_id}")
    changed = t.used_at is None and t.revoked_at is None and t.expires_at > now
    if changed:
        t.revoked_at = now
        record(s, now, p.actor, "enrol-token-revoked",
               {"enrol_token": t.id, "host_name": t.host_name}, customer_id=t.customer_id)
    return _enrol_token_json(t, _customers(s), now) | {"changed": changed}


def _check_labels(labels: dict[str, str]) -> None:
    for key, value in labels.items():
        if not LABEL_KEY.fullmatch(key):
            raise ApiError(422, "invalid", f"label {key!r}: a key is 1-63 lowercase letters, "
                           "digits, '.', '_', '/', '-'")
        if not isinstance(value, str) or len(value) > 200 or not value.isprintable():
            raise ApiError(422, "invalid", f"label {key!r}: a value is up to 200 printable "
                           "characters")


# -- hosts -------------------------------------------------------------------


def _scoped(q: Select[Any], p: Principal) -> Select[Any]:
    if p.customer_ids is None:
        return q
    return q.where(Host.customer_id.in_(sorted(p.customer_ids)))


def _labels(s: Session, host_ids: Sequence[str]) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {h: {} for h in host_ids}
    for chunk in range(0, len(host_ids), 500):
        part = list(host_ids[chunk:chunk + 500])
        for hid, key, value in s.execute(select(HostLabel.host_id, HostLabel.key,
                                                HostLabel.value)
                                         .where(HostLabel.host_id.in_(part))):
            out[hid][key] = value
    return out


def _host_json(h: Host, customer: str, labels: dict[str, str],
               now: dt.datetime | None = None) -> dict[str, Any]:
    return {"id": h.id, "name": h.name, "customer": customer, "labels": labels,
            "machine_id": h.machine_id, "enrolled_at": _iso(h.enrolled_at),
            "last_seen": _iso(h.last_seen), "lost": h.lost, "checkins": h.checkins,
            "booted_version": h.booted_version, "booted_commit": h.booted_commit,
            "pending_version": h.pending_version, "update_state": h.update_state,
            "last_boot": {"result": h.last_boot_result, "time": h.last_boot_time},
            "rollback_events": h.rollback_events, "manifest_sha256": h.manifest_sha256,
            "cves": cves.brief(h.report, now or dt.datetime.now(dt.UTC)),
            "hotfixes": hotfix_packages(booted_hotfix(h.report))}


def _hosts(s: Session, p: Principal, *, customer: str | None = None,
           labels: dict[str, str] | None = None, lost: bool | None = None) -> Sequence[Host]:
    """The hosts in ``p``'s scope that match, by name."""
    q = _scoped(select(Host), p)
    if customer is not None:
        q = q.where(Host.customer_id == _customer_id(s, p, customer))
    for key, value in (labels or {}).items():
        q = q.where(select(HostLabel.host_id).where(
            HostLabel.host_id == Host.id, HostLabel.key == key,
            HostLabel.value == value).exists())
    if lost is not None:
        q = q.where(Host.lost.is_(lost))
    return s.scalars(q.order_by(Host.name, Host.id)).all()


def list_hosts(s: Session, p: Principal, *, customer: str | None = None,
               labels: dict[str, str] | None = None, lost: bool | None = None,
               cve_at_least: str | None = None,
               now: dt.datetime | None = None) -> list[dict[str, Any]]:
    """Hosts in ``p``'s scope; ``cve_at_least`` (an urgency): only those whose booted
    deployment has an open CVE that urgent or more (docs/control-plane.md).

    Raises:
        ApiError: 422 (an unknown urgency), 404 (an unknown customer).
    """
    _check_urgency(cve_at_least)
    hosts = _hosts(s, p, customer=customer, labels=labels, lost=lost)
    if cve_at_least is not None:
        hosts = [h for h in hosts if cves.at_least(h.report, cve_at_least)]
    names, labelled = _customers(s), _labels(s, [h.id for h in hosts])
    return [_host_json(h, names.get(h.customer_id, ""), labelled[h.id], now) for h in hosts]


def _check_urgency(word: str | None) -> None:
    from atoll.security.urgency import ORDER

    if word is not None and word not in ORDER:
        raise ApiError(422, "invalid", f"{word!r} is not an urgency",
                       resolution=f"use one of: {', '.join(ORDER)}")


def cve_summary(s: Session, p: Principal, now: dt.datetime, *, customer: str | None = None,
                labels: dict[str, str] | None = None, top: int = 20) -> dict[str, Any]:
    """CVEs across the hosts in ``p``'s scope (shape: atoll.control.cves.summarize).

    Raises:
        ApiError: 404 (an unknown customer or one outside the token's scope).
    """
    names = _customers(s)
    return cves.summarize((cves.HostCves(h.name, names.get(h.customer_id, ""), h.report)
                           for h in _hosts(s, p, customer=customer, labels=labels)), now,
                          top=top)


def get_host(s: Session, p: Principal, ref: str, customer: str | None = None,
             *, lock: bool = False) -> Host:
    """The host with id ``ref``, else named ``ref`` (in ``customer`` when given).

    Raises:
        ApiError: 404 (none in scope), 409 (the name is in several customers: give one).
    """
    q = _scoped(select(Host), p).where(or_(Host.id == ref, Host.name == ref))
    if customer is not None:
        q = q.where(Host.customer_id == _customer_id(s, p, customer))
    if lock:
        q = q.with_for_update()
    found = s.scalars(q).all()
    exact = [h for h in found if h.id == ref] or found
    if not exact:
        raise not_found(f"host {ref!r}")
    if len(exact) > 1:
        raise conflict(f"several customers have a host named {ref!r}",
                       "give --customer, or the host's id")
    host: Host = exact[0]
    return host


def host_detail(s: Session, p: Principal, ref: str, customer: str | None = None, *,
                packages: bool = False, now: dt.datetime | None = None) -> dict[str, Any]:
    h = get_host(s, p, ref, customer)
    out = _host_json(h, _customers(s).get(h.customer_id, ""), _labels(s, [h.id])[h.id], now)
    out["report"] = h.report
    out["requests"] = [_request_json(r) for r in s.scalars(
        select(HostRequest).where(HostRequest.host_id == h.id)
        .order_by(HostRequest.id.desc()).limit(20))]
    if packages:
        m = s.get(Manifest, h.manifest_sha256) if h.manifest_sha256 else None
        out["packages"] = m.packages if m else None
    return out


def set_labels(s: Session, p: Principal, ref: str, customer: str | None,
               put: dict[str, str], remove: Sequence[str], now: dt.datetime) -> dict[str, Any]:
    _require(p, "operator")
    _check_labels(put)
    h = get_host(s, p, ref, customer, lock=True)
    if remove:
        s.execute(delete(HostLabel).where(HostLabel.host_id == h.id,
                                          HostLabel.key.in_(list(remove))))
    for key, value in sorted(put.items()):
        s.merge(HostLabel(host_id=h.id, key=key, value=value))
    s.flush()
    record(s, now, p.actor, "labels", {"set": put, "removed": sorted(remove)}, host=h)
    return {"host": h.id, "name": h.name, "labels": _labels(s, [h.id])[h.id]}


# -- requests ----------------------------------------------------------------


def _request_json(r: HostRequest) -> dict[str, Any]:
    return {"id": r.id, "host": r.host_id, "kind": r.kind, "args": r.args, "state": r.state,
            "created_at": _iso(r.created_at), "created_by": r.created_by,
            "completed_at": _iso(r.completed_at), "message": r.message}


def create_request(s: Session, p: Principal, ref: str, customer: str | None, kind: str,
                   args: dict[str, Any], now: dt.datetime) -> dict[str, Any]:
    """Queue a request for a host; it goes out with every answer until the host reports it.

    Raises:
        ApiError: 422 (unknown kind, bad args), 409 (``apply`` while the host's reported
            policy does not let operators schedule its apply, or has no window).
    """
    _require(p, "operator")
    h = get_host(s, p, ref, customer, lock=True)
    if kind not in REQUEST_KINDS:
        raise ApiError(422, "invalid", f"kind: one of {', '.join(REQUEST_KINDS)}")
    if kind == "pin":
        dep = args.get("deployment")
        if set(args) - {"deployment", "pinned"} or not isinstance(dep, str) or \
                not isinstance(args.get("pinned", True), bool):
            raise ApiError(422, "invalid", "pin: args {deployment: ID or booted|rollback|"
                           "pending, pinned: bool}")
    elif args:
        raise ApiError(422, "invalid", f"{kind}: takes no args")
    if kind == "apply":
        policy = (h.report or {}).get("policy") or {}
        if not policy.get("operator_apply"):
            raise conflict(f"host {h.name!r}'s policy does not let operators schedule its "
                           "apply; it waits for the customer's own trigger",
                           "the customer allows it: atoll policy set --operator-apply yes")
        if not policy.get("windows"):
            raise conflict(f"host {h.name!r} has no maintenance window to apply in")
    r = HostRequest(host_id=h.id, kind=kind, args=args, state="queued", created_at=now,
                    created_by=p.actor)
    s.add(r)
    s.flush()
    record(s, now, p.actor, "request", {"request": r.id, "kind": kind, "args": args}, host=h)
    return _request_json(r)


def cancel_request(s: Session, p: Principal, request_id: int,
                   now: dt.datetime) -> dict[str, Any]:
    """Withdraw a request the host has not reported yet (it may have acted on it)."""
    _require(p, "operator")
    r = s.get(HostRequest, request_id)
    h = s.get(Host, r.host_id) if r else None
    if r is None or h is None or not p.sees(h.customer_id):
        raise not_found(f"request {request_id}")
    done = s.execute(update(HostRequest).where(HostRequest.id == r.id,
                                               HostRequest.state == "queued")
                     .values(state="cancelled", completed_at=now))
    changed = done.rowcount == 1  # type: ignore[attr-defined]
    if changed:
        record(s, now, p.actor, "request-cancelled", {"request": r.id, "kind": r.kind}, host=h)
    s.refresh(r)
    return _request_json(r) | {"changed": changed}


# -- history -----------------------------------------------------------------


def list_events(s: Session, p: Principal, *, host: str | None = None,
                customer: str | None = None, since: dt.datetime | None = None,
                kind: str | None = None, after_id: int | None = None,
                limit: int = 100) -> list[dict[str, Any]]:
    """Events oldest first (``after_id``: those after an event seen, to page or follow)."""
    q = select(Event)
    if p.customer_ids is not None:
        q = q.where(Event.customer_id.in_(sorted(p.customer_ids)))
    if host is not None:
        ids = [h.id for h in s.scalars(_scoped(select(Host), p).where(
            or_(Host.id == host, Host.name == host)))]
        # a pruned host's events stay: find them by the name or id they recorded
        q = q.where(or_(Event.host_id.in_(ids), Event.host_id == host,
                        Event.host_name == host))
    if customer is not None:
        q = q.where(Event.customer_id == _customer_id(s, p, customer))
    if since is not None:
        q = q.where(Event.time >= since)
    if kind is not None:
        q = q.where(Event.kind == kind)
    if after_id is not None:
        q = q.where(Event.id > after_id)
    names = _customers(s)
    rows = s.scalars(q.order_by(Event.id).limit(max(1, min(limit, 1000)))).all()
    return [{"id": e.id, "time": _iso(e.time), "kind": e.kind, "actor": e.actor,
             "host": e.host_id, "host_name": e.host_name,
             "customer": names.get(e.customer_id) if e.customer_id is not None else None,
             "data": e.data} for e in rows]


def prune(s: Session, p: Principal, lost_for: dt.timedelta,
          now: dt.datetime) -> list[dict[str, Any]]:
    """Remove hosts lost and not seen for ``lost_for`` (their events stay)."""
    _require(p, "admin")
    cutoff = now - lost_for
    q = _scoped(select(Host), p).where(
        Host.lost.is_(True),
        or_(Host.last_seen < cutoff, and_(Host.last_seen.is_(None), Host.enrolled_at < cutoff)))
    gone = s.scalars(q.with_for_update()).all()
    names = _customers(s)
    out = []
    for h in gone:
        out.append({"id": h.id, "name": h.name, "customer": names.get(h.customer_id),
                    "last_seen": _iso(h.last_seen)})
        record(s, now, p.actor, "pruned", {"last_seen": _iso(h.last_seen),
                                           "lost_for_s": int(lost_for.total_seconds())}, host=h)
    if gone:
        ids = [h.id for h in gone]
        s.execute(delete(HostLabel).where(HostLabel.host_id.in_(ids)))
        s.execute(delete(HostRequest).where(HostRequest.host_id.in_(ids)))
        s.execute(delete(Host).where(Host.id.in_(ids)))
        s.execute(delete(Manifest).where(~select(Host.id).where(
            Host.manifest_sha256 == Manifest.sha256).exists()))
    return out

"""Console users, their sessions and the login rate limit.

Passwords are hashed with argon2id (argon2-cffi's :class:`PasswordHasher`, its
defaults: RFC 9106's second recommended option, 64 MiB, 3 passes) and never stored
or logged otherwise. A session is 256 random bits: the cookie holds them, the
database only their sha256 (as operator tokens, :mod:`atoll.control.auth`). A form's
CSRF token is an HMAC of that secret, so it needs no storage and is worthless without
the cookie. A user stands for a :class:`~atoll.control.auth.Principal` with the same
role and customer scope as an operator token: the console reads through
:mod:`atoll.control.operations`, the API's own authorization.

Login rate limit (pure, :func:`login_wait`): after ``FREE_FAILURES`` wrong passwords
in a row, each further attempt on that user waits ``2 ** (n - FREE_FAILURES)`` minutes
from the last failure (at most an hour), right password or not; a good login resets
the count. Per client address the server also keeps a token bucket (in memory).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import math
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from atoll.control.auth import Principal
from atoll.control.console.models import ConsoleSession, ConsoleUser
from atoll.control.db import Database
from atoll.control.errors import ApiError, conflict, not_found
from atoll.control.models import ROLES, Customer
from atoll.control.service import record

__all__ = ["FREE_FAILURES", "MAX_PASSWORD", "MIN_PASSWORD", "NAME", "SESSION_TTL",
           "Attempt", "User", "add_user", "csrf_token", "list_users", "log_in", "log_out",
           "login_wait", "session_user"]

FREE_FAILURES = 5
MAX_WAIT = dt.timedelta(hours=1)
SESSION_TTL = dt.timedelta(hours=8)
MIN_PASSWORD = 12  # characters
MAX_PASSWORD = 1000  # characters: what the login form takes
# a user's name, as hosts' and customers' (it is the login and part of the actor
# in the audit log: "console:NAME", "operator:console-NAME")
NAME = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
_hasher = PasswordHasher()
_DUMMY = _hasher.hash(secrets.token_urlsafe(16))  # verified for unknown names (same time)


@dataclass(frozen=True)
class User:
    """A logged-in console user: ``principal`` is what the API's checks take."""

    name: str
    role: str
    principal: Principal
    session_sha256: str


def login_wait(failures: int, last_failed: dt.datetime | None,
               now: dt.datetime) -> dt.timedelta:
    """How long a user with ``failures`` wrong passwords in a row, the last at
    ``last_failed``, must still wait before trying again (zero: may try now)."""
    if failures < FREE_FAILURES or last_failed is None:
        return dt.timedelta(0)
    wait = min(dt.timedelta(minutes=2 ** min(failures - FREE_FAILURES, 10)), MAX_WAIT)
    return max(dt.timedelta(0), last_failed + wait - now)


def _sha256(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def csrf_token(secret: str, purpose: str = "form") -> str:
    """The CSRF token that goes with a session (or pre-login) cookie's ``secret``."""
    return hmac.new(secret.encode(), b"atoll-console-csrf:" + purpose.encode(),
                    hashlib.sha256).hexdigest()


def _principal(u: ConsoleUser) -> Principal:
    ids = None if u.customer_ids is None else frozenset(int(i) for i in u.customer_ids)
    return Principal(f"console-{u.name}", u.role, ids)


def add_user(s: Session, name: str, password: str, role: str,
             customers: Sequence[str] | None, now: dt.datetime,
             actor: str = "server:cli") -> dict[str, Any]:
    """A new console user (``customers`` None: every customer).

    Raises:
        ApiError: 422 (a name not of :data:`NAME`, role, password shorter than
            ``MIN_PASSWORD`` or longer than ``MAX_PASSWORD``), 404 (a customer), 409
            (the name exists).
    """
    if not NAME.fullmatch(name):
        raise ApiError(422, "invalid", f"user name {name[:80]!r}: 1 to 63 lower case "
                       "letters, digits and '-', starting and ending with a letter or digit")
    if role not in ROLES:
        raise ApiError(422, "invalid", f"role: one of {', '.join(ROLES)}")
    if len(password) < MIN_PASSWORD:
        raise ApiError(422, "invalid", f"the password needs {MIN_PASSWORD} characters or more")
    if len(password) > MAX_PASSWORD:  # (the login form would never match it)
        raise ApiError(422, "invalid", f"the password has {MAX_PASSWORD} characters at most")
    ids = None
    if customers is not None:
        found = {n: cid for n, cid in s.execute(
            select(Customer.name, Customer.id).where(Customer.name.in_(list(customers))))}
        missing = sorted(set(customers) - set(found))
        if missing:
            raise not_found(f"customer {', '.join(map(repr, missing))}")
        ids = sorted(found.values())
    if s.scalar(select(ConsoleUser.id).where(ConsoleUser.name == name)) is not None:
        raise conflict(f"a console user named {name!r} exists already")
    u = ConsoleUser(name=name, password_hash=_hasher.hash(password), role=role,
                    customer_ids=ids, created_at=now, created_by=actor, failed_logins=0)
    s.add(u)
    try:
        s.flush()
    except IntegrityError:
        raise conflict(f"a console user named {name!r} exists already") from None
    record(s, now, actor, "console-user-added", {"user": name, "role": role,
                                                 "customers": list(customers or []) or None})
    return {"name": name, "role": role, "customers": sorted(customers) if customers else None,
            "created_at": now.isoformat(timespec="seconds")}


def list_users(s: Session) -> list[dict[str, Any]]:
    names = {cid: n for cid, n in s.execute(select(Customer.id, Customer.name))}
    return [{"name": u.name, "role": u.role,
             "customers": None if u.customer_ids is None
             else sorted(names.get(int(i), f"#{i}") for i in u.customer_ids),
             "created_at": u.created_at.isoformat(timespec="seconds"),
             "failed_logins": u.failed_logins,
             "disabled": u.disabled_at is not None}
            for u in s.scalars(select(ConsoleUser).order_by(ConsoleUser.name))]


@dataclass(frozen=True)
class Attempt:
    """A login's outcome: ``secret`` the new session cookie's secret (None: refused);
    ``retry_after`` seconds before the next try is allowed (None: may try now)."""

    secret: str | None
    retry_after: int | None = None


def log_in(db: Database, name: str, password: str, now: dt.datetime) -> Attempt:
    """Check a password and open a session. The password is checked outside any
    transaction (argon2 takes tens of milliseconds; SQLite writers would wait); the
    failure count is then raised in the database (``failed_logins + 1``).

    Refused: an unknown or disabled user (after as long as a real check), a wrong
    password, or a user still in its wait (the password is then not checked).
    """
    with db.read() as s:
        u = s.scalars(select(ConsoleUser).where(ConsoleUser.name == name)).first() \
            if len(name) <= 63 else None
    if u is None or u.disabled_at is not None:
        _verify(_DUMMY, password)
        return Attempt(None)
    wait = login_wait(u.failed_logins, u.last_failed_at, now)
    if wait > dt.timedelta(0):
        return Attempt(None, _seconds(wait))
    if not _verify(u.password_hash, password):
        with db.write() as s:
            s.execute(update(ConsoleUser).where(ConsoleUser.id == u.id).values(
                failed_logins=ConsoleUser.failed_logins + 1, last_failed_at=now))
            failures = s.scalar(select(ConsoleUser.failed_logins)
                                .where(ConsoleUser.id == u.id)) or 0
        wait = login_wait(failures, now, now)
        return Attempt(None, _seconds(wait) if wait else None)
    secret = secrets.token_urlsafe(32)
    with db.write() as s:
        values: dict[str, Any] = {"failed_logins": 0, "last_failed_at": None}
        if _hasher.check_needs_rehash(u.password_hash):
            values["password_hash"] = _hasher.hash(password)
        s.execute(update(ConsoleUser).where(ConsoleUser.id == u.id).values(**values))
        s.execute(delete(ConsoleSession).where(ConsoleSession.expires_at <= now))
        s.add(ConsoleSession(secret_sha256=_sha256(secret), user_id=u.id, created_at=now,
                             expires_at=now + SESSION_TTL))
        record(s, now, f"console:{u.name}", "console-login", {"user": u.name})
    return Attempt(secret)


def _seconds(wait: dt.timedelta) -> int:
    return max(1, math.ceil(wait.total_seconds()))


def _verify(hashed: str, password: str) -> bool:
    try:
        return _hasher.verify(hashed, password)
    except (VerificationError, InvalidHashError):
        return False


def session_user(s: Session, secret: str | None, now: dt.datetime) -> User | None:
    """The user of a session cookie's secret; None: none, expired, or the user was
    disabled."""
    if not secret or len(secret) > 100:
        return None
    digest = _sha256(secret)
    row = s.get(ConsoleSession, digest)
    if row is None or row.expires_at <= now:
        return None
    u = s.get(ConsoleUser, row.user_id)
    if u is None or u.disabled_at is not None:
        return None
    return User(u.name, u.role, _principal(u), digest)


def log_out(s: Session, secret: str | None) -> None:
    """End a session (nothing when there is none)."""
    if secret and len(secret) <= 100:
        s.execute(delete(ConsoleSession).where(ConsoleSession.secret_sha256 == _sha256(secret)))

"""The console's tables (migration 0004_console), on the control plane's one schema.

    console_users      people who log in to the console: argon2 hash, role, customer
                       scope (as an operator token's), failed logins for the rate limit
    console_sessions   one row per logged-in browser: sha256 of the cookie's secret
                       (the secret itself is only in the cookie), user, expiry
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, BigInteger, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from atoll.control.models import Base, BigId

__all__ = ["ConsoleSession", "ConsoleUser"]


class ConsoleUser(Base):
    """``customer_ids`` None: every customer; else the ids the user may see.
    ``password_hash``: an argon2id PHC string (argon2-cffi). ``failed_logins``: wrong
    passwords since the last good login (:func:`atoll.control.console.users.login_wait`)."""

    __tablename__ = "console_users"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    password_hash: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(16))
    customer_ids: Mapped[list[Any] | None] = mapped_column(JSON)
    created_at: Mapped[dt.datetime]
    created_by: Mapped[str] = mapped_column(String(200))
    disabled_at: Mapped[dt.datetime | None]
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)
    last_failed_at: Mapped[dt.datetime | None]


class ConsoleSession(Base):
    __tablename__ = "console_sessions"

    secret_sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("console_users.id",
                                                                ondelete="CASCADE"),
                                         index=True)
    created_at: Mapped[dt.datetime]
    expires_at: Mapped[dt.datetime] = mapped_column(index=True)

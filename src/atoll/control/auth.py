"""Who may do what: operator tokens, roles, customer scopes (pure).

Tokens are 256 random bits, shown once at creation and stored only as their
sha256 (a random secret of that size needs no slow password hash: there is nothing
to guess). The prefix says what a token is for (``atl_op_`` operators, ``atl_en_``
enrolment), so one pasted in the wrong place is refused at once.

Roles, each allowed what the ones before it are:

==========  ================================================================
viewer      read hosts, events, customers in its scope
operator    + host requests (cancel, pin, ack-rollback, apply), labels,
            enrolment tokens, for customers in its scope
admin       + customers, operator tokens, prune; customers and tokens need an
            admin whose scope is every customer
==========  ================================================================

A host or event outside a token's scope does not exist for it (404, never 403):
a customer's operator cannot even learn another customer's host names.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Literal

from atoll.control.models import ROLES

__all__ = ["ENROL_PREFIX", "OPERATOR_PREFIX", "Principal", "bearer", "new_token",
           "token_sha256"]

OPERATOR_PREFIX = "atl_op_"
ENROL_PREFIX = "atl_en_"
Role = Literal["viewer", "operator", "admin"]


def new_token(prefix: str) -> tuple[str, str]:
    """A new token and the sha256 to store: ``(token, sha256_hex)``."""
    token = prefix + secrets.token_urlsafe(32)
    return token, token_sha256(token)


def token_sha256(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


def bearer(header: str | None, prefix: str) -> str | None:
    """The token of an ``Authorization: Bearer TOKEN`` header, if it has ``prefix``."""
    scheme, _, token = (header or "").strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token.startswith(prefix) or len(token) > 200:
        return None
    return token


def same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


@dataclass(frozen=True)
class Principal:
    """An authenticated operator token. ``customer_ids`` None: every customer."""

    name: str
    role: str
    customer_ids: frozenset[int] | None

    @property
    def actor(self) -> str:
        return f"operator:{self.name}"

    def may(self, role: str) -> bool:
        """True when this token's role is ``role`` or above."""
        return ROLES.index(self.role) >= ROLES.index(role)

    def sees(self, customer_id: int | None) -> bool:
        """True when ``customer_id`` is in scope (None: a fleet-wide record, admins only
        with every customer in scope)."""
        if self.customer_ids is None:
            return True
        return customer_id is not None and customer_id in self.customer_ids

    @property
    def everywhere(self) -> bool:
        return self.customer_ids is None

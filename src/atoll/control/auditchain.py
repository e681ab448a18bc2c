"""The audit log's hash chain and signed checkpoints, as pure functions over data.

The audit log is the operators' actions among the ``events`` (:func:`audited`: every
actor but a host's ``host:<id>`` and the server's own ``server``). Each action has one
link (table ``audit_links``, :class:`atoll.control.models.AuditLink`):

    seq        1, 2, 3...: the action's place in the chain, no gaps
    event_id   the event it covers
    prev_hash  the previous link's ``hash`` (:data:`GENESIS` for seq 1)
    hash       sha256(prev_hash || "\\n" || canonical(seq, event)), hex

:func:`canonical` encodes who (actor), what (kind, data: the before/after the action
records), when (time, UTC, microseconds) and the target (customer, host id and name)
as sorted, compact JSON. Changing, removing or reordering an action breaks the link
after it; rewriting the whole chain from there on (who holds the database could)
breaks the agreement with a :class:`Checkpoint`, signed with a key the database
never holds and written outside it (:mod:`atoll.control.audit`).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

__all__ = [
    "CHECKPOINT_FORMAT",
    "GENESIS",
    "Break",
    "Checkpoint",
    "Link",
    "audited",
    "canonical",
    "csv_cell",
    "first_break",
    "link_hash",
]

GENESIS = "0" * 64
CHECKPOINT_FORMAT = "atoll-audit-checkpoint/1"
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def audited(actor: str) -> bool:
    """True when an event by ``actor`` is an operator's action (chained): operator
    tokens (``operator:``), console users (``console:``), the server's own command line
    (``server:cli``, ``server:bootstrap``); not hosts (``host:``) nor the server's
    automatic events (``server``)."""
    return not actor.startswith("host:") and actor != "server"


def _utc(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).isoformat(timespec="microseconds")


def canonical(seq: int, event_id: int, time: dt.datetime, actor: str, kind: str,
              customer_id: int | None, host_id: str | None, host_name: str | None,
              data: Any) -> bytes:
    """The bytes a link's hash covers: sorted, compact JSON of the action (``data``
    first made what the database gives back: JSON, keys as strings).

    Raises:
        ValueError: ``time`` is naive.
    """
    if time.tzinfo is None:
        raise ValueError("an audited event's time is naive")
    doc = {"seq": seq, "event": event_id, "time": _utc(time), "actor": actor, "kind": kind,
           "customer": customer_id, "host": host_id, "host_name": host_name,
           "data": json.loads(json.dumps(data))}
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def link_hash(prev_hash: str, body: bytes) -> str:
    """sha256 (hex) of ``prev_hash``, a newline and ``body``."""
    return hashlib.sha256(prev_hash.encode() + b"\n" + body).hexdigest()


@dataclass(frozen=True)
class Link:
    """One stored link with its event's fields (``body`` None: the event is gone)."""

    seq: int
    event_id: int
    prev_hash: str
    hash: str
    body: bytes | None


@dataclass(frozen=True)
class Break:
    """Where the chain stops holding: ``seq`` (and its ``event_id`` when known), why."""

    seq: int
    event_id: int | None
    reason: str

    def __str__(self) -> str:
        event = f" (event {self.event_id})" if self.event_id is not None else ""
        return f"entry {self.seq}{event}: {self.reason}"


def first_break(links: Iterable[Link], start: tuple[int, str] = (0, GENESIS)
                ) -> Break | tuple[int, str]:
    """Walk ``links`` (by seq) after ``start`` (``(seq, hash)`` of the link before them):
    the first :class:`Break`, or ``(seq, hash)`` of the last link (the head)."""
    seq, prev = start
    for link in links:
        if link.seq != seq + 1:
            return Break(seq + 1, None, f"missing (the next stored entry is {link.seq})")
        if link.prev_hash != prev:
            return Break(link.seq, link.event_id, "its previous hash is not the hash of "
                         f"entry {seq} (an entry before it was removed or rewritten)")
        if link.body is None:
            return Break(link.seq, link.event_id, "its event was deleted")
        if link_hash(link.prev_hash, link.body) != link.hash:
            return Break(link.seq, link.event_id, "its event was changed (the hash over "
                         "who, what, when, target and data does not match)")
        seq, prev = link.seq, link.hash
    return seq, prev


@dataclass(frozen=True)
class Checkpoint:
    """A signed statement "the chain's head was ``seq`` with ``hash`` at ``time``";
    ``key``: the signer's public key, ``signature``: Ed25519 over :meth:`payload`
    (both base64)."""

    seq: int
    hash: str
    time: dt.datetime
    key: str = ""
    signature: str = ""

    def payload(self) -> bytes:
        return json.dumps({"format": CHECKPOINT_FORMAT, "seq": self.seq, "hash": self.hash,
                           "time": _utc(self.time)}, sort_keys=True,
                          separators=(",", ":")).encode()

    def signed(self, key: Ed25519PrivateKey) -> Checkpoint:
        from cryptography.hazmat.primitives import serialization

        raw = key.public_key().public_bytes(serialization.Encoding.Raw,
                                            serialization.PublicFormat.Raw)
        return Checkpoint(self.seq, self.hash, self.time, base64.b64encode(raw).decode(),
                          base64.b64encode(key.sign(self.payload())).decode())

    def valid(self, public_key: Ed25519PublicKey) -> bool:
        """True when the signature is ``public_key``'s over this checkpoint."""
        try:
            public_key.verify(base64.b64decode(self.signature, validate=True),
                              self.payload())
        except (InvalidSignature, ValueError):
            return False
        return True

    def to_json(self) -> dict[str, Any]:
        return {"format": CHECKPOINT_FORMAT, "seq": self.seq, "hash": self.hash,
                "time": _utc(self.time), "key": self.key, "signature": self.signature}

    @classmethod
    def from_json(cls, doc: Any) -> Checkpoint:
        """Raises: ValueError: not a checkpoint of this format."""
        if not isinstance(doc, dict) or doc.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"not an {CHECKPOINT_FORMAT} document")
        try:
            seq, digest = doc["seq"], doc["hash"]
            time = dt.datetime.fromisoformat(doc["time"])
            if (not isinstance(seq, int) or seq < 0 or not isinstance(digest, str)
                    or time.tzinfo is None):
                raise ValueError("bad seq, hash or time")
            return cls(seq, digest, time, str(doc["key"]), str(doc["signature"]))
        except (KeyError, TypeError) as exc:
            raise ValueError(f"missing or bad field: {exc}") from None


def csv_cell(value: Any) -> str:
    """``value`` as a CSV cell a spreadsheet shows as text, never runs as a formula:
    text starting with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return gets a
    leading single quote (OWASP, "CSV Injection"). None is the empty cell."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text

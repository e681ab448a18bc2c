"""The FleetLock wire protocol (v1), as Zincati speaks it and airlock serves it.

Requests are ``POST`` to ``/v1/pre-reboot`` (lock a reboot slot) or
``/v1/steady-state`` (release it), with the header ``fleet-lock-protocol: true``
and the JSON body ``{"client_params": {"id": "...", "group": "..."}}``.
Success is ``200`` with an empty body; every failure is a 4xx/5xx status with a
JSON body ``{"kind": "...", "value": "..."}``. The kinds are a small fixed set
(Zincati labels metrics with them): airlock's, plus the HTTP-level ones every
server needs:

==========  ==============================  ===========================================
status      kind                            when
==========  ==============================  ===========================================
400         ``invalid_client_identity``     header missing/wrong, body not what airlock's
                                            Go decoder accepts, ``id`` / ``group`` missing,
                                            empty, not a string, not valid Unicode, id
                                            too long
400         ``unknown_group``               the group is not configured on the server
500         ``failed_lock_semaphore_full``  pre-reboot: every slot of the group is held
500         ``failed_lock``                 the backend (etcd, sqlite) failed
400         ``bad_request``                 not HTTP/1.1 (bad request line, headers,
                                            framing); the connection is closed
404         ``not_found``                   a path the protocol does not define
405         ``method_not_allowed``          wrong method (an ``Allow`` header says which)
408         ``request_timeout``             the body did not arrive in time
413         ``request_too_large``           a body over 64 KiB (chunked or not)
500         ``internal_error``              a bug in atoll, never client input
==========  ==============================  ===========================================

``parse_client_params`` and ``route`` are pure: request data in, a result or a
``ProtocolError`` out, and nothing else is ever raised.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from atoll.fleet._gojson import GoDecodeError, decode_params

__all__ = [
    "ERRORS",
    "HEADER",
    "MAX_BODY",
    "MAX_ID",
    "PRE_REBOOT",
    "STEADY_STATE",
    "ClientParams",
    "ProtocolError",
    "encode_body",
    "internal_error",
    "parse_client_params",
    "route",
    "too_large",
]

PRE_REBOOT = "/v1/pre-reboot"
STEADY_STATE = "/v1/steady-state"
HEADER = "fleet-lock-protocol"
MAX_BODY = 64 * 1024
# Zincati's ids are 32 hex digits; the cap keeps one group's stored semaphore far below
# etcd's request limit (1.5 MiB) whatever clients send.
MAX_ID = 1024

# Every (status, kind) pair an answer can carry; 200 has an empty body.
ERRORS: frozenset[tuple[int, str]] = frozenset({
    (400, "invalid_client_identity"),
    (400, "unknown_group"),
    (500, "failed_lock_semaphore_full"),
    (500, "failed_lock"),
    (400, "bad_request"),
    (404, "not_found"),
    (405, "method_not_allowed"),
    (408, "request_timeout"),
    (413, "request_too_large"),
    (500, "internal_error"),
})


@dataclass(frozen=True)
class ClientParams:
    """Who is asking: the client's id and its reboot group."""

    id: str
    group: str

    def to_body(self) -> bytes:
        """The request body a FleetLock client sends."""
        return json.dumps({"client_params": {"id": self.id, "group": self.group}}).encode()


class ProtocolError(Exception):
    """A FleetLock error answer: HTTP status, ``kind``, ``value`` and extra headers."""

    def __init__(self, status: int, kind: str, value: str,
                 headers: Mapping[str, str] | None = None):
        super().__init__(value)
        self.status = status
        self.kind = kind
        self.value = value
        self.headers: dict[str, str] = dict(headers or {})

    def body(self) -> bytes:
        """The JSON error body."""
        return encode_body({"kind": self.kind, "value": self.value})


def encode_body(value: Any) -> bytes:
    """JSON for an answer body (ASCII: anything a client sent is escaped)."""
    return json.dumps(value, sort_keys=True).encode()


def too_large() -> ProtocolError:
    """413 for a body over ``MAX_BODY``; the connection is closed after it."""
    return ProtocolError(413, "request_too_large", f"body over {MAX_BODY} bytes",
                         {"Connection": "close"})


def internal_error() -> ProtocolError:
    """500 for a bug in atoll (the details go to the server's log, not to the client)."""
    return ProtocolError(500, "internal_error", "internal error; see the FleetLock server's log")


def route(method: str, path: str, endpoints: Mapping[str, str]) -> str:
    """The endpoint a request is for; ``endpoints`` maps each path to its one method.

    Raises:
        ProtocolError: 404 ``not_found``, or 405 ``method_not_allowed`` with ``Allow``.
    """
    want = endpoints.get(path)
    if want is None:
        raise ProtocolError(404, "not_found", f"no such endpoint: {path}")
    if method != want:
        raise ProtocolError(405, "method_not_allowed", f"{method} {path}: use {want}",
                            {"Allow": want})
    return path


def _identity_error(why: str) -> ProtocolError:
    return ProtocolError(400, "invalid_client_identity",
                         f"failed to validate client identity: {why}")


def _text(value: Any, what: str) -> str:
    """``value`` as a client id or group: a non-empty string of valid Unicode."""
    if value is not None and not isinstance(value, str):
        raise _identity_error(f"{what} is not a string")
    if not value:
        raise _identity_error(f"empty {what}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate ("\ud800" in the JSON)
        raise _identity_error(f"{what} is not valid Unicode") from None
    return value


def parse_client_params(headers: Mapping[str, str], body: bytes) -> ClientParams:
    """Validate a lock/unlock request; ``headers`` keys are matched case-insensitively.

    The body is decoded as airlock's Go decoder decodes it (:mod:`atoll.fleet._gojson`:
    the first JSON value only, keys matched case-insensitively, strict syntax, no NaN);
    the group is checked before the id, as airlock does. Unlike airlock, an id or group
    that is not valid Unicode (invalid UTF-8, a lone surrogate) is refused rather than
    turned into U+FFFD.

    Raises:
        ProtocolError: 400 ``invalid_client_identity`` with the reason (and nothing else).
    """
    lowered = {str(k).lower(): v for k, v in headers.items()}
    if lowered.get(HEADER) != "true":
        raise _identity_error(f"wrong '{HEADER}' header")
    try:
        params = decode_params(body)
    except GoDecodeError as exc:
        raise _identity_error(str(exc)) from None
    group = _text(params.group, "client group")
    client_id = _text(params.id, "client ID")
    if len(client_id) > MAX_ID:
        raise _identity_error(f"client ID longer than {MAX_ID} characters")
    return ClientParams(id=client_id, group=group)

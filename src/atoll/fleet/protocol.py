"""The FleetLock wire protocol (v1), as Zincati speaks it and airlock serves it.

Requests are ``POST`` to ``/v1/pre-reboot`` (lock a reboot slot) or
``/v1/steady-state`` (release it), with the header ``fleet-lock-protocol: true``
and the JSON body ``{"client_params": {"id": "...", "group": "..."}}``.
Success is ``200`` with an empty body; every failure is a 4xx/5xx status with a
JSON body ``{"kind": "...", "value": "..."}``. The kinds are a small fixed set
(Zincati labels metrics with them), the same as airlock's:

==========  ==============================  ===========================================
status      kind                            when
==========  ==============================  ===========================================
400         ``invalid_client_identity``     header missing/wrong, body not JSON, empty
                                            or missing ``id`` / ``group``
400         ``unknown_group``               the group is not configured on the server
500         ``failed_lock_semaphore_full``  pre-reboot: every slot of the group is held
500         ``failed_lock``                 the backend (etcd, sqlite) failed
404         ``not_found``                   a path the protocol does not define
405         ``method_not_allowed``          not a POST
413         ``request_too_large``           a body over 64 KiB
==========  ==============================  ===========================================

``parse_client_params`` is pure: headers and body in, params or a
``ProtocolError`` out.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "GROUP_RE",
    "HEADER",
    "MAX_BODY",
    "PRE_REBOOT",
    "STEADY_STATE",
    "ClientParams",
    "ProtocolError",
    "encode_body",
    "parse_client_params",
]

PRE_REBOOT = "/v1/pre-reboot"
STEADY_STATE = "/v1/steady-state"
HEADER = "fleet-lock-protocol"
MAX_BODY = 64 * 1024
GROUP_RE = re.compile(r"^[a-zA-Z0-9.-]+$")


@dataclass(frozen=True)
class ClientParams:
    """Who is asking: the client's id and its reboot group."""

    id: str
    group: str

    def to_body(self) -> bytes:
        """The request body a FleetLock client sends."""
        return json.dumps({"client_params": {"id": self.id, "group": self.group}}).encode()


class ProtocolError(Exception):
    """A FleetLock error answer: HTTP status, ``kind`` and ``value``."""

    def __init__(self, status: int, kind: str, value: str):
        super().__init__(value)
        self.status = status
        self.kind = kind
        self.value = value

    def body(self) -> bytes:
        """The JSON error body."""
        return encode_body({"kind": self.kind, "value": self.value})


def encode_body(value: Any) -> bytes:
    """JSON for an answer body."""
    return json.dumps(value, sort_keys=True).encode()


def _identity_error(why: str) -> ProtocolError:
    return ProtocolError(400, "invalid_client_identity",
                         f"failed to validate client identity: {why}")


def parse_client_params(headers: Mapping[str, str], body: bytes) -> ClientParams:
    """Validate a lock/unlock request; ``headers`` keys are matched case-insensitively.

    Raises:
        ProtocolError: 400 ``invalid_client_identity`` with the reason.
    """
    lowered = {k.lower(): v for k, v in headers.items()}
    if lowered.get(HEADER) != "true":
        raise _identity_error(f"wrong '{HEADER}' header")
    try:
        raw = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise _identity_error(f"body is not JSON: {exc}") from None
    params = raw.get("client_params") if isinstance(raw, dict) else None
    if not isinstance(params, dict):
        raise _identity_error("missing 'client_params' object")
    group, client_id = params.get("group"), params.get("id")
    if group is not None and not isinstance(group, str):
        raise _identity_error("client group is not a string")
    if client_id is not None and not isinstance(client_id, str):
        raise _identity_error("client ID is not a string")
    if not group:
        raise _identity_error("empty client group")
    if not client_id:
        raise _identity_error("empty client ID")
    return ClientParams(id=client_id, group=group)

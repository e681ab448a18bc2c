"""The FleetLock service: protocol requests and operator commands over a backend.

``FleetLockService.route`` (which endpoint; pure) and ``.answer`` (the
request's effect: blocking backend I/O) turn one HTTP request into a status and
a body; ``.handle`` does both. The HTTP server around it only moves bytes.
Operators use ``status`` (holders per group, with since-when) and ``release``
(free a dead host's slot).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from atoll.core.errors import AtollError, InputError
from atoll.fleet.backends import Backend
from atoll.fleet.config import FleetConfig
from atoll.fleet.protocol import (
    MAX_BODY,
    PRE_REBOOT,
    STEADY_STATE,
    ClientParams,
    ProtocolError,
    encode_body,
    internal_error,
    parse_client_params,
    route,
    too_large,
)
from atoll.fleet.semaphore import (
    Holder,
    LockOutcome,
    Semaphore,
    recursive_lock,
    unlock_if_held,
    utcnow,
)

__all__ = ["ENDPOINTS", "STATUS_PATH", "FleetLockService", "GroupStatus"]

log = logging.getLogger("atoll.fleet")

# Read-only view of the holders for dashboards and `atoll fleetlock status --server`.
STATUS_PATH = "/atoll/v1/status"
# Every path the server answers, with its one method.
ENDPOINTS = {PRE_REBOOT: "POST", STEADY_STATE: "POST", STATUS_PATH: "GET"}


@dataclass(frozen=True)
class GroupStatus:
    """One group as operators see it."""

    group: str
    total_slots: int
    holders: tuple[Holder, ...]
    configured: bool

    def to_dict(self, now: dt.datetime) -> dict[str, object]:
        """JSON form; a holder's ``since`` and ``held_seconds`` are null when unknown."""
        holders: list[dict[str, object]] = []
        for h in self.holders:
            held = None if h.since is None else int((now - h.since).total_seconds())
            holders.append({**h.to_dict(), "held_seconds": held})
        return {"group": self.group, "total_slots": self.total_slots,
                "configured": self.configured, "holders": holders}


class FleetLockService:
    """FleetLock semantics (recursive lock, unlock-if-held) over a backend."""

    def __init__(self, backend: Backend, config: FleetConfig,
                 clock: Callable[[], dt.datetime] = utcnow) -> None:
        self.backend = backend
        self.config = config
        self.clock = clock

    def _slots(self, group: str) -> int:
        slots = self.config.slots(group)
        if slots is None:
            raise ProtocolError(400, "unknown_group", f"unknown group {group!r}")
        return slots

    def pre_reboot(self, params: ClientParams) -> LockOutcome:
        """Lock a slot for the client (idempotent for a holder).

        Raises:
            ProtocolError: unknown group (400), semaphore full or backend failure (500).
        """
        slots = self._slots(params.group)
        now = self.clock()
        try:
            outcome = self.backend.update(
                params.group, slots, lambda sem: recursive_lock(sem, params.id, now))
        except AtollError as exc:
            log.error("pre-reboot %r/%r: %s", params.group, params.id, exc.brief)
            raise ProtocolError(500, "failed_lock",
                                f"failed to lock semaphore: {exc.brief}") from exc
        if outcome is LockOutcome.FULL:
            raise ProtocolError(500, "failed_lock_semaphore_full",
                                f"semaphore currently full, all {slots} slots of group "
                                f"{params.group!r} are locked already")
        log.info("pre-reboot %r/%r: %s", params.group, params.id, outcome.value)
        return outcome

    def steady_state(self, params: ClientParams) -> bool:
        """Release the client's slot if it holds one; returns whether it held one.

        Raises:
            ProtocolError: unknown group (400), backend failure (500).
        """
        slots = self._slots(params.group)
        try:
            held = self.backend.update(params.group, slots,
                                       lambda sem: unlock_if_held(sem, params.id),
                                       read_first=False)
        except AtollError as exc:
            log.error("steady-state %r/%r: %s", params.group, params.id, exc.brief)
            raise ProtocolError(500, "failed_lock",
                                f"failed to release any semaphore lock: {exc.brief}") from exc
        log.info("steady-state %r/%r: %s", params.group, params.id,
                 "released" if held else "held nothing")
        return held

    def route(self, method: str, path: str) -> str:
        """The endpoint of a request (pure; the query string is ignored).

        Raises:
            ProtocolError: 404 unknown path, 405 wrong method (with ``Allow``).
        """
        return route(method, path.split("?", 1)[0], ENDPOINTS)

    def answer(self, endpoint: str, headers: Mapping[str, str], body: bytes) -> tuple[int, bytes]:
        """Answer a request to ``endpoint`` (from ``route``): ``(status, body)``.

        Blocks on the backend (etcd, sqlite): the HTTP server calls it in a
        worker thread.

        Raises:
            ProtocolError: what the client is told (400, 413, 500).
        """
        if endpoint == STATUS_PATH:
            try:
                now = self.clock()
                return 200, encode_body({"groups": [g.to_dict(now) for g in self.status()]})
            except AtollError as exc:  # the backend failed
                raise ProtocolError(500, "failed_lock", exc.brief) from exc
        if len(body) > MAX_BODY:
            raise too_large()
        params = parse_client_params(headers, body)
        if endpoint == PRE_REBOOT:
            self.pre_reboot(params)
        else:
            self.steady_state(params)
        return 200, b""

    def handle(self, method: str, path: str, headers: Mapping[str, str],
               body: bytes) -> tuple[int, bytes]:
        """Answer one HTTP request: ``(status, body)``; never raises.

        A bug is a 500 ``internal_error`` (logged with its traceback), never
        an exception out of here.
        """
        try:
            return self.answer(self.route(method, path), headers, body)
        except ProtocolError as exc:
            return exc.status, exc.body()
        except Exception:
            log.exception("FleetLock %s %r: internal error", method, path)
            return internal_error().status, internal_error().body()

    def status(self) -> list[GroupStatus]:
        """Every configured group, plus stored groups no longer configured, with holders."""
        names = sorted(set(self.config.groups) | set(self.backend.groups()))
        result = []
        for name in names:
            sem, _ = self.backend.load(name)
            configured = self.config.slots(name)
            slots = configured if configured is not None else (sem.total_slots if sem else 0)
            result.append(GroupStatus(name, slots, sem.holders if sem else (),
                                      configured is not None))
        return result

    def release(self, group: str, client_id: str) -> Holder:
        """Free ``client_id``'s slot in ``group`` (an operator clearing a dead host).

        Works for groups that are no longer configured, too.

        Raises:
            InputError: the id holds no slot in that group (nothing is changed).
        """
        sem, _ = self.backend.load(group)
        holder = next((h for h in (sem.holders if sem else ()) if h.id == client_id), None)
        if sem is None or holder is None:
            raise InputError(f"{client_id!r} holds no slot in group {group!r}",
                             resolution="see the holders with `atoll fleetlock status`")
        configured = self.config.slots(group)
        slots = sem.total_slots if configured is None else configured

        def change(current: Semaphore) -> tuple[Semaphore, bool]:
            return unlock_if_held(current, client_id)

        self.backend.update(group, slots, change)
        log.warning("released slot of %r in group %r (held since %s)", client_id, group,
                    holder.to_dict()["since"] or "an unknown time")
        return holder

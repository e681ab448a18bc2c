"""Database-aware gating: may this host take a reboot slot now? (pure)

Before a host asks for a fleet slot, it looks at the replication it can see
from its database app and decides with ``may_take_slot``:

* no replication (``role="none"``): nothing to protect beyond the host itself;
* a **replica** reboots only when both replication threads run and its lag is
  known and within the threshold (a lagging replica is not a good copy to
  take down and bring back), and only when another healthy copy remains;
* a **primary** reboots only when at least one other healthy copy remains.

``healthy_copies`` counts the healthy copies of the data set the host can see,
itself included. The rule behind the last two points: a fleet never reboots the
last healthy copy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from atoll.core.errors import InputError

__all__ = ["GateDecision", "ReplicationFacts", "may_take_slot"]

Role = Literal["primary", "replica", "none"]


@dataclass(frozen=True)
class ReplicationFacts:
    """What the host sees of its database's replication.

    Attributes:
        role: ``primary``, ``replica`` or ``none`` (no replication).
        replica_lag_seconds: the replica's lag (``Seconds_Behind_Source``); None if unknown.
        io_running: the replica's IO thread runs (None: unknown).
        sql_running: the replica's SQL thread runs (None: unknown).
        healthy_copies: healthy copies of the data set, this host included.
    """

    role: Role
    replica_lag_seconds: float | None = None
    io_running: bool | None = None
    sql_running: bool | None = None
    healthy_copies: int = 1


@dataclass(frozen=True)
class GateDecision:
    """The answer, with a stable ``code`` (for metrics) and a sentence for people."""

    allowed: bool
    code: str
    reason: str


def _check(facts: ReplicationFacts, max_lag_seconds: float) -> None:
    if facts.role not in ("primary", "replica", "none"):
        raise InputError(f"replication role {facts.role!r} is not primary, replica or none")
    if isinstance(facts.healthy_copies, bool) or facts.healthy_copies < 0:
        raise InputError(f"healthy copies {facts.healthy_copies!r} must be 0 or more")
    if not math.isfinite(max_lag_seconds) or max_lag_seconds < 0:
        raise InputError(f"lag threshold {max_lag_seconds!r} must be 0 seconds or more")
    lag = facts.replica_lag_seconds
    if lag is not None and (math.isnan(lag) or lag < 0):
        raise InputError(f"replica lag {lag!r} must be 0 seconds or more")


def may_take_slot(facts: ReplicationFacts, max_lag_seconds: float) -> GateDecision:
    """Decide whether the host may take a reboot slot now.

    Args:
        facts: the replication facts the host sees.
        max_lag_seconds: the largest replica lag that still allows a reboot.

    Raises:
        InputError: impossible facts (negative lag or copies, unknown role).

    Returns:
        The decision; ``code`` is one of ``no_replication``, ``replica_healthy``,
        ``primary_has_healthy_copy``, ``replica_io_stopped``, ``replica_sql_stopped``,
        ``replica_lag_unknown``, ``replica_lagging``, ``last_healthy_copy``.
    """
    _check(facts, max_lag_seconds)
    if facts.role == "none":
        return GateDecision(True, "no_replication", "the database does not replicate")
    others = facts.healthy_copies - 1
    if facts.role == "replica":
        if facts.io_running is not True:
            return GateDecision(False, "replica_io_stopped",
                                "the replica's IO thread is not running (or unknown)")
        if facts.sql_running is not True:
            return GateDecision(False, "replica_sql_stopped",
                                "the replica's SQL thread is not running (or unknown)")
        lag = facts.replica_lag_seconds
        if lag is None:
            return GateDecision(False, "replica_lag_unknown", "the replica's lag is unknown")
        if lag > max_lag_seconds:
            return GateDecision(False, "replica_lagging",
                                f"the replica lags {lag:g}s, more than {max_lag_seconds:g}s")
        if others < 1:
            return GateDecision(False, "last_healthy_copy",
                                "this replica is the last healthy copy of the data")
        return GateDecision(True, "replica_healthy",
                            f"replica in sync (lag {lag:g}s <= {max_lag_seconds:g}s), "
                            f"{others} other healthy cop{'y' if others == 1 else 'ies'}")
    if others < 1:
        return GateDecision(False, "last_healthy_copy",
                            "no other healthy copy: rebooting the primary would leave none")
    return GateDecision(True, "primary_has_healthy_copy",
                        f"{others} other healthy cop{'y' if others == 1 else 'ies'} remain")

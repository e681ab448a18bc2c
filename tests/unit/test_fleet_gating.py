"""Database-aware gating: may a host take a reboot slot? (pure, table-driven)"""

from __future__ import annotations

import math

import pytest

from atoll.core.errors import InputError
from atoll.fleet.gating import ReplicationFacts, may_take_slot

R = ReplicationFacts


@pytest.mark.parametrize(("facts", "allowed", "code"), [
    (R("none"), True, "no_replication"),
    (R("none", healthy_copies=0), True, "no_replication"),
    (R("replica", 0, True, True, 2), True, "replica_healthy"),
    (R("replica", 30, True, True, 3), True, "replica_healthy"),  # at the threshold
    (R("replica", 30.5, True, True, 3), False, "replica_lagging"),
    (R("replica", None, True, True, 3), False, "replica_lag_unknown"),
    (R("replica", 0, False, True, 3), False, "replica_io_stopped"),
    (R("replica", 0, None, True, 3), False, "replica_io_stopped"),
    (R("replica", 0, True, False, 3), False, "replica_sql_stopped"),
    (R("replica", 0, True, True, 1), False, "last_healthy_copy"),
    (R("replica", 0, True, True, 0), False, "last_healthy_copy"),
    (R("primary", healthy_copies=2), True, "primary_has_healthy_copy"),
    (R("primary", healthy_copies=1), False, "last_healthy_copy"),
    (R("primary", healthy_copies=0), False, "last_healthy_copy"),
])
def test_decisions(facts: ReplicationFacts, allowed: bool, code: str) -> None:
    decision = may_take_slot(facts, max_lag_seconds=30)
    assert (decision.allowed, decision.code) == (allowed, code)
    assert decision.reason


def test_reasons_speak_plainly() -> None:
    assert may_take_slot(R("replica", 95, True, True, 3), 30).reason == \
        "the replica lags 95s, more than 30s"
    assert may_take_slot(R("primary", healthy_copies=3), 30).reason == \
        "2 other healthy copies remain"
    assert may_take_slot(R("replica", 1, True, True, 2), 30).reason == \
        "replica in sync (lag 1s <= 30s), 1 other healthy copy"


def test_lag_checked_before_copies() -> None:
    # a lagging replica does not reboot, whatever the rest of the fleet looks like
    assert may_take_slot(R("replica", 500, True, True, 10), 30).code == "replica_lagging"


@pytest.mark.parametrize(("facts", "threshold"), [
    (R("replica", -1, True, True, 2), 30),
    (R("replica", math.nan, True, True, 2), 30),
    (R("primary", healthy_copies=-1), 30),
    (R("none"), -5),
    (R("none"), math.inf),
    (R("leader"), 30),  # type: ignore[arg-type]
])
def test_impossible_facts_are_input_errors(facts: ReplicationFacts, threshold: float) -> None:
    with pytest.raises(InputError):
        may_take_slot(facts, threshold)

"""Replication facts from what MariaDB and MySQL print, and the gate's answer."""

from __future__ import annotations

from atoll.agent.replication import facts_from, parse_vertical
from atoll.fleet.gating import may_take_slot

MARIADB_REPLICA = """*************************** 1. row ***************************
                Slave_IO_State: Waiting for master to send event
                   Master_Host: 10.0.0.5
              Slave_IO_Running: Yes
             Slave_SQL_Running: Yes
         Seconds_Behind_Master: 3
"""

MYSQL8_REPLICA_LAGGING = """*************************** 1. row ***************************
             Replica_IO_State: Waiting for source to send event
                  Source_Host: 10.0.0.5
           Replica_IO_Running: Yes
          Replica_SQL_Running: Yes
        Seconds_Behind_Source: 900
"""

BROKEN = """*************************** 1. row ***************************
              Slave_IO_Running: No
             Slave_SQL_Running: Yes
         Seconds_Behind_Master: NULL
"""


def test_parse_vertical() -> None:
    rows = parse_vertical(MARIADB_REPLICA)
    assert rows == [{"Slave_IO_State": "Waiting for master to send event",
                     "Master_Host": "10.0.0.5", "Slave_IO_Running": "Yes",
                     "Slave_SQL_Running": "Yes", "Seconds_Behind_Master": "3"}]
    assert parse_vertical("") == []


def test_healthy_replica_may_reboot() -> None:
    f = facts_from(parse_vertical(MARIADB_REPLICA), 0)
    assert (f.role, f.replica_lag_seconds, f.io_running, f.healthy_copies) == \
        ("replica", 3.0, True, 2)
    assert may_take_slot(f, 60).allowed


def test_lagging_replica_waits() -> None:
    f = facts_from(parse_vertical(MYSQL8_REPLICA_LAGGING), 0)
    g = may_take_slot(f, 60)
    assert not g.allowed and g.code == "replica_lagging"


def test_broken_replica_waits() -> None:
    f = facts_from(parse_vertical(BROKEN), 0)
    assert f.replica_lag_seconds is None and f.io_running is False
    assert not may_take_slot(f, 60).allowed


def test_primary_and_standalone() -> None:
    assert facts_from([], 0).role == "none"
    f = facts_from([], 2)
    assert (f.role, f.healthy_copies) == ("primary", 3)
    assert may_take_slot(f, 60).allowed
    assert not may_take_slot(facts_from([], 0).__class__("primary", healthy_copies=1), 60).allowed

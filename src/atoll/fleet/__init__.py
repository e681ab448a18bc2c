"""Fleet coordination: FleetLock reboot slots, database-aware gating, rollout waves.

    protocol.py     the FleetLock v1 wire protocol (pure parsing, error kinds)
    semaphore.py    a group's owned, recursive, counting semaphore (pure)
    config.py       groups and slots from TOML (airlock's [lock] table)
    backends/       where semaphores live: etcd, embedded (sqlite), memory; a registry
    service.py      protocol + operator commands (status, release) over a backend
    server.py       the HTTP server (stdlib ThreadingHTTPServer)
    client.py       the client the host agent uses
    gating.py       may a database host take a slot now? (pure)
    rollout.py      rollout waves: pure simulation and real-server load test

See docs/fleet.md.
"""

from __future__ import annotations

from atoll.fleet.backends import Backend, open_backend
from atoll.fleet.client import FleetLockClient, FleetLockError
from atoll.fleet.config import FleetConfig, load_config
from atoll.fleet.gating import GateDecision, ReplicationFacts, may_take_slot
from atoll.fleet.server import FleetLockServer
from atoll.fleet.service import FleetLockService

__all__ = [
    "Backend",
    "FleetConfig",
    "FleetLockClient",
    "FleetLockError",
    "FleetLockServer",
    "FleetLockService",
    "GateDecision",
    "ReplicationFacts",
    "load_config",
    "may_take_slot",
    "open_backend",
]

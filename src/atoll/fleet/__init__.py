"""Fleet coordination: FleetLock reboot slots, database-aware gating, rollout waves.

    protocol.py     the FleetLock v1 wire protocol (pure parsing, error kinds)
    semaphore.py    a group's owned, recursive, counting semaphore (pure)
    config.py       airlock's config.toml: groups and slots, etcd, listen address
    backends/       where semaphores live: etcd, embedded (sqlite), memory; a registry
    service.py      protocol + operator commands (status, release) over a backend
    server.py       the HTTP server (Starlette application on uvicorn, h11)
    client.py       the client the host agent uses
    gating.py       may a database host take a slot now? (pure)
    rollout.py      rollout waves: pure simulation and real-server load test

See docs/fleet.md.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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

# name -> module; imported on first use, so that the agent (which needs only the client
# and gating) never loads the HTTP server stack (uvicorn, starlette)
_WHERE = {
    "Backend": "backends", "open_backend": "backends",
    "FleetLockClient": "client", "FleetLockError": "client",
    "FleetConfig": "config", "load_config": "config",
    "GateDecision": "gating", "ReplicationFacts": "gating", "may_take_slot": "gating",
    "FleetLockServer": "server", "FleetLockService": "service",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)

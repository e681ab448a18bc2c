"""Fixtures for FleetLock integration tests: a real etcd, both backends, a real server.

Import the fixtures a test module uses from here (``from tests.integration.fleet_fixtures
import ...``); etcd starts once per session (``tests/services.py``), each test gets an
empty key space (or a fresh sqlite file) and its own server on 127.0.0.1.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import etcd3gw
import pytest

from atoll.fleet.backends import Backend, open_backend
from atoll.fleet.backends.etcd import KEY_PREFIX, LEGACY_PREFIX
from atoll.fleet.config import FleetConfig
from atoll.fleet.server import FleetLockServer
from atoll.fleet.service import FleetLockService
from tests.services import etcd

__all__ = ["GROUPS", "etcd_client", "fleet_backend", "fleet_etcd", "fleet_server"]

# default: 1 slot (the protocol's default), db: 2 slots (the race), wave: 4 slots (rollouts)
GROUPS = {"default": 1, "db": 2, "wave": 4}


@pytest.fixture(scope="session")
def fleet_etcd() -> Iterator[str]:
    """A real single-node etcd on 127.0.0.1 for the session; yields its client URL."""
    with etcd() as url:
        yield url


def etcd_client(url: str) -> etcd3gw.Etcd3Client:
    """A plain etcd client (the gateway, as a test's hands on the store) for ``url``."""
    host, port = url.rsplit("//", 1)[1].rsplit(":", 1)
    return etcd3gw.Etcd3Client(host=host, port=int(port))


@pytest.fixture(params=["etcd", "embedded"])
def fleet_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """Each backend in turn, empty: etcd (the FleetLock prefixes deleted) or a new sqlite file."""
    if request.param == "etcd":
        url: str = request.getfixturevalue("fleet_etcd")
        client = etcd_client(url)
        client.delete_prefix(KEY_PREFIX)
        client.delete_prefix(LEGACY_PREFIX)
        backend = open_backend("etcd", url)
    else:
        backend = open_backend("embedded", str(tmp_path / "locks.db"))
    with backend:
        yield backend


@pytest.fixture
def fleet_server(fleet_backend: Backend) -> Iterator[FleetLockServer]:
    """A FleetLock server on 127.0.0.1 (free port) over ``fleet_backend``, groups ``GROUPS``."""
    service = FleetLockService(fleet_backend, FleetConfig(dict(GROUPS)))
    with FleetLockServer(service, "127.0.0.1", 0).start() as server:
        yield server

"""Shared fixtures. Expensive artifacts (composed trees) are built once per run.

Services a test needs are started by fixtures in ``tests/services.py``; tests
never skip because a tool is missing: they install or start it, or fail.
"""

from __future__ import annotations

import os
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from atoll.core.errors import AtollError

ROOT = Path(__file__).resolve().parent.parent

# A per-run cache for artifacts shared between tests (composed trees, images).
# Keyed by the inputs' hash inside each fixture; kept across runs locally
# (ATOLL_TEST_CACHE) so that a developer's second run is fast. CI starts clean.
CACHE = Path(os.environ.get("ATOLL_TEST_CACHE", "/var/tmp/atoll-test-cache"))


# Property tests are derandomized (a fixed seed): CI runs the same examples every time, and
# a failure seen once is seen again. ATOLL_HYPOTHESIS=explore runs random examples locally.
settings.register_profile(
    "atoll", derandomize=True, database=None, deadline=None, max_examples=200,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
settings.register_profile("explore", deadline=None, max_examples=2000,
                          suppress_health_check=[HealthCheck.too_slow,
                                                 HealthCheck.function_scoped_fixture])
settings.load_profile("explore" if os.environ.get("ATOLL_HYPOTHESIS") == "explore" else "atoll")


@pytest.fixture(scope="session")
def artifact_cache() -> Path:
    CACHE.mkdir(parents=True, exist_ok=True)
    return CACHE


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Tests under tests/integration and tests/vm carry their tier marker automatically.
    for item in items:
        parts = Path(str(item.fspath)).parts
        if "integration" in parts:
            item.add_marker(pytest.mark.integration)
        if "vm" in parts:
            item.add_marker(pytest.mark.vm)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item,
                              call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
    # An AtollError's details (a VM's console tail, a command's stderr) are not in its
    # message: show them with the failure, so that a CI log alone says what happened.
    report = yield
    exc = call.excinfo.value if call.excinfo is not None else None
    if isinstance(exc, AtollError) and exc.details:
        report.sections.append((f"{type(exc).__name__} details", exc.details))
    return report


@pytest.fixture
def forks(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The pids of the children this process forks during the test (``os.fork``
    recorded, not replaced)."""
    pids: list[int] = []
    real_fork = os.fork

    def fork() -> int:
        pid = real_fork()
        if pid:
            pids.append(pid)
        return pid

    monkeypatch.setattr(os, "fork", fork)
    return pids

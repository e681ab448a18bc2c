"""Container runtimes: a small interface and a registry.

A backend is a class implementing :class:`Runtime`, registered by name with
:func:`register`. Docker (docker-py) is the first; Podman plugs in beside it
(``atoll.apps.runtime.podman``) without touching the manager.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Protocol

from atoll.apps.plan import ContainerPlan
from atoll.core.errors import InputError

__all__ = [
    "ContainerInfo",
    "ExecResult",
    "Runtime",
    "get_runtime",
    "register",
    "runtime_names",
]


@dataclass(frozen=True)
class ContainerInfo:
    """What atoll reads back about a container (never its environment)."""

    id: str
    name: str
    image: str
    status: str  # created, running, exited, restarting, paused, dead
    health: str | None  # starting, healthy, unhealthy, or None without a healthcheck
    started_at: str | None
    exit_code: int | None
    labels: dict[str, str]


@dataclass(frozen=True)
class ExecResult:
    """The outcome of a command run inside a container."""

    exit_code: int
    stdout: bytes
    stderr: bytes


class Runtime(Protocol):
    """The operations atoll needs from a container engine."""

    name: str

    def ping(self) -> None:
        """Raise RuntimeBackendError when the engine is unreachable."""

    def image_exists(self, ref: str) -> bool:
        """Whether image ``ref`` is present locally."""

    def load_image(self, archive: Path) -> list[str]:
        """Load a ``docker save``-format tar; return the tags loaded."""

    def ensure_network(self, name: str, *, internal: bool, labels: dict[str, str]) -> None:
        """Create the app's network unless it exists."""

    def remove_network(self, name: str) -> None:
        """Remove a network (missing is fine)."""

    def create(self, plan: ContainerPlan) -> str:
        """Create (not start) the container; return its id."""

    def start(self, name: str) -> None:
        """Start a created or stopped container."""

    def stop(self, name: str, timeout: int) -> None:
        """SIGTERM, wait up to ``timeout`` seconds, then SIGKILL."""

    def remove(self, name: str) -> None:
        """Remove a stopped container (missing is fine)."""

    def inspect(self, name: str) -> ContainerInfo | None:
        """The container's state, or None when it does not exist."""

    def containers(self, labels: dict[str, str]) -> list[ContainerInfo]:
        """Containers carrying all of ``labels``."""

    def logs(self, name: str, tail: int | None) -> bytes:
        """stdout and stderr of the container, interleaved."""

    def exec(
        self,
        name: str,
        argv: list[str],
        *,
        stdin: Iterable[bytes] | None = None,
        stdout: IO[bytes] | None = None,
        user: str | None = None,
        timeout: float = 600,
    ) -> ExecResult:
        """Run ``argv`` in the container; stream ``stdin`` in and stdout to a file if given."""


_REGISTRY: dict[str, Callable[[str | None], Runtime]] = {}


def register(name: str, factory: Callable[[str | None], Runtime]) -> None:
    """Register a backend factory taking the engine's URL (None: its default)."""
    _REGISTRY[name] = factory


def runtime_names() -> list[str]:
    """Names of the registered backends."""
    _load_builtin()
    return sorted(_REGISTRY)


def _load_builtin() -> None:
    if "docker" not in _REGISTRY:
        from atoll.apps.runtime import docker as _docker  # noqa: F401  (registers itself)


def get_runtime(name: str = "docker", url: str | None = None) -> Runtime:
    """A connected backend ``name`` (``url`` e.g. ``unix:///var/run/docker.sock``).

    Raises:
        InputError: no such backend.
        RuntimeBackendError: the engine is unreachable.
    """
    _load_builtin()
    try:
        factory = _REGISTRY[name]
    except KeyError:
        raise InputError(
            f"no container runtime named {name!r}",
            resolution=f"available: {', '.join(sorted(_REGISTRY))}",
        ) from None
    rt = factory(url)
    rt.ping()
    return rt

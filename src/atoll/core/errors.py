"""One error hierarchy, written for the person at the keyboard.

Every error carries ``brief`` (what happened), ``details`` (why, e.g. a tool's
stderr) and ``resolution`` (what to do). The branches say who is at fault; the
CLI maps each branch to an exit code in one place (``atoll.cli``).

    AtollError
    ├── InputError          bad input: a spec, an argument, a file the user gave
    │   └── SpecError       a YAML spec with located problems (file:line: field: problem)
    ├── StoreError          the content-addressed store (missing or corrupt object)
    │   └── CorruptObjectError
    ├── RepositoryError     the update repository (signatures, metadata, targets)
    │   └── MetadataExpiredError
    ├── DownloadError       network and transfer problems
    ├── HostStateError      the sysroot or host is not in a state that allows this
    ├── RuntimeBackendError a container runtime, etcd, or another daemon failed
    └── ToolError           an external command failed (argv, exit code, stderr)
"""

from __future__ import annotations

__all__ = [
    "AtollError",
    "CorruptObjectError",
    "DownloadError",
    "HostStateError",
    "InputError",
    "MetadataExpiredError",
    "RepositoryError",
    "RuntimeBackendError",
    "SpecError",
    "StoreError",
    "ToolError",
    "error_class",
]


class AtollError(Exception):
    """Root of every error atoll raises on purpose."""

    def __init__(self, brief: str, *, details: str | None = None, resolution: str | None = None):
        super().__init__(brief)
        self.brief = brief
        self.details = details
        self.resolution = resolution

    def __str__(self) -> str:
        return self.brief

    def to_dict(self) -> dict[str, str | None]:
        return {
            "error": type(self).__name__,
            "brief": self.brief,
            "details": self.details,
            "resolution": self.resolution,
        }


class InputError(AtollError):
    """The user gave atoll something it cannot use."""


class SpecError(InputError):
    """A YAML spec failed validation; ``problems`` are ``file:line: field: problem`` lines."""

    def __init__(self, problems: list[str], *, resolution: str | None = None):
        brief = problems[0] if len(problems) == 1 else f"{len(problems)} problems in spec"
        super().__init__(brief, details="\n".join(problems), resolution=resolution)
        self.problems = problems


class StoreError(AtollError):
    """The content-addressed store is missing something or is inconsistent."""


class CorruptObjectError(StoreError):
    """An object's content no longer matches its id."""


class RepositoryError(AtollError):
    """The update repository or its signed metadata cannot be trusted or used."""


class MetadataExpiredError(RepositoryError):
    """Signed metadata expired (freeze attack, or a host offline for too long)."""


class DownloadError(AtollError):
    """A transfer failed or was refused."""


class HostStateError(AtollError):
    """The sysroot or host is not in a state that allows the operation."""


class RuntimeBackendError(AtollError):
    """A daemon atoll drives (Docker, Podman, etcd...) failed or is unreachable."""


class ToolError(AtollError):
    """An external command failed."""

    def __init__(
        self,
        brief: str,
        *,
        argv: list[str],
        returncode: int,
        stderr: str = "",
        resolution: str | None = None,
    ):
        tail = stderr.strip().splitlines()[-20:]
        details = f"command: {' '.join(argv)}\nexit code: {returncode}"
        if tail:
            details += "\n" + "\n".join(tail)
        super().__init__(brief, details=details, resolution=resolution)
        self.argv = argv
        self.returncode = returncode
        self.stderr = stderr


def error_class(name: str) -> type[AtollError]:
    """The error class named ``name`` (as ``AtollError.to_dict`` writes it), for errors
    that crossed a process boundary. Classes whose constructor differs (SpecError,
    ToolError) map to their nearest ancestor that takes ``brief, details, resolution``.
    """
    stack: list[type[AtollError]] = [AtollError]
    while stack:
        cls = stack.pop()
        if cls.__name__ == name:
            while cls.__init__ is not AtollError.__init__:
                cls = cls.__bases__[0]
            return cls
        stack.extend(cls.__subclasses__())
    return AtollError

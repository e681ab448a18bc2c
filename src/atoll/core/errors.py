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
    │   ├── BusyError       another atoll command holds the lock (try again)
    │   ├── DamagedStateError  a state file atoll wrote does not read (names it, says
    │   │                   what to do)
    │   └── DiskFullError   a filesystem filled up; nothing was changed
    ├── RuntimeBackendError a container runtime, etcd, or another daemon failed
    └── ToolError           an external command failed (argv, exit code, stderr)
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

__all__ = [
    "NOTHING_NEW",
    "AtollError",
    "BusyError",
    "CorruptObjectError",
    "DamagedStateError",
    "DiskFullError",
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

# Not an error: the exit status of `atoll update check` (and `db diff`) when there is
# nothing new, as rpm-ostree's `upgrade --check` (77). Defined here so that atolld, which
# runs `atoll update check` as a child, reads it from the same place the CLI does.
NOTHING_NEW = 77


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
    """A spec failed validation; ``problems`` are ``file:line: field: problem`` lines.

    ``located`` holds the same problems as ``SpecError.Problem`` records (``line`` is
    None for a format without lines, e.g. ``file: field: problem`` from a TOML config);
    ``to_dict`` (the ``--json`` error) lists them under ``problems``. One problem is the
    brief itself; several are briefed as ``N problems in FILE`` with one detail line each.
    """

    @dataclass(frozen=True)
    class Problem:
        """One located problem: ``file:line: field: problem``."""

        file: str
        line: int | None
        field: str
        problem: str

        def __str__(self) -> str:
            where = self.file if self.line is None else f"{self.file}:{self.line}"
            return f"{where}: {self.field}: {self.problem}"

        @classmethod
        def parse(cls, text: str) -> SpecError.Problem:
            """A problem given as a line of text, split into its parts where it can be."""
            m = re.match(r"(?P<file>.+?):(?P<line>\d+): (?P<field>.+?): (?P<problem>.*)", text,
                         re.DOTALL)
            m = m or re.match(r"(?P<file>.+?): (?P<field>.+?): (?P<problem>.*)", text, re.DOTALL)
            if m is None:
                return cls("", None, "", text)
            line = m.groupdict().get("line")
            return cls(m["file"], int(line) if line else None, m["field"], m["problem"])

    def __init__(
        self, problems: Sequence[str | SpecError.Problem], *, resolution: str | None = None
    ):
        self.located = [
            p if isinstance(p, SpecError.Problem) else SpecError.Problem.parse(p)
            for p in problems
        ]
        self.problems = [str(p) for p in problems]
        files = {p.file for p in self.located}
        if len(self.problems) == 1:
            brief, details = self.problems[0], None
        else:
            where = files.pop() if len(files) == 1 and "" not in files else "the spec"
            brief, details = f"{len(self.problems)} problems in {where}", "\n".join(self.problems)
        super().__init__(brief, details=details, resolution=resolution)

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "problems": [asdict(p) for p in self.located]}


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


class BusyError(HostStateError):
    """Another atoll command holds the sysroot or repository lock; trying again later works."""


class DamagedStateError(HostStateError):
    """A state file atoll wrote (update.json, deployments.json, run/atoll/booted...)
    no longer reads as it should; ``path`` names it, the resolution says what to do."""

    def __init__(self, brief: str, *, details: str | None = None,
                 resolution: str | None = None, path: str = ""):
        super().__init__(brief, details=details, resolution=resolution)
        self.path = path


class DiskFullError(HostStateError):
    """A filesystem filled up during a write; what was half-written has been removed."""


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

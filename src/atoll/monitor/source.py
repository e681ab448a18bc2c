"""Where the agent reads host data from: a root directory, commands, statvfs.

:class:`HostSource` is the seam that makes the Linux sections testable: unit
tests point it at a directory with fake ``proc/``, ``sys/`` and ``etc/`` files,
inject command outputs and ``statvfs`` results; the agent uses the real host.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from atoll.core.run import CLEAN_PATH, run

__all__ = ["CommandRunner", "HostSource", "SectionSkipped", "StatVfs"]

CommandRunner = Callable[[Sequence[str]], str | None]


class SectionSkipped(Exception):
    """A section does not apply to this host (e.g. no systemd as PID 1)."""


class StatVfs:
    """The few ``statvfs`` fields df needs."""

    __slots__ = ("f_bavail", "f_bfree", "f_blocks", "f_favail", "f_ffree", "f_files", "f_frsize")

    def __init__(self, f_frsize: int, f_blocks: int, f_bfree: int, f_bavail: int,
                 f_files: int, f_ffree: int, f_favail: int | None = None):
        self.f_frsize = f_frsize
        self.f_blocks = f_blocks
        self.f_bfree = f_bfree
        self.f_bavail = f_bavail
        self.f_files = f_files
        self.f_ffree = f_ffree
        self.f_favail = f_ffree if f_favail is None else f_favail


class HostSource:
    """Host data under ``root`` (``/`` on a real host).

    Args:
        root: the directory that holds ``proc/``, ``sys/`` and ``etc/``.
        commands: argv -> output (None: the command is missing). Default: run
            the real command through :func:`atoll.core.run.run` when ``root`` is
            ``/``, else report every command as missing.
        statvfs: mount point -> :class:`StatVfs`; default ``os.statvfs`` under ``root``.
        clock: seconds since the epoch.
        command_timeout: seconds a real command may take.
    """

    def __init__(
        self,
        root: Path = Path("/"),
        *,
        commands: CommandRunner | Mapping[str, str] | None = None,
        statvfs: Callable[[str], StatVfs | os.statvfs_result] | None = None,
        clock: Callable[[], float] = time.time,
        command_timeout: float = 5.0,
    ):
        self.root = Path(root)
        self._commands = commands
        self._statvfs = statvfs
        self.clock = clock
        self.command_timeout = command_timeout

    def path(self, rel: str) -> Path:
        """The host path ``rel`` (absolute on the host) under ``root``."""
        return self.root / rel.lstrip("/")

    def read(self, rel: str) -> str:
        """Read a text file of the host (raises OSError when missing)."""
        return self.path(rel).read_text(encoding="utf-8", errors="replace")

    def read_or(self, rel: str, default: str = "") -> str:
        """Read a text file, or ``default`` when it cannot be read."""
        try:
            return self.read(rel)
        except OSError:
            return default

    def exists(self, rel: str) -> bool:
        return self.path(rel).exists()

    def listdir(self, rel: str) -> list[str]:
        try:
            return sorted(os.listdir(self.path(rel)))
        except OSError:
            return []

    def command(self, argv: Sequence[str], *, check: bool = True) -> str | None:
        """The stdout of a host command, or None when the command is unavailable.

        Args:
            argv: the command line.
            check: raise when the command exits non-zero (else return its stdout).

        Raises:
            ToolError: the command exists but failed or timed out.
        """
        if isinstance(self._commands, Mapping):
            return self._commands.get(" ".join(argv))
        if self._commands is not None:
            return self._commands(argv)
        if self.root != Path("/"):
            return None
        if shutil.which(argv[0], path=CLEAN_PATH) is None:
            return None
        proc = run(list(argv), timeout=self.command_timeout, what=argv[0], check=check)
        return proc.stdout.decode("utf-8", "replace")

    def has_command(self, name: str) -> bool:
        """Whether ``name`` can run (for injected commands: whether any is known)."""
        if isinstance(self._commands, Mapping):
            return any(k.split()[0] == name for k in self._commands)
        if self._commands is not None:
            return True
        return self.root == Path("/") and shutil.which(name, path=CLEAN_PATH) is not None

    def statvfs(self, mountpoint: str) -> StatVfs | os.statvfs_result:
        if self._statvfs is not None:
            return self._statvfs(mountpoint)
        return os.statvfs(self.path(mountpoint))



"""The one gateway for external commands.

argv lists only (never shell strings), ``os.fspath`` for paths, a clean
environment, the command line logged at debug level, and a typed
:class:`~atoll.core.errors.ToolError` carrying the tool's stderr on failure.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO

from atoll.core.errors import InputError, ToolError
from atoll.core.fsutil import LIBC

__all__ = ["CLEAN_PATH", "clean_env", "kill_with_parent", "pipe", "require_tool", "run", "spawn"]

log = logging.getLogger("atoll.run")

CLEAN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

Arg = str | os.PathLike[str]


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """A minimal, predictable environment for child processes."""
    env = {"PATH": CLEAN_PATH, "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8", "HOME": "/root"}
    for key in ("TMPDIR", "SOURCE_DATE_EPOCH", "http_proxy", "https_proxy", "no_proxy"):
        if key in os.environ:
            env[key] = os.environ[key]
    if extra:
        env.update(extra)
    return env


def require_tool(name: str, *, package: str | None = None) -> str:
    """Return the path of ``name`` or raise an InputError saying how to install it."""
    path = shutil.which(name, path=CLEAN_PATH + ":" + os.environ.get("PATH", ""))
    if path is None:
        raise InputError(
            f"{name}: command not found",
            resolution=f"install it: apt-get install {package or name}",
        )
    return path


def _argv(argv: Sequence[Arg]) -> list[str]:
    return [os.fspath(a) for a in argv]


def run(
    argv: Sequence[Arg],
    *,
    check: bool = True,
    capture: bool = True,
    input: bytes | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float | None = None,
    what: str | None = None,
    resolution: str | None = None,
    stdout: IO[bytes] | int | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run a command to completion.

    Args:
        argv: the command and its arguments; paths are converted with ``os.fspath``.
        check: raise :class:`ToolError` on a non-zero exit.
        capture: capture stdout and stderr (else they go to ours).
        input: bytes fed to stdin.
        env: extra environment on top of :func:`clean_env`.
        what: a short description used in the error ("compose the rootfs").
        resolution: a hint attached to the error.
        stdout: redirect stdout to this file instead of capturing it.

    Raises:
        ToolError: the command failed (and ``check`` is true), or timed out.

    Returns:
        The completed process.
    """
    args = _argv(argv)
    log.debug("run: %s", " ".join(args))
    try:
        proc = subprocess.run(
            args,
            input=input,
            stdout=stdout if stdout is not None else (subprocess.PIPE if capture else None),
            stderr=subprocess.PIPE if capture else None,
            env=clean_env(env),
            cwd=cwd,
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError as exc:
        raise ToolError(
            f"{args[0]}: command not found",
            argv=args,
            returncode=127,
            resolution=resolution or f"install {args[0]} (apt-get install ...)",
        ) from exc
    except subprocess.TimeoutExpired as exc:
        raise ToolError(
            f"{what or args[0]}: timed out after {timeout}s", argv=args, returncode=-1
        ) from exc
    if check and proc.returncode != 0:
        stderr = (proc.stderr or b"").decode("utf-8", "replace")
        raise ToolError(
            f"{what or args[0]} failed (exit code {proc.returncode})",
            argv=args,
            returncode=proc.returncode,
            stderr=stderr,
            resolution=resolution,
        )
    return proc


def pipe(
    argv: Sequence[Arg],
    chunks: Iterable[bytes | memoryview],
    *,
    what: str | None = None,
    resolution: str | None = None,
    read_size: int = 1 << 20,
) -> Iterator[bytes]:
    """Run a filter command (``gzip -n -9``, ``xz -c``) over a stream: ``chunks`` go to
    its stdin (from a thread), its stdout comes back as it is produced.

    Memory is bounded whatever the stream's length: one chunk in flight each way
    (and the pipes' buffers); the command's stderr goes to a temp file. Closing the
    returned iterator early kills the command.

    Args:
        argv: the command and its arguments (paths through ``os.fspath``).
        chunks: the input, consumed once; an exception it raises is raised here
            once the command's output ends.
        read_size: at most this many bytes per piece of output.

    Raises:
        ToolError: the command could not start or exited non-zero (with its stderr).

    Returns:
        An iterator over the command's output, in pieces of at most ``read_size``.
    """
    args = _argv(argv)
    log.debug("pipe: %s", " ".join(args))
    return _pipe(args, chunks, what or args[0], resolution, read_size)


def _pipe(args: list[str], chunks: Iterable[bytes | memoryview], what: str,
          resolution: str | None,
          read_size: int) -> Iterator[bytes]:
    with tempfile.TemporaryFile() as err:
        try:
            proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=err, env=clean_env())
        except FileNotFoundError as exc:
            raise ToolError(f"{args[0]}: command not found", argv=args, returncode=127,
                            resolution=resolution or f"install {args[0]} (apt-get install ...)"
                            ) from exc
        assert proc.stdin is not None and proc.stdout is not None
        failed: list[BaseException] = []

        def feed() -> None:
            assert proc.stdin is not None
            try:
                for chunk in chunks:
                    proc.stdin.write(chunk)
                    del chunk  # not held while the next one is made
            except BrokenPipeError:
                pass  # the command ended early: its exit code tells why
            except BaseException as exc:  # raised in the reader's thread below
                failed.append(exc)
            finally:
                with contextlib.suppress(OSError):
                    proc.stdin.close()

        feeder = threading.Thread(target=feed, name=f"pipe {what}", daemon=True)
        feeder.start()
        try:
            out = proc.stdout
            assert isinstance(out, io.BufferedReader)
            while data := out.read1(read_size):
                yield data
            code = proc.wait()
            feeder.join()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.stdout.close()
            feeder.join(timeout=5)
        if failed:
            raise failed[0]
        if code != 0:
            err.seek(0)
            raise ToolError(f"{what} failed (exit code {code})", argv=args, returncode=code,
                            stderr=err.read(64 << 10).decode("utf-8", "replace"),
                            resolution=resolution)


def spawn(
    argv: Sequence[Arg],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    stdout: IO[bytes] | int | None = subprocess.DEVNULL,
    stderr: IO[bytes] | int | None = subprocess.DEVNULL,
    stdin: IO[bytes] | int | None = subprocess.DEVNULL,
    die_with_parent: bool = False,
) -> subprocess.Popen[bytes]:
    """Start a long-running command (a daemon, a VM) and return its handle.

    ``die_with_parent``: the kernel kills it (SIGKILL) when the thread that
    started it ends, however it ends (a VM must not outlive a killed test);
    start such commands from a long-lived thread.
    """
    args = _argv(argv)
    log.debug("spawn: %s", " ".join(args))
    return subprocess.Popen(
        args, env=clean_env(env), cwd=cwd, stdout=stdout, stderr=stderr, stdin=stdin,
        preexec_fn=kill_with_parent if die_with_parent else None,
    )


_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def kill_with_parent() -> None:
    """Have the kernel kill this process (SIGKILL) when the thread that started it
    ends, however it ends (``PR_SET_PDEATHSIG``). Safe in a forked child: no import,
    no lock."""
    LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)

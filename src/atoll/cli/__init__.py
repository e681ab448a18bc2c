"""The ``atoll`` command: thin argument parsing over the library.

Each module in this package that defines ``register(subparsers)`` adds its
subcommands; they are discovered at start-up, so a layer's commands live in
that layer's own CLI module. Exit codes are chosen here and nowhere else.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import importlib
import json
import logging
import os
import pkgutil
import re
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from atoll import __version__
from atoll.core import errors
from atoll.core.log import setup_logging
from atoll.core.text import printable, terminal_safe

__all__ = ["EXIT_CODES", "emit", "main"]

log = logging.getLogger("atoll")

# Most specific first: the first isinstance match wins.
EXIT_CODES: list[tuple[type[errors.AtollError], int]] = [
    (errors.MetadataExpiredError, 5),
    (errors.CorruptObjectError, 3),
    (errors.InputError, 2),
    (errors.StoreError, 3),
    (errors.RepositoryError, 4),
    (errors.DownloadError, 6),
    (errors.BusyError, 75),  # EX_TEMPFAIL: another command holds the lock; try again
    (errors.DamagedStateError, 7),
    (errors.HostStateError, 7),
    (errors.RuntimeBackendError, 8),
    (errors.ToolError, 9),
    (errors.AtollError, 1),
]

Handler = Callable[[argparse.Namespace], int | None]


def exit_code_for(exc: errors.AtollError) -> int:
    for cls, code in EXIT_CODES:
        if isinstance(exc, cls):
            return code
    return 1


def emit(args: argparse.Namespace, data: Any, human: str | Callable[[], str] | None = None) -> None:
    """Print ``data`` as JSON under ``--json``, else the human text (or pretty JSON).

    The human text goes through :func:`atoll.core.text.terminal_safe`: whatever a
    command prints (names, URLs, reasons from files), no escape sequence reaches the
    terminal. JSON escapes control characters itself.
    """
    if getattr(args, "json", False) or human is None:
        print(json.dumps(data, indent=2, sort_keys=True, default=str))
    else:
        text = human() if callable(human) else human
        if text:
            print(terminal_safe(text))


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                        help="machine-readable output on stdout")


# Long-running commands whose memory matters, and the host's update path (whose start-up
# is most of a small update's time on a slow CPU), load only their own CLI module.
# Each names the CLI modules that register the command: a module adding to another's
# group (``atoll update apply``, from ``agent``) is named; ``fleet_*`` modules follow
# ``fleet``. A test checks every command parses the same on its fast path.
FAST_PATH: dict[str, tuple[str, ...]] = {
    "checkmk-agent": ("monitor",), "metrics": ("monitor",), "fleetlock": ("fleetlock",),
    "fleet": ("fleet",), "update": ("update", "agent"), "remote": ("update",),
    "status": ("status",), "agent": ("agent",),
}


# Global options are accepted anywhere on the command line (before or after the
# subcommand, as systemctl and rpm-ostree accept them); they are moved to the front.
GLOBAL_FLAGS = frozenset({"--json", "--debug", "-q", "--quiet", "--no-wait"})
GLOBAL_VALUED = frozenset({"--sysroot", "--lock-timeout"})
EXIT_INTERNAL = 70  # EX_SOFTWARE: a bug in atoll (the traceback with --debug)
EXIT_INTERRUPTED = 130
NOTHING_NEW = errors.NOTHING_NEW  # `update check`, `db diff`: nothing new (77)
# The `error` field of the --json error for the exits no AtollError class stands for.
EXIT_ERROR_NAMES = {EXIT_INTERNAL: "InternalError", EXIT_INTERRUPTED: "Interrupted"}
# Commands whose output has no JSON form (roff, a shell script, Checkmk's or
# Prometheus' own formats): `--json` is refused rather than silently ignored.
NO_JSON = frozenset({"man", "completion", "checkmk-agent", "metrics"})


def hoist_globals(argv: Sequence[str]) -> list[str]:
    """``argv`` with every global option moved before the subcommand (not after ``--``)."""
    front: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(argv):
        tok = argv[i]
        if tok == "--":
            rest += argv[i:]
            break
        name = tok.split("=", 1)[0]
        if name in GLOBAL_VALUED:
            if "=" in tok or i + 1 == len(argv):
                front.append(tok)
            else:
                front += [tok, argv[i + 1]]
                i += 1
        elif tok in GLOBAL_FLAGS:
            front.append(tok)
        else:
            rest.append(tok)
        i += 1
    return front + rest


def _command_of(argv: Sequence[str]) -> str | None:
    """The subcommand name in ``argv`` (skipping global options and their values)."""
    it = iter(hoist_globals(argv))
    for tok in it:
        if tok in GLOBAL_VALUED:
            next(it, None)
        elif not tok.startswith("-"):
            return tok
    return None


# What each exit status means. `atoll --help`, `atoll man` and docs/commands.md show it;
# the error classes behind a code come from EXIT_CODES (a test keeps the two in step).
EXIT_MEANINGS: dict[int, str] = {
    0: "success",
    1: "other error",
    2: "bad input, or a usage error",
    3: "store: an object is missing or corrupt",
    4: "the update repository or its signatures cannot be used",
    5: "signed metadata expired (a freeze attack, or a host offline too long)",
    6: "a download failed",
    7: "the host's state does not allow it, or a disk filled up",
    8: "a daemon atoll drives failed (Docker, etcd...)",
    9: "an external tool failed (its stderr is shown)",
    EXIT_INTERNAL: "internal error: a bug in atoll (the traceback with --debug)",
    75: "busy: another command holds the sysroot or repository lock; try again",
    NOTHING_NEW: "nothing new: no update (`update check`), nothing to compare (`db diff`)",
    EXIT_INTERRUPTED: "interrupted (Ctrl-C)",
    141: "stdout was closed (its reader, such as `head`, left early)",
}


def exit_status_table() -> list[tuple[int, str, list[str]]]:
    """Every exit status of ``atoll``: (code, meaning, the error classes exiting with it)."""
    classes: dict[int, list[str]] = {}
    for cls, code in reversed(EXIT_CODES):
        classes.setdefault(code, []).append(cls.__name__)
    for code, name in EXIT_ERROR_NAMES.items():
        classes.setdefault(code, []).append(name)
    return [(code, EXIT_MEANINGS.get(code, "error"), classes.get(code, []))
            for code in sorted(set(EXIT_MEANINGS) | set(classes))]


def _exit_epilog() -> str:
    return "exit status:\n" + "\n".join(f"  {code:>3}  {meaning}"
                                         for code, meaning, _ in exit_status_table())


class UsageError(Exception):
    """A command line argparse refuses (exit 2; with --json, a JSON error on stdout)."""

    def __init__(self, parser: argparse.ArgumentParser, message: str):
        super().__init__(message)
        self.parser = parser
        self.message = message


class _Parser(argparse.ArgumentParser):
    """argparse, with usage errors raised to :func:`main` (which reports them as every
    other error, as JSON too) instead of printed and exited on the spot."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(self, message)


def _sysroot(text: str) -> Path:
    if not text.strip():
        raise argparse.ArgumentTypeError("must name a directory (default: /)")
    return Path(text)


# Option types whose values are paths (completion offers files or directories).
PATH_TYPES: tuple[Callable[[str], Path], ...] = (Path, _sysroot)


def build_parser(only: tuple[str, ...] | None = None) -> argparse.ArgumentParser:
    """The CLI's parser; with ``only``, just the commands of those CLI modules (and of
    the modules named ``<one of them>_*``): :data:`FAST_PATH`."""
    parser = _Parser(
        prog="atoll",
        description="Image-based Debian for database servers: compose, store, deploy, roll back.",
        epilog=_exit_epilog(), formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"atoll {__version__}")
    parser.add_argument("--sysroot", type=_sysroot, default=Path("/"),
                        help="the host's root directory (default: /)")
    parser.add_argument("--json", action="store_true", help="machine-readable output on stdout")
    parser.add_argument("--debug", action="store_true",
                        help="log every command atoll runs; tracebacks for internal errors")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    parser.add_argument("--no-wait", action="store_true",
                        help="fail at once (exit 75) when another atoll command holds the "
                        "sysroot or repository lock, instead of waiting")
    parser.add_argument("--lock-timeout", metavar="SECONDS",
                        help="how long to wait for a lock another command holds (default: "
                        "1800)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    import atoll.cli as pkg

    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda m: m.name):
        # a fast path loads its module and the modules adding to its group (fleet_services)
        if info.name.startswith("_") or (only is not None and not any(
                info.name == m or info.name.startswith(m + "_") for m in only)):
            continue
        module = importlib.import_module(f"atoll.cli.{info.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(sub, _common)
    return parser


def _report(as_json: bool, exc: errors.AtollError, code: int, name: str | None = None) -> None:
    """The error on stderr (one line, details indented, a hint) and, with --json, as
    the JSON error on stdout (``name``: its ``error`` field, default the class)."""
    if as_json:
        doc = exc.to_dict() | {"exit_code": code}
        if name:
            doc["error"] = name
        with contextlib.suppress(OSError):
            print(json.dumps(doc, indent=2, sort_keys=True), flush=True)
    print(terminal_safe(f"error: {exc.brief}"), file=sys.stderr)
    if exc.details:
        for line in exc.details.splitlines():
            print(terminal_safe(f"  {line}"), file=sys.stderr)
    if exc.resolution:
        print(terminal_safe(f"hint: {exc.resolution}"), file=sys.stderr)


# A temp file atoll writes beside its target (atoll.core.fsutil: ".NAME.XXXXXXXX.tmp",
# ".NAME.PID.tmp"): an error names the target, which is what the user knows.
_TEMP_NAME = re.compile(r"^\.(?P<name>.+)\.[A-Za-z0-9_]+\.tmp$")


def _target(filename: object) -> str | None:
    if filename is None:
        return None
    path = Path(os.fsdecode(filename))  # type: ignore[arg-type]
    m = _TEMP_NAME.match(path.name)
    return str(path.parent / m["name"]) if m else str(path)


def _permission_hint(where: str | None) -> str:
    """Root can write anything but read-only mounts; a user who is not root either needs
    root (the sysroot, /atoll...) or owns the place and must fix its permissions."""
    if os.geteuid() == 0:
        return "check the file's permissions, attributes (lsattr) and mounts (read-only?)"
    probe = Path(where) if where else None
    while probe is not None and not os.path.lexists(probe) and probe != probe.parent:
        probe = probe.parent
    try:
        st = os.lstat(probe) if probe is not None else None
    except OSError:
        st = None
    if st is None or st.st_uid == 0:
        return "run as root (sudo atoll ...)"
    return (f"you are not root; {printable(str(probe))} belongs to uid {st.st_uid} (mode "
            f"{st.st_mode & 0o7777:04o}): fix its permissions, or use a directory you can "
            "write")


def os_error(exc: OSError) -> errors.AtollError:
    """The atoll error for an OSError no layer turned into one (one line, a hint)."""
    where = _target(exc.filename)
    shown = printable(where) if where else None
    what = f"{exc.strerror or exc}" + (f": {shown}" if shown else "")
    if exc.errno in (errno.EACCES, errno.EPERM):
        return errors.HostStateError(f"permission denied: {shown}" if shown else
                                     "permission denied", resolution=_permission_hint(where))
    if exc.errno == errno.EROFS:
        return errors.HostStateError(f"read-only file system: {shown}" if shown else what,
                                     resolution="the filesystem is mounted read-only (on a "
                                     "host, /usr is: atoll writes under /atoll, /boot, /etc "
                                     "and /var)")
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return errors.DiskFullError(f"disk full: {what}",
                                    resolution="free space and run the command again")
    if exc.errno == errno.ENAMETOOLONG:
        return errors.InputError(f"name too long: {shown}" if shown else "name too long",
                                 resolution="a file name holds at most 255 bytes: use a "
                                 "shorter name")
    return errors.HostStateError(what, resolution="run with --debug for the traceback")


def _usage_error(exc: UsageError) -> errors.InputError:
    prog = exc.parser.prog
    return errors.InputError(f"{prog}: {exc.message}", details=exc.parser.format_usage().strip(),
                             resolution=f"see `{prog} --help`")


def main(argv: Sequence[str] | None = None) -> int:
    argv = hoist_globals(list(sys.argv[1:] if argv is None else argv))
    # what is printed for people never raises on an odd terminal encoding (LANG=C)
    with contextlib.suppress(AttributeError, ValueError):
        sys.stdout.reconfigure(errors="backslashreplace")  # type: ignore[union-attr]
        sys.stderr.reconfigure(errors="backslashreplace")  # type: ignore[union-attr]
    command = _command_of(argv)
    # --json before the usage is known: a usage error is then a JSON error too
    as_json = "--json" in argv[: argv.index("--")] if "--" in argv else "--json" in argv
    args: argparse.Namespace | None = None
    try:
        parser = build_parser(FAST_PATH.get(command or ""))
        args = parser.parse_args(argv)
        as_json = bool(getattr(args, "json", False))
        setup_logging(debug=args.debug, quiet=args.quiet)
        if not (args.quiet or as_json):
            from atoll.core import progress

            progress.enable()  # bars on stderr, only if it is a terminal (atoll.core.progress)
        if as_json and command in NO_JSON:
            raise errors.InputError(f"--json: `atoll {command}` has no JSON output",
                                    resolution="run it without --json")
        handler: Handler = args.handler
        if args.no_wait or args.lock_timeout is not None:
            from atoll.core import lock

            lock.set_wait(0.0 if args.no_wait else
                          lock.parse_seconds(args.lock_timeout, "--lock-timeout"))
        rc = handler(args)
        sys.stdout.flush()  # a closed pipe shows here, not at interpreter exit
    except UsageError as exc:
        if not as_json:
            exc.parser.print_usage(sys.stderr)
            print(terminal_safe(f"{exc.parser.prog}: error: {exc.message}"), file=sys.stderr)
            return 2
        _report(True, _usage_error(exc), 2)
        return 2
    except errors.AtollError as exc:
        code = exit_code_for(exc)
        _report(as_json, exc, code)
        return code
    except KeyboardInterrupt:
        if as_json:
            _report(True, errors.AtollError("interrupted"), EXIT_INTERRUPTED,
                    EXIT_ERROR_NAMES[EXIT_INTERRUPTED])
        else:
            print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # `atoll status --json | head -1`: the reader left; end quietly, as cat does.
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except OSError as exc:
        if args is not None and args.debug:
            traceback.print_exc()
        err = os_error(exc)
        code = exit_code_for(err)
        _report(as_json, err, code)
        return code
    except Exception as exc:  # a bug: one line, and the traceback with --debug
        if args is not None and args.debug:
            traceback.print_exc()
        _report(as_json, errors.AtollError(
            f"internal error: {type(exc).__name__}: {exc}",
            resolution="this is a bug in atoll; run again with --debug for the traceback "
            "and report it"), EXIT_INTERNAL, EXIT_ERROR_NAMES[EXIT_INTERNAL])
        return EXIT_INTERNAL
    return rc or 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

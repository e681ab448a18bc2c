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
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from atoll import __version__
from atoll.core import errors
from atoll.core.log import setup_logging
from atoll.core.text import printable

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
    """Print ``data`` as JSON under ``--json``, else the human text (or pretty JSON)."""
    if getattr(args, "json", False) or human is None:
        print(json.dumps(data, indent=2, sort_keys=True, default=str))
    else:
        text = human() if callable(human) else human
        if text:
            print(text)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                        help="machine-readable output on stdout")


# Long-running commands whose memory matters load only their own CLI module.
FAST_PATH = {"checkmk-agent": "monitor", "metrics": "monitor", "fleetlock": "fleetlock"}


# Global options are accepted anywhere on the command line (before or after the
# subcommand, as systemctl and rpm-ostree accept them); they are moved to the front.
GLOBAL_FLAGS = frozenset({"--json", "--debug", "-q", "--quiet", "--no-wait"})
GLOBAL_VALUED = frozenset({"--sysroot", "--lock-timeout"})
EXIT_INTERNAL = 70  # EX_SOFTWARE: a bug in atoll (the traceback with --debug)
NOTHING_NEW = errors.NOTHING_NEW  # `update check`, `db diff`: nothing new (77)


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
    130: "interrupted (Ctrl-C)",
    141: "stdout was closed (its reader, such as `head`, left early)",
}


def exit_status_table() -> list[tuple[int, str, list[str]]]:
    """Every exit status of ``atoll``: (code, meaning, the error classes exiting with it)."""
    classes: dict[int, list[str]] = {}
    for cls, code in reversed(EXIT_CODES):
        classes.setdefault(code, []).append(cls.__name__)
    return [(code, EXIT_MEANINGS.get(code, "error"), classes.get(code, []))
            for code in sorted(set(EXIT_MEANINGS) | set(classes))]


def _exit_epilog() -> str:
    return "exit status:\n" + "\n".join(f"  {code:>3}  {meaning}"
                                         for code, meaning, _ in exit_status_table())


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="atoll",
        description="Image-based Debian for database servers: compose, store, deploy, roll back.",
        epilog=_exit_epilog(), formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"atoll {__version__}")
    parser.add_argument("--sysroot", type=Path, default=Path("/"),
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
        if info.name.startswith("_") or (only is not None and info.name != only):
            continue
        module = importlib.import_module(f"atoll.cli.{info.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(sub, _common)
    return parser


def _report(args: argparse.Namespace | None, exc: errors.AtollError, code: int) -> None:
    if args is not None and getattr(args, "json", False):
        print(json.dumps(exc.to_dict() | {"exit_code": code}, indent=2, sort_keys=True))
    print(f"error: {exc.brief}", file=sys.stderr)
    if exc.details:
        for line in exc.details.splitlines():
            print(f"  {line}", file=sys.stderr)
    if exc.resolution:
        print(f"hint: {exc.resolution}", file=sys.stderr)


def os_error(exc: OSError) -> errors.AtollError:
    """The atoll error for an OSError no layer turned into one (one line, a hint)."""
    where = exc.filename if exc.filename is not None else None
    what = f"{exc.strerror or exc}" + (f": {printable(str(where))}" if where else "")
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return errors.HostStateError(
            (f"permission denied: {printable(str(where))}" if where else "permission denied")
            if exc.errno != errno.EROFS else what,
            resolution="run as root (sudo atoll ...)" if os.geteuid() != 0 else
            "check the file's permissions and mounts")
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return errors.DiskFullError(f"disk full: {what}",
                                    resolution="free space and run the command again")
    return errors.HostStateError(what, resolution="run with --debug for the traceback")


def main(argv: Sequence[str] | None = None) -> int:
    argv = hoist_globals(list(sys.argv[1:] if argv is None else argv))
    command = _command_of(argv)
    parser = build_parser(FAST_PATH.get(command or ""))
    args = parser.parse_args(argv)
    setup_logging(debug=args.debug, quiet=args.quiet)
    if not (args.quiet or getattr(args, "json", False)):
        from atoll.core import progress

        progress.enable()  # bars on stderr, only if it is a terminal (atoll.core.progress)
    handler: Handler = args.handler
    try:
        if args.no_wait or args.lock_timeout is not None:
            from atoll.core import lock

            lock.set_wait(0.0 if args.no_wait else
                          lock.parse_seconds(args.lock_timeout, "--lock-timeout"))
        rc = handler(args)
        sys.stdout.flush()  # a closed pipe shows here, not at interpreter exit
    except errors.AtollError as exc:
        code = exit_code_for(exc)
        _report(args, exc, code)
        return code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `atoll status --json | head -1`: the reader left; end quietly, as cat does.
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except OSError as exc:
        if args.debug:
            traceback.print_exc()
        err = os_error(exc)
        code = exit_code_for(err)
        _report(args, err, code)
        return code
    except Exception as exc:  # a bug: one line, and the traceback with --debug
        if args.debug:
            traceback.print_exc()
        _report(args, errors.AtollError(
            f"internal error: {type(exc).__name__}: {exc}",
            resolution="this is a bug in atoll; run again with --debug for the traceback "
            "and report it"), EXIT_INTERNAL)
        return EXIT_INTERNAL
    return rc or 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

"""The ``atoll`` command: thin argument parsing over the library.

Each module in this package that defines ``register(subparsers)`` adds its
subcommands; they are discovered at start-up, so a layer's commands live in
that layer's own CLI module. Exit codes are chosen here and nowhere else.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import pkgutil
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from atoll import __version__
from atoll.core import errors
from atoll.core.log import setup_logging

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


def _command_of(argv: Sequence[str]) -> str | None:
    """The subcommand name in ``argv`` (skipping global options and their values)."""
    it = iter(argv)
    for tok in it:
        if tok == "--sysroot":
            next(it, None)
        elif not tok.startswith("-"):
            return tok
    return None


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="atoll",
        description="Image-based Debian for database servers: compose, store, deploy, roll back.",
    )
    parser.add_argument("--version", action="version", version=f"atoll {__version__}")
    parser.add_argument("--sysroot", type=Path, default=Path("/"),
                        help="the host's root directory (default: /)")
    parser.add_argument("--json", action="store_true", help="machine-readable output on stdout")
    parser.add_argument("--debug", action="store_true", help="log every command atoll runs")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
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


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = _command_of(argv)
    parser = build_parser(FAST_PATH.get(command or ""))
    args = parser.parse_args(argv)
    setup_logging(debug=args.debug, quiet=args.quiet)
    handler: Handler = args.handler
    try:
        rc = handler(args)
    except errors.AtollError as exc:
        code = exit_code_for(exc)
        if args.json:
            print(json.dumps(exc.to_dict() | {"exit_code": code}, indent=2, sort_keys=True))
        print(f"error: {exc.brief}", file=sys.stderr)
        if exc.details:
            for line in exc.details.splitlines():
                print(f"  {line}", file=sys.stderr)
        if exc.resolution:
            print(f"hint: {exc.resolution}", file=sys.stderr)
        return code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return rc or 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

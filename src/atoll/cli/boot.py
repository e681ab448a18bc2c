"""``atoll boot-complete`` and ``atoll boot status``.

Also runnable as ``python3 -m atoll.cli.boot boot-complete`` (what the
atoll-boot-complete unit does inside images: only stdlib modules are imported).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

__all__ = ["register"]


def _boot_complete(args: argparse.Namespace) -> int:
    from atoll.boot.complete import boot_complete, boot_status
    from atoll.cli import emit

    console = getattr(args, "console", False)

    def markers(event: dict[str, Any]) -> None:
        # Marker lines for the serial console (tests and operators watch them),
        # printed before a rollback reboot is requested.
        print("ATOLL-BOOT-COMPLETE " + json.dumps(event, sort_keys=True), flush=True)
        print("ATOLL-BOOT-STATUS " + json.dumps(boot_status(args.sysroot), sort_keys=True),
              flush=True)

    event = boot_complete(sysroot=args.sysroot, on_event=markers if console else None)
    if console:
        return 0 if event["result"] != "failed" else 1
    emit(args, event, lambda: f"{event['deployment']}: {event['result']}: {event['reason']}")
    return 0 if event["result"] != "failed" else 1


def _status(args: argparse.Namespace) -> int:
    from atoll.boot.complete import boot_status
    from atoll.cli import emit

    st = boot_status(args.sysroot)

    def human() -> str:
        last = st["last_boot"] or {}
        lines = [f"booted:   {st['booted'] or '-'}",
                 f"next:     {st['next'] or '-'}",
                 f"rollback: {st['rollback'] or '-'}"]
        if st["pending"]:
            lines.append(f"on trial: {st['pending']} ({st['tries_left']} of "
                         f"{st['max_tries']} tries left)")
        if last:
            lines.append(f"last boot: {last.get('deployment')} {last.get('result')} "
                         f"at {last.get('time')}: {last.get('reason')}")
        return "\n".join(lines)

    emit(args, st, human)
    return 0


def register(sub: Any, common: Callable[[argparse.ArgumentParser], None]) -> None:
    """Add ``boot-complete`` and ``boot status``."""
    p = sub.add_parser("boot-complete",
                       help="run health checks; mark this boot good or roll back")
    p.add_argument("--console", action="store_true",
                   help="print marker lines for the serial console")
    common(p)
    p.set_defaults(handler=_boot_complete)
    boot = sub.add_parser("boot", help="boot state")
    bsub = boot.add_subparsers(dest="boot_command", metavar="COMMAND")
    bsub.required = True
    s = bsub.add_parser("status", help="booted, next and rollback deployments; last boot")
    common(s)
    s.set_defaults(handler=_status)


def _main(argv: list[str] | None = None) -> int:
    """Entry point with only this module's commands (used inside images)."""
    from atoll.cli import exit_code_for
    from atoll.core.errors import AtollError

    parser = argparse.ArgumentParser(prog="atoll")
    parser.add_argument("--sysroot", type=__import__("pathlib").Path, default="/")
    parser.add_argument("--json", action="store_true")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    register(sub, lambda p: None)
    args = parser.parse_args(argv)
    try:
        rc: int = args.handler(args)
        return rc
    except AtollError as exc:
        print(f"error: {exc.brief}", file=sys.stderr)
        if exc.details:
            print(exc.details, file=sys.stderr)
        return exit_code_for(exc)


if __name__ == "__main__":
    sys.exit(_main())

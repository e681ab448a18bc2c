"""``atoll fleet users add|list``: the web console's local users (docs/console.md).

These run where the control plane's database is (``--db``, as ``atoll fleet db init``):
creating the first console admin needs no running server and no token. The password
is read from ``--password-file`` (a file only its owner may read) or standard input
(a prompt without echo on a terminal), never from the command line.
"""

from __future__ import annotations

import argparse
import datetime as dt
import getpass
import os
import stat
import sys
from pathlib import Path
from typing import Any

from atoll.cli import emit
from atoll.cli.fleet import Common, _add, _database, _db_arg
from atoll.core.errors import HostStateError, InputError

__all__ = ["register_fleet"]


def _password(args: argparse.Namespace) -> str:
    if args.password_file is not None:
        path: Path = args.password_file
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except OSError as exc:
            raise InputError(f"--password-file {path}: {exc.strerror}") from None
        with os.fdopen(fd) as fh:
            mode = os.fstat(fh.fileno()).st_mode
            if stat.S_IMODE(mode) & 0o077:
                raise InputError(f"--password-file {path}: readable by others (mode "
                                 f"{stat.S_IMODE(mode):04o})", resolution=f"chmod 600 {path}")
            text = fh.read(4097)
    elif sys.stdin.isatty():
        text = getpass.getpass(f"password for {args.name}: ")
        if getpass.getpass("again: ") != text:
            raise InputError("the two passwords differ; nothing was changed")
    else:
        text = sys.stdin.read(4097)
    password = text.removesuffix("\n").removesuffix("\r")
    if len(password) > 4096 or "\n" in password:
        raise InputError("the password is one line of at most 4096 characters")
    return password


def _users(args: argparse.Namespace) -> int:
    from atoll.control.console import users
    from atoll.control.errors import ApiError

    password = _password(args) if args.users_command == "add" else ""
    db = _database(args)
    try:
        db.require_current()
        with db.write() as s:
            if args.users_command == "add":
                doc: Any = users.add_user(s, args.name, password, args.role, args.customer,
                                          dt.datetime.now(dt.UTC))
            else:
                doc = users.list_users(s)
    except ApiError as exc:
        cls = HostStateError if exc.status == 409 else InputError
        raise cls(exc.brief, resolution=exc.resolution) from None
    finally:
        db.close()
    if args.users_command == "add":
        emit(args, doc, f"console user {doc['name']!r} ({doc['role']}, "
             f"{', '.join(doc['customers']) if doc['customers'] else 'every customer'}) added")
    else:
        emit(args, doc, lambda: "\n".join(
            "\t".join([u["name"], u["role"], ",".join(u["customers"] or ["*"])]
                      + (["disabled"] if u["disabled"] else [])) for u in doc)
             or "no console users")
    return 0


def register_fleet(cmds: Any, common: Common) -> None:
    """Add ``atoll fleet users ...``."""
    p = cmds.add_parser("users", help="the web console's users (on the database)")
    uc = p.add_subparsers(dest="users_command", metavar="COMMAND")
    uc.required = True
    add = _add(uc, common, "add", _users, "add a console user; the password comes from "
               "--password-file or standard input, never the command line", server=False)
    add.add_argument("name", help="the user's name, its login (1 to 63 lower case "
                     "letters, digits, '-')")
    add.add_argument("--role", required=True, choices=["viewer", "operator", "admin"],
                     help="as operator tokens' roles: a viewer reads every page; an "
                     "operator also sends bulk actions and creates, halts, resumes and "
                     "aborts rollouts")
    add.add_argument("--customer", action="append", metavar="NAME",
                     help="limit the user to this customer (repeatable; default: every "
                     "customer)")
    add.add_argument("--password-file", type=Path, metavar="FILE",
                     help="read the password from this file (mode 0600 or stricter; one line)")
    _db_arg(add)
    _db_arg(_add(uc, common, "list", _users, "list console users (never their hashes)",
                 server=False))

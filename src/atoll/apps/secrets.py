"""App secrets: files only, never environment.

Each secret is a file ``<app>/secrets/<name>`` (mode 0600, owned by the app's
uid) bind-mounted read-only at ``/run/secrets/`` in the container. A secret
the user did not give (``--secret name=@/path``) is generated: 32 random bytes,
URL-safe base64. Database apps also get two MySQL option files derived from
them, mode 0400:

* ``mysql-client.cnf``: ``[client] user=atoll password=<monitor-password>``,
  the monitoring / maintenance login (the contract with ``atoll.monitor``);
* ``root-client.cnf``: the root login, used by ``restore`` only.

Secret values never appear in argv, logs, ``state.json`` or status output.
"""

from __future__ import annotations

import contextlib
import os
import secrets as _random
from pathlib import Path

from atoll.apps.paths import AppPaths
from atoll.core import fsutil
from atoll.core.errors import InputError
from atoll.core.userfile import read_user_file

__all__ = [
    "CLIENT_CNF",
    "MONITOR_USER",
    "ROOT_CNF",
    "ensure_secrets",
    "mysql_option_file",
    "parse_secret_args",
    "read_secret_args",
]

MONITOR_USER = "atoll"
CLIENT_CNF = "mysql-client.cnf"
ROOT_CNF = "root-client.cnf"
MAX_SECRET_FILE = 64 * 1024  # a secret is one line: a password, a key


def parse_secret_args(items: list[str]) -> dict[str, Path]:
    """``["key=@/path", ...]`` to ``{key: path}``.

    Raises:
        InputError: an item is not ``key=@/path`` (a literal value would land in
            the shell history and the process list, so it is refused).
    """
    out: dict[str, Path] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not value.startswith("@") or not key:
            raise InputError(
                f"--secret {key or item!r}: give the value as a file: {key or 'name'}=@/path",
                resolution="a secret on the command line would show in the process list",
            )
        out[key] = Path(value[1:])
    return out


def read_secret_args(given: dict[str, Path], declared: list[str]) -> dict[str, bytes]:
    """Read the given secret files, checking each is declared by the spec.

    Raises:
        InputError: unknown secret, unreadable, not a regular file, over
            ``MAX_SECRET_FILE`` bytes, or empty.
    """
    values: dict[str, bytes] = {}
    for key, path in given.items():
        if key not in declared:
            raise InputError(
                f"--secret {key}: the spec declares no such secret",
                resolution=f"declared secrets: {', '.join(declared) or 'none'}",
            )
        data = read_user_file(path, MAX_SECRET_FILE, f"--secret {key}:")
        data = data.rstrip(b"\r\n")
        if not data or b"\n" in data:
            raise InputError(f"--secret {key}: {path} must hold one non-empty line")
        values[key] = data
    return values


def mysql_option_file(user: str, password: bytes) -> bytes:
    """A ``[client]`` MySQL option file; the password is quoted and escaped."""
    pw = password.decode("utf-8").replace("\\", "\\\\").replace('"', '\\"')
    return f'[client]\nuser={user}\npassword="{pw}"\n'.encode()


def _write(path: Path, data: bytes, mode: int, uid: int, gid: int) -> None:
    fsutil.atomic_write(path, data, mode)
    os.chown(path, uid, gid)


def ensure_secrets(
    paths: AppPaths,
    declared: list[str],
    given: dict[str, bytes],
    *,
    uid: int,
    gid: int,
    database: bool,
) -> list[str]:
    """Write given secrets, generate missing ones, keep existing ones.

    Returns:
        The names of the files written (for rollback of a failed install).
    """
    paths.secrets.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chown(paths.secrets, uid, gid)
    os.chmod(paths.secrets, 0o700)
    written: list[str] = []
    for name in declared:
        path = paths.secrets / name
        if name in given:
            _write(path, given[name], 0o600, uid, gid)
            written.append(name)
        elif not path.exists():
            _write(path, _random.token_urlsafe(32).encode(), 0o600, uid, gid)
            written.append(name)
    if database:
        monitor = (paths.secrets / "monitor-password").read_bytes().strip()
        root = (paths.secrets / "root-password").read_bytes().strip()
        _write(
            paths.secrets / CLIENT_CNF, mysql_option_file(MONITOR_USER, monitor), 0o400, uid, gid
        )
        _write(paths.secrets / ROOT_CNF, mysql_option_file("root", root), 0o400, uid, gid)
        written += [CLIENT_CNF, ROOT_CNF]
    return written


def remove_secrets(paths: AppPaths) -> None:
    """Delete the app's secret files."""
    if paths.secrets.is_dir():
        for f in paths.secrets.iterdir():
            with contextlib.suppress(FileNotFoundError):
                f.unlink()
        paths.secrets.rmdir()


__all__ += ["remove_secrets"]

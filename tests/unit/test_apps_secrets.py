"""Secrets: only from files, generated when missing, 0600 / 0400, cnf escaping."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from atoll.apps.paths import AppPaths
from atoll.apps.secrets import (
    ensure_secrets,
    mysql_option_file,
    parse_secret_args,
    read_secret_args,
)
from atoll.core.errors import InputError


def test_secret_args_only_from_files(tmp_path: Path) -> None:
    assert parse_secret_args(["root-password=@/x/y"]) == {"root-password": Path("/x/y")}
    for bad in ["root-password=hunter2", "root-password", "=@/x"]:
        with pytest.raises(InputError):
            parse_secret_args([bad])
    f = tmp_path / "pw"
    f.write_bytes(b"s3cret\n")
    assert read_secret_args({"root-password": f}, ["root-password"]) == {"root-password": b"s3cret"}
    with pytest.raises(InputError, match="declares no such secret"):
        read_secret_args({"other": f}, ["root-password"])
    with pytest.raises(InputError, match="cannot read"):
        read_secret_args({"root-password": tmp_path / "none"}, ["root-password"])
    f.write_bytes(b"two\nlines\n")
    with pytest.raises(InputError, match="one non-empty line"):
        read_secret_args({"root-password": f}, ["root-password"])


def test_option_file_escapes() -> None:
    assert mysql_option_file("atoll", b'a"b\\c') == b'[client]\nuser=atoll\npassword="a\\"b\\\\c"\n'


def test_ensure_secrets_generates_keeps_and_derives(tmp_path: Path) -> None:
    paths = AppPaths(tmp_path, "db")
    paths.root.mkdir(parents=True)
    uid, gid = os.getuid(), os.getgid()
    names = ["root-password", "monitor-password"]
    written = ensure_secrets(
        paths, names, {"root-password": b"given"}, uid=uid, gid=gid, database=True
    )
    assert set(written) == {*names, "mysql-client.cnf", "root-client.cnf"}
    assert (paths.secrets / "root-password").read_bytes() == b"given"
    mon = (paths.secrets / "monitor-password").read_bytes()
    assert len(mon) >= 40
    assert (paths.secrets / "mysql-client.cnf").read_bytes() == mysql_option_file("atoll", mon)
    for f in paths.secrets.iterdir():
        mode = stat.S_IMODE(f.stat().st_mode)
        assert mode == (0o400 if f.name.endswith(".cnf") else 0o600), f
    assert stat.S_IMODE(paths.secrets.stat().st_mode) == 0o700
    # A second run keeps what exists (a reinstall over kept data keeps working).
    again = ensure_secrets(paths, names, {}, uid=uid, gid=gid, database=True)
    assert "monitor-password" not in again
    assert (paths.secrets / "monitor-password").read_bytes() == mon

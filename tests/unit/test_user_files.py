"""Files a person names are read bounded, and only when they are regular files.

Review of issue 13: ``remote add --root /dev/zero`` exhausted the machine's memory
(MemoryError under ``ulimit -v``), and ``--root FIFO`` hung forever. Every read of a
user-named file goes through ``atoll.core.userfile.read_user_file``: a FIFO, a
device or a directory is refused at once (the open does not block), and a file over
its limit is refused after reading one byte more than the limit. The /dev/zero case
runs in a child process under a 1.5 GB address-space limit, as the review did."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from atoll.core.errors import InputError
from atoll.core.userfile import read_user_file
from tests.conftest import ROOT

ROOT_JSON_LIMIT = 512000  # python-tuf's root_max_length


@pytest.fixture
def fifo(tmp_path: Path) -> Path:
    p = tmp_path / "fifo"
    os.mkfifo(p)
    return p


def test_read_user_file(tmp_path: Path, fifo: Path) -> None:
    f = tmp_path / "f"
    f.write_bytes(b"x" * 10)
    assert read_user_file(f, 10) == b"x" * 10
    with pytest.raises(InputError, match="larger than 9 bytes"):
        read_user_file(f, 9)
    with pytest.raises(InputError, match="is a FIFO"):
        read_user_file(fifo, 10)
    with pytest.raises(InputError, match="is a device"):
        read_user_file("/dev/zero", 10)
    with pytest.raises(InputError, match="is a directory"):
        read_user_file(tmp_path, 10)
    with pytest.raises(InputError, match="cannot read"):
        read_user_file(tmp_path / "missing", 10)
    link = tmp_path / "link"
    link.symlink_to(f)
    assert read_user_file(link, 10, "--root") == b"x" * 10  # symlinks are followed


def _limited() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (1_500_000_000, 1_500_000_000))


@pytest.mark.parametrize("kind", ["zero", "fifo", "dir", "big"])
def test_remote_add_root_is_bounded(tmp_path: Path, kind: str) -> None:
    path = {"zero": Path("/dev/zero"), "fifo": tmp_path / "fifo", "dir": tmp_path,
            "big": tmp_path / "big.json"}[kind]
    if kind == "fifo":
        os.mkfifo(path)
    if kind == "big":
        path.write_bytes(b" " * (ROOT_JSON_LIMIT + 1))
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    p = subprocess.run(
        [sys.executable, "-m", "atoll.cli", "--sysroot", str(tmp_path / "host"), "remote",
         "add", "z1", "http://127.0.0.1:9/", "--root", str(path)],
        capture_output=True, text=True, timeout=60, preexec_fn=_limited, env=env)
    assert p.returncode == 2, p.stderr  # was 70 (MemoryError), or a hang
    assert "--root" in p.stderr and "internal error" not in p.stderr
    assert not (tmp_path / "host/atoll/state/remotes/z1").exists()


def _call(what: str, path: Path) -> Callable[[], object]:
    from atoll.apps.secrets import read_secret_args
    from atoll.core.spec import read_spec_text
    from atoll.monitor.docker_sections import read_docker_cfg
    from atoll.repo.keys import KeyDir

    if what == "key":
        keys = KeyDir(path.parent / "keys")
        (keys.path / "online/timestamp").mkdir(parents=True)
        os.symlink(path, keys.path / "online/timestamp/k.pem")
        return lambda: keys.signers("timestamp")
    return {"spec": lambda: read_spec_text(path),
            "secret": lambda: read_secret_args({"root-password": path}, ["root-password"]),
            "mk_docker": lambda: read_docker_cfg(path)}[what]


@pytest.mark.parametrize("what", ["key", "spec", "secret", "mk_docker"])
def test_every_user_named_file_refuses_fifos_and_devices(tmp_path: Path, fifo: Path,
                                                          what: str) -> None:
    # run in a thread-free way: a blocking open would hang the test; the helper never blocks
    with pytest.raises(InputError, match="is a FIFO"):
        _call(what, fifo)()
    with pytest.raises(InputError, match="is a device"):
        _call(what, Path("/dev/zero"))() if what != "key" else _dev_key(tmp_path)


def _dev_key(tmp_path: Path) -> None:
    from atoll.repo.keys import KeyDir

    keys = KeyDir(tmp_path / "devkeys")
    (keys.path / "online/snapshot").mkdir(parents=True)
    os.symlink("/dev/zero", keys.path / "online/snapshot/k.pem")
    keys.signers("snapshot")


def test_a_host_config_that_is_a_fifo_is_refused_when_seeding(tmp_path: Path,
                                                              fifo: Path) -> None:
    script = textwrap.dedent(f"""
        from atoll.provision.apply import config_sha256
        from atoll.core.errors import InputError
        try:
            config_sha256({str(fifo)!r})
        except InputError as exc:
            print("refused:", exc)
    """)
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                       timeout=60, env=env)
    assert "refused:" in p.stdout and "is a FIFO" in p.stdout, p.stderr

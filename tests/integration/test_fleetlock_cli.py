"""``atoll fleetlock serve|status|release``: the real command, a real server process."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from atoll.cli import main
from atoll.fleet.client import FleetLockClient, FleetLockError
from tests.conftest import ROOT
from tests.integration import fleet_fixtures
from tests.services import free_port

fleet_etcd = fleet_fixtures.fleet_etcd  # real etcd, once per session

CONFIG = '[lock]\ndefault_slots = 1\n[[lock.groups]]\nname = "db"\nslots = 2\n'


def wait_port(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 20
    while True:
        assert proc.poll() is None, proc.communicate()[1].decode()
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            assert time.monotonic() < deadline, "server did not listen in 20s"
            time.sleep(0.05)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, list[str], subprocess.Popen[bytes]]]:
    (tmp_path / "fleetlock.toml").write_text(CONFIG)
    store = ["--embedded", str(tmp_path / "locks.db"), "--config", str(tmp_path / "fleetlock.toml")]
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "atoll.cli", "fleetlock", "serve", "--listen",
         f"127.0.0.1:{port}", *store], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        wait_port(port, proc)
        yield f"http://127.0.0.1:{port}", store, proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def test_serve_status_release_embedded(served: tuple[str, list[str], subprocess.Popen[bytes]],
                                       capsys: pytest.CaptureFixture[str]) -> None:
    url, store, proc = served
    client = FleetLockClient(url)
    client.pre_reboot("dead-host", "db")
    client.pre_reboot("web-1")
    rc, out, _ = run(capsys, "--json", "fleetlock", "status", *store)
    assert rc == 0
    groups = {g["group"]: g for g in json.loads(out)["groups"]}
    assert groups["db"]["total_slots"] == 2
    assert [h["id"] for h in groups["db"]["holders"]] == ["dead-host"]
    assert groups["db"]["holders"][0]["since"].endswith("Z")
    # the same through the running server, human form
    rc, out, _ = run(capsys, "fleetlock", "status", "--server", url)
    assert rc == 0 and "group db: 1/2 slots held" in out and "dead-host  since " in out
    # the operator frees the dead host's slot while the server runs
    rc, out, _ = run(capsys, "fleetlock", "release", "--group", "db", "--id", "dead-host", *store)
    assert rc == 0 and out.startswith("released dead-host's slot in group db")
    client.pre_reboot("a", "db")
    client.pre_reboot("b", "db")  # both slots are usable again
    with pytest.raises(FleetLockError):
        client.pre_reboot("c", "db")
    # releasing what is not held: a clear error, exit 2, nothing changes
    rc, _, err = run(capsys, "fleetlock", "release", "--group", "db", "--id", "dead-host", *store)
    assert rc == 2 and "'dead-host' holds no slot in group 'db'" in err
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=15) == 0


def test_status_and_release_on_etcd(fleet_etcd: str, capsys: pytest.CaptureFixture[str]) -> None:
    from atoll.fleet.backends import open_backend
    from atoll.fleet.config import FleetConfig
    from atoll.fleet.protocol import ClientParams
    from atoll.fleet.service import FleetLockService

    with open_backend("etcd", fleet_etcd) as backend:
        FleetLockService(backend, FleetConfig({"cli-test": 1})).pre_reboot(
            ClientParams("gone", "cli-test"))
    rc, out, _ = run(capsys, "--json", "fleetlock", "status", "--etcd", fleet_etcd)
    assert rc == 0
    groups = {g["group"]: g for g in json.loads(out)["groups"]}
    assert not groups["cli-test"]["configured"]  # stored, but not in this (default) config
    assert [h["id"] for h in groups["cli-test"]["holders"]] == ["gone"]
    rc, _, _ = run(capsys, "fleetlock", "release", "--etcd", fleet_etcd, "--group", "cli-test",
                   "--id", "gone")
    assert rc == 0
    rc, out, _ = run(capsys, "--json", "fleetlock", "status", "--etcd", fleet_etcd)
    groups = {g["group"]: g for g in json.loads(out)["groups"]}
    assert groups["cli-test"]["holders"] == []


def test_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[lock]\ndefault_slots = -1\n')
    db = str(tmp_path / "l.db")
    rc, _, err = run(capsys, "fleetlock", "serve", "--embedded", db, "--config", str(bad))
    assert rc == 2 and f"{bad}: lock.default_slots: must be an integer" in err
    rc, _, err = run(capsys, "fleetlock", "serve", "--embedded", db, "--listen", "8080")
    assert rc == 2 and "is not HOST:PORT" in err
    rc, _, err = run(capsys, "fleetlock", "status", "--etcd", f"http://127.0.0.1:{free_port()}")
    assert rc == 8 and "etcd at http://127.0.0.1:" in err
    assert not Path(db).exists()  # nothing was created by the refused commands


AIRLOCK_EXAMPLE = ROOT / "tests/data/airlock/config.toml"


def test_serve_with_airlocks_config(fleet_etcd: str, tmp_path: Path) -> None:
    # airlock's example, changed only where this machine differs: the etcd and the port
    port = free_port()
    text = AIRLOCK_EXAMPLE.read_text()
    text = text.replace('"http://127.0.0.1:2379"', f'"{fleet_etcd}"').replace(
        "port = 3333", f"port = {port}")
    assert text.count(fleet_etcd) == 1 and text.count(f"port = {port}") == 1
    config = tmp_path / "config.toml"
    config.write_text(text)
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    proc = subprocess.Popen(  # no --etcd, no --listen: [etcd3] and [service] say where
        [sys.executable, "-m", "atoll.cli", "fleetlock", "serve", "--config", str(config)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        wait_port(port, proc)
        client = FleetLockClient(f"http://127.0.0.1:{port}")
        client.pre_reboot("w1", "workers")
        client.pre_reboot("w2", "workers")  # default_slots = 2 for workers
        client.pre_reboot("c1", "controllers")
        with pytest.raises(FleetLockError, match="semaphore currently full"):
            client.pre_reboot("c2", "controllers")  # slots = 1
        for cid, group in (("w1", "workers"), ("w2", "workers"), ("c1", "controllers")):
            client.steady_state(cid, group)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        _, err = proc.communicate()
    assert "status: airlock's metrics service is not part of atoll" in err.decode()


def test_airlocks_example_with_the_command_line_in_charge(
        fleet_etcd: str, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = run(capsys, "--json", "fleetlock", "status", "--config",
                       str(AIRLOCK_EXAMPLE), "--etcd", fleet_etcd)
    assert rc == 0
    groups = {g["group"]: g["total_slots"] for g in json.loads(out)["groups"]}
    assert {k: groups[k] for k in ("default", "workers", "controllers")} == {
        "default": 2, "workers": 2, "controllers": 1}
    assert "etcd3.endpoints not used: --etcd given on the command line" in err
    rc, _, err = run(capsys, "fleetlock", "status")
    assert rc == 2 and "no FleetLock store given" in err


def test_airlock_configs_review_13(fleet_etcd: str, tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    """Slots airlock cannot compare (2^64-1 is -1 to its Go int) are refused at once; an
    endpoint without a scheme is accepted as airlock's etcd client accepts it, and dialled
    with TLS as airlock dials it (the test's etcd is plain: the hint says so)."""
    db = str(tmp_path / "l.db")
    odd = tmp_path / "odd.toml"
    odd.write_text('[lock]\ndefault_slots = 2\n[[lock.groups]]\nname = "big"\n'
                   "slots = 18446744073709551615\n")
    rc, _, err = run(capsys, "fleetlock", "serve", "--embedded", db, "--config", str(odd))
    assert rc == 2 and "lock.groups[0].slots: must be an integer from 0 to " \
        "9223372036854775807" in err
    bare = tmp_path / "bare.toml"
    host_port = fleet_etcd.split("//", 1)[1]
    bare.write_text(f'[etcd3]\nendpoints = ["{host_port}"]\ntransaction_timeout_ms = 2000\n')
    rc, _, err = run(capsys, "fleetlock", "status", "--config", str(bare))
    assert rc == 8, err  # not refused as input (was exit 2): etcd answered no TLS
    assert f"etcd at https://{host_port}" in err and "write http://HOST:PORT" in err
    bare.write_text(f'[etcd3]\nendpoints = ["{fleet_etcd}"]\n')
    assert run(capsys, "fleetlock", "status", "--config", str(bare))[0] == 0
    assert not Path(db).exists()

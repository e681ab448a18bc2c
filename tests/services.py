"""Start the daemons tests need (dockerd, etcd) and stop them afterwards.

Nothing starts by itself on the test machines: a fixture that needs a daemon
starts it here. A daemon already running (a developer's) is reused.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

DOCKER_SOCK = Path("/var/run/docker.sock")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _docker_up() -> bool:
    if not DOCKER_SOCK.exists():
        return False
    proc = subprocess.run(["/usr/bin/docker", "version"], capture_output=True)
    return proc.returncode == 0


@contextlib.contextmanager
def dockerd() -> Iterator[str]:
    """Yield the Docker socket URL, starting dockerd if it is not running."""
    if _docker_up():
        yield f"unix://{DOCKER_SOCK}"
        return
    assert shutil.which("dockerd"), "dockerd missing: scripts/bootstrap.sh installs docker.io"
    log = open("/var/tmp/atoll-test-dockerd.log", "ab")  # noqa: SIM115
    proc = subprocess.Popen(["dockerd", "--storage-driver=overlay2"], stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 60
        while not _docker_up():
            assert proc.poll() is None, "dockerd exited: see /var/tmp/atoll-test-dockerd.log"
            assert time.monotonic() < deadline, "dockerd did not come up in 60s"
            time.sleep(0.2)
        yield f"unix://{DOCKER_SOCK}"
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=20)
        if proc.poll() is None:
            proc.kill()
        log.close()


@contextlib.contextmanager
def etcd() -> Iterator[str]:
    """Start a single-node etcd on 127.0.0.1 with a temp data dir; yield its client URL."""
    assert shutil.which("etcd"), "etcd missing: scripts/bootstrap.sh installs etcd-server"
    client, peer = free_port(), free_port()
    url = f"http://127.0.0.1:{client}"
    with tempfile.TemporaryDirectory(prefix="atoll-etcd-") as data:
        log = open(os.path.join(data, "etcd.log"), "ab")  # noqa: SIM115
        proc = subprocess.Popen(
            [
                "etcd", "--data-dir", os.path.join(data, "member"),
                "--listen-client-urls", url, "--advertise-client-urls", url,
                "--listen-peer-urls", f"http://127.0.0.1:{peer}",
                "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
                "--initial-cluster", f"default=http://127.0.0.1:{peer}",
            ],
            stdout=log, stderr=log,
        )
        try:
            deadline = time.monotonic() + 30
            while True:
                assert proc.poll() is None, "etcd exited during start-up"
                try:
                    with urllib.request.urlopen(f"{url}/health", timeout=1) as resp:
                        if b"true" in resp.read():
                            break
                except OSError:
                    pass
                assert time.monotonic() < deadline, "etcd did not become healthy in 30s"
                time.sleep(0.1)
            yield url
        finally:
            proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
            if proc.poll() is None:
                proc.kill()
            log.close()

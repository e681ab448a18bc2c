"""Fixtures for service-discovery tests: etcd that can go away, hosts (sysroots) whose
real atolld registers them, a tiny app image, waiting with a bound.

Import what a test module uses from here.
"""

from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from atoll.agent.policy import Policy
from atoll.agent.state import AgentFiles
from atoll.core.run import run
from atoll.deploy.sysroot import Sysroot
from atoll.fleet.discovery import Services
from atoll.fleet.etcdv3 import EtcdClient
from atoll.fleet.registry import read_services
from tests.services import Etcd, dockerd, etcd_server

__all__ = ["BUSYBOX", "SRC", "AgentProc", "busybox_image", "docker_url", "etcd", "make_host",
           "services", "wait_for", "web_spec"]

SRC = Path(__file__).resolve().parents[2] / "src"
ENV = dict(os.environ, PYTHONPATH=str(SRC))
BUSYBOX = "atoll-test/busybox:discovery"
T = TypeVar("T")


def wait_for(probe: Callable[[], T], timeout: float, what: str, every: float = 0.1) -> T:
    """``probe()`` until it is truthy (its value is returned), at most ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        time.sleep(every)


@pytest.fixture
def etcd() -> Iterator[Etcd]:
    """A real etcd on 127.0.0.1 for one test; it may stop, wipe and start it."""
    with etcd_server() as server:
        yield server


def services(url: str) -> Services:
    with EtcdClient(url) as client:
        return read_services(client)[0]


def make_host(tmp: Path, name: str, etcd_url: str | None, *, customer: str = "acme",
              ttl: int = 3, interval: float = 0.5, metrics: str = "off",
              machine_id: str | None = None, extra: str = "") -> Path:
    """A sysroot for host ``name``: initialized, policy off (the update loop idles), and
    a fleet.toml naming etcd (none when ``etcd_url`` is None)."""
    root = tmp / name
    Sysroot(root).init()
    (root / "etc/atoll").mkdir(parents=True, exist_ok=True)
    (root / "etc/hostname").write_text(f"{name}\n")
    (root / "etc/machine-id").write_text(f"{machine_id or uuid.uuid4().hex}\n")
    AgentFiles(root).save_policy(Policy(mode="off"))
    if etcd_url is not None:
        (root / "etc/atoll/fleet.toml").write_text(
            f'[etcd3]\nendpoints = ["{etcd_url}"]\n\n[discovery]\ncustomer = "{customer}"\n'
            f'ttl_s = {ttl}\ninterval_s = {interval}\nmetrics = "{metrics}"\n{extra}')
    return root


class AgentProc:
    """A real ``atolld --sysroot ROOT`` process; its log (stderr) in ROOT/../NAME.log."""

    def __init__(self, sysroot: Path, *, debug: bool = False) -> None:
        self.sysroot = sysroot
        self.log_path = sysroot.parent / f"{sysroot.name}.log"
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "atoll.agent.daemon", "--sysroot", str(sysroot),
                 *(["--debug"] if debug else [])],
                env=ENV, stdout=subprocess.DEVNULL, stderr=log, start_new_session=True)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self, sig: int = signal.SIGKILL, timeout: float = 20) -> int:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
        return self.proc.wait(timeout=timeout)

    def __enter__(self) -> AgentProc:
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=20)


@pytest.fixture(scope="session")
def docker_url() -> Iterator[str]:
    with dockerd() as url:
        yield url


@pytest.fixture(scope="session")
def busybox_image(docker_url: str) -> str:
    """A one-binary image (busybox-static: httpd, sh, test, touch), imported locally."""
    import docker

    client = docker.DockerClient(base_url=docker_url)
    try:
        client.images.get(BUSYBOX)
        return BUSYBOX
    except docker.errors.ImageNotFound:
        pass
    finally:
        client.close()
    busybox = shutil.which("busybox")
    assert busybox, "busybox missing: apt-get install busybox-static (scripts/apt-packages.txt)"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(busybox, arcname="bin/busybox")
        for name in ("sh", "sleep", "true", "httpd", "test", "touch", "rm"):
            info = tarfile.TarInfo(f"bin/{name}")
            info.type, info.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(info)
    run(["docker", "import", "-", BUSYBOX], input=buf.getvalue())
    return BUSYBOX


def web_spec(path: Path, port: int, *, secret: str | None = None) -> Path:
    """An app spec: busybox httpd serving /tmp on ``127.0.0.1:port``; healthy once
    /tmp/ok exists (``docker exec atoll-APP touch /tmp/ok``). ``secret``: it also
    declares that secret (a file under /run/secrets/) and a plain environment."""
    extra = f'secrets: ["{secret}"]\nenvironment: {{GREETING: "plain-hello"}}\n' \
        if secret else ""
    path.write_text(
        extra +
        f"image: {BUSYBOX}\n"
        'command: ["/bin/httpd", "-f", "-p", "8080", "-h", "/tmp"]\n'
        f'ports: ["127.0.0.1:{port}:8080"]\n'
        "healthcheck:\n"
        '  test: ["CMD", "/bin/test", "-e", "/tmp/ok"]\n'
        "  interval: 1s\n  timeout: 1s\n  retries: 1\n  start_period: 0s\n"
        'stop_grace_period: "1s"\n'
        "resources: {memory: 64m, cpus: 0.2, pids: 32}\n")
    return path

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


PG_BIN = Path("/usr/lib/postgresql/15/bin")


class PostgreSQL:
    """A PostgreSQL server the test started: initdb in a temp dir, owned by the
    ``postgres`` user, listening on 127.0.0.1 and a free port, trust authentication
    (nothing but this machine's tests can reach it). ``stop()``/``start()`` take it
    away and bring it back (the same data)."""

    def __init__(self, root: Path):
        self.root = root
        self.data = root / "data"
        self.port = free_port()
        self.log = root / "postgres.log"

    def _as_postgres(self, argv: list[str], **kw: object) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(["runuser", "-u", "postgres", "--", *argv], check=True,
                              capture_output=True, **kw)  # type: ignore[call-overload]

    def init(self) -> None:
        assert (PG_BIN / "initdb").exists(), \
            "PostgreSQL missing: scripts/bootstrap.sh installs postgresql"
        shutil.chown(self.root, "postgres", "postgres")
        self._as_postgres([str(PG_BIN / "initdb"), "-D", str(self.data), "--auth=trust",
                           "-U", "postgres", "-E", "UTF8", "--no-sync"])

    def start(self) -> None:
        opts = (f"-c listen_addresses=127.0.0.1 -c port={self.port} "
                f"-c unix_socket_directories={self.root} -c fsync=off "
                "-c max_connections=200")
        self._as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.log),
                           "-o", opts, "-w", "-t", "60", "start"])

    def stop(self, mode: str = "fast") -> None:
        self._as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w",
                           "-t", "60", "stop"])

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """A new empty database; its URL."""
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


@contextlib.contextmanager
def postgresql() -> Iterator[PostgreSQL]:
    """Start PostgreSQL 15 (Debian's) on 127.0.0.1 in a temp dir; stop and remove it after."""
    with tempfile.TemporaryDirectory(prefix="atoll-pg-") as root:
        pg = PostgreSQL(Path(root))
        pg.init()
        pg.start()
        try:
            yield pg
        finally:
            with contextlib.suppress(subprocess.CalledProcessError):
                pg.stop("immediate")


class Etcd:
    """A single-node etcd the test started and can take away and bring back: ``stop()``
    (SIGKILL: as a crash), ``start()`` (the same URL and data), ``wipe()`` (its data lost:
    a new, empty cluster at the same URL next start)."""

    def __init__(self, root: Path):
        self.root = root
        self.client_port, self.peer_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.client_port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30) -> None:
        assert shutil.which("etcd"), "etcd missing: scripts/bootstrap.sh installs etcd-server"
        peer = f"http://127.0.0.1:{self.peer_port}"
        with open(self.root / "etcd.log", "ab") as log:
            self.proc = subprocess.Popen(
                ["etcd", "--data-dir", str(self.root / "member"),
                 "--listen-client-urls", self.url, "--advertise-client-urls", self.url,
                 "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                 "--initial-cluster", f"default={peer}"], stdout=log, stderr=log)
        deadline = time.monotonic() + timeout
        while True:
            assert self.proc.poll() is None, f"etcd exited: see {self.root / 'etcd.log'}"
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=1) as resp:
                    if b"true" in resp.read():
                        return
            except OSError:
                pass
            assert time.monotonic() < deadline, f"etcd did not become healthy in {timeout}s"
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc = None

    def wipe(self) -> None:
        assert self.proc is None, "stop etcd first"
        shutil.rmtree(self.root / "member", ignore_errors=True)


@contextlib.contextmanager
def etcd_server() -> Iterator[Etcd]:
    """An etcd on 127.0.0.1 (temp data dir) that the test may stop, wipe and start again."""
    with tempfile.TemporaryDirectory(prefix="atoll-etcd-") as root:
        server = Etcd(Path(root))
        server.start()
        try:
            yield server
        finally:
            server.stop()

"""The TCP agent, the stdout agent and the metrics commands, as real processes on 127.0.0.1."""

from __future__ import annotations

import contextlib
import logging
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from atoll.monitor.access import parse_only_from
from atoll.monitor.agent import Agent, AgentConfig
from atoll.monitor.server import AgentServer
from tests.services import free_port
from tests.unit.test_monitor_conformance import check_agent_output

ATOLL = [sys.executable, "-m", "atoll.cli"]
LINUX_SECTIONS = {"check_mk", "uptime", "mem", "cpu", "kernel", "df", "mounts", "lnx_if",
                  "diskstat", "ps_lnx", "local"}


def fetch(port: int, source: str | None = None, timeout: float = 10.0) -> bytes:
    with socket.socket() as s:
        s.settimeout(timeout)
        if source:
            s.bind((source, 0))
        s.connect(("127.0.0.1", port))
        chunks = []
        while True:
            try:
                data = s.recv(65536)
            except ConnectionResetError:
                break
            if not data:
                break
            chunks.append(data)
    return b"".join(chunks)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@contextlib.contextmanager
def serving(*extra: str) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    port = free_port()
    proc = subprocess.Popen([*ATOLL, "checkmk-agent", "serve", "--listen", "127.0.0.1",
                             "--port", str(port), *extra],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        while True:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            assert time.monotonic() < deadline, "agent did not listen within 20s"
            time.sleep(0.1)
        yield proc, port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_stdout_agent_is_complete_and_parses() -> None:
    t = time.monotonic()
    out = subprocess.run([*ATOLL, "checkmk-agent"], capture_output=True, check=True,
                         timeout=60).stdout.decode()
    assert time.monotonic() - t < 20
    sections = check_agent_output(out)
    assert {n for _, n in sections} >= LINUX_SECTIONS
    assert "systemd_units" not in {n for _, n in sections}  # PID 1 is not systemd here
    assert "PID 1 is" in out  # ... and the output says why


def test_tcp_agent_serves_allowed_and_refuses_others(caplog: pytest.LogCaptureFixture) -> None:
    agent = Agent(AgentConfig(only_from=parse_only_from("127.0.0.1")))
    server = AgentServer(agent.output, listen="127.0.0.1", port=0,
                         only_from=parse_only_from("127.0.0.1"))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        out = fetch(server.port).decode()
        sections = check_agent_output(out)
        assert {n for _, n in sections} >= LINUX_SECTIONS
        assert "OnlyFrom: 127.0.0.1\n" in out
        with caplog.at_level(logging.WARNING, logger="atoll.monitor"):
            refused = fetch(server.port, source="127.0.0.2")
            deadline = time.monotonic() + 5
            while server.stats.refused < 1 and time.monotonic() < deadline:
                time.sleep(0.05)
        assert refused == b""
        assert server.stats.refused == 1 and server.stats.served == 1
        assert "refused connection from 127.0.0.2: not in only-from" in caplog.text
    finally:
        server.shutdown()
        thread.join(10)
        agent.close()


def test_thousands_of_connections_stay_responsive_and_bounded() -> None:
    """3000 connections from 8 client threads; the serving process's RSS stays bounded."""
    with serving("--only-from", "127.0.0.1,::1", "--max-clients", "8") as (proc, port):
        first = fetch(port)
        check_agent_output(first.decode())
        rss_start = rss_kib(proc.pid)
        errors: list[str] = []
        counts = {"ok": 0, "busy": 0}
        lock = threading.Lock()
        deadline = time.monotonic() + 90

        def client(n: int) -> None:
            for _ in range(n):
                if time.monotonic() > deadline:
                    errors.append("time budget exceeded")
                    return
                try:
                    data = fetch(port, timeout=10)
                except OSError as exc:
                    errors.append(repr(exc))
                    continue
                with lock:
                    counts["ok" if data.startswith(b"<<<check_mk>>>") else "busy"] += 1

        threads = [threading.Thread(target=client, args=(375,)) for _ in range(8)]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        elapsed = time.monotonic() - t0
        assert not errors, errors[:5]
        assert counts["ok"] + counts["busy"] == 3000
        assert counts["ok"] >= 2900, counts  # 8 clients, 8 slots: (almost) never busy
        rss_end = rss_kib(proc.pid)
        # still responsive: one more request answers quickly with a full output
        t1 = time.monotonic()
        last = fetch(port)
        assert time.monotonic() - t1 < 5.0
        assert last.startswith(b"<<<check_mk>>>") and b"<<<local:sep(0)>>>" in last
        print(f"3000 connections in {elapsed:.1f}s ({counts}); RSS {rss_start} -> {rss_end} KiB")
        assert rss_end - rss_start < 20 * 1024, (rss_start, rss_end)
        assert rss_end < 100 * 1024


def test_metrics_commands(tmp_path: Path) -> None:
    subprocess.run([*ATOLL, "metrics", "--textfile", str(tmp_path)], check=True, timeout=60,
                   capture_output=True)
    text = (tmp_path / "atoll.prom").read_text()
    names = {f.name for f in text_string_to_metric_families(text)}
    assert {"atoll_host_status_available", "atoll_docker_up"} <= names
    out = subprocess.run([*ATOLL, "metrics"], check=True, timeout=60, capture_output=True)
    assert list(text_string_to_metric_families(out.stdout.decode()))
    bad = subprocess.run([*ATOLL, "metrics", "--textfile", str(tmp_path / "nope")],
                         timeout=60, capture_output=True)
    assert bad.returncode == 2 and b"does not exist" in bad.stderr

    port = free_port()
    proc = subprocess.Popen([*ATOLL, "metrics", "serve", "--listen", f"127.0.0.1:{port}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                    body = r.read().decode()
                    ctype = r.headers["Content-Type"]
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.1)
        assert ctype.startswith("text/plain; version=0.0.4")
        assert "atoll_host_status_available" in {f.name for f in
                                                 text_string_to_metric_families(body)}
    finally:
        proc.terminate()
        proc.wait(timeout=15)
    assert proc.returncode == 0

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
# Failure deadlines only (what a broken server would exceed), never expectations of speed.
STARTUP_DEADLINE = 60.0
BURST_DEADLINE = 300.0


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
def serving(log: Path, *extra: str) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """``atoll checkmk-agent serve`` on a free port; its log (stderr) goes to ``log``.

    A file, not a pipe nobody reads: a burst of busy warnings must never fill a
    pipe and stall the server.
    """
    port = free_port()
    with log.open("wb") as err:
        proc = subprocess.Popen([*ATOLL, "checkmk-agent", "serve", "--listen", "127.0.0.1",
                                 "--port", str(port), *extra],
                                stdout=subprocess.DEVNULL, stderr=err)
    try:
        deadline = time.monotonic() + STARTUP_DEADLINE
        while True:
            assert proc.poll() is None, log.read_text()
            with contextlib.suppress(OSError):
                fetch(port, timeout=30)  # read it all: a connection dropped early logs a failure
                break
            assert time.monotonic() < deadline, f"agent did not listen within {STARTUP_DEADLINE}s"
            time.sleep(0.1)
        yield proc, port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def check_complete(data: bytes) -> None:
    """A full agent output: well-formed, and not cut short (it ends with the agent's status)."""
    text = data.decode()
    assert text.startswith("<<<check_mk>>>\n"), text[:200]
    check_agent_output(text)
    last = text.rstrip("\n").rsplit("\n", 1)[-1]
    assert text.endswith("\n") and '"atoll agent"' in last, text[-300:]


def test_stdout_agent_is_complete_and_parses() -> None:
    # its speed is measured by bench/bench_checkmk_agent.py (fresh process); 60 s is a deadline
    out = subprocess.run([*ATOLL, "checkmk-agent"], capture_output=True, check=True,
                         timeout=60).stdout.decode()
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


def test_thousands_of_connections_stay_responsive_and_bounded(tmp_path: Path) -> None:
    """3000 requests from 8 client threads against 8 slots.

    Every answer is the full agent output or a busy refusal (the connection
    closed without data, and logged as such); a request refused as busy is
    asked again and gets its full output in the end; the serving process's RSS
    stays bounded, and it answers in full once the burst is over. How many
    answers are busy, and how fast the burst goes, depend on what else the
    machine runs: bench/bench_checkmk_agent.py measures those, this test
    asserts neither.
    """
    log = tmp_path / "agent.log"
    answers: dict[bytes, int] = {}  # each distinct answer (b"": busy), how often
    errors: list[str] = []
    lock = threading.Lock()

    def ask(port: int) -> bytes:
        data = fetch(port, timeout=30)
        with lock:
            answers[data] = answers.get(data, 0) + 1
        return data

    with serving(log, "--only-from", "127.0.0.1,::1", "--max-clients", "8") as (proc, port):
        check_complete(ask(port))
        rss_start = rss_kib(proc.pid)
        deadline = time.monotonic() + BURST_DEADLINE

        def client(requests: int) -> None:
            try:
                for _ in range(requests):
                    while not ask(port):  # busy: ask again
                        if time.monotonic() > deadline:
                            errors.append(f"still busy after {BURST_DEADLINE}s")
                            return
            except OSError as exc:
                errors.append(repr(exc))

        threads = [threading.Thread(target=client, args=(375,)) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(max(deadline - time.monotonic(), 0) + 60)
        assert not any(t.is_alive() for t in threads), "clients still running at the deadline"
        assert not errors, errors[:5]
        rss_end = rss_kib(proc.pid)
        # once the burst is over the server answers in full again (the last clients'
        # slots may still be finishing: a busy answer meanwhile is allowed)
        settle = time.monotonic() + 60
        while not ask(port):
            assert time.monotonic() < settle, "the server stays busy after the burst"
            time.sleep(0.05)
    busy = answers.pop(b"", 0)
    print(f"{sum(answers.values())} full answers, {busy} busy; RSS {rss_start} -> {rss_end} KiB")
    assert sum(answers.values()) == 1 + 3000 + 1  # the first, the burst's, the last
    for data in answers:  # the cache shares one output per second: few distinct ones
        check_complete(data)
    # every empty answer was a deliberate busy refusal, and no answer failed
    logged = log.read_text().splitlines()
    assert sum(line.endswith("too many clients") for line in logged) == busy
    assert not [line for line in logged if line.startswith("serving ")], logged[:5]
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
        deadline = time.monotonic() + STARTUP_DEADLINE
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

"""Benchmark atoll's Checkmk agent: output wall time and the serving process's memory.

    .venv/bin/python bench/bench_checkmk_agent.py [--runs 20] [--requests 200] [--burst 3000]
        [--with-db]

Prints:
- wall time of a full agent output, in process (warm: what the TCP agent pays
  per request when its cache is cold) and as a fresh ``atoll checkmk-agent``
  process (what an SSH datasource program pays), median and max;
- a burst of ``--burst`` connections from 8 client threads against
  ``atoll checkmk-agent serve --max-clients 8``: wall time, connections per
  second, how many were answered busy (a client reconnecting before the
  server has released its previous slot), and the server's RSS before and
  after (tests/integration/test_monitor_server.py asserts only that every
  answer is whole or a logged busy and that memory stays bounded: the speed
  and the busy share depend on what else the machine runs);
- with ``--with-db``: the same with one MariaDB app installed, back to back and
  5 s apart (Docker's stats endpoint answers at its collector's next tick, up
  to 1 s, while a previous request keeps the collector running) (atoll's image,
  ``atoll/mariadb:bookworm``, must be loaded in Docker; the app lives in a
  temporary sysroot and is removed afterwards), and the mk_mysql sections alone
  (``mysql_section``, what tests/integration/test_monitor_mysql.py runs);
- resident memory (VmRSS) of ``atoll checkmk-agent serve`` after N requests,
  and of the same server started from the library alone (without the ``atoll``
  command's discovery of every layer's CLI module), to show where memory goes.

Anchor: Checkmk's own Linux agent (``check_mk_agent.linux``, a shell script) is
not packaged in Debian and may not be downloaded here, so that comparison is
skipped and said so; the targets of issue 6 (<= 0.5 s, <= 40 MB) are the yardstick.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

from atoll.monitor.agent import Agent, AgentConfig

TARGET_WALL_S = 0.5
TARGET_RSS_MB = 40.0

LEAN_SERVER = """
import sys, threading
from atoll.monitor.agent import Agent, AgentConfig
from atoll.monitor.access import parse_only_from
from atoll.monitor.server import AgentServer
agent = Agent(AgentConfig())
server = AgentServer(agent.output, listen="127.0.0.1", port=int(sys.argv[1]),
                     only_from=parse_only_from("127.0.0.1"))
server.serve_forever()
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def fetch(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        chunks = []
        while data := s.recv(65536):
            chunks.append(data)
    return b"".join(chunks)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def wait_listening(proc: subprocess.Popen[bytes], port: int) -> None:
    deadline = time.monotonic() + 30
    while True:
        with contextlib.suppress(OSError):
            fetch(port)
            return
        if time.monotonic() > deadline or proc.poll() is not None:
            raise SystemExit(f"server did not start: {proc.args}")
        time.sleep(0.1)


def serve_rss(argv: list[str], port: int, requests: int) -> tuple[float, float]:
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_listening(proc, port)
        first = rss_mb(proc.pid)
        for _ in range(requests):
            fetch(port)
            time.sleep(0.011)  # past the 1 s cache now and then: real agent runs too
        return first, rss_mb(proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=15)


def serve_burst(argv: list[str], port: int, connections: int,
                clients: int = 8) -> tuple[float, int, int, float, float]:
    """``connections`` requests from ``clients`` threads; a busy answer is asked again.

    Returns (seconds, full answers, busy answers, RSS MB before, RSS MB after).
    """
    import threading

    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_listening(proc, port)
        before = rss_mb(proc.pid)
        counts = {"full": 0, "busy": 0}
        lock = threading.Lock()

        def client(n: int) -> None:
            for _ in range(n):
                while True:
                    got = fetch(port)
                    with lock:
                        counts["full" if got else "busy"] += 1
                    if got:
                        break

        threads = [threading.Thread(target=client, args=(connections // clients,))
                   for _ in range(clients)]
        t = time.perf_counter()
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        took = time.perf_counter() - t
        return took, counts["full"], counts["busy"], before, rss_mb(proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=15)


def time_with_db(runs: int, gap: float = 0.0) -> tuple[list[float], list[float]]:
    import tempfile

    from atoll import apps
    from atoll.apps.runtime import get_runtime
    from atoll.monitor.mysql import mysql_section

    spec = Path(apps.__file__).parent / "specs" / "mariadb.yaml"
    rt = get_runtime("docker")
    with tempfile.TemporaryDirectory(prefix="atoll-bench-") as tmp:
        name = f"bench{os.getpid()}"
        apps.install(Path(tmp), name, spec_file=spec, runtime=rt)
        try:
            agent = Agent(AgentConfig())
            agent.output()
            times, alone = [], []
            for _ in range(runs):
                time.sleep(gap)
                t = time.perf_counter()
                out = agent.output()
                times.append(time.perf_counter() - t)
                assert f"[[{name}]]\nmysqld is alive" in out, "the database did not answer"
                t = time.perf_counter()
                mysql_section()
                alone.append(time.perf_counter() - t)
            agent.close()
        finally:
            apps.remove(Path(tmp), name, runtime=rt)
    return times, alone


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--burst", type=int, default=3000, help="connections in the burst (0: skip)")
    ap.add_argument("--with-db", action="store_true", help="also time it with one MariaDB app")
    args = ap.parse_args()

    agent = Agent(AgentConfig())
    agent.output()  # warm-up: imports, first Docker connection
    warm = []
    size = 0
    for _ in range(args.runs):
        t = time.perf_counter()
        size = len(agent.output())
        warm.append(time.perf_counter() - t)
    agent.close()

    cold = []
    for _ in range(max(args.runs // 4, 3)):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "atoll.cli", "checkmk-agent"], check=True,
                       stdout=subprocess.DEVNULL)
        cold.append(time.perf_counter() - t)

    port = free_port()
    cli_first, cli_rss = serve_rss([sys.executable, "-m", "atoll.cli", "checkmk-agent", "serve",
                                    "--listen", "127.0.0.1", "--port", str(port),
                                    "--only-from", "127.0.0.1"], port, args.requests)
    port = free_port()
    lean_first, lean_rss = serve_rss([sys.executable, "-c", LEAN_SERVER, str(port)], port,
                                     args.requests)
    burst = None
    if args.burst:
        port = free_port()
        burst = serve_burst([sys.executable, "-m", "atoll.cli", "checkmk-agent", "serve",
                             "--listen", "127.0.0.1", "--port", str(port), "--only-from",
                             "127.0.0.1", "--max-clients", "8"], port, args.burst)

    med = statistics.median(warm)
    print(f"agent output: {size} bytes")
    print(f"full output, in process (warm): median {med * 1000:.1f} ms, "
          f"max {max(warm) * 1000:.1f} ms  (target <= {TARGET_WALL_S * 1000:.0f} ms: "
          f"ratio {med / TARGET_WALL_S:.2f})")
    print(f"full output, fresh `atoll checkmk-agent` process: median "
          f"{statistics.median(cold) * 1000:.0f} ms, max {max(cold) * 1000:.0f} ms")
    print(f"RSS `atoll checkmk-agent serve`: {cli_first:.1f} MB at start, {cli_rss:.1f} MB "
          f"after {args.requests} requests (target <= {TARGET_RSS_MB:.0f} MB: "
          f"ratio {cli_rss / TARGET_RSS_MB:.2f})")
    print(f"RSS library-only server: {lean_first:.1f} MB at start, {lean_rss:.1f} MB after "
          f"{args.requests} requests (ratio {lean_rss / TARGET_RSS_MB:.2f})")
    if burst is not None:
        took, full, busy, before, after = burst
        print(f"burst: {full} connections from 8 clients, --max-clients 8: {took:.2f} s "
              f"({full / took:.0f}/s), {busy} answered busy ({100 * busy / (full + busy):.1f}%); "
              f"RSS {before:.1f} -> {after:.1f} MB")
    if args.with_db:
        for gap, what in ((0.0, "back to back"), (5.0, "5 s apart, like a poll")):
            db, alone = time_with_db(args.runs if gap == 0 else 5, gap)
            print(f"full output with one MariaDB app, {what}: median "
                  f"{statistics.median(db) * 1000:.1f} ms, max {max(db) * 1000:.1f} ms  "
                  f"(target <= 1000 ms: ratio {statistics.median(db):.2f})")
            print(f"mk_mysql sections alone, {what}: median "
                  f"{statistics.median(alone) * 1000:.1f} ms, max {max(alone) * 1000:.1f} ms")
    print("anchor: Checkmk's check_mk_agent.linux is not available here (no Debian package, "
          "no download allowed): comparison skipped")
    return 0


if __name__ == "__main__":
    sys.exit(main())

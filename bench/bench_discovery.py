"""Service discovery benchmark: the agent's cost, and reading a large fleet back.

    .venv/bin/python -m bench.bench_discovery [--seconds 30] [--hosts 2000] [--apps 2] \
        [--app]

Starts a real etcd (tests/services.py) on 127.0.0.1, then measures:

1. **atolld's footprint**: a real ``atolld`` on a scratch sysroot (policy off) for
   ``--seconds``, without fleet.toml and with it (defaults: TTL 60 s, 10 s polls);
   ``--app`` also installs one small app (busybox httpd, Docker) so that the poll
   inspects a container. RSS (VmRSS) at the end and CPU used while settled.
2. **registration and reading back** ``--hosts`` simulated hosts (each a host
   entry and ``--apps`` app entries under its own lease; 16 threads): time to
   register them all, a keepalive round over all leases, then one read of the
   prefix as ``atoll fleet services`` / the SD endpoint do it (range + parse +
   the Prometheus document), beside the anchor: the bare range read of the same
   keys over the same client (no parsing), one run each, median of 5.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.services import etcd_server, free_port  # noqa: E402

from atoll.fleet.discovery import (  # noqa: E402
    PREFIX,
    AppEntry,
    Endpoint,
    HostEntry,
    app_key,
    app_specific_id,
    encode,
    host_key,
    sd_document,
)
from atoll.fleet.etcdv3 import EtcdClient  # noqa: E402
from atoll.fleet.registry import Registrar, read_services  # noqa: E402
from bench.bench_agent import cpu_s, rss_kb  # noqa: E402

ENV = dict(os.environ, PYTHONPATH=str(ROOT / "src"))


def agent_footprint(url: str | None, seconds: float, with_app: bool) -> tuple[int, float]:
    from tests.integration.discovery_fixtures import make_host, web_spec

    tmp = Path(tempfile.mkdtemp(prefix="atoll-bench-disc-"))
    app = f"bench-{os.getpid()}"
    try:
        root = make_host(tmp, "db01", url, ttl=60, interval=10)
        if with_app:
            spec = web_spec(tmp / "web.yaml", free_port())
            subprocess.run([sys.executable, "-m", "atoll.cli", "-q", "--sysroot", str(root),
                            "app", "install", app, "--spec", str(spec)], env=ENV, check=True)
        proc = subprocess.Popen([sys.executable, "-m", "atoll.agent.daemon", "--sysroot",
                                 str(root)], env=ENV, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        try:
            time.sleep(5)  # start-up, first registration
            cpu0, t0 = cpu_s(proc.pid), time.monotonic()
            time.sleep(seconds)
            used = (cpu_s(proc.pid) - cpu0) / (time.monotonic() - t0)
            return rss_kb(proc.pid), used
        finally:
            proc.terminate()
            proc.wait(timeout=20)
    finally:
        if with_app:
            subprocess.run(["docker", "rm", "-f", f"atoll-{app}"], capture_output=True)
            subprocess.run(["docker", "network", "rm", f"atoll-{app}"], capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)


def desired(customer: str, host: str, apps: int) -> dict[str, bytes]:
    out = {host_key(customer, host): encode(HostEntry(
        customer=customer, host=host, machine_id=app_specific_id(host), address="10.0.0.7",
        metrics="10.0.0.7:9101", metrics_listen="0.0.0.0:9101", labels={"site": "fra1"},
        agent_version="0.1.0", registered="2026-11-29T12:00:00Z"))}
    for i in range(apps):
        name = f"app{i}"
        out[app_key(customer, host, name)] = encode(AppEntry(
            customer=customer, host=host, app=name, address="10.0.0.7",
            endpoints=(Endpoint("10.0.0.7", 3306 + i, "tcp", 3306),), role="database",
            replication_role="primary", image="atoll/mariadb:bookworm", state="running",
            health="healthy", since="2026-11-29T12:00:00Z"))
    return out


def fleet(url: str, hosts: int, apps: int) -> dict[str, float]:
    client = EtcdClient(url)
    regs = [Registrar(client, f"c{i % 20:02d}", f"h{i:05d}",
                      app_specific_id(f"h{i:05d}"), 600)
            for i in range(hosts)]
    t = time.perf_counter()
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda r: r.sync(desired(r.customer, r.host, apps)), regs))
    register = time.perf_counter() - t
    t = time.perf_counter()
    with ThreadPoolExecutor(16) as pool:
        assert all(pool.map(lambda r: r.keepalive(), regs))
    keepalive = time.perf_counter() - t

    def ours() -> int:
        found, _ = read_services(client)
        return len(sd_document(found))

    def anchor() -> int:
        return len(client.get_prefix(PREFIX)[0])

    timings: dict[str, list[float]] = {"ours": [], "anchor": []}
    for _ in range(5):
        for name, op in (("anchor", anchor), ("ours", ours)):
            t = time.perf_counter()
            n = op()
            timings[name].append(time.perf_counter() - t)
    assert n == hosts
    size = sum(len(kv.value) for kv in client.get_prefix(PREFIX)[0])
    for r in regs:
        r.close()
    client.close()
    return {"register_s": register, "keepalive_round_s": keepalive,
            "read_sd_ms": statistics.median(timings["ours"]) * 1000,
            "anchor_range_ms": statistics.median(timings["anchor"]) * 1000,
            "value_bytes": size}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--hosts", type=int, default=2000)
    ap.add_argument("--apps", type=int, default=2)
    ap.add_argument("--app", action="store_true", help="install one small app (Docker)")
    args = ap.parse_args()
    with etcd_server() as server:
        off = agent_footprint(None, args.seconds, args.app)
        on = agent_footprint(server.url, args.seconds, args.app)
        print(f"atolld, discovery off: RSS {off[0] / 1024:.1f} MiB, CPU {off[1] * 100:.3f}% "
              "of one core")
        print(f"atolld, discovery on:  RSS {on[0] / 1024:.1f} MiB, CPU {on[1] * 100:.3f}% "
              f"of one core{' (one app)' if args.app else ''}")
        r = fleet(server.url, args.hosts, args.apps)
        keys = args.hosts * (1 + args.apps)
        print(f"{args.hosts} hosts x {args.apps} apps ({keys} keys, "
              f"{r['value_bytes'] / 1e6:.1f} MB of values): registered in "
              f"{r['register_s']:.2f} s ({args.hosts / r['register_s']:.0f} hosts/s), "
              f"keepalive round {r['keepalive_round_s']:.2f} s "
              f"({args.hosts / r['keepalive_round_s']:.0f}/s)")
        print(f"read + SD document: {r['read_sd_ms']:.1f} ms; anchor (bare range read): "
              f"{r['anchor_range_ms']:.1f} ms; ratio {r['read_sd_ms'] / r['anchor_range_ms']:.2f}")


if __name__ == "__main__":
    main()

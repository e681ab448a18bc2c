"""FleetLock benchmark: lock/unlock round trips, and a 1,000-host rollout vs the ideal.

    .venv/bin/python -m bench.bench_fleetlock [--hosts 1000] [--slots 50] [--reboot 2.0] \
        [--round-trips 300]

Starts a real etcd (tests/services.py) and FleetLock servers on 127.0.0.1 over
etcd and over the embedded sqlite backend, each its own process (``atoll
fleetlock serve``, as in production; the agents run in this process), then
measures:

1. round trips: ``pre-reboot`` + ``steady-state`` over HTTP, one client,
   sequential (median, p99), beside the anchor: the same change as one bare
   etcd transaction (read + compare-and-swap put) without the server.
2. a rollout of ``--hosts`` simulated agents with ``--slots`` slots and a
   ``--reboot`` seconds simulated reboot: total wall time vs the ideal
   ``ceil(hosts / slots) x reboot`` (target: within 5%).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import etcd3gw

from atoll.control.rollout_sim import host_ids, run_rollout
from atoll.fleet.client import FleetLockClient

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests.services import etcd, free_port  # noqa: E402


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def timed(n: int, op: Callable[[int], None]) -> list[float]:
    out = []
    for i in range(n):
        t = time.perf_counter()
        op(i)
        out.append((time.perf_counter() - t) * 1000)
    return out


def ms(values: list[float]) -> dict[str, float]:
    return {"median_ms": round(statistics.median(values), 2), "p99_ms": round(pct(values, 99), 2)}


def bare_etcd_change(url: str, n: int) -> list[float]:
    """The anchor: the same read + CAS put as one lock change, straight on etcd."""
    host, port = url.rsplit("//", 1)[1].rsplit(":", 1)
    client = etcd3gw.Etcd3Client(host=host, port=int(port), timeout=5)
    key = base64.b64encode(b"/bench/anchor").decode()
    client.put("/bench/anchor", "{}")

    def op(i: int) -> None:
        kv = client.post(client.get_url("/kv/range"), json={"key": key})["kvs"][0]
        txn = {"compare": [{"key": key, "result": "EQUAL", "target": "MOD",
                            "mod_revision": kv["mod_revision"]}],
               "success": [{"request_put": {"key": key, "value": base64.b64encode(
                   json.dumps({"i": i}).encode()).decode()}}]}
        assert client.transaction(txn).get("succeeded")

    return timed(n, op)


def round_trips(url: str, n: int) -> tuple[list[float], list[float]]:
    client = FleetLockClient(url)
    locks: list[float] = []
    unlocks: list[float] = []
    for i in range(n):
        t = time.perf_counter()
        client.pre_reboot(f"bench-{i}", "rt")
        t2 = time.perf_counter()
        client.steady_state(f"bench-{i}", "rt")
        t3 = time.perf_counter()
        locks.append((t2 - t) * 1000)
        unlocks.append((t3 - t2) * 1000)
    client.close()
    return locks, unlocks


@contextlib.contextmanager
def serve(kind: str, location: str, config: Path) -> Iterator[str]:
    """``atoll fleetlock serve`` in its own process; yields its URL."""
    port = free_port()
    store = ["--etcd", location] if kind == "etcd" else ["--embedded", location]
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    proc = subprocess.Popen([sys.executable, "-m", "atoll.cli", "-q", "fleetlock", "serve",
                             "--listen", f"127.0.0.1:{port}", "--config", str(config), *store],
                            env=env)
    try:
        deadline = time.monotonic() + 20
        while True:
            assert proc.poll() is None, "the server exited"
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "the server did not listen in 20s"
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=15)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=1000)
    parser.add_argument("--slots", type=int, default=50)
    parser.add_argument("--reboot", type=float, default=2.0, help="simulated reboot seconds")
    parser.add_argument("--round-trips", type=int, default=300)
    parser.add_argument("--workers", type=int, default=0,
                        help="agent threads (default slots + slots/5)")
    args = parser.parse_args()
    results: dict[str, object] = {}
    with etcd() as url, tempfile.TemporaryDirectory(prefix="bench-fleet-") as tmp:
        config_file = Path(tmp) / "fleetlock.toml"
        config_file.write_text(f'[lock]\ndefault_group_name = "rt"\n'
                               f'[[lock.groups]]\nname = "wave"\nslots = {args.slots}\n')
        anchor = bare_etcd_change(url, args.round_trips)
        results["anchor_bare_etcd_change"] = ms(anchor)
        for kind, location in (("etcd", url), ("embedded", str(Path(tmp) / "locks.db"))):
            with serve(kind, location, config_file) as server_url:
                locks, unlocks = round_trips(server_url, args.round_trips)
                both = [a + b for a, b in zip(locks, unlocks, strict=True)]
                results[f"{kind}_lock"] = ms(locks)
                results[f"{kind}_unlock"] = ms(unlocks)
                results[f"{kind}_round_trip"] = ms(both)
                if kind == "etcd":
                    results["round_trip_vs_two_bare_etcd_changes"] = round(
                        statistics.median(both) / (2 * statistics.median(anchor)), 2)
                report = run_rollout(server_url, host_ids(args.hosts), args.slots,
                                     group="wave", reboot_seconds=args.reboot,
                                     poll_seconds=args.reboot / 20,
                                     workers=args.workers or args.slots + max(2, args.slots // 5),
                                     deadline_seconds=30 * report_ideal(args))
                results[f"{kind}_rollout"] = report.summary()
                print(f"[{kind}] rollout: {report.summary()}", file=sys.stderr)
    print(json.dumps(results, indent=2))
    ok = all(isinstance(r, dict) and r.get("overhead", 1) <= 0.05 and r.get("violations") == 0
             for k, r in results.items() if k.endswith("_rollout"))
    print("rollout within 5% of ideal:", "yes" if ok else "NO")
    return 0


def report_ideal(args: argparse.Namespace) -> float:
    return -(-args.hosts // args.slots) * args.reboot


if __name__ == "__main__":
    sys.exit(main())

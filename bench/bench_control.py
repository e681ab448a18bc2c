"""Control plane at scale: simulated agents against ``atoll fleet serve``.

    .venv/bin/python -m bench.bench_control [--db postgresql|sqlite] [--hosts 1000]
        [--rate 33.3] [--steady-s 60] [--burst-concurrency 128] [--etcd]
        [--events-per-host 100]
    .venv/bin/python -m bench.bench_control --db postgresql --hosts 10000 --etcd   # the full run

Starts the database (PostgreSQL 15 from Debian's packages in a temp dir, as the
tests do: tests/services.py; or a SQLite file), optionally etcd (``--etcd``: the
server then elects its rollout driver there), and ``atoll fleet serve`` as its own
process on 127.0.0.1. ``--hosts`` hosts are enrolled straight into the database
(setup, not measured: their Ed25519 keys and rows), then simulated agents (asyncio,
at most ``--concurrency`` requests in flight) speak the real protocol: canonical
JSON check-ins signed with each host's Ed25519 key (``Atoll-Signature``), one
HTTP/1.1 connection per check-in, as atolld does.

1. **steady state**: check-ins at ``--rate`` per second (open loop: each is sent
   at its scheduled time, hosts in turn) for ``--steady-s``; the default 33.3/s is
   the issue's 10,000 hosts every 300 s (Zincati's interval), whatever ``--hosts``.
   Check-in latency p50/p99 (sent to answered), errors.
2. **the whole fleet reconnects**: every host checks in at once (bounded by
   ``--burst-concurrency``): the time until all are answered, p50/p99; beside the
   anchor: as many ``GET /v1/health`` (HTTP and one ``SELECT 1``: the server's floor
   per request) sent the same way, and the ratio of the two drain times.
3. **a rollout with a failing wave**: a rollout over every host (waves 1, 10, 50,
   100 %, no soak, budget 10 failures), hosts checking in round after round (all
   hosts, bounded) and doing what their directive allows: a granted apply boots v2,
   good; 20 members of the 50 % wave roll back instead. Reported: each wave's
   share of the fleet against the plan, the rounds until the halt, the delay from
   sending the check-in that exceeded the budget to the rollout being halted, and
   apply grants after the halt (must be 0).
4. **a month of history**: ``--events-per-host`` events per host (copies of the
   real events the phases above made, spread over 30 days) written straight into
   the database; its size before and after, per host and per 10,000 hosts.

CPU seconds per phase of the server process, the database (PostgreSQL's processes)
and the simulator itself (it shares the machine's cores; its own CPU is part of the
figure). One run; figures in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402
from sqlalchemy import insert, select, text  # noqa: E402
from tests.integration.control_fixtures import commit_of, host_status  # noqa: E402
from tests.services import etcd, free_port, postgresql  # noqa: E402

from atoll.control import operations  # noqa: E402
from atoll.control.db import Database  # noqa: E402
from atoll.control.models import Customer, Event, Host, HostLabel  # noqa: E402
from atoll.control.protocol import b64encode, sign  # noqa: E402
from bench.bench_agent import cpu_s  # noqa: E402

ENV = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
WAVES = [1, 10, 50, 100]
FAILING = 20  # members of the 50 % wave that roll back
BUDGET = 10  # failures the rollout tolerates


# -- the simulated hosts ---------------------------------------------------------


class Sim:
    """One host: its key, counter, version and what it reports."""

    def __init__(self, name: str, site: str) -> None:
        self.name, self.site = name, site
        self.key = Ed25519PrivateKey.generate()
        self.id = str(uuid.uuid4())
        self.counter = 0
        self.version = "1"
        self.fails = False
        self.granted = False
        self.rolled_back = False
        self.reported = False  # its rollback was reported

    @property
    def public(self) -> str:
        return b64encode(self.key.public_key().public_bytes(serialization.Encoding.Raw,
                                                            serialization.PublicFormat.Raw))

    def status(self) -> dict[str, Any]:
        if self.rolled_back:  # v1 booted again after v2 failed its boot
            st = host_status("1", result="rolled-back", reason="boot counting: 3 failed boots",
                             rollbacks=1)
            v2 = dict(st["booted"], id=f"{commit_of('2')}.1", commit=commit_of("2"),
                      version="2", role="rollback", index=1)
            st["deployments"].append(v2)
            st["rollback"] = v2
            st["last_boot"]["deployment"] = v2["id"]
            return st
        return host_status(self.version, update="prepared" if self.version == "1"
                           else "up-to-date")

    def body(self) -> bytes:
        self.counter += 1
        doc = {"host_id": self.id, "counter": self.counter, "sent": _now_iso(),
               "agent_version": "0.1.0", "status": self.status(),
               "apps": [{"name": "mysql", "image": "mysql:8.0", "role": "db",
                         "container": {"state": "running", "health": "healthy"},
                         "database": {"role": "primary"}},
                        {"name": "exporter", "image": "prom/mysqld-exporter:v0.15",
                         "container": {"state": "running", "health": None}}],
               "policy": {"mode": "apply"},
               "manifest_sha256": "0" * 64}
        return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()

    def obey(self, directive: dict[str, Any]) -> None:
        """Do what the directive allows: a granted apply boots v2 (or rolls back)."""
        target = directive.get("target")
        if target and target["version"] == "2" and "apply" in directive["allow"] \
                and self.version == "1" and not self.rolled_back:
            self.granted = True
            if self.fails:
                self.rolled_back = True
            else:
                self.version = "2"


def _now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


async def post(port: int, path: str, body: bytes, headers: dict[str, str], *,
               method: str = "POST") -> tuple[int, dict[str, Any]]:
    """One HTTP/1.1 request on a new connection; (status, JSON answer)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        head = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Connection: close",
                "Content-Type: application/json", f"Content-Length: {len(body)}",
                *(f"{k}: {v}" for k, v in headers.items())]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        await writer.drain()
        raw = await reader.read()
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    header, _, payload = raw.partition(b"\r\n\r\n")
    status = int(header.split(b" ", 2)[1])
    if b"transfer-encoding: chunked" in header.lower():
        payload = _unchunk(payload)
    try:
        return status, json.loads(payload) if payload else {}
    except ValueError:
        return status, {"raw": payload[:200].decode(errors="replace")}


def _unchunk(data: bytes) -> bytes:
    out, rest = b"", data
    while rest:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out, rest = out + rest[:size], rest[size + 2:]
    return out


class Stats:
    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.errors: dict[int, int] = {}

    def add(self, seconds: float, status: int) -> None:
        if status == 200:
            self.latencies.append(seconds)
        else:
            self.errors[status] = self.errors.get(status, 0) + 1

    def summary(self) -> dict[str, Any]:
        lat = sorted(self.latencies)

        def q(p: float) -> float | None:
            return round(lat[min(len(lat) - 1, int(p * len(lat)))] * 1000, 1) if lat else None

        return {"checkins": len(lat), "p50_ms": q(0.5), "p99_ms": q(0.99),
                "max_ms": round(lat[-1] * 1000, 1) if lat else None,
                "errors": dict(self.errors)}


async def checkin(port: int, h: Sim, stats: Stats, sem: asyncio.Semaphore
                  ) -> dict[str, Any] | None:
    async with sem:
        body = h.body()
        headers = {"Atoll-Signature": sign(h.key, h.id, body)}
        t0 = time.perf_counter()
        try:
            status, doc = await post(port, "/v1/checkin", body, headers)
        except OSError:
            status, doc = 599, {}
        stats.add(time.perf_counter() - t0, status)
    return doc if status == 200 else None


# -- phases ------------------------------------------------------------------------


async def steady(port: int, hosts: list[Sim], rate: float, seconds: float,
                 concurrency: int) -> Stats:
    stats, sem = Stats(), asyncio.Semaphore(concurrency)
    n = int(rate * seconds)
    start = time.perf_counter()
    tasks = []
    for i in range(n):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(checkin(port, hosts[i % len(hosts)], stats, sem)))
    await asyncio.gather(*tasks)
    return stats


async def anchor(port: int, n: int, concurrency: int) -> tuple[Stats, float]:
    """The anchor: ``n`` unauthenticated ``GET /v1/health`` (HTTP, one ``SELECT 1``)
    on new connections, bounded as the burst is: the server's floor per request."""
    stats, sem = Stats(), asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with sem:
            t0 = time.perf_counter()
            status, _ = await post(port, "/v1/health", b"", {}, method="GET")
            stats.add(time.perf_counter() - t0, status)

    t0 = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(n)))
    return stats, time.perf_counter() - t0


async def burst(port: int, hosts: list[Sim], concurrency: int) -> tuple[Stats, float]:
    stats, sem = Stats(), asyncio.Semaphore(concurrency)
    t0 = time.perf_counter()
    await asyncio.gather(*(checkin(port, h, stats, sem) for h in hosts))
    return stats, time.perf_counter() - t0


def api(port: int, token: str, method: str, path: str, body: Any = None) -> Any:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method,
                                 data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Authorization": f"Bearer {token}",
                                          "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as resp:
        return json.loads(resp.read())


async def rollout(port: int, token: str, hosts: list[Sim], concurrency: int,
                  max_rounds: int = 40) -> dict[str, Any]:
    created = api(port, token, "POST", "/v1/rollouts", {
        "id": "bench", "customer": "bench", "labels": {"role": "db"}, "channel": "site/db",
        "versions": [{"version": v, "commit": commit_of(v)} for v in ("1", "2")],
        "to_version": "2", "spec": {"waves": WAVES, "canary_wave": False, "soak_s": 0,
                                    "budget": {"max_failures": BUDGET}}})
    assert created["state"] == "running", created
    doc = api(port, token, "GET", "/v1/rollouts/bench?hosts=true")
    waves: dict[int, list[str]] = {}
    for h in doc["hosts"]:
        waves.setdefault(h["wave"], []).append(h["host"])
    n = len(hosts)
    achieved, total = [], 0
    for i, percent in enumerate(WAVES):
        total += len(waves.get(i, []))
        achieved.append({"wave": i, "planned_pct": percent,
                         "achieved_pct": round(100 * total / n, 2)})
    by_id = {h.id: h for h in hosts}
    for hid in sorted(waves.get(2, []))[:FAILING]:
        by_id[hid].fails = True
    stats, sem = Stats(), asyncio.Semaphore(concurrency)
    rounds, after_halt = 0, 0
    halted_at: float | None = None
    over_sent: float | None = None
    state = "running"
    while rounds < max_rounds and state == "running":
        rounds += 1
        # hosts that rolled back report it first, one by one: the check-in carrying
        # failure number BUDGET + 1 must halt the rollout (inside its transaction)
        reporters = [h for h in hosts if h.rolled_back and not h.reported]
        prior = sum(h.reported for h in hosts)
        for k, h in enumerate(reporters):
            sent = time.perf_counter()
            await checkin(port, h, stats, sem)
            h.reported = True
            if prior + k == BUDGET and over_sent is None:
                over_sent = sent
                deadline = time.monotonic() + 60
                while api(port, token, "GET", "/v1/rollouts/bench")["state"] != "halted":
                    assert time.monotonic() < deadline, "the rollout did not halt"
                    await asyncio.sleep(0.01)
                halted_at = time.perf_counter()
        done = {h.id for h in reporters}  # checked in already this round
        rest = [h for h in hosts if h.id not in done]
        answers = await asyncio.gather(*(checkin(port, h, stats, sem) for h in rest))
        for h, d in zip(rest, answers, strict=True):
            if d is not None:
                h.obey(d)
        state = api(port, token, "GET", "/v1/rollouts/bench")["state"]
        print(f"bench_control: rollout round {rounds}: {state}, "
              f"{sum(h.version == '2' for h in hosts)} on v2, {stats.summary()['errors']}",
              file=sys.stderr, flush=True)
        if state == "running":
            await asyncio.sleep(1.5)  # the driver's next tick opens the next wave
    granted_before = sum(h.granted for h in hosts)
    if state == "halted":  # one more round: nothing may be granted now
        answers = await asyncio.gather(*(checkin(port, h, stats, sem) for h in hosts))
        after_halt = sum(1 for d in answers if d and "apply" in d["allow"]
                         and d.get("target") and d["target"]["version"] == "2")
    final = api(port, token, "GET", "/v1/rollouts/bench")
    return {"waves": achieved, "rounds": rounds, "state": final["state"],
            "halt": final.get("halt"), "moved": sum(h.version == "2" for h in hosts),
            "failed": sum(h.rolled_back for h in hosts), "granted": granted_before,
            "halt_delay_s": round(halted_at - over_sent, 2)
            if halted_at is not None and over_sent is not None else None,
            "apply_allowed_after_halt": after_halt, "checkins": stats.summary()}


# -- setup and the month of history ------------------------------------------------


def enrol(db: Database, hosts: list[Sim]) -> str:
    now = dt.datetime.now(dt.UTC)
    with db.write() as s:
        token = operations.create_token(s, None, "bench", "admin", None, now)["token"]
        c = Customer(name="bench", created_at=now, created_by="bench")
        s.add(c)
        s.flush()
        for i in range(0, len(hosts), 1000):
            chunk = hosts[i:i + 1000]
            s.execute(insert(Host), [
                {"id": h.id, "customer_id": c.id, "name": h.name, "machine_id": None,
                 "public_key": h.public, "counter": 0, "enrolled_at": now, "lost": False,
                 "checkins": 0, "rollback_events": 0} for h in chunk])
            s.execute(insert(HostLabel), [
                {"host_id": h.id, "key": k, "value": v} for h in chunk
                for k, v in (("role", "db"), ("site", h.site))])
    return str(token)


def db_size(db: Database, sqlite_path: Path | None) -> int:
    if sqlite_path is not None:
        import sqlite3

        with contextlib.closing(sqlite3.connect(sqlite_path)) as conn:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return sum(p.stat().st_size for p in sqlite_path.parent.glob(sqlite_path.name + "*"))
    with db.read() as s:
        return int(s.scalar(text("SELECT pg_database_size(current_database())")) or 0)


def month_of_events(db: Database, hosts: list[Sim], per_host: int) -> int:
    """``per_host`` events per host over the last 30 days, copied from real ones."""
    with db.read() as s:
        sample = [(e.kind, e.data, e.actor) for e in s.scalars(
            select(Event).where(Event.host_id.is_not(None)).limit(2000))]
        cid = s.scalar(select(Customer.id).where(Customer.name == "bench"))
    rng = random.Random(16)
    now = dt.datetime.now(dt.UTC)
    rows, written = [], 0
    for h in hosts:
        for _ in range(per_host):
            kind, data, actor = rng.choice(sample)
            rows.append({"time": now - dt.timedelta(seconds=rng.uniform(0, 30 * 86400)),
                         "customer_id": cid, "host_id": h.id, "host_name": h.name,
                         "actor": actor.replace(actor.split(":", 1)[-1], h.id)
                         if actor.startswith("host:") else actor, "kind": kind, "data": data})
        if len(rows) >= 20000:
            with db.write() as s:
                s.execute(insert(Event), rows)
            written, rows = written + len(rows), []
    if rows:
        with db.write() as s:
            s.execute(insert(Event), rows)
        written += len(rows)
    return written


def pg_cpu(pg_root: Path | None) -> float:
    """CPU seconds of PostgreSQL's processes (the postmaster and its children)."""
    if pg_root is None:
        return 0.0
    pid = int((pg_root / "data" / "postmaster.pid").read_text().split()[0])
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # the postmaster's own time and its reaped children's (backends that exited)
    total = sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                total += (int(fields[11]) + int(fields[12]) + int(fields[13])
                          + int(fields[14])) / os.sysconf("SC_CLK_TCK")
    return total


class Meter:
    """CPU seconds of the server, the database and this simulator over a phase."""

    def __init__(self, server_pid: int, pg_root: Path | None) -> None:
        self.server_pid, self.pg_root = server_pid, pg_root

    def now(self) -> tuple[float, float, float, float]:
        me = resource.getrusage(resource.RUSAGE_SELF)
        return (time.perf_counter(), cpu_s(self.server_pid), pg_cpu(self.pg_root),
                me.ru_utime + me.ru_stime)

    def since(self, t0: tuple[float, float, float, float]) -> dict[str, float]:
        t1 = self.now()
        return {"wall_s": round(t1[0] - t0[0], 1), "server_cpu_s": round(t1[1] - t0[1], 1),
                "db_cpu_s": round(t1[2] - t0[2], 1),
                "simulator_cpu_s": round(t1[3] - t0[3], 1)}


@contextlib.contextmanager
def database(kind: str) -> Iterator[tuple[str, Path | None, Path | None]]:
    """(URL, the SQLite file or None, PostgreSQL's root or None)."""
    if kind == "sqlite":
        with tempfile.TemporaryDirectory(prefix="atoll-bench-ctl-") as tmp:
            path = Path(tmp) / "control.db"
            yield f"sqlite:///{path}", path, None
    else:
        with postgresql() as pg:
            yield pg.create_database("atoll"), None, pg.root


@contextlib.contextmanager
def server(url: str, etcd_url: str | None, log: Path, tick: str
           ) -> Iterator[tuple[int, int]]:
    port = free_port()
    argv = [sys.executable, "-m", "atoll.cli", "fleet", "serve", "--db", url,
            "--listen", f"127.0.0.1:{port}", "--rollout-tick", tick,
            # a fresh one per run (a checkpoint of another database's chain is a break)
            "--audit-dir", tempfile.mkdtemp(prefix="bench-control-audit-")]
    if etcd_url:
        argv += ["--etcd", etcd_url, "--etcd-lease", "5s"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=out, env=ENV)
        try:
            deadline = time.monotonic() + 60
            while True:
                assert proc.poll() is None, log.read_text()[-2000:]
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/health",
                                           timeout=2).read()
                    break
                except OSError:
                    assert time.monotonic() < deadline, "the server did not start"
                    time.sleep(0.2)
            yield port, proc.pid
        finally:
            proc.terminate()
            proc.wait(timeout=60)


class Results(dict[str, Any]):
    """The run's figures; each phase's also printed to stderr as soon as it is known
    (a long run shows its progress, and a run cut short keeps what it measured)."""

    def __setitem__(self, key: str, value: Any) -> None:
        super().__setitem__(key, value)
        print(f"bench_control: {key}: {json.dumps(value)}", file=sys.stderr, flush=True)


def steady_and_bursts(args: argparse.Namespace, out: Results, port: int, hosts: list[Sim],
                      meter: Meter) -> None:
    """Steady state at the issue's rate, the whole fleet reconnecting, and the anchor."""
    m = meter.now()
    out["steady"] = asyncio.run(steady(port, hosts, args.rate, args.steady_s,
                                       args.concurrency)).summary() | meter.since(m)
    m = meter.now()
    stats, drain = asyncio.run(burst(port, hosts, args.burst_concurrency))
    out["reconnect_burst"] = stats.summary() | {"drain_s": round(drain, 1)} | \
        meter.since(m)
    m = meter.now()
    stats, drain = asyncio.run(anchor(port, args.hosts, args.burst_concurrency))
    out["anchor_health_burst"] = stats.summary() | {"drain_s": round(drain, 1)} | \
        meter.since(m)
    out["burst_vs_anchor"] = round(out["reconnect_burst"]["drain_s"]
                                   / max(0.1, out["anchor_health_burst"]["drain_s"]), 2)


def run(args: argparse.Namespace) -> dict[str, Any]:
    out = Results(db=args.db, hosts=args.hosts, rate=args.rate, cpus=os.cpu_count())
    with contextlib.ExitStack() as stack:
        url, sqlite_path, pg_root = stack.enter_context(database(args.db))
        etcd_url = stack.enter_context(etcd()) if args.etcd else None
        db = Database(url)
        stack.callback(db.close)
        db.upgrade()
        t0 = time.perf_counter()
        hosts = [Sim(f"db{i:05}", f"site{i % 5}") for i in range(args.hosts)]
        token = enrol(db, hosts)
        out["setup_s"] = round(time.perf_counter() - t0, 1)
        log = Path(tempfile.gettempdir()) / f"bench-control-{args.db}.log"
        port, pid = stack.enter_context(server(url, etcd_url, log, args.rollout_tick))
        meter = Meter(pid, pg_root)
        if etcd_url:  # the election: this only instance leads before the rollout
            deadline = time.monotonic() + 30
            while api(port, token, "GET", "/v1/health")["rollout_driver"]["role"] != "leader":
                assert time.monotonic() < deadline, "the server never led"
                time.sleep(0.2)
        # first contact: every host's first check-in (first-checkin events)
        m = meter.now()
        stats, drain = asyncio.run(burst(port, hosts, args.burst_concurrency))
        out["first_contact"] = stats.summary() | {"drain_s": round(drain, 1)} | meter.since(m)
        if not args.rollout_only:
            steady_and_bursts(args, out, port, hosts, meter)
        m = meter.now()
        out["rollout"] = asyncio.run(rollout(port, token, hosts, args.burst_concurrency)) | \
            meter.since(m)
        before = db_size(db, sqlite_path)
        m = meter.now()
        written = month_of_events(db, hosts, args.events_per_host)
        after = db_size(db, sqlite_path)
        out["month"] = {"events_written": written, "db_bytes_before": before,
                        "db_bytes_after": after,
                        "bytes_per_host_month": round((after - before) / args.hosts),
                        "mb_per_10000_hosts_month": round((after - before) / args.hosts
                                                          * 10000 / 1e6, 1),
                        "db_mb_total": round(after / 1e6, 1)} | meter.since(m)
        out["server_log"] = str(log)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--db", choices=["postgresql", "sqlite"], default="postgresql")
    ap.add_argument("--hosts", type=int, default=1000)
    ap.add_argument("--rollout-tick", default="1s",
                    help="the server's --rollout-tick (its driver; default 30s in production): "
                    "each tick reads every member's facts under the rollout's lock, so at "
                    "10,000 hosts use 10s (docs/benchmarks.md)")
    ap.add_argument("--rollout-only", action="store_true",
                    help="after the first contact, only the rollout and the month of events")
    ap.add_argument("--rate", type=float, default=10000 / 300,
                    help="steady check-ins per second (default: 10,000 hosts / 300 s)")
    ap.add_argument("--steady-s", type=float, default=60)
    ap.add_argument("--concurrency", type=int, default=256)
    ap.add_argument("--burst-concurrency", type=int, default=128)
    ap.add_argument("--events-per-host", type=int, default=100,
                    help="host events per host in the simulated month")
    ap.add_argument("--etcd", action="store_true",
                    help="start etcd and let the server elect its rollout driver there")
    args = ap.parse_args()
    if args.hosts < 100:
        ap.error("--hosts: at least 100 (the rollout's waves need them)")
    result = run(args)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

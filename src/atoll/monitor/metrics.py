"""Prometheus metrics: the same facts as the Checkmk local checks.

Names follow node_exporter's textfile convention (``node_reboot_required``)
and Zincati's shape for the update agent (``atoll_update_*``):

Names (types; labels in brackets):

- ``atoll_host_status_available`` gauge
- ``atoll_info`` gauge [version, commit, channel, deployment]
- ``node_reboot_required`` gauge
- ``atoll_update_state`` gauge [state], one-hot over up-to-date/available/downloaded/
  prepared/pending (docs/states.md)
- ``atoll_update_state_change_timestamp_seconds`` gauge
- ``atoll_update_last_check_timestamp_seconds`` gauge (when the deploy layer reports it)
- ``atoll_update_metadata_expiry_timestamp_seconds`` gauge
- ``atoll_rollback_events_total`` counter (when the deploy layer reports it)
- ``atoll_last_boot_rolled_back``, ``atoll_last_boot_acknowledged``,
  ``atoll_last_boot_timestamp_seconds`` gauges
- ``atoll_etc_conflicts`` gauge
- ``atoll_backup_last_timestamp_seconds``, ``atoll_backup_max_age_seconds``,
  ``atoll_backup_overdue`` gauges [app]
- ``atoll_docker_up`` gauge
- ``atoll_app_health`` gauge [app, role, container]
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from atoll.core import fsutil
from atoll.core.errors import InputError, RuntimeBackendError
from atoll.monitor.docker_sections import (
    DEFAULT_DOCKER_URL,
    AppContainer,
    app_containers,
    docker_client,
)
from atoll.monitor.facts import UPDATE_STATES, HostFacts, load_host_facts

__all__ = [
    "CONTENT_TYPE",
    "AtollCollector",
    "MetricsServer",
    "Snapshot",
    "exposition",
    "gather_snapshot",
    "write_textfile",
]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
TEXTFILE_NAME = "atoll.prom"


@dataclass(frozen=True)
class Snapshot:
    """What the metrics are computed from."""

    facts: HostFacts
    apps: tuple[AppContainer, ...] | None  # None: Docker unreachable or absent
    now: dt.datetime


def gather_snapshot(sysroot: Path = Path("/"), docker_url: str = DEFAULT_DOCKER_URL,
                    timeout: float = 5.0) -> Snapshot:
    """Read the host facts and the app containers (I/O)."""
    facts = load_host_facts(sysroot)
    apps: tuple[AppContainer, ...] | None
    try:
        client = docker_client(docker_url, timeout)
    except RuntimeBackendError:
        apps = None
    else:
        try:
            apps = tuple(app_containers(client))
        except Exception:
            apps = None
        finally:
            client.close()
    return Snapshot(facts, apps, dt.datetime.now(dt.UTC))


def _ts(t: dt.datetime | None) -> float | None:
    return t.timestamp() if t is not None else None


def families(snap: Snapshot) -> Iterator[Metric]:
    """The metric families of one snapshot (pure)."""
    f = snap.facts
    g = GaugeMetricFamily("atoll_host_status_available",
                          "1 when atoll's host status could be read", value=int(f.available))
    yield g
    if f.booted is not None:
        info = GaugeMetricFamily("atoll_info", "The booted deployment",
                                 labels=["version", "commit", "channel", "deployment"])
        info.add_metric([f.booted.version, f.booted.commit, f.booted.channel, f.booted.id], 1)
        yield info
    if f.available:
        applied = f.update is not None and f.update.state == "pending"
        pending = f.pending is not None and f.booted is not None and f.pending.id != f.booted.id
        yield GaugeMetricFamily("node_reboot_required",
                                "1 when a reboot is needed to boot an applied update",
                                value=int(applied or pending))
    if f.update is not None:
        st = GaugeMetricFamily("atoll_update_state", "Update state (one-hot)", labels=["state"])
        for s in UPDATE_STATES:
            st.add_metric([s], int(f.update.state == s))
        yield st
        for name, doc, t in (
            ("atoll_update_state_change_timestamp_seconds", "When the update state last changed",
             f.update.since),
            ("atoll_update_last_check_timestamp_seconds", "When updates were last checked for",
             f.update.last_check),
            ("atoll_update_metadata_expiry_timestamp_seconds", "When the TUF metadata expires",
             f.update.metadata_expires),
        ):
            v = _ts(t)
            if v is not None:
                yield GaugeMetricFamily(name, doc, value=v)
    if f.rollback_events is not None:
        yield CounterMetricFamily("atoll_rollback_events", "Automatic rollbacks on this host",
                                  value=f.rollback_events)
    if f.last_boot is not None:
        rolled = f.last_boot.result == "rolled-back"
        yield GaugeMetricFamily("atoll_last_boot_rolled_back",
                                "1 when the last boot rolled back", value=int(rolled))
        yield GaugeMetricFamily("atoll_last_boot_acknowledged",
                                "1 when the last rollback was acknowledged",
                                value=int(f.last_boot.acknowledged))
        v = _ts(f.last_boot.time)
        if v is not None:
            yield GaugeMetricFamily("atoll_last_boot_timestamp_seconds", "When the last boot ended",
                                    value=v)
    if f.available:
        yield GaugeMetricFamily("atoll_etc_conflicts", "Unresolved /etc merge conflicts",
                                value=len(f.etc_conflicts))
    if f.backups:
        last = GaugeMetricFamily("atoll_backup_last_timestamp_seconds",
                                 "Time of the newest backup", labels=["app"])
        max_age = GaugeMetricFamily("atoll_backup_max_age_seconds", "Backup policy: maximum age",
                                    labels=["app"])
        overdue = GaugeMetricFamily("atoll_backup_overdue", "1 when the newest backup is too old",
                                    labels=["app"])
        for b in f.backups:
            ts = _ts(b.last)
            if ts is not None:
                last.add_metric([b.app], ts)
            max_age.add_metric([b.app], b.max_age_s)
            late = ts is None or (b.max_age_s > 0 and snap.now.timestamp() - ts > b.max_age_s)
            overdue.add_metric([b.app], int(late))
        yield last
        yield max_age
        yield overdue
    if f.cves is not None and f.cves.report:
        cves = GaugeMetricFamily("atoll_cves_open", "Open CVEs of the booted commit by the "
                                 "Debian security tracker's urgency (signed CVE report)",
                                 labels=["urgency"])
        for urgency, n in f.cves.open_counts:
            cves.add_metric([urgency], n)
        if f.cves.open_known:  # never 0 for "unknown" (a report without tracker data)
            yield cves
        for name, doc, t in (
                ("atoll_cve_report_generated_timestamp_seconds", "When the booted commit's "
                 "CVE report was generated", f.cves.generated),
                ("atoll_cve_report_expires_timestamp_seconds", "When the booted commit's "
                 "CVE report goes stale", f.cves.expires)):
            if t is not None:
                yield GaugeMetricFamily(name, doc, value=t.timestamp())
    yield GaugeMetricFamily("atoll_docker_up", "1 when the Docker daemon answers",
                            value=int(snap.apps is not None))
    if snap.apps:
        health = GaugeMetricFamily("atoll_app_health",
                                   "1 when the app's container runs and is healthy",
                                   labels=["app", "role", "container"])
        for a in snap.apps:
            health.add_metric([a.app, a.role, a.name], int(a.healthy))
        yield health


class AtollCollector(Collector):
    """A prometheus_client collector that takes a fresh snapshot on each collect."""

    def __init__(self, snapshot: Callable[[], Snapshot]):
        self._snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        yield from families(self._snapshot())


def exposition(snapshot: Callable[[], Snapshot]) -> bytes:
    """The text exposition format of one snapshot."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(AtollCollector(snapshot))
    data: bytes = generate_latest(registry)
    return data


def write_textfile(directory: Path, data: bytes) -> Path:
    """Write ``DIR/atoll.prom`` atomically for node_exporter's textfile collector.

    Raises:
        InputError: the directory does not exist.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise InputError(f"textfile directory {directory} does not exist",
                         resolution="create it, or give node_exporter's "
                                    "--collector.textfile.directory")
    target = directory / TEXTFILE_NAME
    fsutil.atomic_write(target, data)
    return target


class MetricsServer:
    """Serve ``/metrics`` over HTTP; one exposition computed at most every ``cache_seconds``.

    Raises:
        InputError: the address cannot be bound.
    """

    def __init__(self, produce: Callable[[], bytes], host: str = "127.0.0.1", port: int = 9101,
                 cache_seconds: float = 1.0):
        lock = threading.Lock()
        cache: dict[str, Any] = {"at": -1e9, "data": b""}

        def current() -> bytes:
            with lock:
                if time.monotonic() - cache["at"] >= cache_seconds:
                    cache["data"], cache["at"] = produce(), time.monotonic()
                data: bytes = cache["data"]
                return data

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?", 1)[0] not in ("/metrics", "/"):
                    self.send_error(404, "only /metrics is served")
                    return
                body = current()
                self.send_response(200)
                self.send_header("Content-Type", CONTENT_TYPE)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return

        try:
            self.httpd = ThreadingHTTPServer((host, port), Handler)
        except OSError as exc:
            raise InputError(f"cannot listen on {host}:{port}", details=str(exc)) from exc
        self.httpd.daemon_threads = True
        self.port: int = self.httpd.server_address[1]

    def serve_forever(self) -> None:
        self.httpd.serve_forever(poll_interval=0.2)

    def shutdown(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

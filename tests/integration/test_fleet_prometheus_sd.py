"""A real Prometheus (Debian's) finds the fleet through atoll's HTTP service discovery.

Two hosts register through their real atolld: db01 with a real ``atoll metrics
serve`` endpoint, db02 with an endpoint that does not answer. Prometheus, given
only the SD URL and a bearer token file (``http_sd_configs``), scrapes db01 (``up``
1, atoll's metrics labelled with the SD's ``customer`` and ``host``), sees db02
down, and drops db02 once its agent died and its lease expired.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.discovery_fixtures import ENV, AgentProc, etcd, make_host, wait_for
from tests.services import Etcd, free_port

__all__ = ["etcd"]  # fixtures

TTL = 3


def _api(base: str, path: str, **query: str) -> Any:
    url = f"{base}{path}" + (f"?{urllib.parse.urlencode(query)}" if query else "")
    with urllib.request.urlopen(url, timeout=10) as resp:
        doc = json.loads(resp.read())
    assert doc["status"] == "success", doc
    return doc["data"]


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes a test starts; each is ended (SIGTERM, then SIGKILL) afterwards."""
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for p in procs:
        if p.poll() is None:
            p.terminate()
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def test_prometheus_discovers_scrapes_and_drops_hosts(etcd: Etcd, tmp_path: Path,
                                                      processes: list[Any]) -> None:
    prometheus = shutil.which("prometheus")
    assert prometheus, "prometheus missing: apt-get install prometheus (scripts/apt-packages.txt)"
    metrics_port, dead_port = free_port(), free_port()
    db01 = make_host(tmp_path, "db01", etcd.url, ttl=TTL,
                     metrics=f"127.0.0.1:{metrics_port}")
    db02 = make_host(tmp_path, "db02", etcd.url, ttl=TTL, metrics=f"127.0.0.1:{dead_port}")
    processes.append(subprocess.Popen(
        [sys.executable, "-m", "atoll.cli", "--sysroot", str(db01), "metrics", "serve",
         "--listen", f"127.0.0.1:{metrics_port}"], env=ENV, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL))
    token = tmp_path / "sd.token"
    token.write_text("prometheus-reads-the-fleet-0123456789\n")
    os.chmod(token, 0o600)
    sd_port, prom_port = free_port(), free_port()
    processes.append(subprocess.Popen(
        [sys.executable, "-m", "atoll.cli", "fleet", "sd", "serve", "--listen",
         f"127.0.0.1:{sd_port}", "--token-file", str(token), "--etcd", etcd.url,
         "--cache-seconds", "0"], env=ENV, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL))
    config = tmp_path / "prometheus.yml"
    config.write_text(f"""\
global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: atoll
    scrape_interval: 1s
    scrape_timeout: 1s
    http_sd_configs:
      - url: http://127.0.0.1:{sd_port}/v1/sd/prometheus
        refresh_interval: 1s
        authorization:
          type: Bearer
          credentials_file: {token}
""")
    with AgentProc(db01), AgentProc(db02) as agent02:
        processes.append(subprocess.Popen(
            [prometheus, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{prom_port}"],
            stdout=subprocess.DEVNULL, stderr=open(tmp_path / "prometheus.log", "wb")))  # noqa: SIM115
        base = f"http://127.0.0.1:{prom_port}"

        def targets() -> dict[str, dict[str, Any]]:
            try:
                data = _api(base, "/api/v1/targets", state="active")
            except OSError:
                return {}
            return {t["labels"].get("host", "?"): t for t in data["activeTargets"]}

        def scraped() -> dict[str, dict[str, Any]] | None:
            found = targets()
            ok = set(found) == {"db01", "db02"} and found["db01"]["health"] == "up" and \
                found["db02"]["health"] == "down"
            return found if ok else None

        found = wait_for(scraped, 90, "Prometheus discovering db01 (up) and db02 (down); "
                         f"log: {tmp_path / 'prometheus.log'}", every=0.5)
        t01 = found["db01"]
        assert t01["scrapeUrl"] == f"http://127.0.0.1:{metrics_port}/metrics"
        assert t01["labels"]["customer"] == "acme" and t01["labels"]["job"] == "atoll"
        assert t01["discoveredLabels"]["__meta_atoll_host"] == "db01"
        assert t01["discoveredLabels"]["__meta_url"].endswith("/v1/sd/prometheus")
        # atoll's own metrics, as Prometheus stored them, under the discovered labels
        result = wait_for(lambda: _api(base, "/api/v1/query",
                                       query='atoll_host_status_available{host="db01"}')
                          ["result"], 30, "atoll's metrics of db01 in Prometheus", every=0.5)
        assert result[0]["metric"]["customer"] == "acme"
        up = _api(base, "/api/v1/query", query="up")["result"]
        assert {r["metric"]["host"]: r["value"][1] for r in up} == {"db01": "1", "db02": "0"}

        # db02's agent dies: its lease expires, the SD drops it, so does Prometheus
        agent02.kill(signal.SIGKILL)
        wait_for(lambda: set(targets()) == {"db01"}, TTL + 30,
                 "db02 dropped from Prometheus' targets", every=0.5)

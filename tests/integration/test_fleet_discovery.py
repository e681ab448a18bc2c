"""Service discovery end to end: real etcd, real atolld agents in sysroots, a real
container, the CLI (list, watch) and the Prometheus SD endpoint over HTTP."""

from __future__ import annotations

import json
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from atoll.agent import api
from atoll.agent.discovery import Discovery
from atoll.cli import main
from atoll.fleet.discovery import app_key, app_specific_id, host_key
from atoll.fleet.etcdv3 import EtcdClient
from tests.integration.discovery_fixtures import (
    ENV,
    AgentProc,
    busybox_image,
    docker_url,
    etcd,
    make_host,
    services,
    wait_for,
    web_spec,
)
from tests.services import Etcd, free_port
from tests.unit.test_fleet_discovery import PROMETHEUS_HTTP_SD

__all__ = ["busybox_image", "docker_url", "etcd"]  # fixtures

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((ROOT / "docs/services.schema.json").read_text())
TTL = 3


def _atoll(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", "atoll.cli", *args], env=ENV,
                          capture_output=True, text=True, timeout=120)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


@pytest.fixture
def web(tmp_path: Path, busybox_image: str) -> Iterator[tuple[Path, str, int]]:
    """The spec of app ``web-XXXXXX`` (tmp_path/web.yaml: busybox httpd on a free port);
    yields (db01's sysroot, the app's name, its port); its container goes afterwards."""
    port = free_port()
    name = f"web-{uuid.uuid4().hex[:6]}"
    web_spec(tmp_path / "web.yaml", port)
    try:
        yield tmp_path / "db01", name, port
    finally:
        subprocess.run(["docker", "rm", "-f", f"atoll-{name}"], capture_output=True)
        subprocess.run(["docker", "network", "rm", f"atoll-{name}"], capture_output=True)


def _install(sysroot: Path, name: str, spec: Path) -> None:
    _atoll("-q", "--sysroot", str(sysroot), "app", "install", name, "--spec", str(spec))


def test_agents_register_and_a_killed_agents_entries_vanish_after_the_ttl(
        etcd: Etcd, tmp_path: Path, web: tuple[Path, str, int]) -> None:
    _, name, port = web
    a = make_host(tmp_path, "db01", etcd.url, ttl=TTL)
    b = make_host(tmp_path, "db02", etcd.url, ttl=TTL, extra='labels = {site = "fra1"}\n')
    # the app has a secret: it must never reach etcd (nor the host's machine id)
    secret = f"never-registered-{uuid.uuid4().hex}"
    (tmp_path / "api-token").write_text(secret)
    web_spec(tmp_path / "web.yaml", port, secret="api-token")
    _atoll("-q", "--sysroot", str(a), "app", "install", name, "--spec",
           str(tmp_path / "web.yaml"), "--secret", f"api-token=@{tmp_path / 'api-token'}")
    subprocess.run(["docker", "exec", f"atoll-{name}", "/bin/touch", "/tmp/ok"], check=True)
    with AgentProc(a) as agent_a, AgentProc(b) as agent_b:
        def ready() -> bool:
            s = services(etcd.url)
            apps = [x for x in s.apps.values() if x.app == name]
            return len(s.hosts) == 2 and len(apps) == 1 and apps[0].health == "healthy"

        wait_for(ready, 60, "both hosts and a healthy app registered")
        found = services(etcd.url)
        entry = found.apps[app_key("acme", "db01", name)]
        assert (entry.role, entry.state, entry.ready, entry.replication_role) == \
            ("service", "running", True, None)
        assert [(e.address, e.port, e.protocol, e.container_port) for e in entry.endpoints] == \
            [("127.0.0.1", port, "tcp", 8080)]
        # the endpoint is real: the app answers there
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ok", timeout=5) as resp:
            assert resp.status == 200
        hb = found.hosts[host_key("acme", "db02")]
        assert dict(hb.labels) == {"site": "fra1"} and hb.address == "127.0.0.1"
        machine_id = (b / "etc/machine-id").read_text().strip()
        assert hb.machine_id == app_specific_id(machine_id) != machine_id
        with EtcdClient(etcd.url) as client:
            stored = b"".join(kv.key.encode() + kv.value
                              for kv in client.get_prefix("/atoll/")[0])
        assert secret.encode() not in stored and b"plain-hello" not in stored
        assert machine_id.encode() not in stored
        assert (a / "etc/machine-id").read_text().strip().encode() not in stored

        # the CLI, human and JSON (the documented schema), filtered by app
        out = _atoll("fleet", "services", "--etcd", etcd.url).stdout
        assert "acme/db01  127.0.0.1" in out and f"{name}  service  running healthy" in out
        assert "acme/db02" in out and "site=fra1" in out
        doc = json.loads(_atoll("--json", "fleet", "services", "--etcd", etcd.url,
                                "--app", name).stdout)
        jsonschema.validate(doc, SCHEMA)
        assert [h["host"] for h in doc["hosts"]] == ["db01"]

        # a dead host (SIGKILL: no goodbye): its entries stay until the lease expires
        agent_b.kill(signal.SIGKILL)
        t0 = time.monotonic()
        assert host_key("acme", "db02") in services(etcd.url).hosts
        wait_for(lambda: host_key("acme", "db02") not in services(etcd.url).hosts, TTL + 5,
                 "db02's entries gone after its lease's TTL")
        gone_after = time.monotonic() - t0
        assert gone_after >= TTL / 3 - 0.5, gone_after  # expired, not deleted at once
        assert host_key("acme", "db01") in services(etcd.url).hosts  # the live one stays

        # a clean stop (SIGTERM) revokes the lease: gone at once
        assert agent_a.kill(signal.SIGTERM) == 0
        after = services(etcd.url)
        assert not after.hosts and not after.apps, after
        assert "registered acme/db01 (1 apps" in agent_a.log()


def test_container_changes_are_seen_by_a_watch(etcd: Etcd, tmp_path: Path,
                                               web: tuple[Path, str, int]) -> None:
    _, name, _ = web
    a = make_host(tmp_path, "db01", etcd.url, ttl=TTL)
    _install(a, name, tmp_path / "web.yaml")
    key = app_key("acme", "db01", name)
    watch = subprocess.Popen([sys.executable, "-m", "atoll.cli", "--json", "fleet", "services",
                              "--watch", "--etcd", etcd.url, "--app", name], env=ENV,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    events: queue.Queue[dict[str, Any]] = queue.Queue()
    raw: list[str] = []

    def pump() -> None:
        assert watch.stdout is not None
        for line in watch.stdout:
            raw.append(line)
            try:
                events.put(json.loads(line))
            except ValueError:
                continue  # not an event: the test fails and shows it

    threading.Thread(target=pump, daemon=True).start()

    latest: dict[str, Any] = {}

    def until(test: Any, what: str, timeout: float = 30) -> dict[str, Any]:
        """The app's newest watch event, once ``test`` holds for it."""
        deadline = time.monotonic() + timeout
        while not (latest and test(latest)):
            try:
                ev = events.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no watch event within {timeout} s: {what}; the watch "
                                     f"printed {''.join(raw)[-3000:]!r}") from None
            jsonschema.validate(ev["object"], SCHEMA)
            assert ev["object"]["kind"] == "AppEntry", ev  # --app: only that app's entries
            if ev["key"] == key:
                latest.clear()
                latest.update(ev)
        return dict(latest)

    try:
        with AgentProc(a):
            until(lambda e: e["type"] == "ADDED", "the app added")
            until(lambda e: e["object"]["health"] == "unhealthy", "unhealthy (no /tmp/ok)")
            subprocess.run(["docker", "exec", f"atoll-{name}", "/bin/touch", "/tmp/ok"],
                           check=True)
            ev = until(lambda e: e["object"]["health"] == "healthy", "healthy")
            assert ev["type"] == "MODIFIED" and ev["object"]["ready"] is True
            subprocess.run(["docker", "stop", "-t", "1", f"atoll-{name}"], check=True,
                           capture_output=True)
            ev = until(lambda e: e["object"]["state"] == "exited", "stopped")
            assert ev["object"]["ready"] is False
            subprocess.run(["docker", "start", f"atoll-{name}"], check=True, capture_output=True)
            until(lambda e: e["object"]["state"] == "running", "started again")
            _atoll("-q", "--sysroot", str(a), "app", "remove", name)
            until(lambda e: e["type"] == "DELETED", "removed")
    finally:
        watch.send_signal(signal.SIGTERM)
        assert watch.wait(timeout=10) == 0  # the normal end of a watch


def test_etcd_down_the_agent_carries_on_and_registers_again(etcd: Etcd,
                                                            tmp_path: Path) -> None:
    a = make_host(tmp_path, "db01", etcd.url, ttl=TTL)
    with AgentProc(a) as agent:
        wait_for(lambda: host_key("acme", "db01") in services(etcd.url).hosts, 30, "registered")
        etcd.stop()
        time.sleep(TTL + 1)
        assert agent.alive()
        assert api.call(a, "GET", "/v1/policy", timeout=10)["mode"] == "off"  # still serving
        etcd.start()  # the same data: the lease survives a restart, or the agent registers
        wait_for(lambda: host_key("acme", "db01") in services(etcd.url).hosts, 40,
                 "registered after etcd came back")
        wait_for(lambda: "etcd reachable again" in agent.log(), 40, "the recovery logged")
        log = agent.log()
        assert log.count("retrying with backoff") == 1, log  # said once, not every retry
        assert "service discovery: etcd at" in log and "Traceback" not in log

        registrations = agent.log().count("registered acme/db01")
        etcd.stop()  # etcd's data lost: an empty cluster at the same address
        etcd.wipe()
        etcd.start()
        wait_for(lambda: agent.log().count("registered acme/db01") > registrations, 40,
                 "registered again in the new cluster (its lease is unknown there)")
        assert host_key("acme", "db01") in services(etcd.url).hosts
        assert agent.alive()


def test_without_etcd_the_agent_is_silent_and_a_bad_config_is_one_error(
        etcd: Etcd, tmp_path: Path) -> None:
    a = make_host(tmp_path, "db01", None)
    with AgentProc(a) as agent:
        wait_for(lambda: api.running(a), 30, "atolld serving")
        time.sleep(1)
        config = a / "etc/atoll/fleet.toml"
        config.write_text('[etcd3]\nendpoints = ["http://127.0.0.1:1"]\n[discovery]\n'
                          'customer = "Not A Name"\n')
        wait_for(lambda: "service discovery off" in agent.log(), 45, "the bad config reported")
        assert agent.alive()
        config.write_text(f'[etcd3]\nendpoints = ["{etcd.url}"]\n[discovery]\n'
                          f'customer = "acme"\nttl_s = {TTL}\ninterval_s = 0.5\n')
        wait_for(lambda: host_key("acme", "db01") in services(etcd.url).hosts, 45,
                 "registered once the config is fixed")
        assert agent.kill(signal.SIGTERM) == 0
    log = agent.log()
    before_config = log.split("service discovery off")[0]
    assert "discovery" not in before_config and "etcd at" not in before_config, log
    assert log.count("service discovery off") == 1 and "Traceback" not in log, log


def test_a_restarted_agent_takes_over_and_another_machine_cannot_take_the_name(
        etcd: Etcd, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    a = make_host(tmp_path, "db01", etcd.url, ttl=30, machine_id="a" * 32)
    twin = make_host(tmp_path / "other", "db01", etcd.url, ttl=30, machine_id="b" * 32)
    first = Discovery(a)
    first.step()
    assert first.registrar is not None
    old_lease = first.registrar.lease
    client = EtcdClient(etcd.url)
    try:
        # the agent restarts (its old lease still alive): the new one takes the keys over
        again = Discovery(a)
        again.step()
        assert again.registrar is not None and again.registrar.lease != old_lease
        kv = client.get(host_key("acme", "db01"))
        assert kv is not None and kv.lease == again.registrar.lease
        assert client.lease_keepalive(old_lease) == 0  # the old lease was revoked
        # another machine named db01: refused, nothing overwritten
        caplog.set_level(logging.WARNING, "atoll.agent.discovery")
        other = Discovery(twin)
        other.step()
        assert "registered by another machine" in caplog.text
        assert services(etcd.url).hosts[host_key("acme", "db01")].machine_id == \
            app_specific_id("a" * 32)
        again.stop()  # revoked: the name is free, and the other machine registers
        other._retry_at = 0.0
        other.step()
        assert services(etcd.url).hosts[host_key("acme", "db01")].machine_id == \
            app_specific_id("b" * 32)
        other.stop()
        first._close(revoke=False)
    finally:
        client.close()


def _get(url: str, token: str | None = None, method: str = "GET"
         ) -> tuple[int, dict[str, str], Any]:
    req = urllib.request.Request(url, method=method)
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, dict(resp.headers), json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), json.loads(exc.read())


def test_sd_endpoint_for_prometheus(etcd: Etcd, tmp_path: Path) -> None:
    for name, customer in (("db01", "acme"), ("db02", "acme"), ("web1", "beta")):
        d = Discovery(make_host(tmp_path, name, etcd.url, customer=customer, ttl=30,
                                metrics="0.0.0.0:9101"))
        d.step()
    token = "s3cr3t-0123456789abcdef"
    token_file = tmp_path / "sd.token"
    token_file.write_text(token + "\n")
    os.chmod(token_file, 0o600)
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "atoll.cli", "fleet", "sd", "serve", "--listen",
         f"127.0.0.1:{port}", "--token-file", str(token_file), "--etcd", etcd.url,
         "--cache-seconds", "0"], env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        def up() -> bool:
            try:
                _get(base + "/v1/sd/prometheus")
            except OSError:
                return False
            return True

        wait_for(up, 30, "the SD server listening")
        status, headers, body = _get(base + "/v1/sd/prometheus")
        assert status == 401 and body["error"] == "NotAuthorized"
        assert headers["www-authenticate"].startswith("Bearer")
        assert _get(base + "/v1/sd/prometheus", "wrong-token-0123456789")[0] == 401
        status, headers, doc = _get(base + "/v1/sd/prometheus", token)
        assert status == 200 and headers["content-type"] == "application/json"
        jsonschema.validate(doc, PROMETHEUS_HTTP_SD)
        assert sorted((g["labels"]["customer"], g["labels"]["host"]) for g in doc) == \
            [("acme", "db01"), ("acme", "db02"), ("beta", "web1")]
        assert all(g["targets"] == ["127.0.0.1:9101"] for g in doc)
        _, _, only = _get(base + "/v1/sd/prometheus?customer=beta", token)
        assert [g["labels"]["host"] for g in only] == ["web1"]
        assert _get(base + "/v1/sd/prometheus?customer=Bad/Name", token)[0] == 400
        status, _, listing = _get(base + "/v1/services?customer=acme", token)
        assert status == 200 and [h["host"] for h in listing["hosts"]] == ["db01", "db02"]
        jsonschema.validate(listing, SCHEMA)
        # the same document on the command line (a file_sd file, too)
        printed = json.loads(_atoll("fleet", "sd", "targets", "--etcd", etcd.url).stdout)
        assert printed == doc
        status, headers, body = _get(base + "/v1/sd/prometheus", token, method="POST")
        assert status == 405 and headers["allow"] == "GET"
        assert _get(base + "/nope", token)[0] == 404
        # etcd away: 503 (Prometheus keeps its targets), never an empty list
        etcd.stop()
        status, headers, body = _get(base + "/v1/sd/prometheus", token)
        assert status == 503 and "retry-after" in headers and body["error"]
        etcd.start()
        status, _, again = _get(base + "/v1/sd/prometheus", token)
        assert status == 200 and again == doc
    finally:
        server.send_signal(signal.SIGTERM)
        _, err = server.communicate(timeout=20)
    assert server.returncode == 0, err


def test_cli_errors() -> None:
    assert main(["fleet", "services"]) == 2  # no etcd named (the test machine has no config)
    assert main(["fleet", "services", "--etcd", "ftp://x"]) == 2
    assert main(["fleet", "services", "--etcd", "http://127.0.0.1:1"]) == 8  # unreachable
    assert main(["fleet", "services", "--etcd", "http://127.0.0.1:1", "--app", "Bad"]) == 2
    assert main(["fleet", "sd", "serve", "--etcd", "http://127.0.0.1:1",
                 "--token-file", "/nonexistent"]) == 2

"""Docker and MySQL sections against a real Docker daemon (tests/services.py dockerd())."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from atoll.core.run import run
from atoll.monitor.agent import Agent, AgentConfig
from atoll.monitor.docker_sections import app_containers, docker_client, docker_section
from atoll.monitor.metrics import exposition, gather_snapshot
from atoll.monitor.mysql import mysql_section
from tests.services import dockerd
from tests.unit.test_monitor_conformance import _instances, check_agent_output, parse_agent_output

IMAGE = "atoll-test/busybox:monitor"


@pytest.fixture(scope="module")
def docker_url() -> Iterator[str]:
    with dockerd() as url:
        yield url


@pytest.fixture(scope="module")
def busybox_image(docker_url: str) -> str:
    """A one-binary image (busybox-static), imported locally: no registry needed."""
    client = docker.DockerClient(base_url=docker_url)
    try:
        client.images.get(IMAGE)
        return IMAGE
    except docker.errors.ImageNotFound:
        pass
    finally:
        client.close()
    busybox = shutil.which("busybox")
    assert busybox, "busybox missing: apt-get install busybox-static (scripts/apt-packages.txt)"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(busybox, arcname="bin/busybox")
        for name in ("sh", "sleep", "true"):
            info = tarfile.TarInfo(f"bin/{name}")
            info.type, info.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(info)
    run(["docker", "import", "-", IMAGE], input=buf.getvalue())
    return IMAGE


@pytest.fixture
def containers(docker_url: str, busybox_image: str) -> Iterator[dict[str, Any]]:
    client = docker.DockerClient(base_url=docker_url)
    tag = uuid.uuid4().hex[:8]
    made = {
        "app": client.containers.run(
            busybox_image, ["/bin/sleep", "300"], name=f"monitest-app-{tag}", detach=True,
            labels={"io.atoll.app": f"monitest{tag}", "io.atoll.role": "web"}),
        "db": client.containers.run(
            busybox_image, ["/bin/sleep", "300"], name=f"monitest-db-{tag}", detach=True,
            labels={"io.atoll.app": f"monidb{tag}", "io.atoll.role": "database"}),
        "stopped": client.containers.create(
            busybox_image, ["/bin/true"], name=f"monitest-stopped-{tag}",
            labels={"io.atoll.app": f"monistop{tag}", "io.atoll.role": "database"}),
    }
    try:
        yield {"tag": tag, **made}
    finally:
        for c in made.values():
            c.remove(force=True)
        client.close()


def test_containers_are_piggyback_hosts(docker_url: str, containers: dict[str, Any]) -> None:
    out = docker_section(docker_url)  # mk_docker's default: the short container id
    sections = check_agent_output(out)
    docs = [json.loads(r[0]) for r in sections[("", "docker_node_info")].rows
            if not r[0].startswith("@")]
    info = docs[0]  # later lines may report containers that other tests removed meanwhile
    assert info["Containers"] >= 3
    name = containers["app"].id[:12]
    for sec in ("docker_container_node_name", "docker_container_status",
                "docker_container_labels", "docker_container_network", "docker_container_mem",
                "docker_container_cpu", "docker_container_diskstat"):
        assert (name, sec) in sections, sec
    status = json.loads(sections[(name, "docker_container_status")].rows[-1][0])
    assert status["Status"] == "running" and status["ImageTags"] == [IMAGE]
    labels = json.loads(sections[(name, "docker_container_labels")].rows[-1][0])
    assert labels["io.atoll.app"] == f"monitest{containers['tag']}"
    stopped = containers["stopped"].id[:12]
    assert (stopped, "docker_container_status") in sections
    assert (stopped, "docker_container_mem") not in sections  # not running: no stats
    assert f"<<<<{name}>>>>\n" in out
    # every piggyback block is closed
    opened = [ln for ln in out.splitlines() if ln.startswith("<<<<") and ln != "<<<<>>>>"]
    assert len(opened) == out.splitlines().count("<<<<>>>>")


@pytest.mark.parametrize("option", ["short", "long", "name"])
def test_piggyback_names_follow_mk_dockers_container_id_option(
        docker_url: str, containers: dict[str, Any], option: str, tmp_path: Path) -> None:
    """A host already set up for mk_docker (its docker.cfg) keeps receiving data under the
    same piggyback host names."""
    app = containers["app"]
    want = {"short": app.id[:12], "long": app.id, "name": app.name}[option]
    (tmp_path / "etc/check_mk").mkdir(parents=True)
    (tmp_path / "etc/check_mk/docker.cfg").write_text(
        f"[DOCKER]\nbase_url: {docker_url}\ncontainer_id: {option}\n")
    p = subprocess.run([sys.executable, "-m", "atoll.cli", "--sysroot", str(tmp_path),
                        "checkmk-agent", "--docker-url", docker_url], capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    hosts = {ln[4:-4] for ln in p.stdout.splitlines()
             if ln.startswith("<<<<") and ln != "<<<<>>>>"}
    assert want in hosts
    others = {"short": app.id[:12], "long": app.id, "name": app.name}
    assert not ({v for k, v in others.items() if k != option} & hosts)


def test_database_apps_get_mysql_sections(docker_url: str, containers: dict[str, Any]) -> None:
    """A database container whose server does not answer: mysql_ping says so, nothing else."""
    out = mysql_section(docker_url)
    sections = check_agent_output(out)
    ping = _instances(sections[("", "mysql_ping")].rows)
    tag = containers["tag"]
    db = " ".join(" ".join(r) for r in ping[f"monidb{tag}"])
    assert "mysqladmin" in db  # the exec failed: busybox has no mysqladmin
    stopped = " ".join(" ".join(r) for r in ping[f"monistop{tag}"])
    assert "is not running" in stopped
    assert f"monitest{tag}" not in ping  # role web: no MySQL sections
    assert all(f"monidb{tag}" not in _instances(s.rows) for (h, n), s in sections.items()
               if n in ("mysql", "mysql_capacity"))


def test_full_agent_with_containers(docker_url: str, containers: dict[str, Any]) -> None:
    agent = Agent(AgentConfig(docker_url=docker_url))
    try:
        out = agent.output()
    finally:
        agent.close()
    sections = check_agent_output(out)
    assert (containers["app"].id[:12], "docker_container_status") in sections
    assert ("", "mysql_ping") in sections and ("", "uptime") in sections


def test_app_health_metrics(docker_url: str, containers: dict[str, Any]) -> None:
    client = docker_client(docker_url)
    try:
        apps = {a.name: a for a in app_containers(client)}
    finally:
        client.close()
    assert apps[containers["app"].name].healthy
    assert not apps[containers["stopped"].name].healthy
    text = exposition(lambda: gather_snapshot(Path("/"), docker_url)).decode()
    assert f'atoll_app_health{{app="monitest{containers["tag"]}",container=' in text
    assert "atoll_docker_up 1.0" in text


def test_docker_daemon_down(tmp_path: Path) -> None:
    """Nothing answers on the socket: docker_node_info says so, the rest completes."""
    url = f"unix://{tmp_path}/docker.sock"
    (tmp_path / "docker.sock").touch()  # a socket path that nobody listens on
    out = docker_section(url, timeout=2)
    sections = check_agent_output(out)
    assert list(sections) == [("", "docker_node_info")]
    msg = json.loads(sections[("", "docker_node_info")].rows[-1][0])
    assert "Docker daemon unreachable" in msg["Critical"]
    agent = Agent(AgentConfig(docker_url=url, app_timeout=3))
    try:
        full = agent.output()
    finally:
        agent.close()
    names = {n for _, n in parse_agent_output(full)}
    assert {"uptime", "mem", "df", "ps_lnx", "docker_node_info", "local"} <= names
    assert '"Critical": "Docker daemon unreachable' in full
    assert "mysql_ping" not in names  # no apps known: nothing to ping

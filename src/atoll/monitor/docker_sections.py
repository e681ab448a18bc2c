"""Docker sections in the format of Checkmk's ``mk_docker.py`` plugin.

Node sections (``docker_node_info``, ``docker_node_disk_usage``,
``docker_node_images``, ``docker_node_network``) and, for each container, a
piggyback block ``<<<<container-name>>>>`` ... ``<<<<>>>>`` holding
``docker_container_node_name``, ``_status``, ``_labels``, ``_network`` and, for
running containers, ``_mem``, ``_cpu``, ``_diskstat``. Every section is written
as mk_docker writes it: a ``sep(124)`` header with the ``@docker_version_info``
line, then a ``sep(0)`` header with one JSON document a line.

A Docker daemon that does not answer gives a ``docker_node_info`` section whose
JSON is ``{"Critical": "..."}``: Checkmk's "Docker node info" service goes CRIT
with the reason.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import docker.errors
import requests.exceptions

from atoll.core.errors import InputError, RuntimeBackendError
from atoll.core.userfile import read_user_file
from atoll.monitor.source import SectionSkipped

__all__ = [
    "APP_LABEL",
    "CONTAINER_IDS",
    "DEFAULT_DOCKER_URL",
    "DOCKER_ERRORS",
    "ROLE_LABEL",
    "AppContainer",
    "app_containers",
    "docker_client",
    "docker_section",
    "piggyback_name",
    "read_docker_cfg",
    "render_docker_section",
]

log = logging.getLogger("atoll.monitor")

DEFAULT_DOCKER_URL = "unix:///var/run/docker.sock"
PLUGIN_VERSION = "0.1"
APP_LABEL = "io.atoll.app"
ROLE_LABEL = "io.atoll.role"
STATS_WORKERS = 8

DOCKER_ERRORS: tuple[type[BaseException], ...] = (
    docker.errors.DockerException,
    requests.exceptions.RequestException,
    OSError,
)


def render_docker_section(
    name: str, lines: Iterable[str], version_info: dict[str, Any], piggyback: str | None = None
) -> str:
    """One section as mk_docker writes it (optionally inside a piggyback block)."""
    out = f"<<<<{piggyback}>>>>\n" if piggyback is not None else ""
    out += f"<<<docker_{name}:sep(124)>>>\n@docker_version_info|{json.dumps(version_info)}\n"
    out += f"<<<docker_{name}:sep(0)>>>\n"
    out += "".join(line + "\n" for line in lines)
    if piggyback is not None:
        out += "<<<<>>>>\n"
    return out


def docker_client(url: str = DEFAULT_DOCKER_URL, timeout: float = 10.0) -> docker.DockerClient:
    """A docker-py client; raises RuntimeBackendError when the daemon does not answer."""
    try:
        client = docker.DockerClient(base_url=url, timeout=int(max(timeout, 1)))
        client.ping()
    except DOCKER_ERRORS as exc:
        raise RuntimeBackendError(
            f"Docker daemon unreachable at {url}",
            details=str(exc),
            resolution="start the Docker daemon (systemctl start docker)",
        ) from exc
    return client


def _is_docker_host(url: str) -> bool:
    if not url.startswith("unix://"):
        return True
    sock = Path("/" + url.removeprefix("unix://").lstrip("/"))
    return sock.exists() or Path("/var/lib/docker").is_dir() or \
        any(Path(d, "dockerd").exists() for d in ("/usr/bin", "/usr/sbin", "/usr/local/bin"))


def _device_map() -> dict[str, str]:
    out = {}
    for dev in sorted(os.listdir("/sys/block")) if os.path.isdir("/sys/block") else []:
        try:
            out[Path("/sys/block", dev, "dev").read_text().strip()] = dev
        except OSError:
            continue
    return out


def _disk_usage_rows(data: dict[str, Any]) -> list[str]:
    def row(type_: str, items: list[dict[str, Any]], inactive: Any, key: str = "Size") -> str:
        idle = [i for i in items if inactive(i)]
        return json.dumps({
            "type": type_,
            "size": sum(i.get(key, 0) or 0 for i in items),
            "reclaimable": sum(i.get(key, 0) or 0 for i in idle),
            "count": len(items),
            "active": len(items) - len(idle),
        })

    rows = [
        row("images", data.get("Images") or [], lambda i: i.get("Containers") == 0),
        row("containers", data.get("Containers") or [], lambda c: c.get("State") != "running",
            key="SizeRw"),
    ]
    volumes = [v.get("UsageData", {}) or {} for v in data.get("Volumes") or []]
    if not any(-1 in v.values() for v in volumes):
        rows.append(row("volumes", volumes, lambda v: v.get("RefCount", 0) == 0))
    rows.append(row("buildcache", data.get("BuildCache") or [], lambda b: b.get("InUse")))
    return rows


CONTAINER_IDS = ("short", "long", "name")


def piggyback_name(attrs: dict[str, Any], container_id: str = "short") -> str:
    """The piggyback host name of a container, as mk_docker's ``container_id`` option
    chooses it: ``short`` (default) the first 12 hex digits of its id, ``long`` the
    whole id, ``name`` its name."""
    if container_id == "name":
        return str(attrs.get("Name", "")).lstrip("/")
    if container_id == "long":
        return str(attrs["Id"])
    return str(attrs["Id"])[:12]


def read_docker_cfg(path: Path) -> str:
    """``container_id`` from an mk_docker ``docker.cfg`` (ini: ``[DOCKER]`` or no section),
    so that a host already set up for mk_docker keeps its piggyback names.

    Raises:
        InputError: the file is not an ini file, or names an unknown value.
    """
    import configparser

    parser = configparser.ConfigParser({"container_id": "short"})
    data = read_user_file(path, 64 * 1024, "mk_docker config")  # a few lines of ini
    try:
        text = data.decode("utf-8")
        try:
            parser.read_string(text, source=str(path))
        except configparser.MissingSectionHeaderError:
            parser.read_string("[DEFAULT]\n" + text, source=str(path))
    except (configparser.Error, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read mk_docker's config: {exc}") from exc
    section = "DOCKER" if parser.has_section("DOCKER") else "DEFAULT"
    value = parser.get(section, "container_id").strip()
    if value not in CONTAINER_IDS:
        raise InputError(f"{path}: container_id: {value!r} is not one of "
                         f"{', '.join(CONTAINER_IDS)}")
    return value


def _container_sections(
    container: Any, stats: dict[str, Any] | None, node_name: str, vinfo: dict[str, Any],
    container_id: str = "short",
) -> str:
    attrs = container.attrs
    name = piggyback_name(attrs, container_id)
    out = render_docker_section("container_node_name", [json.dumps({"NodeName": node_name})],
                                vinfo, name)
    status = dict(attrs.get("State", {}))
    healthcheck = attrs.get("Config", {}).get("Healthcheck")
    if healthcheck:
        status["Healthcheck"] = healthcheck
    restart = attrs.get("HostConfig", {}).get("RestartPolicy")
    if restart:
        status["RestartPolicy"] = restart
    with contextlib.suppress(docker.errors.ImageNotFound):
        status["ImageTags"] = container.image.tags
    status["NodeName"] = node_name
    out += render_docker_section("container_status", [json.dumps(status)], vinfo, name)
    out += render_docker_section("container_labels", [json.dumps(container.labels)], vinfo, name)
    out += render_docker_section("container_network",
                                 [json.dumps(attrs.get("NetworkSettings", {}))], vinfo, name)
    if stats is not None:
        out += render_docker_section("container_mem", [json.dumps(stats.get("memory_stats", {}))],
                                     vinfo, name)
        out += render_docker_section("container_cpu", [json.dumps(stats.get("cpu_stats", {}))],
                                     vinfo, name)
        blkio = dict(stats.get("blkio_stats", {}))
        blkio["time"] = time.time()
        blkio["names"] = _device_map()
        out += render_docker_section("container_diskstat", [json.dumps(blkio)], vinfo, name)
    return out


def docker_section(url: str = DEFAULT_DOCKER_URL, timeout: float = 10.0,
                   container_id: str = "short") -> str:
    """All Docker sections of this host (node sections, then piggybacked containers,
    named as ``container_id`` says: see :func:`piggyback_name`).

    Raises:
        SectionSkipped: this is not a Docker host (no socket, no dockerd).
    """
    import docker.version as dv

    vinfo: dict[str, Any] = {"PluginVersion": PLUGIN_VERSION, "DockerPyVersion": dv.__version__}
    if not _is_docker_host(url):
        raise SectionSkipped("not a Docker host (no Docker socket, no dockerd)")
    try:
        client = docker_client(url, timeout)
    except RuntimeBackendError as exc:
        msg = f"{exc.brief}: {exc.details}" if exc.details else exc.brief
        return render_docker_section("node_info", [json.dumps({"Critical": msg})], vinfo)
    pool = ThreadPoolExecutor(max_workers=STATS_WORKERS, thread_name_prefix="atoll-docker")
    try:
        containers = client.containers.list(all=True)
        # Docker answers a stats request at its collector's next tick (up to ~1 s): ask
        # for every running container at once, before the node sections.
        stats = {c.id: pool.submit(client.api.stats, c.id, stream=False, one_shot=True)
                 for c in containers if c.status == "running"}
        vinfo["ApiVersion"] = client.version().get("ApiVersion")
        info = client.info()
        node = info.get("Name", "")
        out = render_docker_section("node_info", [json.dumps(info)], vinfo)
        try:
            out += render_docker_section("node_disk_usage", _disk_usage_rows(client.df()), vinfo)
        except docker.errors.APIError as exc:
            log.debug("docker df failed: %s", exc)
            out += render_docker_section("node_disk_usage", [], vinfo)
        lines = ["[[[images]]]"] + [json.dumps(i.attrs) for i in client.images.list()]
        lines += ["[[[containers]]]"] + [json.dumps(c.attrs) for c in containers]
        out += render_docker_section("node_images", lines, vinfo)
        nets = client.networks.list(filters={"driver": "bridge"})
        out += render_docker_section("node_network", [json.dumps(n.attrs) for n in nets], vinfo)
        for container in containers:
            try:
                fut = stats.get(container.id)
                data = fut.result(timeout=timeout) if fut is not None else None
                out += _container_sections(container, data, node, vinfo, container_id)
            except docker.errors.NotFound:
                continue  # removed since it was listed
            except DOCKER_ERRORS as exc:  # TimeoutError is an OSError
                msg = f"Plugin exception in section_container {container.name}: {exc}"
                out += render_docker_section("node_info", [json.dumps({"Unknown": msg})], vinfo)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
        client.close()
    return out


@dataclass(frozen=True)
class AppContainer:
    """A container that belongs to an atoll app."""

    app: str
    role: str
    name: str
    status: str  # docker's container status: running, exited ...
    health: str  # healthy, unhealthy, starting, or "none" without a health check

    @property
    def healthy(self) -> bool:
        """Running, and healthy when it has a health check."""
        return self.status == "running" and self.health in ("healthy", "none")


def app_containers(client: docker.DockerClient) -> list[AppContainer]:
    """The containers labelled ``io.atoll.app``, sorted by app and name."""
    out = []
    for c in client.containers.list(all=True, filters={"label": APP_LABEL}):
        labels = c.labels or {}
        health = (c.attrs.get("State", {}).get("Health") or {}).get("Status", "none")
        out.append(AppContainer(app=labels.get(APP_LABEL, ""), role=labels.get(ROLE_LABEL, ""),
                                name=c.name, status=c.status, health=health))
    return sorted(out, key=lambda a: (a.app, a.name))

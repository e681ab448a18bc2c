"""The Docker backend, through docker-py (Debian's docker.io engine).

The engine's URL comes from the caller, else ``$DOCKER_HOST``, else
``unix:///var/run/docker.sock``. Every docker-py error is translated into an
atoll error here, so nothing above this module sees docker-py's exceptions.
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

import docker
import docker.errors
import requests.exceptions
from docker.types import LogConfig, Mount

from atoll.apps.plan import ContainerPlan
from atoll.apps.runtime import ContainerInfo, ExecResult, register
from atoll.core.errors import AtollError, HostStateError, InputError, RuntimeBackendError

__all__ = ["DockerRuntime"]

DEFAULT_URL = "unix:///var/run/docker.sock"


@contextlib.contextmanager
def _translate(what: str) -> Iterator[None]:
    try:
        yield
    except AtollError:
        raise
    except docker.errors.ImageNotFound as exc:
        raise InputError(
            f"{what}: image not found: {exc.explanation}",
            resolution="build and load it (atoll app image build ... && docker load -i ...)"
            " or pull it on a host with a registry",
        ) from exc
    except docker.errors.APIError as exc:
        msg = str(exc.explanation or exc)
        if "address already in use" in msg or "port is already allocated" in msg:
            raise HostStateError(
                f"{what}: a published port is already in use",
                details=msg,
                resolution="free the port or change `ports` in the app's spec",
            ) from exc
        raise RuntimeBackendError(f"{what}: Docker refused: {msg}") from exc
    except (docker.errors.DockerException, requests.exceptions.RequestException, OSError) as exc:
        raise RuntimeBackendError(
            f"{what}: cannot reach the Docker daemon",
            details=str(exc),
            resolution="start it (systemctl start docker) or point DOCKER_HOST at its socket",
        ) from exc


class DockerRuntime:
    """:class:`atoll.apps.runtime.Runtime` on Docker Engine."""

    name = "docker"

    def __init__(self, url: str | None = None, timeout: int = 900):
        self.url = url or os.environ.get("DOCKER_HOST") or DEFAULT_URL
        with _translate("connect to Docker"):
            self.client = docker.DockerClient(base_url=self.url, timeout=timeout)
        self.api: Any = self.client.api

    def ping(self) -> None:
        with _translate("ping Docker"):
            self.client.ping()

    def image_exists(self, ref: str) -> bool:
        with _translate(f"look up image {ref}"):
            try:
                self.client.images.get(ref)
            except docker.errors.ImageNotFound:
                return False
            return True

    def load_image(self, archive: Path) -> list[str]:
        with _translate(f"load image {archive}"), open(archive, "rb") as fh:
            images = self.client.images.load(fh)
        return [t for img in images for t in img.tags]

    def ensure_network(self, name: str, *, internal: bool, labels: dict[str, str]) -> None:
        with _translate(f"create network {name}"):
            if self.client.networks.list(names=[name]):
                return
            self.client.networks.create(
                name, driver="bridge", internal=internal, labels=labels, check_duplicate=True
            )

    def remove_network(self, name: str) -> None:
        with _translate(f"remove network {name}"):
            for net in self.client.networks.list(names=[name]):
                if net.name == name:
                    net.remove()

    def create(self, plan: ContainerPlan) -> str:
        mounts = [
            Mount(target=m.target, source=os.fspath(m.source), type="bind", read_only=m.read_only)
            for m in plan.mounts
        ]
        ports: dict[str, tuple[str, int]] = {
            f"{cport}/{proto}": (ip, hport) for ip, hport, cport, proto in plan.ports
        }
        host_config = self.api.create_host_config(
            mounts=mounts,
            tmpfs=plan.tmpfs,
            port_bindings={k: [v] for k, v in ports.items()},
            network_mode=plan.network,
            read_only=plan.read_only,
            cap_drop=plan.cap_drop,
            cap_add=plan.cap_add or None,
            # Docker applies its default seccomp profile unless told otherwise: never.
            security_opt=plan.security_opt,
            mem_limit=plan.memory,
            memswap_limit=plan.memory,
            nano_cpus=plan.nano_cpus,
            pids_limit=plan.pids_limit,
            restart_policy={"Name": plan.restart} if plan.restart != "no" else None,
            log_config=LogConfig(type="json-file", config={"max-size": "20m", "max-file": "3"}),
            privileged=False,
        )
        with _translate(f"create container {plan.name}"):
            created = self.api.create_container(
                image=plan.image,
                name=plan.name,
                command=plan.command,
                user=plan.user or "",
                environment=plan.environment,
                labels=plan.labels,
                ports=[(cport, proto) for _ip, _h, cport, proto in plan.ports] or None,
                host_config=host_config,
                healthcheck=plan.healthcheck,
                stop_signal="SIGTERM",
                stop_timeout=plan.stop_timeout,
                networking_config=self.api.create_networking_config(
                    {plan.network: self.api.create_endpoint_config()}
                ),
            )
            return str(created["Id"])

    def start(self, name: str) -> None:
        with _translate(f"start {name}"):
            self.api.start(name)

    def stop(self, name: str, timeout: int) -> None:
        with _translate(f"stop {name}"):
            self.api.stop(name, timeout=timeout)

    def remove(self, name: str) -> None:
        with _translate(f"remove {name}"), contextlib.suppress(docker.errors.NotFound):
            self.api.remove_container(name, force=True)

    def _info(self, attrs: dict[str, Any]) -> ContainerInfo:
        state = attrs.get("State", {})
        health = state.get("Health", {}).get("Status") if state.get("Health") else None
        return ContainerInfo(
            id=attrs["Id"],
            name=attrs["Name"].lstrip("/"),
            image=attrs["Config"]["Image"],
            status=state.get("Status", "unknown"),
            health=health,
            started_at=state.get("StartedAt"),
            exit_code=state.get("ExitCode"),
            labels=dict(attrs["Config"].get("Labels") or {}),
        )

    def inspect(self, name: str) -> ContainerInfo | None:
        with _translate(f"inspect {name}"):
            try:
                return self._info(self.api.inspect_container(name))
            except docker.errors.NotFound:
                return None

    def containers(self, labels: dict[str, str]) -> list[ContainerInfo]:
        filters = {"label": [f"{k}={v}" for k, v in labels.items()]}
        with _translate("list containers"):
            out = []
            for c in self.client.containers.list(all=True, filters=filters):
                with contextlib.suppress(docker.errors.NotFound):
                    out.append(self._info(self.api.inspect_container(c.id)))
            return out

    def logs(self, name: str, tail: int | None) -> bytes:
        with _translate(f"logs of {name}"):
            return bytes(
                self.api.logs(
                    name, stdout=True, stderr=True, tail=tail if tail is not None else "all"
                )
            )

    def exec(
        self,
        name: str,
        argv: list[str],
        *,
        stdin: Iterable[bytes] | None = None,
        stdout: IO[bytes] | None = None,
        user: str | None = None,
        timeout: float = 600,
    ) -> ExecResult:
        with _translate(f"run {argv[0]} in {name}"):
            exec_id = self.api.exec_create(
                name, argv, stdout=True, stderr=True, stdin=stdin is not None, user=user or ""
            )["Id"]
            out, err = bytearray(), bytearray()
            sock = self.api.exec_start(exec_id, socket=True)
            raw: socket.socket = getattr(sock, "_sock", sock)
            deadline = time.monotonic() + timeout
            try:
                if stdin is not None:
                    for chunk in stdin:
                        raw.sendall(chunk)
                    raw.shutdown(socket.SHUT_WR)
                for stream, data in _frames(raw, deadline):
                    if stream == 1:
                        if stdout is not None:
                            stdout.write(data)
                        else:
                            out += data
                    else:
                        err += data
            finally:
                sock.close()
            code = None
            for _ in range(50):  # the exit code lands a moment after the stream ends
                code = self.api.exec_inspect(exec_id).get("ExitCode")
                if code is not None:
                    break
                time.sleep(0.02)
            return ExecResult(
                exit_code=-1 if code is None else int(code), stdout=bytes(out), stderr=bytes(err)
            )


def _recv_exact(raw: socket.socket, n: int, deadline: float) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        raw.settimeout(max(0.1, deadline - time.monotonic()))
        try:
            chunk = raw.recv(n - len(buf))
        except TimeoutError:
            raise RuntimeBackendError("a command in the container timed out") from None
        if not chunk:
            break
        buf += chunk
    return bytes(buf)


def _frames(raw: socket.socket, deadline: float) -> Iterator[tuple[int, bytes]]:
    """Docker's multiplexed stream: 8-byte header (stream id, size), then the payload."""
    while True:
        header = _recv_exact(raw, 8, deadline)
        if len(header) < 8:
            return
        stream, size = header[0], struct.unpack(">I", header[4:])[0]
        yield stream, _recv_exact(raw, size, deadline)


register("docker", DockerRuntime)

"""Pure planning: what container to create, which backups to delete.

No I/O here: the manager turns a :class:`ContainerPlan` into runtime calls,
the backup code deletes what :func:`backups_to_delete` names. These are the
functions the confinement and retention promises rest on, tested hardest.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from atoll.apps.paths import AppPaths
from atoll.apps.spec import AppSpec, Role, parse_duration, parse_memory

__all__ = [
    "LABEL_APP",
    "LABEL_MANAGED",
    "LABEL_ROLE",
    "LABEL_SPEC",
    "BackupRecord",
    "ContainerPlan",
    "Mount",
    "backups_to_delete",
    "container_name",
    "network_name",
    "plan_container",
    "uid_gid",
]

LABEL_APP = "io.atoll.app"
LABEL_ROLE = "io.atoll.role"
LABEL_MANAGED = "io.atoll.managed"
LABEL_SPEC = "io.atoll.spec-sha256"
SECRETS_TARGET = "/run/secrets"


def container_name(app: str) -> str:
    """The container's name: ``atoll-<app>``."""
    return f"atoll-{app}"


def network_name(app: str) -> str:
    """The app's own network: ``atoll-<app>``."""
    return f"atoll-{app}"


def uid_gid(spec: AppSpec) -> tuple[int, int]:
    """The uid and gid that own the app's volumes and secrets."""
    if spec.user is None:
        return 0, 0
    uid, _, gid = spec.user.partition(":")
    return int(uid), int(gid or uid)


@dataclass(frozen=True)
class Mount:
    """A bind mount from the app's own directory into the container."""

    source: Path
    target: str
    read_only: bool


@dataclass(frozen=True)
class ContainerPlan:
    """Everything the runtime needs to create one confined app container."""

    name: str
    image: str
    command: list[str] | None
    user: str | None
    environment: dict[str, str]
    labels: dict[str, str]
    mounts: list[Mount]
    tmpfs: dict[str, str]
    ports: list[tuple[str, int, int, str]]  # host_ip, host_port, container_port, proto
    network: str
    network_internal: bool
    read_only: bool = True
    cap_drop: list[str] = field(default_factory=lambda: ["ALL"])
    cap_add: list[str] = field(default_factory=list)
    security_opt: list[str] = field(default_factory=lambda: ["no-new-privileges:true"])
    memory: int = 1024**3
    nano_cpus: int = 10**9
    pids_limit: int = 512
    restart: str = "unless-stopped"
    stop_timeout: int = 120
    healthcheck: dict[str, object] | None = None


def _ns(duration: str) -> int:
    return int(parse_duration(duration) * 1e9)


def plan_container(app: str, spec: AppSpec, paths: AppPaths, spec_sha256: str) -> ContainerPlan:
    """The confined container for ``app``: read-only root, no capabilities but the
    declared ones, no-new-privileges, the default seccomp profile (never
    ``unconfined``), its own network, limits, and only its own directories mounted.
    """
    uid, gid = uid_gid(spec)
    mounts = [Mount(paths.volume(v.name), v.target, v.read_only) for v in spec.volume_mounts()]
    if spec.secrets:
        mounts.append(Mount(paths.secrets, SECRETS_TARGET, True))
    # tmpfs owned by the app's user so that an unprivileged process can use /run, /tmp.
    tmpfs = {t: f"rw,nosuid,nodev,size=64m,mode=0755,uid={uid},gid={gid}" for t in spec.tmpfs}
    if "/tmp" in tmpfs:
        tmpfs["/tmp"] = "rw,nosuid,nodev,size=256m,mode=1777"
    ports = [(p.host_ip, p.host_port, p.container_port, p.protocol) for p in spec.port_mappings()]
    labels = dict(spec.labels)
    labels.update(
        {
            LABEL_APP: app,
            LABEL_ROLE: spec.role.value,
            LABEL_MANAGED: "true",
            LABEL_SPEC: spec_sha256,
        }
    )
    hc: dict[str, object] | None = None
    if spec.healthcheck is not None:
        h = spec.healthcheck
        hc = {
            "test": list(h.test),
            "interval": _ns(h.interval),
            "timeout": _ns(h.timeout),
            "retries": h.retries,
            "start_period": _ns(h.start_period),
        }
    return ContainerPlan(
        name=container_name(app),
        image=spec.image,
        command=list(spec.command) if spec.command else None,
        user=spec.user,
        environment=dict(spec.environment),
        labels=labels,
        mounts=mounts,
        tmpfs=tmpfs,
        ports=ports,
        network=network_name(app),
        # No published port: the app needs no route out at all.
        network_internal=not ports,
        cap_add=list(spec.cap_add),
        memory=parse_memory(spec.resources.memory),
        nano_cpus=int(spec.resources.cpus * 1e9),
        pids_limit=spec.resources.pids,
        restart=spec.restart,
        stop_timeout=int(parse_duration(spec.stop_grace_period)),
        healthcheck=hc,
    )


def is_database(spec: AppSpec) -> bool:
    """True for apps under the database contract (labels, client cnf, backups, health)."""
    return spec.role is Role.database


@dataclass(frozen=True)
class BackupRecord:
    """What retention planning needs to know about one backup."""

    id: str
    created: float  # seconds since the epoch


def backups_to_delete(
    backups: list[BackupRecord], *, retention: int, max_age: float | None, now: float
) -> list[str]:
    """Ids of the backups to delete: beyond the newest ``retention``, or older than
    ``max_age`` seconds, but never the newest backup (an old backup beats none).
    """
    ordered = sorted(backups, key=lambda b: (b.created, b.id), reverse=True)
    doomed = []
    for i, b in enumerate(ordered):
        if i == 0:
            continue
        if i >= retention or (max_age is not None and now - b.created > max_age):
            doomed.append(b.id)
    return doomed


__all__ += ["SECRETS_TARGET", "is_database"]

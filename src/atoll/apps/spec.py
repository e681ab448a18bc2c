"""App specs: YAML with compose-spec field names plus atoll's own fields.

Compose fields (same names and meaning as in compose files): ``image``,
``command``, ``environment``, ``ports``, ``volumes``, ``healthcheck``,
``restart``, ``cap_add``, ``tmpfs``, ``user``, ``labels``,
``stop_grace_period``. atoll's own: ``role``, ``secrets`` (generated or given
files, never environment), ``backup`` (policy), ``resources`` (limits).

Secrets never go in ``environment`` (``docker inspect`` shows it to anyone who
can talk to the daemon): a key is refused when one of its ``_``-separated parts
is a secret word (``PASSWORD``, ``PWD``, ``KEY``, ``TOKEN``, ``AUTH``...; see
``_SECRET_WORDS``), unless it ends in ``_FILE`` (a pointer to
``/run/secrets/<name>``) or is a known flag in ``ENV_NOT_SECRET``
(``MYSQL_ALLOW_EMPTY_PASSWORD``...). Matching whole parts keeps ``KEYBOARD`` and
``MONKEY_COUNT`` out; long words also match at the end of a part
(``DBPASSWORD``, ``GITHUBTOKEN``).

Volumes are *named* only (``data:/var/lib/mysql``): atoll places every one
under ``<sysroot>/var/lib/atoll/apps/<app>/volumes/<name>/``; a host path is a
spec error, so an app can only ever see its own directories.
"""

from __future__ import annotations

import re
from enum import StrEnum
from importlib import resources
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, Field, field_validator, model_validator

from atoll.core.errors import InputError
from atoll.core.spec import Spec, load_spec_text, read_spec_text

__all__ = [
    "APP_NAME_RE",
    "ENV_NOT_SECRET",
    "AppSpec",
    "BackupMethod",
    "BackupPolicy",
    "Healthcheck",
    "PortMapping",
    "Resources",
    "Role",
    "VolumeMount",
    "builtin_names",
    "load_app_spec",
    "load_builtin",
    "parse_duration",
    "parse_memory",
    "secret_env_word",
]

APP_NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,30}[a-z0-9]$")
_SECRET_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
_VOLUME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_DURATION_RE = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h|d)$")
_MEMORY_RE = re.compile(r"^(\d+(?:\.\d+)?)\s*([kmgt]?)b?$", re.IGNORECASE)
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
_MEM_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
# Parts of an environment key (split at "_", "-" and ".") that name a secret wherever
# they stand (MYSQL_ROOT_PASSWORD, PASSWORD_ROOT, DB_PASS)...
_SECRET_WORDS = frozenset({
    "PASS", "PASSWD", "PASSWORD", "PASSWORDS", "PASSPHRASE", "PWD",
    "SECRET", "SECRETS", "TOKEN", "TOKENS", "APIKEY", "PRIVKEY",
    "CREDENTIAL", "CREDENTIALS", "CREDS",
})
# ... and words that name one only as the last part (API_KEY, TLS_PRIVATE, but
# KEY_BUFFER_SIZE and PRIVATE_NETWORK are settings).
_LAST_WORDS = frozenset({"KEY", "KEYS", "PRIVATE", "AUTH", "PSK", "SALT", "PW"})
# Endings that name a secret inside one part (DBPASS, MYSQLPWD, JWTSECRET, CERTKEY).
_SECRET_SUFFIXES = ("PASSWORD", "PASSWD", "PASSPHRASE", "SECRET", "TOKEN", "APIKEY",
                    "PRIVKEY", "CREDENTIAL", "CREDENTIALS")
_LAST_SUFFIXES = ("KEY", "PASS", "PWD")
# English words with those endings (COMPASS, BYPASS, MONKEY...): not secrets.
_WORDS = frozenset({"COMPASS", "BYPASS", "SURPASS", "OVERPASS", "UNDERPASS", "TRESPASS",
                    "MONKEY", "DONKEY", "TURKEY", "HOCKEY", "JOCKEY", "WHISKEY", "HOTKEY"})
# Keys that contain a secret word but are harmless flags or settings of well-known images.
ENV_NOT_SECRET = frozenset({
    # MySQL, MariaDB and Percona images: how the root password is chosen, never the password
    "MYSQL_ALLOW_EMPTY_PASSWORD",
    "MYSQL_RANDOM_ROOT_PASSWORD",
    "MYSQL_ONETIME_PASSWORD",
    "MARIADB_ALLOW_EMPTY_ROOT_PASSWORD",
    "MARIADB_RANDOM_ROOT_PASSWORD",
    # Bitnami images: the same flag, unprefixed
    "ALLOW_EMPTY_PASSWORD",
    # PostgreSQL image: the pg_hba method ("scram-sha-256", "trust"), not a credential
    "POSTGRES_HOST_AUTH_METHOD",
})
# Capabilities an app may ask for: anything that lets it leave its box is refused.
_FORBIDDEN_CAPS = {
    "ALL",
    "SYS_ADMIN",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_PTRACE",
    "SYS_BOOT",
    "NET_ADMIN",
    "MAC_ADMIN",
    "MAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "BPF",
    "PERFMON",
    "SYSLOG",
    "SYS_TIME",
    "LINUX_IMMUTABLE",
}


def secret_env_word(key: str) -> str | None:
    """The secret word in the environment key ``key`` (None: it may be set in plain text).

    ``MYSQL_PWD`` gives ``PWD``; ``MYSQL_ROOT_PASSWORD_FILE`` (a file pointer), the flags in
    ``ENV_NOT_SECRET`` and keys like ``KEYBOARD_LAYOUT`` give None.
    """
    upper = key.upper()
    if upper in ENV_NOT_SECRET or upper.endswith("_FILE"):
        return None
    parts = [p for p in re.split(r"[^A-Z0-9]+", upper) if p]
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if part in _SECRET_WORDS or (last and part in _LAST_WORDS):
            return part
        if part in _WORDS:
            continue
        for word in _SECRET_SUFFIXES + (_LAST_SUFFIXES if last else ()):
            if part.endswith(word) and len(part) > len(word):
                return word
    return None


def _check_env_key(key: str) -> str:
    word = secret_env_word(key)
    if word is not None:
        raise ValueError(
            f"{word} names a secret, and secrets never go in the environment (docker inspect "
            "shows it); declare it under secrets: and point the app at /run/secrets/<name> "
            f"(e.g. {key}_FILE)"
        )
    return key


def parse_duration(text: str | int | float) -> float:
    """Seconds in a compose duration (``90s``, ``2m``, ``1h``, ``7d``) or a number."""
    if isinstance(text, int | float):
        if text < 0:
            raise ValueError("a duration cannot be negative")
        return float(text)
    m = _DURATION_RE.match(text.strip())
    if not m:
        raise ValueError(f"{text!r} is not a duration (e.g. 30s, 5m, 2h, 7d)")
    return float(m.group(1)) * _UNITS[m.group(2)]


def parse_memory(text: str | int) -> int:
    """Bytes in a size (``512m``, ``1g``, ``1.5G``) or a plain byte count."""
    if isinstance(text, int):
        return text
    m = _MEMORY_RE.match(text.strip())
    if not m:
        raise ValueError(f"{text!r} is not a size (e.g. 512m, 2g)")
    return int(float(m.group(1)) * _MEM_UNITS[m.group(2).lower()])


class Role(StrEnum):
    """What the app is; ``database`` apps get backups, health checks and the monitor contract."""

    database = "database"
    service = "service"


class BackupMethod(StrEnum):
    """How a consistent backup is taken."""

    mysqldump = "mysqldump"
    mariadb_backup = "mariadb-backup"
    snapshot = "snapshot"


class BackupPolicy(Spec):
    """When and how an app's data is backed up, and how many backups are kept."""

    method: BackupMethod = Field(
        BackupMethod.mysqldump, description="mysqldump, mariadb-backup or snapshot"
    )
    retention: int = Field(7, ge=1, le=1000, description="keep at most this many backups")
    max_age: str | None = Field(
        None, description="delete backups older than this (e.g. 30d); the newest is always kept"
    )
    before_update: bool = Field(True, description="back up before an OS update is applied")

    @field_validator("max_age")
    @classmethod
    def _age(cls, v: str | None) -> str | None:
        if v is not None:
            parse_duration(v)
        return v


class Resources(Spec):
    """Resource limits (always set: an app never gets the whole host)."""

    memory: str = Field("1g", description="memory limit, e.g. 512m, 2g")
    cpus: float = Field(1.0, gt=0, le=256, description="CPU limit in cores")
    pids: int = Field(512, ge=16, le=65536, description="process/thread limit")

    @field_validator("memory")
    @classmethod
    def _mem(cls, v: str) -> str:
        if parse_memory(v) < 64 * 1024**2:
            raise ValueError("memory below 64m cannot run a database")
        return v


class Healthcheck(Spec):
    """Compose ``healthcheck``: run inside the container by the runtime."""

    test: list[str] = Field(description='["CMD", "prog", "arg"...] (exec form only)')
    interval: str = "30s"
    timeout: str = "10s"
    retries: int = Field(3, ge=1, le=100)
    start_period: str = "30s"

    @field_validator("test")
    @classmethod
    def _test(cls, v: list[str]) -> list[str]:
        if len(v) < 2 or v[0] != "CMD":
            raise ValueError('use the exec form: ["CMD", "program", "arg", ...]')
        return v

    @field_validator("interval", "timeout", "start_period")
    @classmethod
    def _dur(cls, v: str) -> str:
        parse_duration(v)
        return v


class PortMapping(Spec):
    """A published port (parsed from the compose short form)."""

    host_ip: str
    host_port: int
    container_port: int
    protocol: str


class VolumeMount(Spec):
    """A named data volume mounted into the container."""

    name: str
    target: str
    read_only: bool


def _parse_port(text: str | int) -> PortMapping:
    s = str(text)
    proto = "tcp"
    if "/" in s:
        s, proto = s.rsplit("/", 1)
        if proto not in ("tcp", "udp"):
            raise ValueError(f"protocol must be tcp or udp, not {proto!r}")
    parts = s.rsplit(":", 2)
    if len(parts) == 1:
        raise ValueError(f"{text!r}: give the host port too (HOST:CONTAINER or IP:HOST:CONTAINER)")
    ip = parts[0] if len(parts) == 3 else "127.0.0.1"
    try:
        host, cont = int(parts[-2]), int(parts[-1])
    except ValueError:
        raise ValueError(f"{text!r} is not [IP:]HOST:CONTAINER[/PROTO]") from None
    for p in (host, cont):
        if not 1 <= p <= 65535:
            raise ValueError(f"port {p} is out of range 1-65535")
    return PortMapping(host_ip=ip, host_port=host, container_port=cont, protocol=proto)


def _parse_volume(text: str) -> VolumeMount:
    parts = text.split(":")
    if len(parts) not in (2, 3):
        raise ValueError(f"{text!r} is not NAME:/container/path[:ro]")
    name, target = parts[0], parts[1]
    if name.startswith(("/", ".", "~")):
        raise ValueError(
            f"{name!r}: host paths cannot be mounted; use a named volume "
            "(it lives under /var/lib/atoll/apps/<app>/volumes/)"
        )
    if not _VOLUME_RE.match(name):
        raise ValueError(f"{name!r} is not a volume name (lowercase letters, digits, - and _)")
    if not target.startswith("/") or ".." in target.split("/"):
        raise ValueError(f"{target!r}: the container path must be absolute")
    if target.startswith("/run/secrets"):
        raise ValueError("/run/secrets is reserved for the app's secrets")
    ro = len(parts) == 3
    if ro and parts[2] not in ("ro", "rw"):
        raise ValueError(f"mode {parts[2]!r} must be ro or rw")
    return VolumeMount(name=name, target=target, read_only=ro and parts[2] == "ro")


def _check_port(v: str | int) -> str | int:
    _parse_port(v)
    return v


def _check_volume(v: str) -> str:
    _parse_volume(v)
    return v


# Checked item by item (environment: key by key), so that an error points at its line.
PortItem = Annotated[str | int, AfterValidator(_check_port)]
EnvKey = Annotated[str, AfterValidator(_check_env_key)]
VolumeItem = Annotated[str, AfterValidator(_check_volume)]


class AppSpec(Spec):
    """One app: a container image run confined, with its data, secrets and backups."""

    image: str = Field(description="image reference, e.g. atoll/mariadb:bookworm")
    role: Role = Field(Role.service, description="database apps get backups and health checks")
    command: list[str] | None = Field(None, description="arguments replacing the image's CMD")
    user: str | None = Field(None, description="uid[:gid] the container runs as")
    environment: dict[EnvKey, str] = Field(
        default_factory=dict, description="plain, non-secret environment"
    )
    ports: list[PortItem] = Field(
        default_factory=list, description="[IP:]HOST:CONTAINER[/PROTO]; IP defaults to 127.0.0.1"
    )
    volumes: list[VolumeItem] = Field(
        default_factory=list, description="NAME:/container/path[:ro], named volumes only"
    )
    tmpfs: list[str] = Field(
        default_factory=lambda: ["/run", "/tmp"], description="writable tmpfs mounts"
    )
    healthcheck: Healthcheck | None = None
    restart: str = Field("unless-stopped", description="no, always, on-failure, unless-stopped")
    cap_add: list[str] = Field(
        default_factory=list, description="capabilities kept (all others are dropped)"
    )
    labels: dict[str, str] = Field(default_factory=dict)
    stop_grace_period: str = Field("120s", description="time between SIGTERM and SIGKILL on stop")
    secrets: list[str] = Field(
        default_factory=list, description="secret names: files under /run/secrets/"
    )
    backup: BackupPolicy | None = None
    resources: Resources = Field(default_factory=Resources)

    @field_validator("environment", mode="before")
    @classmethod
    def _env(cls, v: object) -> object:
        if isinstance(v, list):  # compose also allows ["KEY=value", ...]
            out: dict[str, object] = {}
            for item in v:
                if not isinstance(item, str) or "=" not in item:
                    raise ValueError(f"{item!r} is not KEY=value")
                k, _, val = item.partition("=")
                out[k] = val
            return out
        if isinstance(v, dict):
            return {k: ("" if val is None else str(val)) for k, val in v.items()}
        return v

    @field_validator("volumes")
    @classmethod
    def _volumes(cls, v: list[str]) -> list[str]:
        targets = set()
        for item in v:
            vol = _parse_volume(item)
            if vol.target in targets:
                raise ValueError(f"{vol.target} is mounted twice")
            targets.add(vol.target)
        return v

    @field_validator("tmpfs")
    @classmethod
    def _tmpfs(cls, v: list[str]) -> list[str]:
        for t in v:
            if not t.startswith("/") or t == "/":
                raise ValueError(f"{t!r} must be an absolute path below /")
        return v

    @field_validator("restart")
    @classmethod
    def _restart(cls, v: str) -> str:
        if v not in ("no", "always", "on-failure", "unless-stopped"):
            raise ValueError("must be one of: no, always, on-failure, unless-stopped")
        return v

    @field_validator("cap_add")
    @classmethod
    def _caps(cls, v: list[str]) -> list[str]:
        out = []
        for cap in v:
            name = cap.upper().removeprefix("CAP_")
            if name in _FORBIDDEN_CAPS:
                raise ValueError(f"{cap}: this capability would let the app leave its confinement")
            out.append(name)
        return out

    @field_validator("stop_grace_period")
    @classmethod
    def _grace(cls, v: str) -> str:
        parse_duration(v)
        return v

    @field_validator("secrets")
    @classmethod
    def _secrets(cls, v: list[str]) -> list[str]:
        for s in v:
            if not _SECRET_RE.match(s):
                raise ValueError(f"{s!r} is not a secret name (lowercase letters, digits, . _ -)")
        if len(set(v)) != len(v):
            raise ValueError("a secret is listed twice")
        return v

    @field_validator("user")
    @classmethod
    def _user(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^\d+(:\d+)?$", v):
            raise ValueError(
                "give a numeric uid[:gid] (the owner of the app's volumes and secrets)"
            )
        return v

    @model_validator(mode="after")
    def _database(self) -> AppSpec:
        if self.role is Role.database:
            missing = [s for s in ("root-password", "monitor-password") if s not in self.secrets]
            if missing:
                raise ValueError(f"a database app needs the secrets {', '.join(missing)}")
            if not self.volumes:
                raise ValueError(
                    "a database app needs a data volume (volumes: [data:/var/lib/mysql])"
                )
        return self

    # Parsed views used by the planner.
    def port_mappings(self) -> list[PortMapping]:
        """The ports in their parsed form."""
        return [_parse_port(p) for p in self.ports]

    def volume_mounts(self) -> list[VolumeMount]:
        """The volumes in their parsed form."""
        return [_parse_volume(v) for v in self.volumes]

    def backup_policy(self) -> BackupPolicy:
        """The backup policy, with the default for a database app."""
        return self.backup or BackupPolicy()


def builtin_names() -> list[str]:
    """Names of the specs shipped with atoll (``atoll app install <name>``)."""
    base = resources.files("atoll.apps") / "specs"
    return sorted(p.name.removesuffix(".yaml") for p in base.iterdir() if p.name.endswith(".yaml"))


def load_builtin(name: str) -> tuple[AppSpec, str]:
    """The built-in spec ``name`` and its YAML text.

    Raises:
        InputError: there is no such built-in spec.
    """
    if name not in builtin_names():
        raise InputError(
            f"no built-in app spec named {name!r}",
            resolution=f"built-in specs: {', '.join(builtin_names())}; or pass --spec FILE",
        )
    text = (resources.files("atoll.apps") / "specs" / f"{name}.yaml").read_text()
    return load_spec_text(text, AppSpec, f"<builtin>/{name}.yaml"), text


def load_app_spec(path: Path) -> tuple[AppSpec, str]:
    """Load and validate a spec file; return the model and its text.

    Raises:
        InputError: the file cannot be read.
        SpecError: ``file:line: field: problem`` for each problem.
    """
    text = read_spec_text(path)  # read once: the model and the text are the same bytes
    return load_spec_text(text, AppSpec, str(path)), text


def validate_app_name(name: str) -> str:
    """Check an app name (used in paths, container and network names)."""
    if not APP_NAME_RE.match(name):
        raise InputError(
            f"{name!r} is not a valid app name",
            resolution="use 2-32 lowercase letters, digits and '-', starting with a letter",
        )
    return name


__all__ += ["validate_app_name"]

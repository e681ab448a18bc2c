"""A FleetLock server's settings from a TOML file: airlock's config, read as airlock reads it.

An airlock config (``/etc/airlock/config.toml``, see ``tests/data/airlock/``)
is accepted unchanged; what each table does in atoll::

    [lock]                            groups and slots, exactly as airlock merges them
    default_group_name = "default"    optional, default "default"
    default_slots = 2                 optional, default 1 (0 freezes a group)
    [[lock.groups]]
    name = "db"                       any string; an entry named like the default group
    slots = 1                         is overridden by default_slots (airlock's mergeLock)

    [service]                         address/port: where to listen, unless --listen
    [etcd3]                           endpoints, transaction_timeout_ms, client_cert_*:
                                      the etcd store, unless --etcd / --embedded
    [status]                          airlock's Prometheus service: not in atoll (warning)

Without a file: one group ``default`` with 1 slot. Keys airlock does not know
are ignored by airlock; atoll ignores them too and says so (a warning). A value
of the wrong type (airlock's TOML decoder refuses it too) and settings atoll
cannot honour (``[service] tls = true``) are errors.

``parse_config`` is pure: parsed TOML in, a ``FleetConfig`` (with its warnings) or
a ``SpecError`` with one ``file: field: problem`` line per problem out.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from atoll.core.errors import InputError, SpecError
from atoll.core.userfile import read_user_file

__all__ = ["DEFAULT_GROUP", "EtcdSettings", "FleetConfig", "load_config", "parse_config"]

DEFAULT_GROUP = "default"
MAX_CONFIG_BYTES = 1024 * 1024
UINT64_MAX = 2**64 - 1
# airlock stores slots as a uint64 but compares them as a Go int (``int(s.TotalSlots)``
# in internal/lock/semaphore.go): above 2^63-1 that is negative and airlock refuses every
# lock of the group. Slots are capped here, so servers on one etcd agree.
SLOTS_MAX = 2**63 - 1
# transaction_timeout_ms becomes a Go time.Duration (int64 nanoseconds) in airlock
TIMEOUT_MS_MAX = (2**63 - 1) // 1_000_000
# airlock's defaults for [service] (internal/config/settings.go)
AIRLOCK_ADDRESS = "0.0.0.0"
AIRLOCK_PORT = 9090


@dataclass(frozen=True)
class EtcdSettings:
    """airlock's ``[etcd3]`` table."""

    endpoints: tuple[str, ...]
    timeout_seconds: float | None = None  # transaction_timeout_ms
    client_cert: str | None = None  # client_cert_pub_path
    client_key: str | None = None  # client_cert_key_path


@dataclass(frozen=True)
class FleetConfig:
    """Reboot groups and their slot counts, and what else the file says.

    ``listen`` comes from ``[service]``, ``etcd`` from ``[etcd3]``; both yield
    to the command line. ``warnings`` are settings read but not applied.
    """

    groups: dict[str, int] = field(default_factory=lambda: {DEFAULT_GROUP: 1})
    listen: tuple[str, int] | None = None
    etcd: EtcdSettings | None = None
    warnings: tuple[str, ...] = ()

    def slots(self, group: str) -> int | None:
        """Slots of ``group``, or None when the group is not configured."""
        return self.groups.get(group)


class _Reader:
    """Typed reads of one table, collecting problems and warnings with their place."""

    def __init__(self, source: str, problems: list[str], warnings: list[str]) -> None:
        self.source = source
        self.problems = problems
        self.warnings = warnings

    def table(self, raw: dict[str, Any], name: str, known: set[str]) -> dict[str, Any] | None:
        value = raw.get(name)
        if value is None:
            return None
        if not isinstance(value, dict):
            self.problems.append(f"{self.source}: {name}: must be a table ([{name}])")
            return None
        for key in sorted(set(value) - known):
            self.warnings.append(f"{self.source}: {name}.{key}: unknown setting, ignored "
                                 "(as airlock ignores it)")
        return value

    def uint(self, table: dict[str, Any], key: str, where: str, *, top: int = UINT64_MAX,
             low: int = 0, why: str = "") -> int | None:
        value = table.get(key)
        if value is None:
            return None
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= top:
            self.problems.append(f"{self.source}: {where}.{key}: must be an integer from "
                                 f"{low} to {top}{why}, got {value!r}")
            return None
        return value

    def string(self, table: dict[str, Any], key: str, where: str) -> str | None:
        value = table.get(key)
        if value is not None and not isinstance(value, str):
            self.problems.append(f"{self.source}: {where}.{key}: must be a string, got {value!r}")
            return None
        return value

    def boolean(self, table: dict[str, Any], key: str, where: str) -> bool | None:
        value = table.get(key)
        if value is not None and not isinstance(value, bool):
            self.problems.append(f"{self.source}: {where}.{key}: must be true or false, "
                                 f"got {value!r}")
            return None
        return value


_SLOTS_WHY = (" (airlock compares slots as a signed 64-bit integer: above that it "
              "refuses every lock of the group)")


def _lock(r: _Reader, raw: dict[str, Any]) -> dict[str, int]:
    """airlock's ``mergeLock``: groups first, then the default group over any of the same name."""
    lock = r.table(raw, "lock", {"default_group_name", "default_slots", "groups"}) or {}
    default_name = r.string(lock, "default_group_name", "lock")
    default_name = DEFAULT_GROUP if default_name is None else default_name
    default_slots = r.uint(lock, "default_slots", "lock", top=SLOTS_MAX, why=_SLOTS_WHY)
    default_slots = 1 if default_slots is None else default_slots
    groups: dict[str, int] = {}
    seen: dict[str, int] = {}
    entries = lock.get("groups", [])
    if not isinstance(entries, list):
        r.problems.append(f"{r.source}: lock.groups: must be an array of tables ([[lock.groups]])")
        entries = []
    for i, entry in enumerate(entries):
        where = f"lock.groups[{i}]"
        if not isinstance(entry, dict):
            r.problems.append(f"{r.source}: {where}: must be a table")
            continue
        for key in sorted(set(entry) - {"name", "slots"}):
            r.warnings.append(f"{r.source}: {where}.{key}: unknown setting, ignored "
                              "(as airlock ignores it)")
        name = r.string(entry, "name", where)
        slots = r.uint(entry, "slots", where, top=SLOTS_MAX, why=_SLOTS_WHY)
        if name is None and "name" in entry:
            continue  # wrong type: a problem already
        name = name or ""
        slots = default_slots if slots is None else slots
        if name in seen:
            r.warnings.append(f"{r.source}: {where}.name: group {name!r} also at "
                              f"lock.groups[{seen[name]}]; this later entry wins (as in airlock)")
        if name == default_name and slots != default_slots:
            r.warnings.append(f"{r.source}: {where}: named like the default group {name!r}: "
                              f"lock.default_slots ({default_slots}) applies, not {slots} "
                              "(as in airlock)")
        seen[name] = i
        groups[name] = slots
    groups[default_name] = default_slots
    if "" in groups:
        r.warnings.append(f"{r.source}: a group with an empty name: no client can ask for it "
                          "(the protocol refuses an empty group)")
    return groups


def _service(r: _Reader, raw: dict[str, Any]) -> tuple[str, int] | None:
    service = r.table(raw, "service", {"address", "port", "tls"})
    if service is None:
        return None
    address = r.string(service, "address", "service")
    port = r.uint(service, "port", "service", top=65535)
    if r.boolean(service, "tls", "service"):
        r.problems.append(f"{r.source}: service.tls: atoll serves plain HTTP (as airlock "
                          "does: it refuses tls = true too); put a TLS proxy in front and "
                          "set tls = false")
    # a [service] table means airlock's defaults for what it leaves out
    return (AIRLOCK_ADDRESS if address is None else address,
            AIRLOCK_PORT if port is None else port)


def _status(r: _Reader, raw: dict[str, Any]) -> None:
    status = r.table(raw, "status", {"enabled", "address", "port", "tls"})
    if status is None:
        return
    r.string(status, "address", "status")
    r.uint(status, "port", "status", top=65535)
    r.boolean(status, "tls", "status")
    if r.boolean(status, "enabled", "status"):
        r.warnings.append(f"{r.source}: status: airlock's metrics service is not part of "
                          "atoll, ignored; the holders per group are at GET /atoll/v1/status "
                          "on the FleetLock address")


def _etcd(r: _Reader, raw: dict[str, Any]) -> EtcdSettings | None:
    etcd = r.table(raw, "etcd3", {"endpoints", "transaction_timeout_ms",
                                  "client_cert_pub_path", "client_cert_key_path"})
    if etcd is None:
        return None
    endpoints = etcd.get("endpoints", [])
    if not isinstance(endpoints, list) or not all(isinstance(e, str) for e in endpoints):
        r.problems.append(f"{r.source}: etcd3.endpoints: must be a list of URLs, "
                          f"got {endpoints!r}")
        endpoints = []
    timeout_ms = r.uint(etcd, "transaction_timeout_ms", "etcd3", low=1, top=TIMEOUT_MS_MAX,
                        why=" (airlock's largest Go duration)")
    cert = r.string(etcd, "client_cert_pub_path", "etcd3") or None
    key = r.string(etcd, "client_cert_key_path", "etcd3") or None
    if (cert is None) != (key is None):
        r.problems.append(f"{r.source}: etcd3: client_cert_pub_path and client_cert_key_path "
                          "go together")
    return EtcdSettings(tuple(endpoints), timeout_ms / 1000 if timeout_ms else None, cert, key)


def parse_config(raw: dict[str, Any], source: str) -> FleetConfig:
    """Build a config from parsed TOML; ``source`` prefixes error and warning lines.

    Raises:
        SpecError: one ``source: field: problem`` line per problem.
    """
    problems: list[str] = []
    warnings: list[str] = []
    r = _Reader(source, problems, warnings)
    for name in sorted(set(raw) - {"lock", "service", "status", "etcd3"}):
        warnings.append(f"{source}: {name}: unknown table, ignored (as airlock ignores it)")
    groups = _lock(r, raw)
    listen = _service(r, raw)
    _status(r, raw)
    etcd = _etcd(r, raw)
    if problems:
        raise SpecError(problems, resolution="fix the FleetLock config (see docs/fleet.md)")
    return FleetConfig(groups=groups, listen=listen, etcd=etcd, warnings=tuple(warnings))


def load_config(path: Path | None) -> FleetConfig:
    """Read a TOML config file; None gives the default (group ``default``, 1 slot).

    Raises:
        InputError: the file is missing, not a regular file, over ``MAX_CONFIG_BYTES``,
            or not TOML.
        SpecError: a setting is wrong.
    """
    if path is None:
        return FleetConfig()
    data = read_user_file(path, MAX_CONFIG_BYTES, "FleetLock config")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"FleetLock config {path}: not UTF-8 text", details=str(exc)) from exc
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"{path}: not valid TOML: {exc}",
                         resolution="fix the syntax (see docs/fleet.md)") from exc
    return parse_config(raw, str(path))

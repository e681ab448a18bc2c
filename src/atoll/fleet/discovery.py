"""Service discovery: what hosts register in etcd, and what is read back from it (pure).

Each host's agent registers its endpoints under one prefix, every key attached
to the host's own lease, so that a host that dies disappears when its lease
expires (docs/control-plane.md, "Service discovery")::

    /atoll/services/
    └── <customer>/
        └── <host>/
            ├── host              HostEntry: address, metrics endpoint, machine id, labels
            └── apps/
                └── <app>         AppEntry: endpoints, role, replication role, state, health

Values are canonical JSON (keys sorted, compact, UTF-8) with ``apiVersion``
``atoll/v1`` and ``kind`` ``HostEntry`` or ``AppEntry``; the schema is
``docs/services.schema.json``. The key is authoritative: an entry whose
customer, host or app differs from its key is invalid, and readers skip it.

Everything here is a pure function over entries: building them, the writes
that bring etcd from what is published to what is desired, reading a prefix
back, the changes a watch reports, and the Prometheus HTTP SD document
(https://prometheus.io/docs/prometheus/latest/http_sd/).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from atoll.core import canonjson
from atoll.core.errors import InputError

__all__ = [
    "API_VERSION",
    "PREFIX",
    "AppEntry",
    "Change",
    "Endpoint",
    "HostEntry",
    "Services",
    "advertised",
    "app_key",
    "app_specific_id",
    "changes",
    "check_name",
    "collect",
    "encode",
    "host_key",
    "host_prefix",
    "is_loopback",
    "label_name",
    "metrics_target",
    "parse_entry",
    "plan_sync",
    "sd_document",
    "with_since",
]

PREFIX = "/atoll/services/"
API_VERSION = "atoll/v1"
# A customer's or a host's name in a key: a DNS label, as the control plane names
# customers and hosts (atoll.control.protocol.Name).
NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
# An app's name (atoll.apps.spec.APP_NAME_RE): what `atoll app install` accepts.
APP_RE = re.compile(r"^[a-z][a-z0-9-]{0,30}[a-z0-9]$")
STATES = ("running", "restarting", "paused", "created", "exited", "dead", "removing",
          "missing", "unknown")
HEALTHS = ("healthy", "unhealthy", "starting", "none")
REPLICATION_ROLES = ("primary", "replica", "none")
_LABEL_RE = re.compile(r"[^A-Za-z0-9_]")
# The application id atoll's discovery derives its host id with (see app_specific_id).
DISCOVERY_APP_ID = bytes.fromhex("c129a412c43f447592c74b756ceae6da")
_ID128 = re.compile(r"^[0-9a-f]{32}$")
_WILDCARDS = ("", "0.0.0.0", "::", "*")


def check_name(value: object, what: str) -> str:
    """``value`` as a customer or host name: a DNS label (1 to 63 lowercase letters,
    digits and ``-``, not at either end), as the control plane names them.

    Raises:
        InputError: anything else.
    """
    if not isinstance(value, str) or not NAME_RE.match(value):
        raise InputError(f"{what} {value!r} is not a name (1 to 63 lowercase letters, "
                         "digits and '-', starting and ending with a letter or digit)")
    return value


def app_specific_id(machine_id: str, app_id: bytes = DISCOVERY_APP_ID) -> str:
    """The id a host registers under instead of its ``/etc/machine-id``, 32 hex digits.

    machine-id(5) asks that the machine id never leave the host ("confidential...
    must not be exposed in untrusted environments, in particular on the network")
    and be hashed with an application-specific key instead: this is systemd's
    ``sd_id128_get_machine_app_specific()`` (HMAC-SHA256 keyed with the machine id's
    16 bytes over ``app_id``, the first 16 bytes made a version-4 UUID), as Zincati
    derives its node id. Stable for a machine, useless to learn its machine id from.
    A ``machine_id`` that is not 32 hex digits (a host name, the fallback without
    /etc/machine-id) is used as the key in UTF-8.
    """
    text = machine_id.strip().lower()
    key = bytes.fromhex(text) if _ID128.match(text) else machine_id.encode()
    raw = bytearray(hmac.new(key, app_id, hashlib.sha256).digest()[:16])
    raw[6] = (raw[6] & 0x0F) | 0x40
    raw[8] = (raw[8] & 0x3F) | 0x80
    return raw.hex()


def host_prefix(customer: str, host: str) -> str:
    """The prefix of every key of one host (ends with ``/``)."""
    return f"{PREFIX}{customer}/{host}/"


def host_key(customer: str, host: str) -> str:
    return f"{host_prefix(customer, host)}host"


def app_key(customer: str, host: str, app: str) -> str:
    return f"{host_prefix(customer, host)}apps/{app}"


def is_loopback(address: str) -> bool:
    """Whether ``address`` (an IP or a name) only reaches this machine."""
    if address.lower() in ("localhost", "localhost.localdomain", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(address.strip("[]")).is_loopback
    except ValueError:
        return False


def advertised(bind: str, address: str) -> str:
    """The address others reach a socket bound to ``bind`` at: ``address`` (the host's
    advertised address) for a wildcard bind (``0.0.0.0``, ``::``), else ``bind`` itself."""
    return address if bind in _WILDCARDS else bind.strip("[]")


def metrics_target(listen: tuple[str, int] | None, address: str) -> str | None:
    """The Prometheus target (``HOST:PORT``) of a metrics endpoint listening at ``listen``.

    None when there is no endpoint, or when it listens on loopback only and the
    host's advertised ``address`` is not loopback: others cannot scrape it, and
    a ``127.0.0.1:9101`` target would make Prometheus scrape its own machine
    under this host's name.
    """
    if listen is None:
        return None
    host = advertised(listen[0], address)
    if is_loopback(host) and not is_loopback(address):
        return None
    shown = f"[{host}]" if ":" in host else host
    return f"{shown}:{listen[1]}"


def _str(d: Mapping[str, Any], key: str, *, optional: bool = False) -> Any:
    value = d.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise ValueError(f"{key}: expected a string, got {value!r}")
    return value


@dataclass(frozen=True)
class Endpoint:
    """A published port of an app, where others reach it."""

    address: str
    port: int
    protocol: str  # tcp | udp
    container_port: int

    def to_json(self) -> dict[str, Any]:
        return {"address": self.address, "port": self.port, "protocol": self.protocol,
                "container_port": self.container_port}

    @classmethod
    def from_json(cls, d: Any) -> Endpoint:
        if not isinstance(d, dict):
            raise ValueError("endpoint: expected an object")
        port, cport = d.get("port"), d.get("container_port")
        for name, p in (("port", port), ("container_port", cport)):
            if not isinstance(p, int) or isinstance(p, bool) or not 1 <= p <= 65535:
                raise ValueError(f"endpoint {name}: expected 1 to 65535, got {p!r}")
        proto = _str(d, "protocol")
        if proto not in ("tcp", "udp"):
            raise ValueError(f"endpoint protocol: tcp or udp, not {proto!r}")
        return cls(_str(d, "address"), port, proto, cport)  # type: ignore[arg-type]


@dataclass(frozen=True)
class HostEntry:
    """A host: where it is, where its metrics are (None: not scrapeable), who it is.

    ``machine_id`` is :func:`app_specific_id` of the host's machine id (never the
    machine id itself): two machines claiming one host name are told apart by it.

    ``metrics_listen`` is where the metrics endpoint listens (``HOST:PORT``), so
    an operator sees why ``metrics`` is None; ``registered`` is when this
    registration (lease) began, UTC.
    """

    customer: str
    host: str
    machine_id: str
    address: str
    metrics: str | None
    metrics_listen: str | None
    labels: Mapping[str, str]
    agent_version: str
    registered: str
    kind: Literal["HostEntry"] = "HostEntry"

    def to_json(self) -> dict[str, Any]:
        return {"apiVersion": API_VERSION, "kind": self.kind, "customer": self.customer,
                "host": self.host, "machine_id": self.machine_id, "address": self.address,
                "metrics": self.metrics, "metrics_listen": self.metrics_listen,
                "labels": dict(self.labels), "agent_version": self.agent_version,
                "registered": self.registered}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> HostEntry:
        labels = d.get("labels", {})
        if not isinstance(labels, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in labels.items()):
            raise ValueError("labels: expected an object of strings")
        return cls(customer=_str(d, "customer"), host=_str(d, "host"),
                   machine_id=_str(d, "machine_id"), address=_str(d, "address"),
                   metrics=_str(d, "metrics", optional=True),
                   metrics_listen=_str(d, "metrics_listen", optional=True),
                   labels=dict(sorted(labels.items())),
                   agent_version=_str(d, "agent_version"), registered=_str(d, "registered"))


@dataclass(frozen=True)
class AppEntry:
    """An app on a host: its endpoints, what it is, and how it is doing.

    ``role`` is the app spec's (``database``, ``service``); ``replication_role``
    what its database says (``primary``, ``replica``, ``none``; None: not a
    database, or unknown: not running, not answering). ``state`` is the
    container's (Docker's words, ``missing`` without a container, ``unknown``
    when the runtime does not answer), ``health`` its health check's (``none``
    without one); ``ready``: running and healthy or without a health check.
    ``since``: when any of these last changed, UTC.
    """

    customer: str
    host: str
    app: str
    address: str
    endpoints: tuple[Endpoint, ...]
    role: str
    replication_role: str | None
    image: str
    state: str
    health: str
    since: str
    kind: Literal["AppEntry"] = "AppEntry"

    @property
    def ready(self) -> bool:
        return self.state == "running" and self.health in ("healthy", "none")

    def to_json(self) -> dict[str, Any]:
        return {"apiVersion": API_VERSION, "kind": self.kind, "customer": self.customer,
                "host": self.host, "app": self.app, "address": self.address,
                "endpoints": [e.to_json() for e in self.endpoints], "role": self.role,
                "replication_role": self.replication_role, "image": self.image,
                "state": self.state, "health": self.health, "ready": self.ready,
                "since": self.since}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> AppEntry:
        endpoints = d.get("endpoints", [])
        if not isinstance(endpoints, list):
            raise ValueError("endpoints: expected a list")
        state, health = _str(d, "state"), _str(d, "health")
        if state not in STATES:
            raise ValueError(f"state: {state!r} is not one of {', '.join(STATES)}")
        if health not in HEALTHS:
            raise ValueError(f"health: {health!r} is not one of {', '.join(HEALTHS)}")
        repl = _str(d, "replication_role", optional=True)
        if repl is not None and repl not in REPLICATION_ROLES:
            raise ValueError(f"replication_role: {repl!r} is not primary, replica or none")
        return cls(customer=_str(d, "customer"), host=_str(d, "host"), app=_str(d, "app"),
                   address=_str(d, "address"),
                   endpoints=tuple(Endpoint.from_json(e) for e in endpoints),
                   role=_str(d, "role"), replication_role=repl, image=_str(d, "image"),
                   state=state, health=health, since=_str(d, "since"))


Entry = HostEntry | AppEntry


def encode(entry: Entry) -> bytes:
    """The value stored in etcd: canonical JSON."""
    return canonjson.dumps(entry.to_json())


def with_since(new: AppEntry, old: AppEntry | None, now: str) -> AppEntry:
    """``new`` with ``since`` kept from ``old`` when nothing else changed, else ``now``."""
    if old is not None and replace(old, since=new.since) == new:
        return replace(new, since=old.since)
    return replace(new, since=now)


def parse_entry(key: str, value: bytes) -> Entry:
    """The entry stored under ``key``.

    Raises:
        ValueError: the key is not a discovery key, the value is not an entry of
            this schema, or it names another customer, host or app than its key.
    """
    if not key.startswith(PREFIX):
        raise ValueError(f"not under {PREFIX}")
    parts = key[len(PREFIX):].split("/")
    try:
        doc = json.loads(value)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if not isinstance(doc, dict) or doc.get("apiVersion") != API_VERSION:
        raise ValueError(f"not an {API_VERSION} entry")
    entry: Entry
    if len(parts) == 3 and parts[2] == "host" and doc.get("kind") == "HostEntry":
        entry = HostEntry.from_json(doc)
    elif len(parts) == 4 and parts[2] == "apps" and doc.get("kind") == "AppEntry":
        entry = AppEntry.from_json(doc)
        if entry.app != parts[3] or not APP_RE.match(parts[3]):
            raise ValueError(f"names app {entry.app!r}, its key {parts[3]!r}")
    else:
        raise ValueError(f"kind {doc.get('kind')!r} does not belong under this key")
    if (entry.customer, entry.host) != (parts[0], parts[1]) or not all(
            NAME_RE.match(p) for p in parts[:2]):
        raise ValueError(f"names {entry.customer}/{entry.host}, its key {parts[0]}/{parts[1]}")
    return entry


def plan_sync(published: Mapping[str, bytes], desired: Mapping[str, bytes]
              ) -> tuple[dict[str, bytes], list[str]]:
    """The puts and deletes that turn what is ``published`` into what is ``desired``."""
    puts = {k: v for k, v in sorted(desired.items()) if published.get(k) != v}
    deletes = sorted(k for k in published if k not in desired)
    return puts, deletes


@dataclass(frozen=True)
class Services:
    """What a read of the prefix found: hosts and apps by key, and keys that did not parse."""

    hosts: dict[str, HostEntry] = field(default_factory=dict)
    apps: dict[str, AppEntry] = field(default_factory=dict)
    invalid: dict[str, str] = field(default_factory=dict)  # key -> why

    def entries(self) -> dict[str, Entry]:
        return {**self.hosts, **self.apps}

    def select(self, *, customers: Iterable[str] | None = None, app: str | None = None
               ) -> Services:
        """Only these customers (None: all), only this app (and the hosts that run it)."""
        allowed = None if customers is None else set(customers)

        def keep(e: Entry) -> bool:
            return allowed is None or e.customer in allowed

        apps = {k: a for k, a in self.apps.items() if keep(a) and (app is None or a.app == app)}
        running = {(a.customer, a.host) for a in apps.values()}
        hosts = {k: h for k, h in self.hosts.items()
                 if keep(h) and (app is None or (h.customer, h.host) in running)}
        return Services(hosts, apps, dict(self.invalid) if allowed is None else {})

    def to_json(self) -> dict[str, Any]:
        """``atoll fleet services --json``: hosts, each with its apps; orphaned apps apart."""
        by_host: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for a in sorted(self.apps.values(), key=lambda a: (a.customer, a.host, a.app)):
            by_host.setdefault((a.customer, a.host), []).append(a.to_json())
        hosts = []
        for h in sorted(self.hosts.values(), key=lambda h: (h.customer, h.host)):
            hosts.append(h.to_json() | {"apps": by_host.pop((h.customer, h.host), [])})
        return {"apiVersion": API_VERSION, "kind": "ServiceList", "hosts": hosts,
                "apps_without_host": [a for apps in by_host.values() for a in apps],
                "invalid": [{"key": k, "reason": why} for k, why in sorted(self.invalid.items())]}


def collect(kvs: Iterable[tuple[str, bytes]]) -> Services:
    """Parse keys and values read from the prefix (anything unparseable goes to ``invalid``)."""
    out = Services()
    for key, value in kvs:
        try:
            entry = parse_entry(key, value)
        except ValueError as exc:
            out.invalid[key] = str(exc)
            continue
        if isinstance(entry, HostEntry):
            out.hosts[key] = entry
        else:
            out.apps[key] = entry
    return out


@dataclass(frozen=True)
class Change:
    """One change a watch reports, as Kubernetes' watch events name them."""

    type: Literal["ADDED", "MODIFIED", "DELETED"]
    key: str
    entry: Entry

    def to_json(self) -> dict[str, Any]:
        return {"type": self.type, "key": self.key, "object": self.entry.to_json()}


def changes(old: Mapping[str, Entry], new: Mapping[str, Entry]) -> list[Change]:
    """What changed between two views of the prefix, sorted by key."""
    out: list[Change] = []
    for key in sorted(set(old) | set(new)):
        before, after = old.get(key), new.get(key)
        if before is None and after is not None:
            out.append(Change("ADDED", key, after))
        elif after is None and before is not None:
            out.append(Change("DELETED", key, before))
        elif after is not None and after != before:
            out.append(Change("MODIFIED", key, after))
    return out


def label_name(text: str) -> str:
    """``text`` as a Prometheus label name part: other characters than ``[A-Za-z0-9_]``
    become ``_`` (as Prometheus' own service discoveries sanitize names)."""
    return _LABEL_RE.sub("_", text)


def sd_document(services: Services) -> list[dict[str, Any]]:
    """The Prometheus HTTP SD document: one target group per host with a metrics endpoint.

    Each group is ``{"targets": ["HOST:PORT"], "labels": {...}}`` with the
    target labels ``customer`` and ``host``, and meta labels for relabelling
    (dropped after it unless kept): ``__meta_atoll_customer``, ``_host``,
    ``_address``, ``_machine_id``, ``_agent_version``, ``_label_<name>`` for
    each host label, ``_apps`` (``,a,b,``: comma-wrapped, as Consul's tags),
    and per app ``_app_<app>_role``, ``_app_<app>_ready`` (``true``/``false``),
    ``_app_<app>_replication_role`` when known. Sorted by customer and host.
    """
    apps: dict[tuple[str, str], list[AppEntry]] = {}
    for a in services.apps.values():
        apps.setdefault((a.customer, a.host), []).append(a)
    groups = []
    for h in sorted(services.hosts.values(), key=lambda h: (h.customer, h.host)):
        if h.metrics is None:
            continue
        mine = sorted(apps.get((h.customer, h.host), []), key=lambda a: a.app)
        labels = {"customer": h.customer, "host": h.host,
                  "__meta_atoll_customer": h.customer, "__meta_atoll_host": h.host,
                  "__meta_atoll_address": h.address, "__meta_atoll_machine_id": h.machine_id,
                  "__meta_atoll_agent_version": h.agent_version,
                  "__meta_atoll_apps": "," + "".join(f"{a.app}," for a in mine)}
        for name, value in sorted(h.labels.items()):
            labels[f"__meta_atoll_label_{label_name(name)}"] = value
        for a in mine:
            base = f"__meta_atoll_app_{label_name(a.app)}"
            labels[f"{base}_role"] = a.role
            labels[f"{base}_ready"] = "true" if a.ready else "false"
            if a.replication_role is not None:
                labels[f"{base}_replication_role"] = a.replication_role
        groups.append({"targets": [h.metrics], "labels": labels})
    return groups

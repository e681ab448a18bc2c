"""Service discovery, the host side: atolld registers this host and its apps in etcd.

Configured by ``<sysroot>/etc/atoll/fleet.toml`` (docs/control-plane.md, "Service
discovery")::

    [etcd3]                       # as airlock's config.toml names etcd
    endpoints = ["http://10.0.0.2:2379"]
    # transaction_timeout_ms, client_cert_pub_path, client_cert_key_path

    [discovery]
    customer = "acme"             # default "default"
    host = "db01"                 # default: the host name
    address = "10.0.0.7"          # default: the address this host reaches etcd from
    ttl_s = 60                    # lease TTL: a dead host's entries vanish after it
    interval_s = 10               # how often the apps' containers are looked at
    metrics = "auto"              # "auto", "off", or where the metrics endpoint listens
    labels = {site = "fra1"}      # free labels (Prometheus: __meta_atoll_label_<name>)

Without the file, or without ``[etcd3] endpoints``, nothing happens and
nothing is logged but a debug line. The file is read again when it changes.

The loop (:class:`Discovery`, a thread of atolld) polls the container runtime
every ``interval_s`` (decision: polling, not Docker's event stream: a poll
cannot miss an event across a Docker restart, and health changes are seen
within one interval), writes what changed under the host's lease
(:class:`atoll.fleet.registry.Registrar`), renews the lease every ``ttl_s /
3`` and re-reads its keys every 5 minutes. etcd failing never stops the agent:
it retries with backoff (1 s doubling to 30 s), logs the first failure as a
warning and the recovery as info, and registers again when the lease was lost.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import random
import re
import socket
import threading
import time
import tomllib
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import atoll
from atoll.core.errors import AtollError, InputError, SpecError
from atoll.fleet.config import EtcdSettings, parse_config
from atoll.fleet.discovery import (
    AppEntry,
    Endpoint,
    HostEntry,
    advertised,
    app_key,
    app_specific_id,
    check_name,
    encode,
    host_key,
    metrics_target,
    with_since,
)

if TYPE_CHECKING:
    from atoll.apps.runtime import Runtime
    from atoll.fleet.etcdv3 import EtcdClient
    from atoll.fleet.registry import Registrar

__all__ = ["CONFIG_PATH", "Discovery", "DiscoveryConfig", "host_name", "load_config",
           "metrics_listen", "observe_apps", "parse_discovery", "route_address",
           "start_discovery"]

log = logging.getLogger("atoll.agent.discovery")

CONFIG_PATH = "etc/atoll/fleet.toml"
METRICS_ENV = "etc/atoll/metrics.env"
METRICS_WANTS = "etc/systemd/system/multi-user.target.wants/atoll-metrics.service"
METRICS_DEFAULT = "127.0.0.1:9101"  # atoll-metrics.service's ATOLL_METRICS_LISTEN
DEFAULT_TTL_S = 60
DEFAULT_INTERVAL_S = 10.0
RECONCILE_S = 300.0
REPLICATION_REFRESH_S = 60.0
MAX_BACKOFF_S = 30.0
IDLE_RECHECK_S = 5.0  # without a config: look for one this often (a stat)
_KNOWN = {"customer", "host", "address", "ttl_s", "interval_s", "metrics", "labels", "enabled"}
# as the control plane's host labels (atoll.control.operations.LABEL_KEY)
_LABEL_KEY = re.compile(r"^[a-z0-9]([a-z0-9._/-]{0,61}[a-z0-9])?$")


@dataclass(frozen=True)
class DiscoveryConfig:
    """``fleet.toml`` as the agent uses it. ``address`` None: found from the route to etcd;
    ``metrics``: ``auto``, ``off`` or ``HOST:PORT`` (where the endpoint listens)."""

    etcd: EtcdSettings
    customer: str = "default"
    host: str | None = None
    address: str | None = None
    ttl_s: int = DEFAULT_TTL_S
    interval_s: float = DEFAULT_INTERVAL_S
    metrics: str = "auto"
    labels: Mapping[str, str] = field(default_factory=dict)


def _listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"{text!r} is not HOST:PORT")
    return host.strip("[]") or "0.0.0.0", int(port)


def parse_discovery(raw: dict[str, Any], source: str) -> DiscoveryConfig | None:
    """The discovery settings of a parsed ``fleet.toml``; None when etcd is not configured
    (no ``[etcd3] endpoints``) or ``[discovery] enabled = false``.

    Raises:
        SpecError: ``source: field: problem`` for each wrong setting.
    """
    etcd = parse_config({"etcd3": raw["etcd3"]}, source).etcd if "etcd3" in raw else None
    table = raw.get("discovery", {})
    problems: list[str] = []
    if not isinstance(table, dict):
        raise SpecError([f"{source}: discovery: must be a table ([discovery])"])
    for key in sorted(set(table) - _KNOWN):
        log.warning("%s: discovery.%s: unknown setting, ignored", source, key)
    values: dict[str, Any] = {}

    def check(key: str, test: Callable[[Any], Any], what: str) -> None:
        if key not in table:
            return
        try:
            values[key] = test(table[key])
        except (ValueError, TypeError, InputError) as exc:
            detail = exc.brief if isinstance(exc, InputError) else str(exc)
            problems.append(f"{source}: discovery.{key}: {what} ({detail})")

    def number(low: float, high: float, kind: type) -> Callable[[Any], Any]:
        def test(v: Any) -> Any:
            if isinstance(v, bool) or not isinstance(v, int | float) or not low <= v <= high:
                raise ValueError(f"got {v!r}")
            if kind is int and not isinstance(v, int):
                raise ValueError(f"got {v!r}")
            return kind(v)
        return test

    def labels(v: Any) -> dict[str, str]:
        if not isinstance(v, dict):
            raise ValueError("not a table")
        for k, val in v.items():
            if not _LABEL_KEY.match(k):
                raise ValueError(f"label {k!r}")
            if not isinstance(val, str) or len(val) > 256 or not val.isprintable():
                raise ValueError(f"label {k} = {val!r}")
        return dict(sorted(v.items()))

    def metrics(v: Any) -> str:
        if not isinstance(v, str):
            raise ValueError(f"got {v!r}")
        if v not in ("auto", "off"):
            _listen(v)
        return v

    def text(v: Any) -> str:
        if not isinstance(v, str) or not v or not v.isprintable() or " " in v:
            raise ValueError(f"got {v!r}")
        return v

    check("customer", lambda v: check_name(v, "customer"), "a customer name")
    check("host", lambda v: check_name(v, "host"), "a host name")
    check("address", text, "an address (IP or DNS name)")
    check("ttl_s", number(2, 3600, int), "whole seconds from 2 to 3600")
    check("interval_s", number(0.2, 3600, float), "seconds from 0.2 to 3600")
    check("metrics", metrics, "auto, off or HOST:PORT")
    check("labels", labels, "a table of names (lowercase letters, digits, . _ / -) to "
                            "one-line strings")
    enabled = table.get("enabled", True)
    if not isinstance(enabled, bool):
        problems.append(f"{source}: discovery.enabled: must be true or false")
    if problems:
        raise SpecError(problems, resolution="fix the [discovery] table (see "
                                             "docs/control-plane.md, \"Service discovery\")")
    if etcd is None or not etcd.endpoints or not enabled:
        return None
    return DiscoveryConfig(etcd=etcd, **values)


def load_config(sysroot: Path) -> DiscoveryConfig | None:
    """``<sysroot>/etc/atoll/fleet.toml`` (None: no file, or etcd not configured).

    Raises:
        InputError: the file does not read or is not TOML.
        SpecError: a setting is wrong.
    """
    path = Path(sysroot) / CONFIG_PATH
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read {path}", details=str(exc)) from exc
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"{path}: not valid TOML: {exc}") from exc
    return parse_discovery(raw, str(path))


# -- what this host looks like ------------------------------------------------------------

def host_name(sysroot: Path) -> str:
    """The host's name: the first label of ``<sysroot>/etc/hostname``, else of this
    machine's host name, lower-cased (``db01.example.com`` is ``db01``)."""
    try:
        words = (Path(sysroot) / "etc/hostname").read_text().split()
    except (OSError, UnicodeDecodeError):
        words = []
    return (words[0] if words else socket.gethostname()).split(".")[0].lower()


def route_address(endpoints: tuple[str, ...]) -> str | None:
    """The local address this machine reaches the first etcd endpoint from (no packet is
    sent: a UDP socket is connected, and the kernel picks the source address)."""
    for url in endpoints:
        parts = urllib.parse.urlsplit(url)
        try:
            infos = socket.getaddrinfo(parts.hostname, parts.port or 2379,
                                       type=socket.SOCK_DGRAM)
            family, _, _, _, addr = infos[0]
            with socket.socket(family, socket.SOCK_DGRAM) as s:
                s.connect(addr)
                return str(s.getsockname()[0])
        except (OSError, ValueError, IndexError):
            continue
    return None


def _env_value(path: Path, name: str) -> str | None:
    """``NAME=value`` from a systemd EnvironmentFile (the last one wins; quotes removed)."""
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    found = None
    for line in lines:
        key, sep, value = line.strip().partition("=")
        if sep and key.strip() == name:
            found = value.strip().strip("'\"")
    return found


def metrics_listen(sysroot: Path, setting: str) -> tuple[str, int] | None:
    """Where this host's Prometheus endpoint listens: ``setting`` itself, or (``auto``)
    ``ATOLL_METRICS_LISTEN`` from metrics.env when atoll-metrics.service is enabled."""
    if setting == "off":
        return None
    if setting != "auto":
        return _listen(setting)
    if not os.path.lexists(Path(sysroot) / METRICS_WANTS):
        return None
    try:
        return _listen(_env_value(Path(sysroot) / METRICS_ENV, "ATOLL_METRICS_LISTEN")
                       or METRICS_DEFAULT)
    except ValueError:
        log.warning("%s: ATOLL_METRICS_LISTEN is not HOST:PORT; metrics not registered",
                    Path(sysroot) / METRICS_ENV)
        return None


def _utc(t: float | None = None) -> str:
    when = dt.datetime.fromtimestamp(time.time() if t is None else t, dt.UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class _Role:
    started_at: str | None
    checked: float
    role: str | None


class _AppObserver:
    """Looks at the installed apps and their containers; keeps runtime connections and
    replication roles between polls (a role is asked at most every 60 s, and again when
    the container restarted)."""

    def __init__(self, sysroot: Path) -> None:
        self.sysroot = Path(sysroot)
        self.runtimes: dict[str, Runtime] = {}
        self.roles: dict[str, _Role] = {}
        self.warned: set[str] = set()

    def _runtime(self, name: str) -> Runtime | None:
        from atoll.apps.runtime import get_runtime

        rt = self.runtimes.get(name)
        if rt is None:
            try:
                rt = self.runtimes[name] = get_runtime(name)
            except AtollError as exc:
                log.debug("service discovery: runtime %s: %s", name, exc.brief)
                return None
        return rt

    def _replication_role(self, app: str, started_at: str | None, monotonic: float
                          ) -> str | None:
        from atoll.agent.replication import replication_facts

        known = self.roles.get(app)
        if known is not None and known.started_at == started_at and \
                monotonic - known.checked < REPLICATION_REFRESH_S:
            return known.role
        try:
            role: str | None = replication_facts(self.sysroot, app).role
        except AtollError as exc:
            log.debug("service discovery: %s: replication role unknown: %s", app, exc.brief)
            role = None
        self.roles[app] = _Role(started_at, monotonic, role)
        return role

    def observe(self, customer: str, host: str, address: str, monotonic: float
                ) -> list[AppEntry]:
        from atoll.apps.manager import load_installed
        from atoll.apps.paths import apps_root
        from atoll.apps.plan import container_name, is_database

        root = apps_root(self.sysroot)
        names = sorted(p.name for p in root.iterdir() if (p / "state.json").is_file()) \
            if root.is_dir() else []
        out = []
        for name in names:
            try:
                inst = load_installed(self.sysroot, name)
            except AtollError as exc:
                if name not in self.warned:
                    self.warned.add(name)
                    log.warning("service discovery: app %s not registered: %s", name,
                                exc.brief)
                continue
            self.warned.discard(name)
            state, health, started = "unknown", "none", None
            rt = self._runtime(str(inst.state.get("runtime", "docker")))
            if rt is not None:
                try:
                    info = rt.inspect(container_name(name))
                except AtollError:
                    self.runtimes.pop(str(inst.state.get("runtime", "docker")), None)
                else:
                    if info is None:
                        state = "missing"
                    else:
                        state = info.status if info.status in _STATES else "unknown"
                        health = info.health if info.health in _HEALTHS else "none"
                        started = info.started_at
            role = None
            if is_database(inst.spec) and state == "running":
                role = self._replication_role(name, started, monotonic)
            endpoints = tuple(Endpoint(advertised(p.host_ip, address), p.host_port, p.protocol,
                                       p.container_port) for p in inst.spec.port_mappings())
            out.append(AppEntry(customer=customer, host=host, app=name, address=address,
                                endpoints=endpoints, role=inst.spec.role.value,
                                replication_role=role, image=inst.spec.image, state=state,
                                health=health, since=""))
        return out


_STATES = frozenset({"running", "restarting", "paused", "created", "exited", "dead",
                     "removing"})
_HEALTHS = frozenset({"healthy", "unhealthy", "starting"})


def observe_apps(sysroot: Path, customer: str, host: str, address: str) -> list[AppEntry]:
    """The installed apps of ``sysroot`` as discovery entries (``since`` left empty)."""
    return _AppObserver(sysroot).observe(customer, host, address, time.monotonic())


# -- the loop -----------------------------------------------------------------------------

class Discovery:
    """atolld's discovery thread; ``step()`` is one pass (tests drive it directly).

    Args:
        sysroot: the host's root (``/``).
        connect: makes the etcd client for a config (tests inject theirs).
    """

    def __init__(self, sysroot: Path, *,
                 connect: Callable[[EtcdSettings], EtcdClient] | None = None) -> None:
        self.sysroot = Path(sysroot)
        self._connect = connect or _connect
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._config_stamp: tuple[int, int] | None = None
        self.config: DiscoveryConfig | None = None
        self.registrar: Registrar | None = None
        self._observer = _AppObserver(self.sysroot)
        self._apps: dict[str, AppEntry] = {}
        self._started = _utc()
        self._address = ""
        self._next_poll = self._next_keepalive = self._next_reconcile = 0.0
        self._retry_at = 0.0
        self.failures = 0
        self._desired: dict[str, bytes] | None = None

    # config -------------------------------------------------------------------------

    def _reload(self) -> None:
        """Read fleet.toml when it appeared, changed or went away."""
        path = self.sysroot / CONFIG_PATH
        try:
            st = path.stat()
            stamp: tuple[int, int] | None = (st.st_mtime_ns, st.st_size)
        except OSError:
            stamp = None
        if stamp == self._config_stamp:
            return
        self._config_stamp = stamp
        try:
            config = load_config(self.sysroot)
        except AtollError as exc:  # said once; read again when the file changes
            log.error("service discovery off: %s%s", exc.brief,
                      f"\n{exc.details}" if exc.details else "")
            config = None
        if config == self.config:
            return
        self._close(revoke=True)
        self.config = config
        if config is None:
            log.debug("service discovery: no etcd in %s; not registering", path)
            return
        log.info("service discovery: registering in etcd at %s as %s/%s",
                 ", ".join(config.etcd.endpoints), config.customer,
                 config.host or host_name(self.sysroot))
        self._next_poll = self._next_keepalive = self._next_reconcile = 0.0
        self._retry_at = 0.0
        self.failures = 0

    def _close(self, *, revoke: bool) -> None:
        if self.registrar is not None:
            self.registrar.close(revoke=revoke)
            self.registrar.client.close()
            self.registrar = None
        self._desired = None

    # one pass -------------------------------------------------------------------------

    def step(self, now: float | None = None) -> float:
        """Do what is due; the seconds until something is due again."""
        now = time.monotonic() if now is None else now
        self._reload()
        config = self.config
        if config is None:
            return IDLE_RECHECK_S
        if now < self._retry_at:
            return self._retry_at - now
        try:
            self._pass(config, now)
        except AtollError as exc:
            self._failed(exc, now)
            return max(0.05, self._retry_at - now)
        except Exception as exc:  # a bug: never take atolld down; keep trying
            log.debug("service discovery: internal error", exc_info=True)  # --debug
            self._failed(AtollError(f"internal error: {type(exc).__name__}: {exc}",
                                    resolution="a bug in atoll: run atolld with --debug "
                                               "for the traceback and report it"), now)
            return max(0.05, self._retry_at - now)
        if self.failures:
            log.info("service discovery: etcd reachable again; %s/%s registered",
                     config.customer, self.registrar.host if self.registrar else "?")
        self.failures = 0
        wake = min(self._next_poll, self._next_keepalive, self._next_reconcile)
        return max(0.05, wake - now)

    def _pass(self, config: DiscoveryConfig, now: float) -> None:
        if self.registrar is None:
            from atoll.agent.host import node_id
            from atoll.fleet.registry import Registrar

            host = config.host or check_name(host_name(self.sysroot), "host name")
            client = self._connect(config.etcd)
            # never the machine id itself (machine-id(5)): an id derived from it
            self.registrar = Registrar(client, config.customer, host,
                                       app_specific_id(node_id(self.sysroot)), config.ttl_s)
            self._address = config.address or route_address(config.etcd.endpoints) or host
        reg = self.registrar
        if now >= self._next_poll or self._desired is None:
            self._desired = self._observe(config, reg.customer, reg.host)
            self._next_poll = now + config.interval_s
        if reg.registered and now >= self._next_keepalive:
            reg.keepalive()
            self._next_keepalive = now + max(1.0, config.ttl_s / 3)
        if reg.registered and now >= self._next_reconcile:
            reg.reconcile()
            self._next_reconcile = now + RECONCILE_S
        was = reg.registered
        if reg.sync(self._desired) and not was:
            log.info("service discovery: registered %s/%s (%d apps, lease %x, TTL %d s)",
                     reg.customer, reg.host, len(self._desired) - 1, reg.lease, config.ttl_s)
            self._next_keepalive = now + max(1.0, config.ttl_s / 3)
            self._next_reconcile = now + RECONCILE_S

    def _observe(self, config: DiscoveryConfig, customer: str, host: str) -> dict[str, bytes]:
        address = self._address
        stamp = _utc()
        apps = {}
        for entry in self._observer.observe(customer, host, address, time.monotonic()):
            apps[entry.app] = with_since(entry, self._apps.get(entry.app), stamp)
        self._apps = apps
        listen = metrics_listen(self.sysroot, config.metrics)
        assert self.registrar is not None
        me = HostEntry(customer=customer, host=host, machine_id=self.registrar.machine_id,
                       address=address, metrics=metrics_target(listen, address),
                       metrics_listen=(f"{listen[0]}:{listen[1]}" if listen else None),
                       labels=config.labels, agent_version=atoll.__version__,
                       registered=self._started)
        desired = {host_key(customer, host): encode(me)}
        for a in apps.values():
            desired[app_key(customer, host, a.app)] = encode(a)
        return desired

    def _failed(self, exc: AtollError, now: float) -> None:
        self.failures += 1
        delay = min(MAX_BACKOFF_S, 2.0 ** (self.failures - 1)) * random.uniform(0.8, 1.2)
        self._retry_at = now + delay
        if self.failures == 1:
            log.warning("service discovery: %s; atolld carries on, retrying with backoff%s",
                        exc.brief, f" ({exc.details.splitlines()[0]})" if exc.details else "")
        else:
            log.debug("service discovery: still failing (%d): %s; next try in %.1f s",
                      self.failures, exc.brief, delay)

    # thread ---------------------------------------------------------------------------

    def start(self) -> Discovery:
        self._thread = threading.Thread(target=self._run, name="atolld-discovery", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self._stop.wait(self.step())

    def stop(self, *, revoke: bool = True) -> None:
        """Stop the thread; ``revoke``: the host's entries go at once (a clean shutdown)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._close(revoke=revoke)


def _connect(etcd: EtcdSettings) -> EtcdClient:
    from atoll.fleet.etcdv3 import EtcdClient

    return EtcdClient(",".join(etcd.endpoints), timeout=etcd.timeout_seconds,
                      client_cert=etcd.client_cert, client_key=etcd.client_key, connect=False)


def start_discovery(sysroot: Path) -> Discovery:
    """Start atolld's discovery thread (it does nothing until fleet.toml configures etcd)."""
    return Discovery(sysroot).start()


"""The Checkmk agent: run every section concurrently, each under a timeout.

    Agent.output()
    ├── <<<check_mk>>> header                   (always first)
    ├── uptime, mem, cpu, kernel, df, mounts,   (Linux sections, atoll.monitor.linux)
    │   lnx_if, diskstat, ps_lnx, systemd_units
    ├── mysql_ping, mysql, mysql_capacity,      (per database app, atoll.monitor.mysql)
    │   mysql_slave
    ├── docker_node_*, <<<<container>>>> ...    (atoll.monitor.docker_sections)
    ├── <<<atoll_agent:sep(0)>>>                (JSON: how each section ended)
    └── <<<local:sep(0)>>>                      (atoll's own checks + "atoll agent")

A section that raises is left out and reported in the "atoll agent" local
check (WARN) and in ``atoll_agent``; a section that outlives its timeout is
abandoned the same way. A section still running from an earlier call is not
started twice, so a hung section costs one thread, not one per request.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from atoll import __version__
from atoll.monitor import linux
from atoll.monitor.access import OnlyFrom
from atoll.monitor.docker_sections import DEFAULT_DOCKER_URL, docker_section
from atoll.monitor.facts import HostFacts, load_host_facts
from atoll.monitor.localchecks import (
    UNKNOWN,
    LocalCheck,
    LocalCheckPolicy,
    SectionOutcome,
    agent_check,
    host_checks,
    render_local,
)
from atoll.monitor.mysql import mysql_section
from atoll.monitor.source import HostSource, SectionSkipped

__all__ = ["Agent", "AgentConfig", "SectionSpec", "default_sections"]

log = logging.getLogger("atoll.monitor")

AGENT_DIR = "/etc/atoll/checkmk"
DATA_DIR = "/var/lib/atoll/checkmk"


@dataclass(frozen=True)
class SectionSpec:
    """A named section producer and its timeout in seconds."""

    name: str
    produce: Callable[[], str]
    timeout: float = 5.0


@dataclass(frozen=True)
class AgentConfig:
    """How the agent runs.

    Attributes:
        sysroot: where atoll's state lives (``--sysroot``), for the host facts.
        root: where ``/proc`` and ``/sys`` are read (``/`` on a host).
        docker_url: the Docker daemon.
        section_timeout: seconds each system section may take.
        app_timeout: seconds the Docker and MySQL sections may take.
        only_from: the TCP allowlist shown in the header.
        policy: local check thresholds.
        container_id: piggyback names of containers, as mk_docker's option of that
            name: ``short`` (12 hex digits of the id, its default), ``long`` or ``name``.
    """

    sysroot: Path = Path("/")
    root: Path = Path("/")
    docker_url: str = DEFAULT_DOCKER_URL
    section_timeout: float = 5.0
    app_timeout: float = 10.0
    only_from: OnlyFrom = field(default_factory=OnlyFrom)
    policy: LocalCheckPolicy = field(default_factory=LocalCheckPolicy)
    container_id: str = "short"


def default_sections(config: AgentConfig, src: HostSource | None = None) -> list[SectionSpec]:
    """The sections atoll's agent writes, in output order."""
    src = src or HostSource(config.root)
    t = config.section_timeout
    specs = [
        SectionSpec(name, (lambda fn=fn: fn(src)), t)  # type: ignore[misc]
        for name, fn in [
            ("uptime", linux.section_uptime),
            ("mem", linux.section_mem),
            ("cpu", linux.section_cpu),
            ("kernel", linux.section_kernel),
            ("df", linux.section_df),
            ("mounts", linux.section_mounts),
            ("lnx_if", linux.section_lnx_if),
            ("diskstat", linux.section_diskstat),
            ("ps_lnx", linux.section_ps),
            ("systemd_units", linux.section_systemd_units),
        ]
    ]
    specs.append(SectionSpec("mysql", lambda: mysql_section(config.docker_url, config.app_timeout),
                             config.app_timeout))
    specs.append(SectionSpec("docker", lambda: docker_section(
        config.docker_url, config.app_timeout, config.container_id), config.app_timeout))
    return specs


class Agent:
    """Produces the full agent output; safe to call from many threads.

    Args:
        config: see :class:`AgentConfig`.
        sections: the section producers (default: :func:`default_sections`).
        facts: loads the host facts for the local checks.
        clock: the current time (UTC) for the local checks.
    """

    def __init__(
        self,
        config: AgentConfig | None = None,
        *,
        sections: Sequence[SectionSpec] | None = None,
        facts: Callable[[], HostFacts] | None = None,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
        hostname: str | None = None,
    ):
        self.config = config or AgentConfig()
        self.sections = list(sections) if sections is not None else default_sections(self.config)
        self._facts = facts or (lambda: load_host_facts(self.config.sysroot))
        self._clock = clock
        self._hostname = hostname or os.uname().nodename
        # one thread per section plus the local checks: never more, even when hung
        self._pool = ThreadPoolExecutor(max_workers=len(self.sections) + 1,
                                        thread_name_prefix="atoll-agent")
        self._lock = threading.Lock()
        self._in_flight: dict[str, Future[str]] = {}

    def close(self) -> None:
        """Stop the worker threads (sections still running are abandoned)."""
        self._pool.shutdown(wait=False, cancel_futures=True)

    def header(self) -> str:
        """The ``<<<check_mk>>>`` section, as the Linux agent writes it."""
        lines = [
            "<<<check_mk>>>",
            f"Version: atoll-{__version__}",
            "AgentOS: linux",
            f"Hostname: {self._hostname}",
            f"AgentDirectory: {AGENT_DIR}",
            f"DataDirectory: {DATA_DIR}",
            f"SpoolDirectory: {DATA_DIR}/spool",
            "PluginsDirectory: /usr/lib/atoll/checkmk/plugins",
            "LocalDirectory: /usr/lib/atoll/checkmk/local",
        ]
        if not self.config.only_from.allow_all:
            lines.append(f"OnlyFrom: {self.config.only_from.render()}")
        lines.append("FailedPythonReason: ")
        ssh = os.environ.get("SSH_CLIENT", "")
        lines.append(f"SSHClient: {ssh}")
        return "\n".join(lines) + "\n"

    def _submit(self, spec: SectionSpec) -> Future[str] | None:
        with self._lock:
            running = self._in_flight.get(spec.name)
            if running is not None and not running.done():
                return None
            fut = self._pool.submit(spec.produce)
            self._in_flight[spec.name] = fut
            return fut

    def _local(self) -> str:
        now = self._clock()
        return "".join(c.line() + "\n" for c in host_checks(self._facts(), now,
                                                              self.config.policy))

    def output(self) -> str:
        """Run every section (concurrently, each within its timeout) and join them."""
        start = time.monotonic()
        local_spec = SectionSpec("local", self._local, self.config.section_timeout)
        specs = [*self.sections, local_spec]
        futures = {s.name: self._submit(s) for s in specs}
        parts: list[str] = [self.header()]
        outcomes: list[SectionOutcome] = []
        local_lines = ""
        for spec in specs:
            fut = futures[spec.name]
            if fut is None:
                outcomes.append(SectionOutcome(spec.name, "timeout", 0.0,
                                               "still running from an earlier request"))
                continue
            remaining = start + spec.timeout - time.monotonic()
            try:
                text = fut.result(timeout=max(remaining, 0))
            except TimeoutError:
                outcomes.append(SectionOutcome(spec.name, "timeout", spec.timeout,
                                               f"no answer within {spec.timeout:g}s"))
                log.warning("agent section %s timed out after %gs", spec.name, spec.timeout)
                continue
            except SectionSkipped as exc:
                outcomes.append(SectionOutcome(spec.name, "skipped", 0.0, str(exc)))
                continue
            except Exception as exc:  # one broken section must not break the output
                detail = f"{type(exc).__name__}: {exc}"
                outcomes.append(SectionOutcome(spec.name, "error", 0.0, detail))
                log.warning("agent section %s failed: %s", spec.name, detail)
                continue
            outcomes.append(SectionOutcome(spec.name, "ok", 0.0))
            if spec is local_spec:
                local_lines = text
            else:
                parts.append(text)
        parts.append("<<<atoll_agent:sep(0)>>>\n" + json.dumps({
            "version": __version__,
            "seconds": round(time.monotonic() - start, 3),
            "sections": [{"name": o.name, "status": o.status, "detail": o.detail}
                         for o in outcomes],
        }, sort_keys=True) + "\n")
        if not local_lines:
            failed = next(o for o in outcomes if o.name == "local")
            local_lines = LocalCheck(UNKNOWN, "atoll host status",
                                     f"local checks failed: {failed.detail}").line() + "\n"
        parts.append(render_local([]) + local_lines + agent_check(outcomes).line() + "\n")
        return "".join(parts)

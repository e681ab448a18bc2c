"""``atoll checkmk-agent`` and ``atoll metrics``: monitoring commands (thin)."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from atoll.core.errors import InputError

if TYPE_CHECKING:
    from atoll.monitor.agent import AgentConfig

# The monitor modules are imported inside the handlers: the TCP agent then never
# loads prometheus_client, and other commands load neither docker nor prometheus.
DEFAULT_DOCKER_URL = "unix:///var/run/docker.sock"

__all__ = ["register"]

log = logging.getLogger("atoll")


def _run_until_signal(serve: Callable[[], None], stop: Callable[[], None]) -> int:
    """Run ``serve`` in a thread until SIGTERM/SIGINT, then ``stop`` it."""
    done = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        done.set()

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    def run() -> None:
        try:
            serve()
        finally:
            done.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        done.wait()
    finally:
        stop()
        thread.join(timeout=10)
        for s, h in old.items():
            signal.signal(s, h)
    return 0


def _agent_config(args: argparse.Namespace, only_from: str | None = None) -> AgentConfig:
    from atoll.monitor.access import parse_only_from
    from atoll.monitor.agent import AgentConfig

    return AgentConfig(
        sysroot=args.sysroot,
        docker_url=args.docker_url,
        section_timeout=args.section_timeout,
        app_timeout=max(args.section_timeout, 10.0),
        only_from=parse_only_from(only_from),
        container_id=_container_id(args),
    )


def _container_id(args: argparse.Namespace) -> str:
    """``--container-id``, else mk_docker's ``docker.cfg`` (``$MK_CONFDIR``, default
    /etc/check_mk, under the sysroot) when it exists, else ``short`` (mk_docker's default)."""
    if args.container_id:
        return str(args.container_id)
    import os

    from atoll.monitor.docker_sections import read_docker_cfg

    confdir = os.environ.get("MK_CONFDIR") or str(Path(args.sysroot) / "etc/check_mk")
    cfg = Path(confdir) / "docker.cfg"
    return read_docker_cfg(cfg) if cfg.is_file() else "short"


def _checkmk_agent(args: argparse.Namespace) -> int:
    from atoll.monitor.agent import Agent

    agent = Agent(_agent_config(args))
    try:
        sys.stdout.write(agent.output())
        sys.stdout.flush()
    finally:
        agent.close()
    return 0


def _checkmk_serve(args: argparse.Namespace) -> int:
    from atoll.monitor.access import parse_only_from
    from atoll.monitor.agent import Agent
    from atoll.monitor.server import AgentServer

    only_from = parse_only_from(args.only_from)
    agent = Agent(_agent_config(args, args.only_from))
    server = AgentServer(agent.output, listen=args.listen, port=args.port, only_from=only_from,
                         max_clients=args.max_clients, cache_seconds=args.cache_seconds)
    try:
        return _run_until_signal(server.serve_forever, server.shutdown)
    finally:
        agent.close()


def _split_listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise InputError(f"--listen {value!r}: expected HOST:PORT, e.g. 127.0.0.1:9101")
    return host.strip("[]") or "127.0.0.1", int(port)


def _metrics(args: argparse.Namespace) -> int:
    from atoll.monitor.metrics import exposition, gather_snapshot, write_textfile

    data = exposition(lambda: gather_snapshot(args.sysroot, args.docker_url))
    if args.textfile is not None:
        path = write_textfile(args.textfile, data)
        log.info("wrote %s", path)
        return 0
    sys.stdout.write(data.decode("utf-8"))
    return 0


def _metrics_serve(args: argparse.Namespace) -> int:
    from atoll.monitor.metrics import MetricsServer, exposition, gather_snapshot

    host, port = _split_listen(args.listen)
    server = MetricsServer(lambda: exposition(lambda: gather_snapshot(args.sysroot,
                                                                      args.docker_url)),
                           host=host, port=port)
    log.info("metrics on http://%s:%d/metrics", host, server.port)
    return _run_until_signal(server.serve_forever, server.shutdown)


def register(sub: Any, common: Callable[[argparse.ArgumentParser], None]) -> None:
    """Add ``checkmk-agent`` and ``metrics`` to the ``atoll`` command."""
    cmk = sub.add_parser("checkmk-agent", help="print Checkmk agent output, or serve it on TCP",
                         description="Print the Checkmk agent output of this host (usable as an "
                                     "SSH datasource program), or serve it on TCP port 6556.")
    cmk.add_argument("--docker-url", default=DEFAULT_DOCKER_URL, help="the Docker daemon")
    cmk.add_argument("--section-timeout", type=float, default=5.0,
                     help="seconds each section may take (default 5)")
    cmk.add_argument("--container-id", choices=["short", "long", "name"],
                     help="piggyback host names of containers, as mk_docker's option: short "
                     "id (default), long id, or name; default: container_id from mk_docker's "
                     "$MK_CONFDIR/docker.cfg when it exists")
    cmk.set_defaults(handler=_checkmk_agent)
    cmk_sub = cmk.add_subparsers(dest="action", metavar="ACTION")
    serve = cmk_sub.add_parser("serve", help="serve the agent output on TCP (classic pull agent)")
    serve.add_argument("--listen", default="127.0.0.1",
                       help="address to bind (default 127.0.0.1; 0.0.0.0 or :: for all)")
    serve.add_argument("--port", type=int, default=6556, help="TCP port (default 6556)")
    serve.add_argument("--only-from", default=None,
                       help="allowed client addresses/networks, comma separated (default: any)")
    serve.add_argument("--max-clients", type=int, default=8,
                       help="connections served at the same time (default 8)")
    serve.add_argument("--cache-seconds", type=float, default=1.0,
                       help="reuse one computed output for this long (default 1)")
    serve.set_defaults(handler=_checkmk_serve)

    met = sub.add_parser("metrics", help="Prometheus metrics: print, write a textfile, or serve",
                         description="Prometheus exposition of atoll's state.")
    met.add_argument("--docker-url", default=DEFAULT_DOCKER_URL, help="the Docker daemon")
    met.add_argument("--textfile", type=Path, default=None, metavar="DIR",
                     help="write DIR/atoll.prom atomically (node_exporter textfile collector)")
    met.set_defaults(handler=_metrics)
    met_sub = met.add_subparsers(dest="action", metavar="ACTION")
    mserve = met_sub.add_parser("serve", help="serve /metrics over HTTP")
    mserve.add_argument("--listen", default="127.0.0.1:9101",
                        help="HOST:PORT to bind (default 127.0.0.1:9101)")
    mserve.set_defaults(handler=_metrics_serve)

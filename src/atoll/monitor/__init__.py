"""Monitoring: a Checkmk agent and Prometheus metrics for atoll hosts.

Modules::

    facts.py            host status dict (deploy layer) -> typed HostFacts
    localchecks.py      HostFacts -> <<<local:sep(0)>>> lines (pure)
    source.py           HostSource: /proc, /sys, commands, statvfs under a root
    linux.py            the Linux agent's sections (uptime, mem, cpu, df, ps_lnx ...)
    mysql.py            mk_mysql sections per database app (docker exec)
    docker_sections.py  mk_docker sections, containers as piggyback hosts
    agent.py            Agent: concurrent sections with timeouts -> full output
    access.py           only-from allowlist (addresses, CIDR, IPv6)
    server.py           the TCP pull agent (port 6556)
    metrics.py          Prometheus exposition, textfile, HTTP endpoint
    units/              systemd units shipped in the image

Import the modules themselves (``from atoll.monitor.agent import Agent``):
this package imports nothing, so that the TCP agent does not load
prometheus_client and the metrics command does not load the agent.
"""

__all__: list[str] = []

import atoll.monitor.feature  # noqa: F401  (registers the "checkmk" image feature)

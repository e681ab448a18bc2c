"""The ``checkmk`` image feature: the Checkmk agent on TCP 6556 and Prometheus metrics.

Installs and enables ``atoll-checkmk-agent.service`` (only-from from
``/etc/atoll/checkmk-agent.env``, which ``atoll host-config apply`` writes) and
``atoll-metrics-textfile.timer`` (node_exporter textfile collector file); the
HTTP metrics endpoint ``atoll-metrics.service`` is installed, not enabled.
Requires the ``agent`` feature, which installs the ``atoll`` command.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from atoll.compose.features import Feature, install_unit, register

__all__ = ["install"]

ENABLED = {"atoll-checkmk-agent.service": "multi-user.target",
           "atoll-metrics-textfile.timer": "timers.target"}


def install(rootfs: Path) -> None:
    units = resources.files("atoll.monitor") / "units"
    for unit in sorted(units.iterdir(), key=lambda u: u.name):
        text = unit.read_text()
        if unit.name in ENABLED:
            install_unit(rootfs, unit.name, text, wanted_by=ENABLED[unit.name])
        else:
            dest = Path(rootfs) / "usr/lib/systemd/system" / unit.name
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_text(text)


register(Feature("checkmk", install, requires=("agent",),
                 description="Checkmk agent (TCP 6556, only-from) and Prometheus metrics"))

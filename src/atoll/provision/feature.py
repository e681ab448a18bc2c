"""The ``provision`` image feature: apply the host config once, at first boot.

``atoll-provision.service`` runs ``atoll host-config apply --first-boot``
before the apps start (and after Docker, which installing apps needs). It
looks for the config, in order:

1. a seed device labelled ``CIDATA`` / ``cidata`` (NoCloud config drive);
2. ``/etc/atoll/host-config.yaml`` baked into the image (``atoll image build --config``).

A config that fails validation is refused: the error goes to the console and
the journal, ``/var/lib/atoll/provision/applied.json`` records it, nothing is
applied, and the host stays reachable as it was. The same config (by sha256)
is applied only once.
"""

from __future__ import annotations

from pathlib import Path

from atoll.compose.features import Feature, install_unit, register

__all__ = ["UNIT", "install"]

UNIT = """[Unit]
Description=atoll first-boot provisioning (host config)
After=local-fs.target docker.service systemd-udev-settle.service
Wants=docker.service
Before=atoll-apps.service atolld.service atoll-checkmk-agent.service systemd-networkd.service
ConditionPathExists=!/var/lib/atoll/provision/done

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/bin/atoll host-config apply --first-boot
StandardOutput=journal+console
StandardError=journal+console

[Install]
WantedBy=multi-user.target
"""


def install(rootfs: Path) -> None:
    install_unit(rootfs, "atoll-provision.service", UNIT)


register(Feature("provision", install, packages=("dosfstools", "openssh-server", "passwd"),
                 requires=("agent",),
                 description="apply a host config at first boot (baked or from a seed)"))

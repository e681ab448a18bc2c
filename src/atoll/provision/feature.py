"""The ``provision`` image feature: apply the host config once, at first boot.

Two units run ``atoll host-config apply --first-boot``:

* ``atoll-provision.service`` (``--phase system``), early in boot (before
  sysinit.target, the network and sshd): hostname, users, network, time,
  tuning, the update remote and policy, the Checkmk agent's only-from;
* ``atoll-provision-apps.service`` (``--phase apps``), after Docker and before
  the apps start: installs the apps (loading images the OS image ships).

They look for the config, in order:

1. a seed device labelled ``CIDATA`` / ``cidata`` (NoCloud config drive);
2. ``/etc/atoll/host-config.yaml`` baked into the image (``atoll image build --config``).

A config that fails validation is refused: the error goes to the console and
the journal, ``/var/lib/atoll/provision/applied.json`` records it, nothing is
applied, and the host stays reachable as it was. The same config (by sha256)
is applied only once. The feature also enables systemd-networkd and removes
the SSH host keys made at compose time (``atoll-ssh-hostkeys.service`` makes
each host its own).
"""

from __future__ import annotations

from pathlib import Path

from atoll.compose.features import Feature, enable_unit, install_unit, register

__all__ = ["UNIT", "install"]

UNIT = """[Unit]
Description=atoll first-boot provisioning: the system (hostname, users, network...)
DefaultDependencies=no
After=local-fs.target systemd-udev-settle.service systemd-sysusers.service
Wants=systemd-udev-settle.service
Before=systemd-networkd.service ssh.service atolld.service atoll-checkmk-agent.service
Before=atoll-provision-apps.service sysinit.target shutdown.target
Conflicts=shutdown.target
ConditionPathExists=!/var/lib/atoll/provision/done

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/bin/atoll host-config apply --first-boot --phase system
StandardOutput=journal+console
StandardError=journal+console

[Install]
WantedBy=sysinit.target
"""

APPS_UNIT = """[Unit]
Description=atoll first-boot provisioning: the apps
After=docker.service atoll-provision.service
Wants=docker.service
Before=atoll-apps.service atoll-boot-complete.service
ConditionPathExists=!/var/lib/atoll/provision/done

[Service]
Type=oneshot
RemainAfterExit=yes
TimeoutStartSec=30min
ExecStart=/usr/bin/atoll host-config apply --first-boot --phase apps
StandardOutput=journal+console
StandardError=journal+console

[Install]
WantedBy=multi-user.target
"""

HOSTKEYS_UNIT = """[Unit]
Description=atoll: this host's own SSH host keys (the image ships none)
Before=ssh.service
ConditionPathExists=!/etc/ssh/ssh_host_ed25519_key

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -A

[Install]
WantedBy=multi-user.target
"""


def install(rootfs: Path) -> None:
    """Install the first-boot unit; enable systemd-networkd (the host config's
    network is a networkd config); drop the SSH host keys made at compose time,
    which every host of the image would otherwise share."""
    install_unit(rootfs, "atoll-provision.service", UNIT, wanted_by="sysinit.target")
    install_unit(rootfs, "atoll-provision-apps.service", APPS_UNIT)
    install_unit(rootfs, "atoll-ssh-hostkeys.service", HOSTKEYS_UNIT)
    rootfs = Path(rootfs)
    for key in (rootfs / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    for unit, target in (("systemd-networkd.service", "multi-user.target"),
                         ("systemd-networkd-wait-online.service", "network-online.target")):
        if (rootfs / "usr/lib/systemd/system" / unit).exists():
            enable_unit(rootfs, unit, target)


register(Feature("provision", install,
                 packages=("dosfstools", "openssh-server", "passwd", "sudo"),
                 requires=("agent",),
                 description="apply a host config at first boot (baked or from a seed)"))

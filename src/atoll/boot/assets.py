"""Files the ``boot`` feature installs into an image (kept here as text)."""

from __future__ import annotations

__all__ = [
    "BOOT_COMPLETE_UNIT",
    "INITRAMFS_CONF",
    "INITRAMFS_HOOK",
    "INITRAMFS_SCRIPT",
    "REQUIRED_LAYOUT",
    "WANTED_FAILED_UNITS",
]

# scripts/local-bottom/atoll: the physical root is mounted at ${rootmnt};
# replace it with the chosen deployment before init switches root.
INITRAMFS_SCRIPT = r"""#!/bin/sh
# atoll: mount the deployment named by atoll.deployment= as / (docs/boot.md).
PREREQ=""
prereqs() { echo "$PREREQ"; }
case "$1" in prereqs) prereqs; exit 0 ;; esac
. /scripts/functions

dep=""
fallback=0
for arg in $(cat /proc/cmdline); do
	case "$arg" in
	atoll.deployment=*) dep="${arg#atoll.deployment=}" ;;
	atoll.fallback=*) fallback="${arg#atoll.fallback=}" ;;
	esac
done
[ -n "$dep" ] || exit 0
rootmnt="${rootmnt:-/root}"
case "$dep" in
*/*|.*) panic "atoll: invalid deployment id '$dep'" ;;
esac
if [ ! -d "${rootmnt}/atoll/deploy/${dep}/usr" ]; then
	panic "atoll: deployment ${dep} is not in the sysroot"
fi
log_begin_msg "atoll: mounting deployment ${dep}"
mkdir -p /atoll.sysroot
mount -o move "${rootmnt}" /atoll.sysroot || panic "atoll: cannot move the sysroot"
mount -o bind "/atoll.sysroot/atoll/deploy/${dep}" "${rootmnt}" \
	|| panic "atoll: cannot mount deployment ${dep}"
mount -o bind "${rootmnt}/usr" "${rootmnt}/usr" || panic "atoll: cannot bind /usr"
mount -o remount,bind,ro "${rootmnt}/usr" || panic "atoll: cannot make /usr read-only"
for d in var boot atoll sysroot; do
	[ -d "${rootmnt}/${d}" ] || mkdir -p "${rootmnt}/${d}"
done
mkdir -p /atoll.sysroot/var
mount -o bind /atoll.sysroot/var "${rootmnt}/var" || panic "atoll: cannot bind /var"
mount -o bind /atoll.sysroot/boot "${rootmnt}/boot" || panic "atoll: cannot bind /boot"
mount -o bind /atoll.sysroot/atoll "${rootmnt}/atoll" || panic "atoll: cannot bind /atoll"
mount -o move /atoll.sysroot "${rootmnt}/sysroot" || panic "atoll: cannot move /sysroot"
mkdir -p /run/atoll
echo "${dep}" > /run/atoll/booted
echo "${fallback}" > /run/atoll/fallback
log_end_msg
echo "ATOLL-INITRAMFS: mounted deployment ${dep} fallback=${fallback}" > /dev/console
exit 0
"""

INITRAMFS_HOOK = r"""#!/bin/sh
# atoll: the local-bottom script needs a mount that can bind, move and remount.
PREREQ=""
prereqs() { echo "$PREREQ"; }
case "$1" in prereqs) prereqs; exit 0 ;; esac
. /usr/share/initramfs-tools/hook-functions
if [ -x /bin/busybox ]; then
	copy_exec /bin/busybox /bin/busybox
fi
exit 0
"""

# etc/initramfs-tools/conf.d/atoll: no resume device (else mkinitramfs may look for
# the build machine's swap), so the initrd is the same wherever it is built.
INITRAMFS_CONF = """# atoll: hosts do not hibernate; the initrd names no resume device
RESUME=none
"""

# The image's one copy of atoll is in /usr/lib/atoll/python (compose.features.ATOLL_PREFIX).
# -S: no site-packages, so boot-complete runs on the standard library and atoll's
# stdlib-only modules alone, whatever else is (or is not) installed; -P: the
# working directory is not on the path.
BOOT_COMPLETE_UNIT = """[Unit]
Description=atoll boot-complete: health checks, then mark this deployment good or roll back
After=multi-user.target
ConditionPathExists=/run/atoll/booted

[Service]
Type=oneshot
RemainAfterExit=yes
Environment=PYTHONDONTWRITEBYTECODE=1 PYTHONPATH=/usr/lib/atoll/python
ExecStart=/usr/bin/python3 -S -P -m atoll.cli.boot boot-complete --console
StandardOutput=journal+console
StandardError=journal+console
TimeoutStartSec=900

[Install]
WantedBy=multi-user.target
"""

# Shipped as a *wanted* check: failed units are reported, never roll back.
WANTED_FAILED_UNITS = """#!/bin/sh
# atoll wanted check: no systemd unit has failed.
failed="$(systemctl --failed --no-legend --plain 2>/dev/null)"
[ -z "$failed" ] && exit 0
echo "failed units: $failed"
exit 1
"""

# Shipped as a *required* check: the deployment is mounted the way the
# initramfs hook promises (read-only /usr, the booted id recorded, present).
REQUIRED_LAYOUT = """#!/bin/sh
# atoll required check: the booted deployment is mounted as promised.
id="$(cat /run/atoll/booted 2>/dev/null)"
[ -n "$id" ] || { echo "no /run/atoll/booted"; exit 1; }
[ -d "/atoll/deploy/$id/usr" ] || { echo "deployment $id not under /atoll/deploy"; exit 1; }
opts="$(awk '$2 == "/usr" { o = $4 } END { print o }' /proc/mounts)"
case ",$opts," in
*,ro,*) ;;
*) echo "/usr is not mounted read-only (options: ${opts:-not a mount})"; exit 1 ;;
esac
exit 0
"""

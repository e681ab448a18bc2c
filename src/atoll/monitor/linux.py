"""The standard Linux sections, as Checkmk's Linux agent writes them.

Each ``section_*`` function takes a :class:`~atoll.monitor.source.HostSource`
and returns the section's text (header included, newline-terminated). The
formats follow ``agents/check_mk_agent.linux`` of the Checkmk project so that
Checkmk's own parsers (``mem``, ``cpu``, ``df``, ``ps_lnx`` ...) read them:

=============== ===============================================================
section         content
=============== ===============================================================
uptime          ``/proc/uptime``
mem             ``/proc/meminfo`` without ``Swap:``, ``Mem:`` and ``total:`` lines
cpu             ``/proc/loadavg`` + number of CPUs, then ``threads-max``
kernel          epoch, then ``/proc/vmstat`` and ``/proc/stat``
df              ``df -PTlk`` rows, then a second ``df`` with ``[df_inodes_start]`` rows
mounts          ``/proc/mounts`` lines of ``/dev`` devices (no squashfs)
lnx_if          ``ip address`` in ``[start_iplink]``; ``/proc/net/dev`` + ``[iface]`` blocks
diskstat        epoch, then the disk lines of ``/proc/diskstats``
ps_lnx          ``[header] CGROUP USER VSZ RSS TIME ELAPSED PID COMMAND`` + one line a process
systemd_units   ``systemctl`` listings, only when systemd is PID 1
=============== ===============================================================

``df`` and ``ps`` are computed from ``statvfs`` and ``/proc`` instead of running
the tools, which keeps the agent fast and testable on a fake root.
"""

from __future__ import annotations

import math
import os
import re

from atoll.monitor.source import HostSource, SectionSkipped

__all__ = [
    "DF_EXCLUDED_TYPES",
    "format_cputime",
    "format_etime",
    "section_cpu",
    "section_df",
    "section_diskstat",
    "section_kernel",
    "section_lnx_if",
    "section_mem",
    "section_mounts",
    "section_ps",
    "section_systemd_units",
    "section_uptime",
    "unescape_mount",
]

# `df -x ...` of the Linux agent, plus what `df -l` (local only) and plain df
# (no dummy filesystems) leave out.
DF_EXCLUDED_TYPES = frozenset({
    "smbfs", "cifs", "iso9660", "udf", "nfsv4", "nfs", "mvfs", "prl_fs", "squashfs",
    "devtmpfs", "autofs", "beegfs", "zfs",
    "nfs4", "smb3", "ceph", "glusterfs", "fuse.sshfs", "9p", "afs", "lustre",
    "proc", "sysfs", "devpts", "debugfs", "tracefs", "securityfs", "cgroup", "cgroup2",
    "pstore", "bpf", "mqueue", "hugetlbfs", "configfs", "fusectl", "binfmt_misc",
    "rpc_pipefs", "nsfs", "efivarfs", "selinuxfs", "kernfs", "ramfs",
})

_DISK_RE = re.compile(
    r" (x?[shv]d[a-z]*[0-9]*|cciss/c[0-9]+d[0-9]+|emcpower[a-z]+|dm-[0-9]+|VxVM.*|mmcblk.*"
    r"|dasd[a-z]*|bcache[0-9]+|nvme[0-9]+n[0-9]+) "
)
_OCTAL_RE = re.compile(r"\\([0-7]{3})")


def unescape_mount(field: str) -> str:
    """Undo the octal escapes of ``/proc/mounts`` (``\\040`` is a space)."""
    return _OCTAL_RE.sub(lambda m: chr(int(m.group(1), 8)), field)


def section_uptime(src: HostSource) -> str:
    return "<<<uptime>>>\n" + src.read("/proc/uptime").strip() + "\n"


def section_mem(src: HostSource) -> str:
    skip = re.compile(r"^Swap:|^Mem:|total:")
    lines = [ln for ln in src.read("/proc/meminfo").splitlines() if ln and not skip.search(ln)]
    return "<<<mem>>>\n" + "".join(ln + "\n" for ln in lines)


def _num_cpus(src: HostSource) -> int:
    rx = re.compile(r"^CPU|^processor")
    return sum(1 for ln in src.read("/proc/cpuinfo").splitlines() if rx.search(ln))


def section_cpu(src: HostSource) -> str:
    out = f"<<<cpu>>>\n{src.read('/proc/loadavg').strip()} {_num_cpus(src)}\n"
    threads_max = src.read_or("/proc/sys/kernel/threads-max").strip()
    if threads_max:
        out += threads_max + "\n"
    return out


def section_kernel(src: HostSource) -> str:
    body = src.read("/proc/vmstat").rstrip("\n") + "\n" + src.read("/proc/stat").rstrip("\n")
    return f"<<<kernel>>>\n{int(src.clock())}\n{body}\n"


def _mount_rows(src: HostSource) -> list[tuple[str, str, str, str]]:
    rows = []
    text = src.read_or("/proc/self/mounts") or src.read("/proc/mounts")
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 4:
            continue
        rows.append((unescape_mount(parts[0]), unescape_mount(parts[1]), parts[2], parts[3]))
    return rows


def section_df(src: HostSource) -> str:
    blocks: list[str] = []
    inodes: list[str] = []
    seen_dev: dict[str, int] = {}
    entries: list[tuple[str, str, str]] = []
    for device, mountpoint, fstype, _opts in _mount_rows(src):
        if fstype in DF_EXCLUDED_TYPES or (fstype.startswith("fuse.") and fstype != "fuse.lxcfs"):
            continue
        dup = next((i for i, e in enumerate(entries) if e[1] == mountpoint), None)
        if dup is not None:  # mounted over: df shows the mount on top
            entries[dup] = (device, mountpoint, fstype)
            continue
        if device.startswith("/dev/") and device in seen_dev:
            # df shows a device once, at its shortest mount point
            i = seen_dev[device]
            if len(mountpoint) < len(entries[i][1]):
                entries[i] = (device, mountpoint, fstype)
            continue
        if device.startswith("/dev/"):
            seen_dev[device] = len(entries)
        entries.append((device, mountpoint, fstype))
    for device, mountpoint, fstype in entries:
        try:
            st = src.statvfs(mountpoint)
        except OSError:
            continue
        if st.f_blocks == 0:
            continue  # a dummy filesystem: plain df hides it
        unit = st.f_frsize
        size = math.ceil(st.f_blocks * unit / 1024)
        used = math.ceil((st.f_blocks - st.f_bfree) * unit / 1024)
        avail = math.ceil(st.f_bavail * unit / 1024)
        cap = f"{math.ceil(used * 100 / (used + avail))}%" if used + avail else "-"
        blocks.append(f"{device} {fstype} {size} {used} {avail} {cap} {mountpoint}")
        if st.f_files:
            iused = st.f_files - st.f_ffree
            iuse = f"{math.ceil(iused * 100 / st.f_files)}%"
            inodes.append(
                f"{device} {fstype} {st.f_files} {iused} {st.f_ffree} {iuse} {mountpoint}"
            )
        else:
            inodes.append(f"{device} {fstype} - - - - {mountpoint}")
    out = "<<<df>>>\n" + "".join(b + "\n" for b in blocks)
    out += "<<<df>>>\n[df_inodes_start]\n" + "".join(i + "\n" for i in inodes)
    out += "[df_inodes_end]\n"
    return out


def section_mounts(src: HostSource) -> str:
    text = src.read_or("/proc/self/mounts") or src.read("/proc/mounts")
    lines = [ln for ln in text.splitlines() if ln.startswith("/dev") and " squashfs " not in ln]
    return "<<<mounts>>>\n" + "".join(ln + "\n" for ln in lines)


def section_lnx_if(src: HostSource) -> str:
    out = ""
    if src.has_command("ip"):
        iplink = src.command(["ip", "address"])
        if iplink is not None:
            out += "<<<lnx_if>>>\n[start_iplink]\n" + iplink.rstrip("\n") + "\n[end_iplink]\n"
    dev_lines = src.read("/proc/net/dev").splitlines()[2:]
    out += "<<<lnx_if:sep(58)>>>\n" + "".join(ln + "\n" for ln in dev_lines)
    for eth in sorted(ln.split(":", 1)[0].strip() for ln in dev_lines if ":" in ln):
        out += f"[{eth}]\n"
        speed = src.read_or(f"/sys/class/net/{eth}/speed").strip()
        if speed.lstrip("-").isdigit() and int(speed) >= 0:
            out += f"Speed: {speed}Mb/s\n"
        out += f"Address: {src.read_or(f'/sys/class/net/{eth}/address').strip()}\n"
    return out


def section_diskstat(src: HostSource) -> str:
    lines = [ln for ln in src.read("/proc/diskstats").splitlines() if _DISK_RE.search(ln)]
    return f"<<<diskstat>>>\n{int(src.clock())}\n" + "".join(ln + "\n" for ln in lines)


def format_cputime(seconds: int) -> str:
    """ps's TIME column: ``[DD-]HH:MM:SS``."""
    days, rest = divmod(max(seconds, 0), 86400)
    h, rest = divmod(rest, 3600)
    m, s = divmod(rest, 60)
    return (f"{days}-" if days else "") + f"{h:02d}:{m:02d}:{s:02d}"


def format_etime(seconds: int) -> str:
    """ps's ELAPSED column: ``[[DD-]hh:]mm:ss``."""
    days, rest = divmod(max(seconds, 0), 86400)
    h, rest = divmod(rest, 3600)
    m, s = divmod(rest, 60)
    if days:
        return f"{days}-{h:02d}:{m:02d}:{s:02d}"
    if h:
        return f"{h:02d}:{m:02d}:{s:02d}"
    return f"{m:02d}:{s:02d}"


def _users(src: HostSource) -> dict[int, str]:
    users: dict[int, str] = {}
    for line in src.read_or("/etc/passwd").splitlines():
        parts = line.split(":")
        if len(parts) > 2 and parts[2].isdigit():
            users.setdefault(int(parts[2]), parts[0])
    return users


_CTRL = re.compile(r"[\x00-\x1f\x7f]")


def section_ps(src: HostSource) -> str:
    ticks = os.sysconf("SC_CLK_TCK")
    page_kib = os.sysconf("SC_PAGE_SIZE") // 1024
    uptime = float(src.read("/proc/uptime").split()[0])
    users = _users(src)
    has_cgroup = src.exists("/sys/fs/cgroup")
    header = "CGROUP USER VSZ RSS TIME ELAPSED PID COMMAND" if has_cgroup else \
        "USER VSZ RSS TIME ELAPSED PID COMMAND"
    lines = [f"[header] {header}"]
    pids = sorted(int(p) for p in src.listdir("/proc") if p.isdigit())
    for pid in pids:
        base = f"/proc/{pid}"
        try:
            stat = src.read(f"{base}/stat")
            status = src.read(f"{base}/status")
            cmdline = src.path(f"{base}/cmdline").read_bytes()
        except OSError:
            continue  # the process ended meanwhile
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        # fields[0] is state (field 3); utime=14, stime=15, starttime=22, vsize=23, rss=24
        utime, stime = int(fields[11]), int(fields[12])
        start, vsize, rss = int(fields[19]), int(fields[20]), int(fields[21])
        uid = next((int(ln.split()[1]) for ln in status.splitlines() if ln.startswith("Uid:")), 0)
        user = users.get(uid, str(uid))
        if len(user) > 32:
            user = str(uid)
        args = cmdline.rstrip(b"\0").replace(b"\0", b" ").decode("utf-8", "replace")
        command = _CTRL.sub("?", args) if args else f"[{comm}]"
        cols = [
            user, str(vsize // 1024), str(max(rss, 0) * page_kib),
            format_cputime((utime + stime) // ticks),
            format_etime(int(uptime - start / ticks)), str(pid), command,
        ]
        if has_cgroup:
            cgroup = ",".join(src.read_or(f"{base}/cgroup").split())[:512] or "-"
            cols.insert(0, cgroup)
        lines.append(" ".join(cols))
    squeezed = [re.sub(" +", " ", ln) for ln in lines]
    return "<<<ps_lnx>>>\n" + "".join(ln + "\n" for ln in squeezed)


def section_systemd_units(src: HostSource) -> str:
    pid1 = src.read_or("/proc/1/comm").strip() or "unknown"
    if pid1 != "systemd":
        raise SectionSkipped(f"PID 1 is {pid1!r}, not systemd")
    if not src.has_command("systemctl"):
        raise SectionSkipped("systemctl is not installed")
    squeeze = re.compile(" +")
    files = src.command(["systemctl", "list-unit-files", "--full", "--no-legend", "--no-pager",
                         "--plain", "--type", "service", "--type", "socket"]) or ""
    status = src.command(["systemctl", "status", "--all", "--type", "service", "--type",
                          "socket", "--no-pager", "--lines", "0"], check=False) or ""
    units = src.command(["systemctl", "--all", "--type", "service", "--type", "socket", "--full",
                         "--no-legend", "--no-pager", "--plain"]) or ""
    units = units.split("\n\n", 1)[0]
    out = "<<<systemd_units>>>\n[list-unit-files]\n" + squeeze.sub(" ", files).rstrip("\n") + "\n"
    out += "[status]\n" + squeeze.sub(" ", status).rstrip("\n") + "\n"
    out += "[all]\n" + squeeze.sub(" ", units).rstrip("\n") + "\n"
    return out

"""The Linux sections from a fake /proc-like root (HostSource with an injected root)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from atoll.monitor import linux
from atoll.monitor.source import HostSource, SectionSkipped, StatVfs
from tests.unit.test_monitor_conformance import check_agent_output, parse_agent_output

TICKS = os.sysconf("SC_CLK_TCK")
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024

PROC_STAT_1 = "1 (init) S 0 1 1 0 -1 4194560 1 2 3 4 {utime} {stime} 0 0 20 0 1 0 {start} {vsz} {rss} 18446744073709551615 1 1 0 0 0 0 0 4096 0 0 0 0 17 0 0 0 0 0 0"  # noqa: E501


def _write(root: Path, rel: str, text: str | bytes) -> None:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        p.write_bytes(text)
    else:
        p.write_text(text)


@pytest.fixture
def fake_root(tmp_path: Path) -> Path:
    r = tmp_path
    _write(r, "proc/uptime", "1000.50 1900.25\n")
    _write(r, "proc/meminfo", "MemTotal:        4022904 kB\nMemFree:          311516 kB\n"
           "MemAvailable:    2661048 kB\nBuffers:          129892 kB\nCached:          2248652 kB\n"
           "SwapTotal:       1048572 kB\nSwapFree:        1048572 kB\nHugePages_Total:       0\n")
    _write(r, "proc/loadavg", "0.12 0.21 0.19 1/312 40120\n")
    _write(r, "proc/cpuinfo",
           "processor\t: 0\nmodel name\t: X\n\nprocessor\t: 1\nmodel name\t: X\n")
    _write(r, "proc/sys/kernel/threads-max", "31472\n")
    _write(r, "proc/vmstat", "nr_free_pages 77879\npgmajfault 3412\n")
    _write(r, "proc/stat", "cpu  1 2 3 4 5 0 6 0 0 0\ncpu0 1 2 3 4 5 0 6 0 0 0\nctxt 81\n"
           "btime 1795104508\nprocesses 412\nprocs_running 1\n")
    _write(r, "proc/mounts",
           "proc /proc proc rw,nosuid 0 0\n"
           "/dev/sda1 / ext4 rw,relatime 0 0\n"
           "/dev/sda1 /var/lib/docker ext4 rw,relatime 0 0\n"
           "tmpfs /run tmpfs rw,nosuid 0 0\n"
           "/dev/sdb1 /srv/my\\040data xfs rw 0 0\n"
           "/dev/loop0 /snap/core squashfs ro 0 0\n"
           "server:/export /mnt/nfs nfs4 rw 0 0\n"
           "cgroup2 /sys/fs/cgroup cgroup2 rw 0 0\n")
    _write(r, "proc/net/dev",
           "Inter-|   Receive                                                |  Transmit\n"
           " face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets"
           " errs drop fifo colls carrier compressed\n"
           "    lo:    4520      54    0    0    0     0          0         0     4520      54"
           "    0    0    0     0       0          0\n"
           "  eth0: 9812349 78123    0  312    0     0          0     12031 1234987 41234"
           "    0    0    0     0       0          0\n")
    _write(r, "sys/class/net/eth0/speed", "1000\n")
    _write(r, "sys/class/net/eth0/address", "bc:24:11:5a:0e:31\n")
    _write(r, "sys/class/net/lo/speed", "-1\n")
    _write(r, "sys/class/net/lo/address", "00:00:00:00:00:00\n")
    _write(r, "proc/diskstats",
           "   7       0 loop0 1 0 2 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n"
           "   8       0 sda 412341 12031 21341234 123412 812341 412341 31234123 912341 0 712341"
           " 1123412 0 0 0 0 81234 12341\n"
           " 253       0 dm-0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17\n"
           " 259       0 nvme0n1 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17\n")
    _write(r, "etc/passwd",
           "root:x:0:0:root:/root:/bin/bash\nmysql:x:999:999::/nonexistent:/bin/false\n")
    (r / "sys/fs/cgroup").mkdir(parents=True, exist_ok=True)
    # pid 1: init, 3 s of CPU, started 100 s after boot
    _write(r, "proc/1/stat", PROC_STAT_1.format(utime=2 * TICKS, stime=TICKS, start=100 * TICKS,
                                                 vsz=167700 * 1024, rss=3240))
    _write(r, "proc/1/status", "Name:\tinit\nUid:\t0\t0\t0\t0\n")
    _write(r, "proc/1/cmdline", b"/sbin/init\0splash\0")
    _write(r, "proc/1/cgroup", "0::/init.scope\n")
    _write(r, "proc/1/comm", "init\n")
    # pid 2201: a database owned by uid 999, a kernel thread 2 (no cmdline)
    _write(r, "proc/2201/stat", PROC_STAT_1.replace("1 (init)", "2201 (mariadbd)").format(
        utime=90000 * TICKS, stime=3723 * TICKS, start=500 * TICKS, vsz=2403412 * 1024, rss=100))
    _write(r, "proc/2201/status", "Name:\tmariadbd\nUid:\t999\t999\t999\t999\n")
    _write(r, "proc/2201/cmdline", b"mariadbd\0--user=mysql\0")
    _write(r, "proc/2201/cgroup", "0::/system.slice/docker-4f1d.scope\n")
    _write(r, "proc/2/stat", PROC_STAT_1.replace("1 (init)", "2 (kthreadd)").format(
        utime=0, stime=0, start=0, vsz=0, rss=0))
    _write(r, "proc/2/status", "Name:\tkthreadd\nUid:\t0\t0\t0\t0\n")
    _write(r, "proc/2/cmdline", b"")
    _write(r, "proc/2/cgroup", "0::/\n")
    return r


def _vfs(mp: str) -> StatVfs:
    table = {
        "/": StatVfs(4096, 7696873, 2000000, 1600000, 1966080, 1844293),
        "/run": StatVfs(4096, 100573, 100301, 100301, 502863, 501966),
        "/srv/my data": StatVfs(4096, 26201600, 13100800, 13100800, 0, 0),
    }
    if mp not in table:
        raise FileNotFoundError(mp)
    return table[mp]


@pytest.fixture
def src(fake_root: Path) -> HostSource:
    commands = {
        "ip address": "1: lo: <LOOPBACK,UP,LOWER_UP> mtu 65536 qdisc noqueue state UNKNOWN\n"
                      "    link/loopback 00:00:00:00:00:00 brd 00:00:00:00:00:00\n"
                      "    inet 127.0.0.1/8 scope host lo\n"
                      "2: eth0: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 state UP\n"
                      "    link/ether bc:24:11:5a:0e:31 brd ff:ff:ff:ff:ff:ff\n"
                      "    inet 10.0.0.21/24 brd 10.0.0.255 scope global eth0\n",
    }
    return HostSource(fake_root, commands=commands, statvfs=_vfs, clock=lambda: 1795713031.7)


def test_uptime_mem_cpu(src: HostSource) -> None:
    assert linux.section_uptime(src) == "<<<uptime>>>\n1000.50 1900.25\n"
    mem = linux.section_mem(src)
    assert "MemTotal:        4022904 kB\n" in mem
    assert "HugePages_Total:       0\n" in mem
    assert linux.section_cpu(src) == "<<<cpu>>>\n0.12 0.21 0.19 1/312 40120 2\n31472\n"
    check_agent_output(linux.section_uptime(src) + mem + linux.section_cpu(src))


def test_mem_filter_is_the_agents(fake_root: Path) -> None:
    # grep -v -E '^Swap:|^Mem:|total:' (case sensitive: SwapTotal stays)
    (fake_root / "proc/meminfo").write_text(
        "Mem: 1 2 3\nSwap: 0 0 0\nMemTotal: 10 kB\nSwapTotal: 0 kB\nHighTotal: 0 kB\n"
        "Foo total: 1\n")
    mem = linux.section_mem(HostSource(fake_root))
    assert mem == "<<<mem>>>\nMemTotal: 10 kB\nSwapTotal: 0 kB\nHighTotal: 0 kB\n"


def test_kernel_and_diskstat(src: HostSource) -> None:
    kernel = linux.section_kernel(src)
    assert kernel.startswith("<<<kernel>>>\n1795713031\nnr_free_pages 77879\n")
    assert "ctxt 81\n" in kernel
    disk = linux.section_diskstat(src)
    lines = disk.splitlines()
    assert lines[1] == "1795713031"
    assert [ln.split()[2] for ln in lines[2:]] == ["sda", "dm-0", "nvme0n1"]  # no loop0
    check_agent_output(kernel + disk)


def test_df_with_inodes(src: HostSource) -> None:
    out = linux.section_df(src)
    blocks, inodes = out.split("<<<df>>>\n[df_inodes_start]\n")
    assert blocks.splitlines()[1:] == [
        "/dev/sda1 ext4 30787492 22787492 6400000 79% /",
        "tmpfs tmpfs 402292 1088 401204 1% /run",
        "/dev/sdb1 xfs 104806400 52403200 52403200 50% /srv/my data",
    ]
    assert inodes.splitlines() == [
        "/dev/sda1 ext4 1966080 121787 1844293 7% /",
        "tmpfs tmpfs 502863 897 501966 1% /run",
        "/dev/sdb1 xfs - - - - /srv/my data",
        "[df_inodes_end]",
    ]
    check_agent_output(out)


def test_mounts(src: HostSource) -> None:
    out = linux.section_mounts(src)
    assert out.splitlines()[1:] == [
        "/dev/sda1 / ext4 rw,relatime 0 0",
        "/dev/sda1 /var/lib/docker ext4 rw,relatime 0 0",
        "/dev/sdb1 /srv/my\\040data xfs rw 0 0",
    ]
    check_agent_output(out)


def test_lnx_if(src: HostSource) -> None:
    out = linux.section_lnx_if(src)
    assert "[start_iplink]\n1: lo:" in out and "[end_iplink]\n<<<lnx_if:sep(58)>>>\n" in out
    assert out.endswith("[eth0]\nSpeed: 1000Mb/s\nAddress: bc:24:11:5a:0e:31\n"
                        "[lo]\nAddress: 00:00:00:00:00:00\n")
    sections = check_agent_output(out)
    rows = sections[("", "lnx_if")].rows
    assert ["  eth0", " 9812349 78123    0  312    0     0          0     12031 1234987 41234"
            "    0    0    0     0       0          0"] in rows


def test_lnx_if_without_ip_command(fake_root: Path) -> None:
    out = linux.section_lnx_if(HostSource(fake_root))
    assert out.startswith("<<<lnx_if:sep(58)>>>\n")
    check_agent_output(out)


def test_ps_lnx(src: HostSource) -> None:
    out = linux.section_ps(src)
    lines = out.splitlines()
    assert lines[1] == "[header] CGROUP USER VSZ RSS TIME ELAPSED PID COMMAND"
    assert lines[2] == (f"0::/init.scope root 167700 {3240 * PAGE_KIB} 00:00:03 15:00 1 "
                        "/sbin/init splash")
    assert lines[3] == "0::/ root 0 0 00:00:00 16:40 2 [kthreadd]"
    assert lines[4] == (f"0::/system.slice/docker-4f1d.scope mysql 2403412 {100 * PAGE_KIB} "
                        "1-02:02:03 08:20 2201 mariadbd --user=mysql")
    check_agent_output(out)


def test_ps_time_formats() -> None:
    assert linux.format_cputime(0) == "00:00:00"
    assert linux.format_cputime(93784) == "1-02:03:04"
    assert linux.format_etime(59) == "00:59"
    assert linux.format_etime(3600) == "01:00:00"
    assert linux.format_etime(3 * 86400 + 5) == "3-00:00:05"


def test_systemd_units_skipped_without_systemd(src: HostSource, fake_root: Path) -> None:
    with pytest.raises(SectionSkipped, match="PID 1 is 'init', not systemd"):
        linux.section_systemd_units(src)


def test_systemd_units_with_systemd(fake_root: Path) -> None:
    (fake_root / "proc/1/comm").write_text("systemd\n")
    outputs = {
        "list-unit-files": "cron.service   enabled  enabled\n",
        "status": "* cron.service - Regular background program processing daemon\n",
        "--all": "cron.service loaded    active running Cron\n\n3 loaded units listed.\n",
    }

    def commands(argv: list[str] | tuple[str, ...]) -> str:
        assert argv[0] == "systemctl"
        return outputs[argv[1]]

    out = linux.section_systemd_units(HostSource(fake_root, commands=commands))
    assert out == ("<<<systemd_units>>>\n[list-unit-files]\ncron.service enabled enabled\n"
                   "[status]\n* cron.service - Regular background program processing daemon\n"
                   "[all]\ncron.service loaded active running Cron\n")
    check_agent_output(out)


def test_all_sections_together_parse(src: HostSource) -> None:
    text = "".join(fn(src) for fn in (
        linux.section_uptime, linux.section_mem, linux.section_cpu, linux.section_kernel,
        linux.section_df, linux.section_mounts, linux.section_lnx_if, linux.section_diskstat,
        linux.section_ps))
    names = {n for _, n in parse_agent_output(text)}
    assert names == {"uptime", "mem", "cpu", "kernel", "df", "mounts", "lnx_if", "diskstat",
                     "ps_lnx"}
    check_agent_output(text)


def test_unescape_mount() -> None:
    assert linux.unescape_mount("/srv/my\\040data\\011x") == "/srv/my data\tx"

"""Checkmk format conformance: helpers that check agent output the way Checkmk parses it.

Checkmk is GPL and not installable from PyPI, so its parsers are not imported
(nor copied). These helpers restate, independently, the rules its agent-based
parsers rely on (Checkmk's ``cmk/plugins/.../agent_based`` for check_mk,
uptime, mem, cpu, kernel, df, mounts, lnx_if, diskstat, ps_lnx, systemd_units,
mysql*, docker_*, local): how a section header splits lines (``sep(N)``),
which columns each parser indexes and converts with ``int``/``float``,
``[[instance]]`` lines, piggyback blocks. Fixtures of real agent output
(``tests/data/checkmk/``) and atoll's own output must both pass them.
Other monitor tests import :func:`check_agent_output` from here.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parent.parent / "data" / "checkmk"

_HEADER = re.compile(r"^<<<([A-Za-z0-9_.\-]+)(?::([^>]*))?>>>$")
_PIGGY = re.compile(r"^<<<<(.*)>>>>$")
_SEP = re.compile(r"sep\((\d+)\)")


@dataclass
class Section:
    """All lines of one section name for one host, split as Checkmk splits them."""

    name: str
    host: str = ""  # "" = the host itself, else a piggybacked host
    rows: list[list[str]] = field(default_factory=list)


def parse_agent_output(text: str) -> dict[tuple[str, str], Section]:
    """Split an agent output into sections keyed by (piggyback host, section name).

    A header's ``sep(N)`` splits by ``chr(N)`` (``sep(0)``: the whole line);
    without it lines are split on whitespace. Same-named sections are
    concatenated, as Checkmk does.
    """
    sections: dict[tuple[str, str], Section] = {}
    host = ""
    current: Section | None = None
    sep: int | None = None
    for raw in text.split("\n"):
        line = raw.rstrip("\r")
        m = _PIGGY.match(line)
        if m:
            host = m.group(1)
            current = None
            continue
        m = _HEADER.match(line)
        if m:
            name, opts = m.group(1), m.group(2) or ""
            s = _SEP.search(opts)
            sep = int(s.group(1)) if s else None
            current = sections.setdefault((host, name), Section(name, host))
            continue
        if current is None or not line.strip():
            continue
        if sep is None:
            current.rows.append(line.split())
        elif sep == 0:
            current.rows.append([line])
        else:
            current.rows.append(line.split(chr(sep)))
    return sections


def _int(v: str) -> int:
    return int(v)


def _is_int(v: str) -> bool:
    try:
        int(v)
    except ValueError:
        return False
    return True


def check_check_mk(rows: list[list[str]]) -> None:
    keys = {r[0][:-1] for r in rows}
    assert all(r[0].endswith(":") for r in rows), rows
    assert {"Version", "AgentOS", "Hostname", "AgentDirectory", "DataDirectory",
            "SpoolDirectory", "PluginsDirectory", "LocalDirectory"} <= keys, keys
    assert next(r for r in rows if r[0] == "AgentOS:")[1] == "linux"


def check_uptime(rows: list[list[str]]) -> None:
    assert len(rows) == 1 and len(rows[0]) == 2, rows
    float(rows[0][0]), float(rows[0][1])


def check_mem(rows: list[list[str]]) -> None:
    seen = set()
    for r in rows:
        assert r[0].endswith(":"), r
        assert len(r) in (2, 3), r
        _int(r[1])
        if len(r) == 3:
            assert r[2] == "kB", r
        seen.add(r[0][:-1])
    assert {"MemTotal", "MemFree", "MemAvailable", "Buffers", "Cached", "SwapTotal",
            "SwapFree"} <= seen
    assert not seen & {"Mem", "Swap"}


def check_cpu(rows: list[list[str]]) -> None:
    first = rows[0]
    assert len(first) == 6, first
    [float(x) for x in first[:3]]
    running, total = first[3].split("/")
    _int(running), _int(total), _int(first[4]), _int(first[5])
    if len(rows) > 1:
        assert len(rows[1]) == 1 and _is_int(rows[1][0]), rows[1]


def check_kernel(rows: list[list[str]]) -> None:
    assert len(rows[0]) == 1 and _is_int(rows[0][0]), rows[0]
    names = set()
    for r in rows[1:]:
        assert len(r) >= 2, r
        names.add(r[0])
        if r[0].startswith("cpu"):
            assert len(r) >= 5 and all(_is_int(x) for x in r[1:]), r
    assert {"cpu", "ctxt", "processes", "pgmajfault"} <= names, names


def _check_df_row(r: list[str], inodes: bool) -> None:
    assert len(r) >= 7, r
    if inodes and r[2] == "-":
        assert r[3:6] == ["-", "-", "-"], r
    else:
        _int(r[2]), _int(r[3]), _int(r[4])
        if inodes and r[2] == "0":
            pass
        assert r[5].endswith("%") or r[5] == "-", r
    assert " ".join(r[6:]).startswith("/"), r


def check_df(rows: list[list[str]]) -> None:
    part = "blocks"
    saw_inodes = False
    for r in rows:
        if r == ["[df_inodes_start]"]:
            part, saw_inodes = "inodes", True
            continue
        if r == ["[df_inodes_end]"]:
            part = "blocks"
            continue
        if r == ["[df_lsblk_start]"]:
            part = "lsblk"
            continue
        if r == ["[df_lsblk_end]"]:
            part = "blocks"
            continue
        if part == "lsblk":
            continue
        _check_df_row(r, part == "inodes")
    assert saw_inodes, "df without the inodes part"


def check_mounts(rows: list[list[str]]) -> None:
    for r in rows:
        assert len(r) == 6, r
        assert r[0].startswith("/dev"), r
        assert r[1].startswith("/"), r
        assert r[2] != "squashfs"
        assert r[4:] == ["0", "0"], r


def check_lnx_if(rows: list[list[str]]) -> None:
    """lnx_if: whitespace part (ip address) and sep(58) part merge into one table."""
    it = iter(rows)
    counters: set[str] = set()
    blocks: set[str] = set()
    names_ip: set[str] = set()
    for r in it:
        if r[0] == "[start_iplink]":
            for ip in it:
                if ip == ["[end_iplink]"]:
                    break
                if len(ip) > 2 and ip[0].endswith(":") and ip[1].endswith(":"):
                    names_ip.add(ip[1][:-1].split("@")[0])
                    assert ip[2].startswith("<") and ip[2].endswith(">"), ip
            continue
        if len(r) == 2 and len(r[1].split()) >= 16:
            assert all(_is_int(x) for x in r[1].split()), r
            counters.add(r[0].strip())
        elif r[0].startswith("[") and r[0].endswith("]"):
            blocks.add(r[0][1:-1])
        else:
            key = r[0].strip()
            assert key in ("Address", "Speed", "Link detected", "Duplex",
                           "Auto-negotiation"), r
            if key == "Speed":
                assert re.fullmatch(r"\d+(Kb|Mb|Gb)/s|Unknown!", r[1].strip()), r
    assert counters, "no /proc/net/dev lines"
    assert blocks == counters, (blocks, counters)
    assert not names_ip or counters <= names_ip | counters


def check_diskstat(rows: list[list[str]]) -> None:
    assert len(rows[0]) == 1 and _is_int(rows[0][0]), rows[0]
    for r in rows[1:]:
        if r[0].startswith("["):
            break
        assert len(r) >= 14, r
        assert all(_is_int(x) for i, x in enumerate(r) if i != 2), r


_CPUTIME = re.compile(r"^(\d+-)?\d\d:\d\d:\d\d$")
_ETIME = re.compile(r"^((\d+-)?\d\d:)?\d\d:\d\d$")


def check_ps_lnx(rows: list[list[str]]) -> None:
    head = rows[0]
    assert head[0] == "[header]", head
    attrs = [w.lower() for w in head[1:-1]]
    assert head[-1] == "COMMAND"
    assert {"user", "vsz", "rss", "time", "elapsed", "pid"} <= set(attrs), attrs
    for r in rows[1:]:
        assert len(r) > len(attrs), r
        d = dict(zip(attrs, r, strict=False))
        _int(d["vsz"]), _int(d["rss"]), _int(d["pid"])
        assert _CPUTIME.match(d["time"]), r
        assert _ETIME.match(d["elapsed"]), r


def check_systemd_units(rows: list[list[str]]) -> None:
    marks = [r[0] for r in rows if r[0].startswith("[")]
    assert marks[:3] == ["[list-unit-files]", "[status]", "[all]"], marks


def _instances(rows: list[list[str]]) -> dict[str, list[list[str]]]:
    out: dict[str, list[list[str]]] = {}
    item = "mysql"
    for r in rows:
        if r[0].startswith("[["):
            item = " ".join(r).strip("[ ]") or item
            out.setdefault(item, [])
            continue
        out.setdefault(item, []).append(r)
    return out


def check_mysql_ping(rows: list[list[str]]) -> None:
    inst = _instances(rows)
    assert inst and all(lines for lines in inst.values()), inst


def check_mysql(rows: list[list[str]]) -> None:
    for lines in _instances(rows).values():
        for r in lines:
            assert len(r) >= 1, r
        keys = {r[0] for r in lines if len(r) >= 2}
        if not lines:
            continue  # an instance whose queries failed: Checkmk discovers nothing for it
        assert {"Threads_connected", "Max_used_connections", "max_connections",
                "version"} <= keys, keys


def check_mysql_capacity(rows: list[list[str]]) -> None:
    for lines in _instances(rows).values():
        for r in lines:
            assert len(r) >= 3 and _is_int(r[-2]), r


def check_mysql_slave(rows: list[list[str]]) -> None:
    for lines in _instances(rows).values():
        for r in lines:
            assert r[0].startswith("*") or r[0].endswith(":") or r[0].startswith("ERROR"), r


def check_docker(rows: list[list[str]], name: str) -> None:
    assert rows, name
    for r in rows:
        line = r[0] if len(r) == 1 else "|".join(r)
        if line.startswith("@docker_version_info|"):
            json.loads(line.split("|", 1)[1])
        elif name == "docker_node_images" and line in ("[[[images]]]", "[[[containers]]]"):
            continue
        else:
            json.loads(line)


_LOCAL = re.compile(r'^(?:cached\(\d+,\d+\) )?([0-3P]) ("[^"]+"|\S+) (\S+)(?: (.*))?$')
_PERF = re.compile(r"^[^=|\s]+=-?[0-9.]+[a-zA-Z%]*(;[0-9.:~@-]*){0,4}$")


def check_local(rows: list[list[str]]) -> None:
    for (line,) in rows:
        m = _LOCAL.match(line)
        assert m, line
        perf = m.group(3)
        if perf != "-":
            for p in perf.split("|"):
                assert _PERF.match(p), (p, line)


CHECKERS = {
    "check_mk": check_check_mk,
    "uptime": check_uptime,
    "mem": check_mem,
    "cpu": check_cpu,
    "kernel": check_kernel,
    "df": check_df,
    "mounts": check_mounts,
    "lnx_if": check_lnx_if,
    "diskstat": check_diskstat,
    "ps_lnx": check_ps_lnx,
    "systemd_units": check_systemd_units,
    "mysql_ping": check_mysql_ping,
    "mysql": check_mysql,
    "mysql_capacity": check_mysql_capacity,
    "mysql_slave": check_mysql_slave,
    "local": check_local,
}


def check_agent_output(text: str) -> dict[tuple[str, str], Section]:
    """Check every known section of an agent output; return the parsed sections."""
    sections = parse_agent_output(text)
    for (host, name), sec in sections.items():
        if name.startswith("docker_"):
            check_docker(sec.rows, name)
        elif name in CHECKERS:
            if name == "mysql_slave" or sec.rows:
                CHECKERS[name](sec.rows)
        else:
            assert name in ("atoll_agent", "labels", "checkmk_agent_plugins_lnx"), (host, name)
    return sections


# -- the fixtures of real agent output pass the checks -------------------------------------


@pytest.mark.parametrize("fixture", ["linux_agent.txt", "mk_mysql.txt", "mk_docker.txt",
                                     "mk_docker_down.txt"])
def test_real_agent_fixtures_pass(fixture: str) -> None:
    sections = check_agent_output((DATA / fixture).read_text())
    assert sections


def test_fixture_sections_round_trip() -> None:
    s = parse_agent_output((DATA / "linux_agent.txt").read_text())
    names = {n for _, n in s}
    assert {"check_mk", "uptime", "mem", "cpu", "kernel", "df", "mounts", "lnx_if", "diskstat",
            "ps_lnx", "systemd_units", "local"} <= names
    # the two df headers and the two lnx_if headers merge into one table each
    assert ["[df_inodes_start]"] in s[("", "df")].rows
    assert any(r == ["[start_iplink]"] for r in s[("", "lnx_if")].rows)
    assert any(len(r) == 2 and r[0].strip() == "ens18" for r in s[("", "lnx_if")].rows)


def test_fixture_piggyback_and_instances() -> None:
    s = parse_agent_output((DATA / "mk_docker.txt").read_text())
    assert ("shop-db", "docker_container_status") in s
    assert ("", "docker_container_status") not in s
    m = parse_agent_output((DATA / "mk_mysql.txt").read_text())
    assert set(_instances(m[("", "mysql_ping")].rows)) == {"shop", "billing"}


@pytest.mark.parametrize(
    ("section", "text"),
    [
        ("uptime", "<<<uptime>>>\nabc def\n"),
        ("mem", "<<<mem>>>\nMemTotal 123 kB\n"),
        ("cpu", "<<<cpu>>>\n0.1 0.2 0.3 2 5 2\n"),
        ("df", "<<<df>>>\n/dev/sda1 ext4 x 1 2 3% /\n"),
        ("ps_lnx", "<<<ps_lnx>>>\n[header] USER VSZ RSS TIME ELAPSED PID COMMAND\nroot 1 2 3 4\n"),
        ("local", "<<<local:sep(0)>>>\n7 name - text\n"),
        ("local", '<<<local:sep(0)>>>\n0 "name" perf - text\n'),
    ],
)
def test_checks_reject_broken_sections(section: str, text: str) -> None:
    with pytest.raises((AssertionError, ValueError, IndexError, KeyError)):
        check_agent_output(text)

"""Apply a host config to a root, idempotently, recording what changed.

``apply_config(cfg, base, root, sysroot)`` writes into ``root`` (``/`` on a
host: the booted deployment's writable ``/etc`` and the shared ``/var``):

=================  =========================================================
hostname           /etc/hostname, the 127.0.1.1 line of /etc/hosts
timezone           /etc/localtime -> /usr/share/zoneinfo/ZONE, /etc/timezone
ntp                /etc/systemd/timesyncd.conf.d/50-atoll.conf
users              useradd/usermod --prefix ROOT; ~/.ssh/authorized_keys (0600);
                   no password (locked): SSH keys only
network            /etc/systemd/network/50-atoll-N.network
sysctl, limits     /etc/sysctl.d/90-atoll.conf, /etc/security/limits.d/90-atoll.conf
checkmk            /etc/atoll/checkmk-agent.env (ATOLL_CHECKMK_ONLY_FROM)
updates            the remote (trusted root.json) and the agent's policy
control            the control plane's URL and the enrolment token (0600) for atolld
apps               installed with their secrets (files copied 0600 by the apps layer)
=================  =========================================================

Each step compares before it writes, so a second apply of the same config
changes nothing and says so. What was done is recorded in
``/var/lib/atoll/provision/applied.json`` with the config's sha256; secrets'
contents are never read here, logged or recorded.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from atoll.core.errors import HostStateError
from atoll.core.fsutil import atomic_symlink, atomic_write, atomic_write_json, read_json
from atoll.core.run import run
from atoll.core.spec import MAX_SPEC_BYTES
from atoll.core.userfile import read_user_file
from atoll.provision.config import HostConfig

__all__ = ["PHASES", "RECORD", "apply_config", "config_sha256"]

log = logging.getLogger("atoll.provision")
RECORD = "var/lib/atoll/provision/applied.json"


def config_sha256(path: Path) -> str:
    return hashlib.sha256(read_user_file(path, MAX_SPEC_BYTES, "host config")).hexdigest()


def _ensure(path: Path, content: str, mode: int = 0o644) -> bool:
    """Write ``content`` if it differs; True when something changed."""
    data = content.encode()
    try:
        if path.read_bytes() == data and (path.stat().st_mode & 0o7777) == mode:
            return False
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, data, mode)
    return True


def _hostname(cfg: HostConfig, root: Path) -> list[str]:
    out = []
    if _ensure(root / "etc/hostname", cfg.hostname + "\n"):
        out.append(f"hostname set to {cfg.hostname}")
    hosts = root / "etc/hosts"
    lines = hosts.read_text().splitlines() if hosts.exists() else ["127.0.0.1\tlocalhost"]
    want = f"127.0.1.1\t{cfg.hostname}"
    new = [ln for ln in lines if not ln.startswith("127.0.1.1")] + [want]
    if _ensure(hosts, "\n".join(new) + "\n"):
        out.append("/etc/hosts updated")
    if root.resolve() == Path("/") and os.uname().nodename != cfg.hostname:
        run(["hostname", cfg.hostname], what="set the hostname")
    return out


def _timezone(cfg: HostConfig, root: Path) -> list[str]:
    out = []
    target = f"/usr/share/zoneinfo/{cfg.timezone}"
    link = root / "etc/localtime"
    if not (link.is_symlink() and os.readlink(link) == target):
        with contextlib.suppress(FileNotFoundError):
            if not link.is_symlink():
                link.unlink()
        atomic_symlink(target, link)
        out.append(f"time zone {cfg.timezone}")
    if _ensure(root / "etc/timezone", cfg.timezone + "\n"):
        out.append("/etc/timezone updated")
    if cfg.ntp and _ensure(root / "etc/systemd/timesyncd.conf.d/50-atoll.conf",
                           "[Time]\nNTP=" + " ".join(cfg.ntp) + "\n"):
        out.append(f"NTP servers {' '.join(cfg.ntp)}")
    return out


def _passwd(root: Path) -> dict[str, list[str]]:
    try:
        text = (root / "etc/passwd").read_text()
    except FileNotFoundError:
        raise HostStateError(f"{root}/etc/passwd is missing: not a Debian root") from None
    return {ln.split(":")[0]: ln.split(":") for ln in text.splitlines() if ln}


def _groups_of(root: Path, user: str) -> set[str]:
    out = set()
    for ln in (root / "etc/group").read_text().splitlines():
        parts = ln.split(":")
        if len(parts) == 4 and user in parts[3].split(","):
            out.add(parts[0])
    return out


def _users(cfg: HostConfig, root: Path) -> list[str]:
    out = []
    home_link = root / "home"
    if home_link.is_symlink() and not os.readlink(home_link).startswith("/"):
        # /home -> var/home: systemd-tmpfiles makes it at boot; make sure it exists now
        (root / os.readlink(home_link)).mkdir(parents=True, exist_ok=True)
    for user in cfg.users:
        if user.name not in _passwd(root):
            run(["useradd", "--prefix", root, "--create-home", "--shell", user.shell,
                 "--user-group", user.name], what=f"create user {user.name}")
            out.append(f"user {user.name} created (no password: SSH keys only)")
        entry = _passwd(root)[user.name]
        uid, gid, home = int(entry[2]), int(entry[3]), entry[5]
        missing = sorted(set(user.groups) - _groups_of(root, user.name))
        if missing:
            run(["usermod", "--prefix", root, "--append", "--groups", ",".join(missing),
                 user.name], what=f"add {user.name} to groups")
            out.append(f"user {user.name} added to {', '.join(missing)}")
        home_dir = root / home.lstrip("/")
        ssh = home_dir / ".ssh"
        keys = "".join(k.strip() + "\n" for k in user.ssh_authorized_keys)
        if not ssh.is_dir():
            ssh.mkdir(parents=True, mode=0o700)
            os.chown(ssh, uid, gid)
        if _ensure(ssh / "authorized_keys", keys, 0o600):
            os.chown(ssh / "authorized_keys", uid, gid)
            out.append(f"user {user.name}: {len(user.ssh_authorized_keys)} SSH key(s)")
        sudoers = root / "etc/sudoers.d" / f"90-atoll-{user.name}"
        if user.sudo:
            if not (root / "usr/bin/sudo").exists():
                raise HostStateError(f"user {user.name}: sudo: true, but sudo is not installed",
                                     resolution="add the sudo package to the treefile")
            if _ensure(sudoers, f"{user.name} ALL=(ALL:ALL) NOPASSWD: ALL\n", 0o440):
                out.append(f"user {user.name}: sudo")
        elif sudoers.exists():
            sudoers.unlink()
            out.append(f"user {user.name}: sudo removed")
    return out


def _network(cfg: HostConfig, root: Path) -> list[str]:
    out = []
    wanted = set()
    for i, ifc in enumerate(cfg.network.interfaces):
        lines = ["[Match]", f"Name={ifc.match}", "", "[Network]"]
        if ifc.dhcp:
            lines.append("DHCP=yes")
        else:
            lines.append(f"Address={ifc.address}")
            if ifc.gateway:
                lines.append(f"Gateway={ifc.gateway}")
        lines += [f"DNS={d}" for d in ifc.dns]
        name = f"50-atoll-{i}.network"
        wanted.add(name)
        if _ensure(root / "etc/systemd/network" / name, "\n".join(lines) + "\n"):
            out.append(f"network {ifc.match}: {'DHCP' if ifc.dhcp else ifc.address}")
    netdir = root / "etc/systemd/network"
    if netdir.is_dir():
        for p in netdir.glob("50-atoll-*.network"):
            if p.name not in wanted:
                p.unlink()
                out.append(f"network: removed {p.name}")
    return out


def _tuning(cfg: HostConfig, root: Path) -> list[str]:
    out = []
    if cfg.sysctl:
        text = "".join(f"{k} = {v}\n" for k, v in sorted(cfg.sysctl.items()))
        if _ensure(root / "etc/sysctl.d/90-atoll.conf", text):
            out.append(f"sysctl: {len(cfg.sysctl)} setting(s)")
            if root.resolve() == Path("/"):
                run(["sysctl", "--load", "/etc/sysctl.d/90-atoll.conf"], check=False)
    if cfg.limits:
        text = "".join(f"{lim.domain}\t{lim.type}\t{lim.item}\t{lim.value}\n"
                       for lim in cfg.limits)
        if _ensure(root / "etc/security/limits.d/90-atoll.conf", text):
            out.append(f"limits: {len(cfg.limits)} line(s)")
    only = ",".join(cfg.checkmk.only_from)
    if _ensure(root / "etc/atoll/checkmk-agent.env", f"ATOLL_CHECKMK_ONLY_FROM={only}\n"):
        out.append(f"Checkmk agent only-from {only}")
    return out


def _updates(cfg: HostConfig, base: Path, sysroot: Path) -> list[str]:
    from atoll.agent.policy import Policy
    from atoll.agent.state import AgentFiles

    out = []
    remote = cfg.updates.remote
    if remote is not None:
        from atoll.repo.client import add_remote

        path = Path(sysroot) / "atoll/state/remotes" / remote.name / "remote.json"
        current = read_json(path)
        url = remote.url.rstrip("/") + "/"
        if not current:
            add_remote(sysroot, remote.name, url, base / remote.root, remote.channel)
            out.append(f"update remote {remote.name}: {url}")
        elif (current.get("url"), current.get("channel")) != (url, remote.channel):
            # a moved server or another channel: the trusted metadata (the chain
            # of trust since the first root) is kept; only where to fetch changes
            atomic_write_json(path, current | {"url": url, "channel": remote.channel})
            out.append(f"update remote {remote.name}: now {url}")
    if cfg.updates.policy:
        files = AgentFiles(sysroot)
        want = Policy.from_json({"remote": remote.name if remote else "origin",
                                 **cfg.updates.policy})
        if files.policy() != want or not files.policy_path.exists():
            files.save_policy(want)
            out.append(f"update policy: mode {want.mode}, {len(want.windows)} window(s)")
    return out


def _control(cfg: HostConfig, base: Path, sysroot: Path) -> list[str]:
    if cfg.control is None:
        return []
    from atoll.agent.control import ControlFiles

    c = cfg.control
    return ControlFiles(sysroot).configure(
        c.url, base / c.enrol_token, ca=base / c.ca if c.ca else None,
        interval_s=c.interval, jitter_s=c.jitter)


def _apps(cfg: HostConfig, base: Path, sysroot: Path) -> list[str]:
    out: list[str] = []
    if not cfg.apps:
        return out
    from atoll.apps.manager import install, installed_apps

    have = {a.name for a in installed_apps(sysroot)}
    for app in cfg.apps:
        if app.name in have:
            continue
        install(sysroot, app.name, spec_file=base / app.spec if app.spec else None,
                secrets={k: base / v for k, v in app.secrets.items()})
        out.append(f"app {app.name} installed")
    return out


Step = Callable[[], list[str]]


PHASES = ("system", "apps")


def apply_config(cfg: HostConfig, config_path: Path, root: Path, sysroot: Path,
                 *, phases: tuple[str, ...] = PHASES) -> dict[str, Any]:
    """Apply ``cfg`` (read from ``config_path``); returns the record written.

    ``phases``: "system" (everything but the apps: quick, before the network
    and sshd start) and/or "apps" (needs Docker; may load images and
    initialise databases, minutes on a slow machine).

    Raises:
        HostStateError, ToolError, RuntimeBackendError: a step failed; the record
        says which steps were done.
    """
    base = Path(config_path).parent
    root, sysroot = Path(root), Path(sysroot)
    steps: list[tuple[str, Step]] = []
    if "system" in phases:
        steps += [
            ("hostname", lambda: _hostname(cfg, root)),
            ("time", lambda: _timezone(cfg, root)),
            ("users", lambda: _users(cfg, root)),
            ("network", lambda: _network(cfg, root)),
            ("tuning", lambda: _tuning(cfg, root)),
            ("updates", lambda: _updates(cfg, base, sysroot)),
            ("control", lambda: _control(cfg, base, sysroot)),
        ]
    if "apps" in phases:
        steps.append(("apps", lambda: _apps(cfg, base, sysroot)))
    changes: list[str] = []
    record: dict[str, Any] = {
        "config": str(config_path), "config_sha256": config_sha256(config_path),
        "time": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "result": "applied",
        "phases": list(phases),
    }
    try:
        for name, fn in steps:
            done = fn()
            for c in done:
                log.info("host-config: %s", c)
            changes += done
            record["last_step"] = name
    except Exception as exc:
        record["result"] = "failed"
        record["error"] = str(exc)
        raise
    finally:
        record["changes"] = changes
        path = root / RECORD
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, record)
    if not changes:
        log.info("host-config: nothing to change")
    return record

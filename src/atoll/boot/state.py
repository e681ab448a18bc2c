"""Where boot state lives under a sysroot, and small atomic readers/writers for it.

    <sysroot>/
    ├── boot/grub/grubenv           boot counting variables (see counting.py)
    ├── boot/grub/grub.cfg          static: chains to /boot/loader/grub.cfg
    ├── boot/loader -> loader.N     deployments.json + grub.cfg (deploy layer swaps it)
    ├── boot/atoll/<commit>/        vmlinuz + initrd.img per commit
    ├── atoll/state/bootloader      "grub" (absent: no bootloader is managed)
    ├── atoll/state/kargs           kernel arguments shared by every entry
    ├── atoll/state/boot.json       {"good": [deployment ids marked good]}
    ├── atoll/state/events.jsonl    one canonical JSON object a line
    └── run/atoll/booted            the running deployment id
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from atoll.boot import grubenv
from atoll.core import canonjson
from atoll.core.errors import HostStateError
from atoll.core.fsutil import append_json_line, atomic_write, atomic_write_json, read_json

__all__ = [
    "DEFAULT_KARGS",
    "add_good",
    "append_event",
    "booted",
    "bootloader",
    "kargs",
    "last_event",
    "read_deployments",
    "read_env",
    "read_events",
    "read_good",
    "utc_now",
    "write_env",
]

DEFAULT_KARGS = "root=LABEL=atoll-root rw console=ttyS0,115200n8 panic=10"


def _state(sysroot: Path) -> Path:
    return sysroot / "atoll" / "state"


def utc_now() -> str:
    """The current time as ``YYYY-MM-DDTHH:MM:SSZ``."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def bootloader(sysroot: Path) -> str:
    """The bootloader this sysroot uses ("grub"), or "" when none is managed."""
    try:
        return (_state(sysroot) / "bootloader").read_text().strip()
    except FileNotFoundError:
        return ""


def kargs(sysroot: Path) -> str:
    """Kernel arguments shared by every boot entry."""
    try:
        return (_state(sysroot) / "kargs").read_text().strip() or DEFAULT_KARGS
    except FileNotFoundError:
        return DEFAULT_KARGS


def env_path(sysroot: Path) -> Path:
    return sysroot / "boot" / "grub" / "grubenv"


def read_env(sysroot: Path) -> dict[str, str]:
    """grubenv as a dict ({} when the file does not exist yet)."""
    try:
        return grubenv.parse(env_path(sysroot).read_bytes())
    except FileNotFoundError:
        return {}


def write_env(sysroot: Path, env: dict[str, str]) -> None:
    """Replace grubenv atomically (a new 1024-byte block)."""
    path = env_path(sysroot)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, grubenv.render(env))


def read_good(sysroot: Path) -> list[str]:
    """Deployment ids that completed a boot with every required check passing (none
    when boot.json does not read: the next mark rewrites it)."""
    try:
        data = read_json(_state(sysroot) / "boot.json", {}) or {}
    except ValueError:  # not UTF-8 JSON
        data = {}
    good = data.get("good", []) if isinstance(data, dict) else []
    return [str(x) for x in good] if isinstance(good, list) else []


def add_good(sysroot: Path, deployment: str) -> None:
    """Record ``deployment`` as good (atomic rewrite of boot.json)."""
    good = read_good(sysroot)
    if deployment in good:
        return
    _state(sysroot).mkdir(parents=True, exist_ok=True)
    atomic_write_json(_state(sysroot) / "boot.json", {"good": [*good, deployment][-64:]})


def append_event(sysroot: Path, event: dict[str, Any]) -> None:
    """Append one canonical JSON line to events.jsonl and fsync it."""
    append_json_line(_state(sysroot) / "events.jsonl", event)


def read_events(sysroot: Path, limit: int = 1000) -> list[dict[str, Any]]:
    """The last ``limit`` events (lines that do not parse are skipped)."""
    path = _state(sysroot) / "events.jsonl"
    try:
        lines = path.read_bytes().splitlines()[-limit:]
    except FileNotFoundError:
        return []
    out: list[dict[str, Any]] = []
    for line in lines:
        try:
            value = canonjson.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            out.append(value)
    return out


def last_event(sysroot: Path, deployment: str, event: str = "boot") -> dict[str, Any] | None:
    """The newest ``event`` recorded for ``deployment``."""
    found: dict[str, Any] | None = None
    for ev in read_events(sysroot):
        if ev.get("event") == event and ev.get("deployment") == deployment:
            found = ev
    return found


def booted(sysroot: Path) -> str:
    """The running deployment id (``run/atoll/booted``), or "" when unknown."""
    try:
        return (sysroot / "run" / "atoll" / "booted").read_text(errors="replace").strip()
    except FileNotFoundError:
        return ""


def read_deployments(loader_dir: Path) -> list[dict[str, Any]]:
    """The deployments list of a loader directory.

    Raises:
        HostStateError: deployments.json is missing or malformed.
    """
    data = read_json(loader_dir / "deployments.json")
    if not isinstance(data, dict) or not isinstance(data.get("deployments"), list):
        raise HostStateError(
            f"{loader_dir}/deployments.json is missing or malformed",
            resolution="redeploy (atoll deploy) or rebuild the image",
        )
    return [d for d in data["deployments"] if isinstance(d, dict)]

"""Groups and slot counts of a FleetLock server, from a TOML file.

The format is airlock's ``[lock]`` table, so an airlock config's lock section
works unchanged::

    [lock]
    default_group_name = "default"   # optional, default "default"
    default_slots = 2                # optional, default 1

    [[lock.groups]]
    name = "db"
    slots = 1                        # optional, default: default_slots

Without a file the server has one group, ``default``, with 1 slot. Group names
follow the protocol's ``^[a-zA-Z0-9.-]+$``. Other tables (airlock's
``[service]``, ``[etcd3]``...) are refused: atoll takes those from the command
line, and a setting that is silently ignored is a trap.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from atoll.core.errors import InputError, SpecError
from atoll.fleet.protocol import GROUP_RE

__all__ = ["DEFAULT_GROUP", "FleetConfig", "load_config", "parse_config"]

DEFAULT_GROUP = "default"
MAX_SLOTS = 100_000


@dataclass(frozen=True)
class FleetConfig:
    """Reboot groups and their slot counts."""

    groups: dict[str, int] = field(default_factory=lambda: {DEFAULT_GROUP: 1})

    def slots(self, group: str) -> int | None:
        """Slots of ``group``, or None when the group is not configured."""
        return self.groups.get(group)


def _slots(value: Any, where: str, problems: list[str]) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_SLOTS:
        problems.append(f"{where}: must be an integer from 1 to {MAX_SLOTS}, got {value!r}")
        return 1
    return value


def _name(value: Any, where: str, problems: list[str]) -> str:
    if not isinstance(value, str) or not GROUP_RE.match(value):
        problems.append(f"{where}: must match {GROUP_RE.pattern}, got {value!r}")
        return ""
    return value


def parse_config(raw: dict[str, Any], source: str) -> FleetConfig:
    """Build a config from parsed TOML; ``source`` prefixes error lines.

    Raises:
        SpecError: one ``source: field: problem`` line per problem.
    """
    problems: list[str] = []
    extra = sorted(set(raw) - {"lock"})
    if extra:
        problems.append(f"{source}: {', '.join(extra)}: unknown table; only [lock] is read")
    lock = raw.get("lock", {})
    if not isinstance(lock, dict):
        problems.append(f"{source}: lock: must be a table")
        lock = {}
    unknown = sorted(set(lock) - {"default_group_name", "default_slots", "groups"})
    for key in unknown:
        problems.append(f"{source}: lock.{key}: unknown setting")
    default_name = _name(lock.get("default_group_name", DEFAULT_GROUP),
                         f"{source}: lock.default_group_name", problems)
    default_slots = _slots(lock.get("default_slots", 1), f"{source}: lock.default_slots", problems)
    groups = {default_name: default_slots}
    entries = lock.get("groups", [])
    if not isinstance(entries, list):
        problems.append(f"{source}: lock.groups: must be an array of tables ([[lock.groups]])")
        entries = []
    for i, entry in enumerate(entries):
        where = f"{source}: lock.groups[{i}]"
        if not isinstance(entry, dict):
            problems.append(f"{where}: must be a table")
            continue
        for key in sorted(set(entry) - {"name", "slots"}):
            problems.append(f"{where}.{key}: unknown setting")
        if "name" not in entry:
            problems.append(f"{where}.name: missing")
            continue
        name = _name(entry["name"], f"{where}.name", problems)
        slots = _slots(entry.get("slots", default_slots), f"{where}.slots", problems)
        if name in groups:
            problems.append(f"{where}.name: group {name!r} defined twice")
        groups[name] = slots
    if problems:
        raise SpecError(problems, resolution="fix the FleetLock config (see docs/fleet.md)")
    return FleetConfig(groups=groups)


def load_config(path: Path | None) -> FleetConfig:
    """Read a TOML config file; None gives the default (group ``default``, 1 slot).

    Raises:
        InputError: the file is missing or is not TOML.
        SpecError: a setting is wrong.
    """
    if path is None:
        return FleetConfig()
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise InputError(f"cannot read FleetLock config {path}", details=str(exc)) from exc
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"{path}: not valid TOML: {exc}",
                         resolution="fix the syntax (see docs/fleet.md)") from exc
    return parse_config(raw, str(path))

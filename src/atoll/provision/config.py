"""The host config: what makes a blank atoll host one particular customer server.

Example (``examples/site.yaml``)::

    hostname: db01
    timezone: Europe/Berlin
    ntp: [ntp1.example.net]
    users:
      - name: ops
        ssh_authorized_keys: ["ssh-ed25519 AAAA... ops@example"]
        groups: [sudo]
    network:
      interfaces:
        - match: "en*"
          dhcp: true
    apps:
      - name: mariadb
        secrets: {root-password: /etc/atoll/secrets/db-root}
    updates:
      remote: {name: origin, url: "https://updates.example/", root: /etc/atoll/root.json}
      policy: {mode: stage, windows: ["Sat 02:00-04:00 Europe/Berlin"], group: db}
    checkmk: {only_from: [10.0.0.5, 127.0.0.1]}
    control: {url: "https://fleet.example:8470", enrol_token: secrets/enrol-token}
    sysctl: {vm.swappiness: 1}
    limits: [{domain: mysql, type: "-", item: nofile, value: 65535}]

Secrets are *paths* to files (on the host or the seed), never values: the file
is copied to a 0600 file and its content is never logged or shown.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from atoll.agent.policy import Policy
from atoll.core.spec import SingleLine, Spec, line_of, load_spec

__all__ = ["HostConfig", "load_host_config"]

_NAME = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
_HOST = re.compile(r"^(?=.{1,63}$)[a-z0-9]([a-z0-9-]*[a-z0-9])?$")


class User(Spec):
    name: str
    ssh_authorized_keys: list[SingleLine] = Field(default_factory=list)
    groups: list[str] = Field(default_factory=list)
    shell: str = "/bin/bash"
    sudo: bool = Field(False, description="may run any command as root without a password "
                       "(the user has none: SSH keys only); needs the sudo package")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME.match(v) or v == "root":
            raise ValueError("a user name: lowercase letters, digits, '_' or '-' (not root)")
        return v

    @field_validator("ssh_authorized_keys")
    @classmethod
    def _keys(cls, v: list[str]) -> list[str]:
        for key in v:
            parts = key.split()
            if len(parts) < 2 or not parts[0].startswith(("ssh-", "ecdsa-", "sk-")):
                raise ValueError("each key is an OpenSSH public key line: 'TYPE BASE64 [comment]'")
        return v


class Interface(Spec):
    match: str = Field(description="interface name or glob, e.g. en* or eth0")
    dhcp: bool = False
    address: str | None = Field(None, description="static address with prefix, e.g. 10.0.0.7/24")
    gateway: str | None = None
    dns: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _static(self) -> Interface:
        if self.dhcp == (self.address is not None):
            raise ValueError("give either dhcp: true or a static address")
        if self.address is not None:
            ipaddress.ip_interface(self.address)
        for a in [*self.dns, *([self.gateway] if self.gateway else [])]:
            ipaddress.ip_address(a)
        return self


class Network(Spec):
    interfaces: list[Interface] = Field(default_factory=lambda: [Interface(match="en*", dhcp=True)])


class AppEntry(Spec):
    name: str
    spec: str | None = Field(None, description="path of an app spec (default: built-in)")
    secrets: dict[str, str] = Field(default_factory=dict, description="name -> file path")


class Remote(Spec):
    name: str = "origin"
    url: str
    root: str = Field(description="path of the update repository's root.json")
    channel: str | None = Field(None, description="channel to follow (default: the only one "
                                "the repository serves)")


class Updates(Spec):
    remote: Remote | None = None
    policy: dict[str, object] = Field(default_factory=dict)

    @field_validator("policy")
    @classmethod
    def _policy(cls, v: dict[str, object]) -> dict[str, object]:
        Policy.from_json(dict(v))
        return v


class Control(Spec):
    """The fleet control plane this host checks in with (docs/control-plane.md)."""

    url: str = Field(description="the control plane, e.g. https://fleet.example:8470")
    enrol_token: str = Field(description="path of a file holding the one-time enrolment "
                             "token (`atoll fleet enrol-token create --out FILE`); copied "
                             "0600 to the host's state, removed once enrolled, never logged")
    ca: str | None = Field(None, description="path of a CA bundle (PEM) that the server's "
                           "https certificate is checked against (default: the system's)")
    interval: int = Field(300, ge=30, le=86400, description="seconds between check-ins")
    jitter: int = Field(30, ge=0, le=3600, description="up to this many seconds added to "
                        "each interval, at random")

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        from atoll.core.errors import InputError
        from atoll.core.urls import check_http_url

        try:
            check_http_url(v, "control plane URL", example="https://fleet.example:8470")
        except InputError as exc:
            raise ValueError(exc.brief) from None
        return v


class Checkmk(Spec):
    only_from: list[str] = Field(default_factory=lambda: ["127.0.0.1"])

    @field_validator("only_from")
    @classmethod
    def _addrs(cls, v: list[str]) -> list[str]:
        for a in v:
            ipaddress.ip_network(a, strict=False)
        return v


class Limit(Spec):
    domain: str
    type: Literal["soft", "hard", "-"] = "-"
    item: Literal["nofile", "nproc", "memlock", "core", "stack"]
    value: int | Literal["unlimited"]


class HostConfig(Spec):
    hostname: str
    timezone: str = "UTC"
    ntp: list[SingleLine] = Field(default_factory=list)
    users: list[User] = Field(default_factory=list)
    network: Network = Field(default_factory=Network)
    apps: list[AppEntry] = Field(default_factory=list)
    updates: Updates = Field(default_factory=Updates)
    checkmk: Checkmk = Field(default_factory=Checkmk)
    control: Control | None = None
    sysctl: dict[str, str | int] = Field(default_factory=dict)
    limits: list[Limit] = Field(default_factory=list)

    @field_validator("hostname")
    @classmethod
    def _hostname(cls, v: str) -> str:
        if not _HOST.match(v):
            raise ValueError("a hostname: lowercase letters, digits and '-', at most 63")
        return v

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {v!r}") from None
        return v

    @field_validator("sysctl")
    @classmethod
    def _sysctl(cls, v: dict[str, str | int]) -> dict[str, str | int]:
        for k in v:
            if not re.fullmatch(r"[a-z0-9_]+(\.[a-z0-9_*-]+)+", k):
                raise ValueError(f"{k!r} is not a sysctl key")
        return v


def load_host_config(path: Path) -> HostConfig:
    """Load and validate; secret and key files it names must exist (relative to the file).

    Raises:
        SpecError: ``file:line: field: problem`` for each problem.
    """
    from atoll.core.errors import SpecError

    cfg = load_spec(path, HostConfig)
    base = Path(path).parent
    missing = []
    for i, app in enumerate(cfg.apps):
        for name, ref in app.secrets.items():
            if not (base / ref).is_file():
                line = line_of(path, ("apps", i, "secrets", name))
                missing.append(f"{path}:{line}: apps.{i}.secrets.{name}: "
                               f"file {ref} does not exist")
    if cfg.updates.remote and not (base / cfg.updates.remote.root).is_file():
        line = line_of(path, ("updates", "remote", "root"))
        missing.append(f"{path}:{line}: updates.remote.root: file {cfg.updates.remote.root} "
                       "does not exist")
    if cfg.control:
        for key in ("enrol_token", "ca"):
            ref = getattr(cfg.control, key)
            if ref is not None and not (base / ref).is_file():
                line = line_of(path, ("control", key))
                missing.append(f"{path}:{line}: control.{key}: file {ref} does not exist")
    if missing:
        raise SpecError(missing)
    return cfg

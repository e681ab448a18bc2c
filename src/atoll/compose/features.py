"""Image features: small, registered rootfs customisations named by a treefile.

A treefile lists ``features: [boot, docker, ...]``. Each feature is a function
that receives the rootfs as mmdebstrap made it (``/etc`` still in place, before
the atoll layout conversion) and may add files, enable units or run commands
inside it (``chroot``). Later layers register their features when imported
(``atoll.boot`` registers ``boot``, ``atoll.apps`` registers ``docker``...).
A feature also names the Debian packages it needs, so compose installs them.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from atoll.core.errors import InputError

__all__ = ["Feature", "enable_unit", "expand", "get", "install_unit", "names", "register"]


@dataclass(frozen=True)
class Feature:
    name: str
    install: Callable[[Path], None]
    packages: tuple[str, ...] = field(default_factory=tuple)
    description: str = ""
    requires: tuple[str, ...] = ()  # features installed before this one


_REGISTRY: dict[str, Feature] = {}

# Modules that register features on import; imported lazily so that compose
# does not import later layers at module load time.
_PROVIDERS = ("atoll.boot", "atoll.apps", "atoll.monitor", "atoll.agent", "atoll.provision")


def register(feature: Feature) -> None:
    _REGISTRY[feature.name] = feature


def _load_providers() -> None:
    for mod in _PROVIDERS:
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as exc:
            if exc.name != mod:
                raise


def expand(requested: list[str]) -> list[str]:
    """``requested`` plus what each requires, every feature after its requirements."""
    out: list[str] = []

    def visit(name: str, chain: tuple[str, ...]) -> None:
        if name in out:
            return
        if name in chain:
            raise InputError(f"image features require each other in a loop: {' -> '.join(chain)}")
        for dep in get(name).requires:
            visit(dep, (*chain, name))
        out.append(name)

    for name in requested:
        visit(name, ())
    return out


def names() -> list[str]:
    _load_providers()
    return sorted(_REGISTRY)


def get(name: str) -> Feature:
    _load_providers()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise InputError(
            f"unknown image feature {name!r}",
            resolution=f"known features: {', '.join(sorted(_REGISTRY)) or '(none)'}",
        ) from None


def install_unit(rootfs: Path, name: str, text: str, *, wanted_by: str = "multi-user.target"
                 ) -> None:
    """Install a systemd unit in ``usr/lib/systemd/system`` and enable it (vendor-enabled)."""
    units = Path(rootfs) / "usr/lib/systemd/system"
    units.mkdir(parents=True, exist_ok=True)
    (units / name).write_text(text)
    enable_unit(rootfs, name, wanted_by)


def enable_unit(rootfs: Path, name: str, wanted_by: str = "multi-user.target") -> None:
    """Vendor-enable a unit of ``usr/lib/systemd/system`` (a ``<target>.wants`` link)."""
    wants = Path(rootfs) / "usr/lib/systemd/system" / f"{wanted_by}.wants"
    wants.mkdir(parents=True, exist_ok=True)
    link = wants / name
    if not link.is_symlink():
        os.symlink(f"../{name}", link)

"""Image features: small, registered rootfs customisations named by a treefile.

A treefile lists ``features: [boot, docker, ...]``. Each feature is a function
that receives the rootfs as mmdebstrap made it (``/etc`` still in place, before
the atoll layout conversion) and may add files, enable units or run commands
inside it (``chroot``). Later layers register their features when imported
(``atoll.boot`` registers ``boot``, ``atoll.apps.feature`` registers ``docker``...).
A feature also names the Debian packages it needs, so compose installs them.

atoll itself goes into an image once, at :data:`ATOLL_PREFIX`
(:func:`install_atoll`): the ``boot`` feature's boot-complete and the
``agent`` feature's ``atoll``/``atolld`` (and every unit that runs them) use
that one copy. See docs/compose.md ("atoll in the image").
"""

from __future__ import annotations

import contextlib
import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import atoll
from atoll.core.errors import InputError
from atoll.core.fsutil import atomic_write

__all__ = ["ATOLL_PREFIX", "Feature", "enable_unit", "expand", "get", "install_atoll",
           "install_unit", "names", "register"]

# atoll's own directory in an image: the package, and (agent feature) its PyPI
# dependencies. Private to atoll: no other Python program sees it on its path.
ATOLL_PREFIX = "usr/lib/atoll/python"


@dataclass(frozen=True)
class Feature:
    name: str
    install: Callable[[Path], None]
    packages: tuple[str, ...] = field(default_factory=tuple)
    description: str = ""
    requires: tuple[str, ...] = ()  # features installed before this one
    # environment for mmdebstrap (its maintainer scripts) when an image has this feature
    build_env: tuple[tuple[str, str], ...] = ()


_REGISTRY: dict[str, Feature] = {}

# Modules that register features on import; imported lazily so that compose
# does not import later layers at module load time.
_PROVIDERS = ("atoll.boot", "atoll.apps.feature", "atoll.monitor", "atoll.agent.feature",
              "atoll.provision")


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


def install_unit(rootfs: Path, name: str, text: str, *,
                 wanted_by: str | None = "multi-user.target") -> None:
    """Install a systemd unit in ``usr/lib/systemd/system`` and enable it (vendor-enabled)
    in ``wanted_by`` (None: not enabled, e.g. a service its timer starts).

    The unit is a new file (written atomically): a tree of hardlinks stays untouched.
    """
    units = Path(rootfs) / "usr/lib/systemd/system"
    units.mkdir(parents=True, exist_ok=True)
    atomic_write(units / name, text.encode(), 0o644, sync=False)
    if wanted_by is not None:
        enable_unit(rootfs, name, wanted_by)


def enable_unit(rootfs: Path, name: str, wanted_by: str = "multi-user.target") -> None:
    """Vendor-enable a unit of ``usr/lib/systemd/system`` (a ``<target>.wants`` link)."""
    wants = Path(rootfs) / "usr/lib/systemd/system" / f"{wanted_by}.wants"
    wants.mkdir(parents=True, exist_ok=True)
    link = wants / name
    if not link.is_symlink():
        os.symlink(f"../{name}", link)


def _package_files(src: Path) -> dict[str, Path]:
    """Relative path -> file of the atoll package (no byte code, no hidden files)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(src):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__" and not d.startswith("."))
        for name in filenames:
            if name.endswith((".pyc", ".pyo")) or name.startswith("."):
                continue
            p = Path(dirpath) / name
            out[str(p.relative_to(src))] = p
    return out


def install_atoll(rootfs: Path) -> Path:
    """Copy the running atoll package to ``ATOLL_PREFIX/atoll`` in ``rootfs``; the prefix.

    Idempotent (both the ``boot`` and the ``agent`` feature call it): a file
    already there with the same bytes is kept, others are written as new files
    (a tree of hardlinks, such as a test's ``cp -al`` copy, stays untouched), and
    files this atoll does not have are removed. Modes are fixed (0644, 0755 for
    executables and directories) and ``__pycache__`` is not copied, so the image
    does not depend on the build machine's checkout (umask, stale byte code).
    """
    rootfs = Path(rootfs)
    rootfs.mkdir(parents=True, exist_ok=True)
    prefix = rootfs / ATOLL_PREFIX
    dest = prefix / "atoll"
    files = _package_files(Path(atoll.__file__).resolve().parent)
    for rel, src in files.items():
        data = src.read_bytes()
        mode = 0o755 if os.stat(src).st_mode & 0o111 else 0o644
        target = dest / rel
        for d in reversed(target.relative_to(rootfs).parents[:-1]):  # usr, usr/lib, ...
            with contextlib.suppress(FileExistsError):
                (rootfs / d).mkdir()
                os.chmod(rootfs / d, 0o755)  # a new directory: 0755 whatever the umask
        try:
            same = (not target.is_symlink() and target.stat().st_mode & 0o7777 == mode
                    and target.read_bytes() == data)
        except OSError:
            same = False
        if not same:  # a new inode: the files of a hardlinked tree stay intact
            atomic_write(target, data, mode, sync=False)
    for dirpath, _dirs, filenames in os.walk(dest, topdown=False):
        here = Path(dirpath)
        if "__pycache__" in here.relative_to(dest).parts:
            continue
        for name in filenames:
            rel = str((here / name).relative_to(dest))
            if rel not in files:
                (here / name).unlink()
        if here != dest and not any(here.iterdir()):
            here.rmdir()
    return prefix

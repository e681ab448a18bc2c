"""A cache of downloaded Debian packages, shared by composes (and app image builds).

Layout::

    /var/cache/atoll/debs/                default (``atoll compose --deb-cache DIR``)
        lock                              flock: shared while a compose seeds from or
                                          adds to the cache, exclusive while it is trimmed
        pool/<name>_<version>_<arch>.deb  apt's own file names (``:`` in a version as ``%3a``)
        tmp/                              files being added (renamed into pool/ when complete)

A ``.deb`` is addressed by package, version and architecture
(:meth:`DebCache.path_of`), which is what a later step (a CVE report reading
changelogs) needs.

How mmdebstrap uses it (:meth:`DebCache.mmdebstrap_args`; docs/compose.md):

1. a setup hook runs ``apt-get update`` for the new rootfs (apt checks the
   InRelease signature and every index's hash), then links into the rootfs's
   ``/var/cache/apt/archives`` every cached ``.deb`` whose size and sha256 are
   what that verified Packages index says for its package version. Nothing
   else in the cache is used: apt itself checks only the *size* of a ``.deb``
   it finds in ``archives/``, so it must never see one that was not verified.
2. mmdebstrap sees the lists and skips its own update; apt downloads only the
   packages that are not there, and checks each against the index;
3. a customize hook adds every ``.deb`` of ``archives/`` that the pool lacks;
4. after the compose, :meth:`DebCache.trim` removes the least recently used
   files beyond ``max_bytes`` (skipped when another compose is using the cache).

The cache is never trusted: a damaged or tampered file is simply not used
(and is replaced by the next download of that version), so it needs no fsync
and no repair.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import shlex
import shutil
import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import atoll
from atoll.core.errors import BusyError, InputError, ToolError
from atoll.core.fsutil import sha256_file
from atoll.core.lock import FileLock
from atoll.core.run import run

__all__ = [
    "DEFAULT_DIR",
    "DEFAULT_MAX_BYTES",
    "CachedDeb",
    "DebCache",
    "IndexEntry",
    "SeedResult",
    "deb_filename",
    "parse_deb_filename",
    "parse_packages",
    "plan_seed",
    "plan_trim",
]

log = logging.getLogger("atoll.compose.debcache")

DEFAULT_DIR = Path("/var/cache/atoll/debs")
DEFAULT_MAX_BYTES = 4 << 30  # ~10 full sets of the database image's packages
ARCHIVES = "var/cache/apt/archives"
_TMP_GRACE = 3600.0  # seconds: tmp/ leftovers older than this are a killed compose's


def _quote(text: str, bad: str) -> str:
    """apt's ``QuoteString``: ``%xx`` (lowercase hex) for bad, blank, non-ASCII and ``%``."""
    out: list[str] = []
    for ch in text:
        if ch in bad or ch == "%" or ord(ch) <= 0x20 or ord(ch) >= 0x7F:
            out.extend(f"%{b:02x}" for b in ch.encode())
        else:
            out.append(ch)
    return "".join(out)


def deb_filename(package: str, version: str, architecture: str) -> str:
    """The name apt gives the ``.deb`` of a package version in ``archives/``.

    E.g. ``("libc6", "2.36-9+deb12u9", "amd64")`` -> ``libc6_2.36-9+deb12u9_amd64.deb``;
    an epoch's ``:`` becomes ``%3a``.
    """
    return (f"{_quote(package, '_:')}_{_quote(version, '_:')}_"
            f"{_quote(architecture, '_:.')}.deb")


_NAME_RE = re.compile(r"^([^_/]+)_([^_/]+)_([^_/]+)\.deb$")


def parse_deb_filename(name: str) -> tuple[str, str, str] | None:
    """``(package, version, architecture)`` of an apt archive file name, or None."""
    m = _NAME_RE.match(name)
    if not m:
        return None
    pkg, ver, arch = (re.sub(r"%([0-9a-f]{2})", lambda g: chr(int(g.group(1), 16)), s)
                      for s in m.groups())
    return pkg, ver, arch


@dataclass(frozen=True)
class IndexEntry:
    """One package version as a (verified) Packages index lists it."""

    package: str
    version: str
    architecture: str
    size: int  # bytes
    sha256: str  # hex

    @property
    def filename(self) -> str:
        return deb_filename(self.package, self.version, self.architecture)


def parse_packages(data: bytes, wanted: Iterable[str] | None = None) -> Iterator[IndexEntry]:
    """The entries of a Packages index (deb822 stanzas separated by blank lines).

    Args:
        data: the uncompressed index.
        wanted: only these package names (None: all); the others are skipped
            without being parsed, which is what makes a 50 MB index fast.

    Stanzas without ``SHA256`` or with a malformed ``Size`` are skipped: they
    cannot be verified, so nothing is ever seeded from them.
    """
    names = None if wanted is None else {n.encode() for n in wanted}
    for m in re.finditer(rb"^Package: *(\S+) *$", data, re.M):
        if names is not None and m.group(1) not in names:
            continue
        end = data.find(b"\n\n", m.end())
        stanza = data[m.start(): len(data) if end < 0 else end]
        fields: dict[bytes, bytes] = {}
        for line in stanza.split(b"\n"):
            if line[:1] in (b" ", b"\t") or b":" not in line:
                continue
            key, _, value = line.partition(b":")
            fields[key.strip()] = value.strip()
        try:
            yield IndexEntry(
                package=fields[b"Package"].decode(), version=fields[b"Version"].decode(),
                architecture=fields[b"Architecture"].decode(), size=int(fields[b"Size"]),
                sha256=fields[b"SHA256"].decode().lower())
        except (KeyError, ValueError):
            continue


@dataclass(frozen=True)
class CachedDeb:
    """A file of the pool."""

    path: Path
    size: int  # bytes
    mtime: float  # last used (seconds since the epoch)


def plan_seed(index: Mapping[str, IndexEntry], cached: Mapping[str, int]
              ) -> tuple[list[str], list[str]]:
    """Which cached files may be offered to apt once their sha256 is checked.

    Args:
        index: file name -> the verified index entry of that package version.
        cached: file name -> size in bytes of each file of the pool.

    Returns:
        ``(candidates, wrong_size)``: names the index lists with the same size
        (their sha256 is checked next), and names it lists with another size
        (never used). Files the index does not list are neither.
    """
    candidates: list[str] = []
    wrong: list[str] = []
    for name, size in sorted(cached.items()):
        entry = index.get(name)
        if entry is None:
            continue
        (candidates if entry.size == size else wrong).append(name)
    return candidates, wrong


def _index_by_filename(entries: Iterable[IndexEntry]) -> dict[str, IndexEntry]:
    """File name -> entry; a name two indexes list with different hashes is left out
    (apt could take either: neither is offered from the cache)."""
    out: dict[str, IndexEntry] = {}
    clash: set[str] = set()
    for e in entries:
        old = out.setdefault(e.filename, e)
        if (old.sha256, old.size) != (e.sha256, e.size):
            clash.add(e.filename)
    for name in clash:
        del out[name]
    return out


def plan_trim(files: Iterable[CachedDeb], max_bytes: int) -> list[CachedDeb]:
    """The files to remove so that the pool holds at most ``max_bytes``:
    least recently used first (oldest ``mtime``; ties by name)."""
    ordered = sorted(files, key=lambda f: (f.mtime, f.path.name))
    total = sum(f.size for f in ordered)
    out = []
    for f in ordered:
        if total <= max_bytes:
            break
        out.append(f)
        total -= f.size
    return out


@dataclass(frozen=True)
class SeedResult:
    """What a seed offered apt: ``seeded`` files of ``seeded_bytes``; ``rejected``:
    files of the pool that the verified index lists but whose size or sha256 differ."""

    seeded: int
    seeded_bytes: int
    rejected: tuple[str, ...]


def _link_or_copy(src: Path, dest: Path) -> None:
    try:
        os.link(src, dest)
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK):
            raise
        shutil.copyfile(src, dest)


class DebCache:
    """The package cache at ``path`` (see the module docstring for its layout).

    Args:
        path: the cache directory (created when first used).
        max_bytes: :meth:`trim` keeps the pool at most this big (0: no limit).

    Raises:
        InputError: ``path`` exists and is not a directory, or ``max_bytes`` < 0.
    """

    def __init__(self, path: Path, max_bytes: int = DEFAULT_MAX_BYTES):
        self.path = Path(os.path.abspath(path))
        if (self.path.exists() or self.path.is_symlink()) and not self.path.is_dir():
            raise InputError(f"package cache {self.path} is not a directory",
                             resolution="give a directory (--deb-cache DIR) or --no-deb-cache")
        if max_bytes < 0:
            raise InputError(f"package cache size {max_bytes} is negative",
                             resolution="give a size such as 4G (0: no limit)")
        self.max_bytes = max_bytes
        self.pool = self.path / "pool"
        self.tmp = self.path / "tmp"
        self.lock = FileLock(self.path / "lock", f"package cache {self.path}")

    def _create(self) -> None:
        for d in (self.pool, self.tmp):
            d.mkdir(parents=True, exist_ok=True)

    # -- reading ---------------------------------------------------------

    def path_of(self, package: str, version: str, architecture: str) -> Path | None:
        """The cached ``.deb`` of a package version, if the pool has it.

        The file was verified when a compose last used it, not now: check it
        against an index before trusting it (what :meth:`seed` does).
        """
        p = self.pool / deb_filename(package, version, architecture)
        return p if p.is_file() else None

    def files(self) -> list[CachedDeb]:
        """Every file of the pool (size in bytes, mtime = last use)."""
        out = []
        try:
            entries = list(os.scandir(self.pool))
        except FileNotFoundError:
            return []
        for e in entries:
            if e.name.endswith(".deb") and e.is_file(follow_symlinks=False):
                st = e.stat(follow_symlinks=False)
                out.append(CachedDeb(Path(e.path), st.st_size, st.st_mtime))
        return sorted(out, key=lambda f: f.path.name)

    def size(self) -> int:
        """Bytes in the pool."""
        return sum(f.size for f in self.files())

    # -- the hooks -------------------------------------------------------

    def mmdebstrap_args(self) -> list[str]:
        """mmdebstrap options that seed the rootfs from the cache and add what it
        downloaded (the hooks run :func:`hook_main` with this Python)."""
        self._create()
        src = Path(atoll.__file__).resolve().parent.parent
        py = (f"env PYTHONPATH={shlex.quote(str(src))} {shlex.quote(sys.executable)} "
              f"-m atoll.compose.debcache")
        where = shlex.quote(str(self.path))
        return [
            "--skip=essential/unlink",  # essential .debs stay in archives/ for the collect hook
            f'--setup-hook={py} seed {where} "$1"',
            f'--customize-hook={py} collect {where} "$1"',
        ]

    def seed(self, rootfs: Path, apt_env: Mapping[str, str]) -> SeedResult:
        """Update ``rootfs``'s package lists and link the verified cached ``.deb``
        files into its ``/var/cache/apt/archives`` (the setup hook).

        Args:
            rootfs: the tree mmdebstrap is building.
            apt_env: environment for apt (``APT_CONFIG``: mmdebstrap's apt config).

        Raises:
            ToolError: ``apt-get update`` failed (e.g. a bad signature).
        """
        self._create()
        run(["apt-get", "update", "--error-on=any"], env=dict(apt_env),
            what="apt-get update (package cache seed)", timeout=1800,
            resolution="check the mirror and its signature (apt's E: lines above)")
        with self.lock.shared():
            cached = {f.path.name: f.size for f in self.files()}
            wanted = {n.split("_", 1)[0] for n in cached}
            index = _index_by_filename(
                e for data in _package_indexes(apt_env) for e in parse_packages(data, wanted))
            candidates, rejected = plan_seed(index, cached)
            with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
                digests = dict(zip(candidates,
                                   pool.map(lambda n: sha256_file(self.pool / n), candidates),
                                   strict=True))
            archives = Path(rootfs) / ARCHIVES
            archives.mkdir(parents=True, exist_ok=True)
            n = nbytes = 0
            now = time.time()
            for name in candidates:
                if digests[name] != index[name].sha256:
                    rejected.append(name)
                    continue
                dest = archives / name
                if not dest.exists():
                    _link_or_copy(self.pool / name, dest)
                os.utime(self.pool / name, (now, now))  # last use, for trim()
                n += 1
                nbytes += cached[name]
        for name in rejected:
            log.warning("package cache: %s does not match the signed index: not used", name)
        return SeedResult(n, nbytes, tuple(sorted(rejected)))

    def collect(self, rootfs: Path) -> int:
        """Add the ``.deb`` files of ``rootfs``'s ``/var/cache/apt/archives`` that the
        pool lacks (or holds with other content); returns how many were added."""
        self._create()
        archives = Path(rootfs) / ARCHIVES
        added = 0
        with self.lock.shared():
            for e in sorted(os.scandir(archives), key=lambda e: e.name):
                if (not e.name.endswith(".deb") or parse_deb_filename(e.name) is None
                        or not e.is_file(follow_symlinks=False)):
                    continue
                src = Path(e.path)
                dest = self.pool / e.name
                try:
                    st, dst = src.stat(), dest.stat()
                    if (st.st_dev, st.st_ino) == (dst.st_dev, dst.st_ino) or (
                            st.st_size == dst.st_size and sha256_file(src) == sha256_file(dest)):
                        continue
                except FileNotFoundError:
                    pass
                tmp = self.tmp / f".{e.name}.{os.getpid()}"
                tmp.unlink(missing_ok=True)
                _link_or_copy(src, tmp)
                os.chmod(tmp, 0o644)
                os.replace(tmp, dest)
                added += 1
        return added

    def trim(self) -> list[Path]:
        """Remove the least recently used files beyond ``max_bytes`` and stale
        ``tmp/`` files; returns the removed pool files. Does nothing when another
        compose holds the cache (it trims when it finishes); a failure to remove
        is logged, not raised."""
        if not self.pool.is_dir():
            return []
        try:
            with self.lock.exclusive(wait=0):
                now = time.time()
                for e in os.scandir(self.tmp) if self.tmp.is_dir() else []:
                    if now - e.stat(follow_symlinks=False).st_mtime > _TMP_GRACE:
                        os.unlink(e.path)
                if not self.max_bytes:
                    return []
                drop = plan_trim(self.files(), self.max_bytes)
                for f in drop:
                    f.path.unlink(missing_ok=True)
                if drop:
                    log.info("package cache: removed %d least recently used files (%d MiB)",
                             len(drop), sum(f.size for f in drop) >> 20)
                return [f.path for f in drop]
        except BusyError:
            return []
        except OSError as exc:  # a cache problem never fails the compose that used it
            log.warning("package cache %s: not trimmed: %s", self.path, exc)
            return []


def _package_indexes(apt_env: Mapping[str, str]) -> Iterator[bytes]:
    """The uncompressed Packages indexes apt holds for the config in ``apt_env``
    (each verified by ``apt-get update`` against the signed Release)."""
    proc = run(["apt-get", "indextargets", "--format", "$(FILENAME)", "Created-By: Packages"],
               env=dict(apt_env), what="apt-get indextargets")
    for line in proc.stdout.decode().splitlines():
        path = line.strip()
        if path and os.path.exists(path):
            yield run(["/usr/lib/apt/apt-helper", "cat-file", path], env=dict(apt_env),
                      what=f"read {os.path.basename(path)}", timeout=600).stdout


def hook_main(argv: list[str] | None = None) -> int:
    """``python -m atoll.compose.debcache seed|collect CACHE ROOTFS`` (mmdebstrap's hooks)."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 3 or args[0] not in ("seed", "collect"):
        print("usage: python -m atoll.compose.debcache seed|collect CACHE ROOTFS",
              file=sys.stderr)
        return 2
    action, cache_dir, rootfs = args
    cache = DebCache(Path(cache_dir))
    try:
        if action == "seed":
            apt_config = os.environ.get("MMDEBSTRAP_APT_CONFIG", "")
            env = {"APT_CONFIG": apt_config} if apt_config else {}
            res = cache.seed(Path(rootfs), env)
            print(f"atoll: package cache: {res.seeded} .deb files ({res.seeded_bytes >> 20} MiB) "
                  f"verified against the signed index and reused"
                  + (f"; {len(res.rejected)} did not match and are not used"
                     if res.rejected else ""), file=sys.stderr)
        else:
            n = cache.collect(Path(rootfs))
            print(f"atoll: package cache: {n} new .deb files kept", file=sys.stderr)
    except ToolError as exc:
        print(f"atoll: package cache: {exc.brief}\n{exc.stderr}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"atoll: package cache {cache_dir}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(hook_main())

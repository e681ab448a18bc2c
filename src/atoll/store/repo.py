"""The repository: objects, refs, transactions, and committing a directory.

On-disk layout::

    repo/
    ├── config.json                 {"version": 1, "mode": "bare"}; "verity": true once
    │                               every file object is sealed (atoll.store.seal)
    ├── lock                        flock: shared by writers, exclusive for gc (atoll.core.lock)
    ├── objects/ab/<62 hex>.file    file object: the file itself, with its mode,
    │                               owner and xattrs (a symlink is a symlink), so
    │                               checkouts are hardlinks; a seal mark (mtime) and, where the
    │                               filesystem can, fs-verity once verified
    ├── objects/ab/<62 hex>.dirtree canonical JSON
    ├── objects/ab/<62 hex>.commit  canonical JSON
    ├── refs/heads/<name>           a branch: commit id + newline
    ├── refs/remotes/<remote>/<ch>  what `update download` pulled (delivery layer)
    ├── refs/deploy/<deployment>    kept by the deploy layer so gc keeps deployed commits
    ├── quarantine/<id>.<kind>.<t>  objects that failed verification (kept for inspection;
    │                               gc empties it)
    └── tmp/                        0700; staging: txn-*/ (a transaction's objects),
                                    compose-*/, publish-*/; each staging dir is flock'ed
                                    by its writer, so cleaners skip dirs in use

Write order (OSTree's): a transaction writes its new objects into its own
staging dir in ``tmp/`` (each created 0600, then given its final owner, mode
and xattrs), syncs the filesystem once, renames them into ``objects/``
(files, then dirtrees, then commits) and syncs again. An object in
``objects/`` is therefore always complete and durable before any ref can
point at it, and a power cut leaves at worst garbage in ``tmp/``.

Objects are verified once, as they enter: every way in hashes the content it
writes, then seals the object (:mod:`atoll.store.seal`: its seal mtime, and fs-verity
where the filesystem supports it). Deploy checks the seal of each object (one
``lstat``, and one ``ioctl`` on a sealing store) and re-hashes only objects
whose seal is broken; ``fsck`` re-hashes everything.

An object that fails verification anywhere (deploy, pull, fsck) is moved to
``quarantine/``; the next commit or pull that needs it writes it again.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import stat
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from atoll.core import canonjson
from atoll.core.errors import CorruptObjectError, InputError, StoreError
from atoll.core.faults import crash_point
from atoll.core.fsutil import (
    atomic_write,
    disk_full,
    fsync_dir,
    read_xattrs,
    syncfs,
)
from atoll.core.lock import FileLock
from atoll.core.progress import progress
from atoll.core.text import printable
from atoll.store import seal as _seal
from atoll.store.objects import (
    Commit,
    DirEntry,
    DirMeta,
    FileMeta,
    dirtree_bytes,
    file_hasher,
    is_object_id,
    parse_dirtree,
)
from atoll.store.packages import read_manifest
from atoll.store.tree import Tree, scan

__all__ = ["KINDS", "TMP_GRACE", "Repo", "read_xattrs", "syncfs"]

log = logging.getLogger("atoll.store")

KINDS = ("file", "dirtree", "commit")
_REF_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)*$")
REF_PART_MAX = 200  # a ref's part is a file name (255 bytes), plus a temp file's affixes
REF_MAX = 1000
REF_NAMESPACES = ("heads", "remotes", "deploy")  # REV may name a ref by its namespace
REV_FORMS = ("a branch (site/db), REMOTE:CHANNEL (origin:site/db), a commit id or a prefix "
             "of at least 8 hex digits, or REV~N (its N-th ancestor); list refs with "
             "`atoll store refs --all`")
_CHUNK = 1 << 20
WORKERS = max(2, os.cpu_count() or 2)
TMP_GRACE = 120.0  # seconds: an unlocked tmp/ entry younger than this may be in use
REPAIR_HINT = ("on a host, run `atoll update download` or `atoll store fsck --repair`; "
               "in a build repository, commit or compose the tree again")


def write_file_meta(path: str, meta: FileMeta) -> None:
    """Give a freshly created file or symlink its owner, mode and xattrs (chown first:
    it clears setuid bits)."""
    os.lchown(path, meta.uid, meta.gid)
    if meta.kind == "reg":
        os.chmod(path, meta.mode)
    for k, v in meta.xattrs.items():
        os.setxattr(path, k, v, follow_symlinks=False)


class _NotRegular(OSError):
    pass


def _read_regular(path: Path | str) -> bytes:
    """The bytes of a regular file; a fifo, socket or device is refused (never blocks)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _NotRegular(f"{path}: not a regular file")
        want = max(65536, st.st_size + 1)
        data = os.read(fd, want)
        if len(data) < want:  # a short read of a regular file is its end
            return data
        parts = [data]  # it grew since the fstat
        while chunk := os.read(fd, want):
            parts.append(chunk)
        return b"".join(parts)
    finally:
        os.close(fd)


def _copy_hashing(src: str, dest: str, h: Any) -> int:
    """Copy ``src`` to a new file ``dest`` (created 0600), feeding every byte copied to
    ``h``; returns the bytes copied."""
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    n = 0
    try:
        with open(src, "rb") as fh:
            while chunk := fh.read(_CHUNK):
                h.update(chunk)
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view):]
                n += len(chunk)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(dest)
        raise
    os.close(fd)
    return n


@contextlib.contextmanager
def locked_dir(parent: Path, prefix: str) -> Iterator[Path]:
    """A new private (0700) directory in ``parent``, flock'ed for as long as it is used
    and removed afterwards, whatever happens. Cleaners skip it while it is locked."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
        os.close(fd)


@dataclass
class _Txn:
    """Objects staged by one transaction, not yet in ``objects/``."""

    dir: Path
    staged: dict[tuple[str, str], Path] = field(default_factory=dict)
    mutex: threading.Lock = field(default_factory=threading.Lock)

    def path_for(self, oid: str, kind: str) -> Path:
        return self.dir / f"{oid}.{kind}"

    def tmp_for(self, oid: str, kind: str) -> str:
        return os.fspath(self.dir / f".{oid}.{kind}.{threading.get_ident()}")

    def add(self, tmp: str, oid: str, kind: str) -> None:
        """Move a complete temp file to its staged name (another thread may have staged
        the same object: same content, the rename replaces it harmlessly)."""
        dest = self.path_for(oid, kind)
        os.rename(tmp, dest)
        with self.mutex:
            self.staged[(oid, kind)] = dest


class Repo:
    """A content-addressed repository at ``path``."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.objects = self.path / "objects"
        self._objects_s = os.fspath(self.objects)  # paths as strings on hot paths
        self.refs_dir = self.path / "refs"
        self.tmp = self.path / "tmp"
        self.quarantine_dir = self.path / "quarantine"
        self.lock = FileLock(self.path / "lock", f"repository {self.path}")
        self._txn: _Txn | None = None
        self._txn_depth = 0
        self._can_seal: bool | None = None  # fs-verity here? None: not tried yet
        self._sealing: bool | None = None    # config.json's "verity", read once

    # -- lifecycle -----------------------------------------------------

    @classmethod
    def create(cls, path: Path) -> Repo:
        repo = cls(path)
        if (repo.path / "config.json").exists():
            return cls.open(path)
        repo.path.mkdir(parents=True, exist_ok=True)
        for d in (repo.objects, repo.refs_dir / "heads"):
            d.mkdir(parents=True, exist_ok=True)
        repo.tmp.mkdir(mode=0o700, exist_ok=True)
        atomic_write(repo.path / "config.json", canonjson.dumps({"mode": "bare", "version": 1}))
        return repo

    @classmethod
    def open(cls, path: Path) -> Repo:
        repo = cls(path)
        if not (repo.path / "config.json").is_file():
            raise InputError(
                f"{path}: not an atoll repository",
                resolution="create one with `atoll store init --repo DIR` or compose into it",
            )
        with contextlib.suppress(PermissionError):  # a reader without write access
            repo.tmp.mkdir(mode=0o700, exist_ok=True)
            if stat.S_IMODE(os.stat(repo.tmp).st_mode) != 0o700:
                os.chmod(repo.tmp, 0o700)  # repositories made before tmp/ was private
        return repo

    def config(self) -> dict[str, Any]:
        """``config.json`` (``{}`` when unreadable)."""
        try:
            data = json.loads((self.path / "config.json").read_bytes())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    @property
    def sealing(self) -> bool:
        """Whether every file object carries fs-verity (``"verity": true`` in
        config.json, set by ``fsck`` once it has sealed them all): deploy then
        re-hashes any object without it."""
        if self._sealing is None:
            self._sealing = self.config().get("verity") is True
        return self._sealing

    def set_sealing(self, on: bool) -> None:
        config = self.config() | {"verity": on}
        atomic_write(self.path / "config.json", canonjson.dumps(config))
        self._sealing = on

    @property
    def can_seal(self) -> bool | None:
        """Whether this store's filesystem takes fs-verity (None: not tried yet)."""
        return self._can_seal

    @contextlib.contextmanager
    def staging_dir(self, prefix: str) -> Iterator[Path]:
        """A private, locked directory in ``tmp/`` (compose and publish build there, on
        the store's filesystem, so files can be hardlinked in)."""
        with locked_dir(self.tmp, prefix) as path:
            yield path

    def clean_tmp(self, older_than: float = TMP_GRACE) -> int:
        """Remove staging leftovers of killed processes; returns how many.

        An entry is removed when nobody holds its lock and it is older than
        ``older_than`` seconds (the grace period covers a writer between creating
        its directory and locking it).
        """
        n = 0
        now = time.time()
        try:
            entries = list(os.scandir(self.tmp))
        except FileNotFoundError:
            return 0
        for entry in entries:
            try:
                if now - entry.stat(follow_symlinks=False).st_mtime < older_than:
                    continue
                if entry.is_dir(follow_symlinks=False):
                    fd = os.open(entry.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    except BlockingIOError:
                        continue  # in use
                    finally:
                        os.close(fd)
                    shutil.rmtree(entry.path, ignore_errors=True)
                else:
                    os.unlink(entry.path)
                n += 1
            except FileNotFoundError:
                continue
        return n

    # -- transactions --------------------------------------------------

    @contextlib.contextmanager
    def transaction(self, what: str = "write") -> Iterator[None]:
        """Stage new objects, then make them durable and visible at once.

        Holds the repository lock (shared) throughout. Nested calls join the
        outer transaction. On error nothing reaches ``objects/``.

        Raises:
            HostStateError: the disk filled (staged objects are removed).
            BusyError: ``store gc`` holds the repository.
        """
        with self.lock.shared():
            if self._txn is not None:
                self._txn_depth += 1
                try:
                    yield
                finally:
                    self._txn_depth -= 1
                return
            try:
                with locked_dir(self.tmp, "txn-") as tdir:
                    self._txn = _Txn(tdir)
                    try:
                        yield
                        self._publish(self._txn)
                    finally:
                        self._txn = None
            except OSError as exc:
                full = disk_full(exc, self.path, what)
                if full is not None:
                    raise full from exc
                raise

    def _publish(self, txn: _Txn) -> None:
        if not txn.staged:
            return
        crash_point("txn:staged")
        syncfs(self.path)  # every staged object is durable before it gets its name
        crash_point("txn:synced")
        order = {"file": 0, "dirtree": 1, "commit": 2}
        made: set[str] = set()
        for (oid, kind), src in sorted(txn.staged.items(), key=lambda kv: order[kv[0][1]]):
            dest = self.object_path(oid, kind)
            if oid[:2] not in made:
                dest.parent.mkdir(exist_ok=True)
                made.add(oid[:2])
            if os.path.lexists(dest):
                continue  # another writer placed the same object meanwhile
            os.rename(src, dest)
        crash_point("txn:placed")
        syncfs(self.path)  # the names are durable before any ref points at them

    def _stage(self) -> _Txn:
        if self._txn is None:
            raise RuntimeError("objects are written inside Repo.transaction()")
        return self._txn

    # -- objects -------------------------------------------------------

    def object_path(self, oid: str, kind: str) -> Path:
        return self.objects / oid[:2] / f"{oid[2:]}.{kind}"

    def _locate(self, oid: str, kind: str) -> Path:
        """Where the object is: ``objects/``, or staged in the running transaction."""
        return Path(self._locate_s(oid, kind))

    def _locate_s(self, oid: str, kind: str) -> str:
        """:meth:`_locate` as a string (no ``Path`` built: deploy asks for every object)."""
        txn = self._txn
        if txn is not None:
            staged = txn.staged.get((oid, kind))
            if staged is not None:
                return os.fspath(staged)
        return f"{self._objects_s}/{oid[:2]}/{oid[2:]}.{kind}"

    def has(self, oid: str, kind: str) -> bool:
        """True when the object is in ``objects/`` (complete, by the write order) or staged
        in this repository's running transaction."""
        txn = self._txn
        if txn is not None and (oid, kind) in txn.staged:
            return True
        return os.path.lexists(self.object_path(oid, kind))

    def quarantine(self, oid: str, kind: str, reason: str) -> bool:
        """Move a damaged object out of ``objects/`` (into ``quarantine/``); returns
        whether it was there. The next commit or pull that needs it writes it again."""
        src = self.object_path(oid, kind)
        self.quarantine_dir.mkdir(mode=0o700, exist_ok=True)
        dest = self.quarantine_dir / f"{oid}.{kind}.{time.time_ns()}"
        try:
            os.rename(src, dest)
        except FileNotFoundError:
            return False
        log.warning("store: %s object %s failed verification (%s): moved to %s",
                    kind, oid, reason, self.quarantine_dir)
        return True

    def quarantined(self) -> list[str]:
        """Names of the quarantined objects (``<id>.<kind>.<time_ns>``)."""
        try:
            return sorted(os.listdir(self.quarantine_dir))
        except FileNotFoundError:
            return []

    def write_meta_object(self, data: bytes, kind: str) -> str:
        """Stage a dirtree or commit object; returns its id. An existing copy that does
        not match its id is quarantined and written again."""
        oid = hashlib.sha256(data).hexdigest()
        if self.has(oid, kind):
            try:
                self.read_meta_object(oid, kind)
                return oid
            except StoreError:
                pass  # damaged (now quarantined) or gone: write it again
        txn = self._stage()
        tmp = txn.tmp_for(oid, kind)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o644)
        txn.add(tmp, oid, kind)
        return oid

    def raw_meta_object(self, oid: str, kind: str) -> bytes:
        """The stored bytes of a dirtree or commit object, unverified (b"" when what is
        stored is not a regular file: a fifo, a directory, a symlink never blocks a reader).

        Raises:
            StoreError: the object is missing.
        """
        try:
            return _read_regular(self._locate_s(oid, kind))
        except FileNotFoundError:
            raise StoreError(
                f"{kind} object {oid} is missing from {self.path}",
                resolution=REPAIR_HINT) from None
        except _NotRegular:
            return b""
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.EISDIR, errno.ENOTDIR, errno.ENXIO):
                return b""
            raise

    def read_meta_object(self, oid: str, kind: str) -> bytes:
        """The bytes of a dirtree or commit object, verified against its id.

        Raises:
            StoreError: the object is missing.
            CorruptObjectError: it does not match its id (it is quarantined).
        """
        data = self.raw_meta_object(oid, kind)
        if hashlib.sha256(data).hexdigest() != oid:
            self.quarantine(oid, kind, "content does not match its id")
            raise CorruptObjectError(
                f"{kind} object {oid} in {self.path} is damaged (moved to quarantine)",
                resolution=REPAIR_HINT)
        return data

    def read_dirtree(self, oid: str) -> list[DirEntry]:
        """Raises: StoreError (missing), CorruptObjectError (damaged or malformed)."""
        data = self.read_meta_object(oid, "dirtree")
        try:
            return parse_dirtree(data)
        except CorruptObjectError as exc:
            raise CorruptObjectError(f"dirtree object {oid} is malformed: {exc.brief}",
                                     resolution=REPAIR_HINT) from exc

    def read_commit(self, oid: str) -> Commit:
        """Raises: StoreError (missing), CorruptObjectError (damaged or malformed)."""
        data = self.read_meta_object(oid, "commit")
        try:
            return Commit.from_bytes(data)
        except CorruptObjectError as exc:
            raise CorruptObjectError(f"commit object {oid} is malformed: {exc.brief}",
                                     resolution=REPAIR_HINT) from exc

    def _existing_matches(self, oid: str, meta: FileMeta, size: int) -> bool:
        """Whether the stored copy of a file object looks whole (type, size, owner, mode).

        A cheap check (one lstat) that catches empty and short objects, e.g. from a
        power cut under an older atoll or a damaged disk; a wrong byte is caught by
        verification (deploy, fsck).
        """
        path = self._locate(oid, "file")
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return False
        kind = "lnk" if stat.S_ISLNK(st.st_mode) else ("reg" if stat.S_ISREG(st.st_mode) else "")
        ok = (kind == meta.kind and st.st_size == size and st.st_uid == meta.uid
              and st.st_gid == meta.gid
              and (kind == "lnk" or stat.S_IMODE(st.st_mode) == meta.mode))
        if not ok:
            self.quarantine(oid, "file", f"size {st.st_size}, expected {size}" if
                            st.st_size != size else "owner, mode or type differs from its id")
        return ok

    def write_file_object(self, src: str, st: os.stat_result, xattrs: dict[str, bytes],
                          *, link: bool = False) -> tuple[str, int]:
        """Hash and stage one file or symlink; returns (id, bytes written)."""
        meta = FileMeta.from_stat(st, xattrs)
        h = file_hasher(meta)
        if meta.kind == "lnk":
            target = os.readlink(src)
            h.update(os.fsencode(target))
            oid = h.hexdigest()
            if self.has(oid, "file") and self._existing_matches(
                    oid, meta, len(os.fsencode(target))):
                return oid, 0
            txn = self._stage()
            tmp = txn.tmp_for(oid, "file")
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            os.symlink(target, tmp)
            write_file_meta(tmp, meta)
            self._mark_verified(tmp, oid, "lnk")
            txn.add(tmp, oid, "file")
            return oid, 0
        with open(src, "rb") as fh:
            while chunk := fh.read(_CHUNK):
                h.update(chunk)
        oid = h.hexdigest()
        if self.has(oid, "file") and self._existing_matches(oid, meta, st.st_size):
            return oid, 0
        txn = self._stage()
        tmp = txn.tmp_for(oid, "file")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if link and st.st_size:
            # The caller hands over a throwaway tree (compose): hardlink, no copy.
            try:
                os.link(src, tmp)
                self._mark_verified(tmp, oid, "reg")  # its content was just hashed
                txn.add(tmp, oid, "file")
                return oid, st.st_size
            except OSError as exc:
                if exc.errno not in (errno.EMLINK, errno.EXDEV):
                    raise
        # The id is computed again from the bytes actually copied: a file that changes
        # while it is committed (a log, a database) gives an object that matches its id.
        h = file_hasher(meta)
        size = _copy_hashing(src, tmp, h)
        copied = h.hexdigest()
        if copied != oid:
            log.warning("store: %s changed while it was committed; committing what was "
                        "read", printable(src))
            oid = copied
            if self.has(oid, "file"):
                os.unlink(tmp)
                return oid, 0
            tmp2 = txn.tmp_for(oid, "file")
            os.rename(tmp, tmp2)
            tmp = tmp2
        write_file_meta(tmp, FileMeta(meta.kind, meta.mode, meta.uid, meta.gid, meta.xattrs))
        self._mark_verified(tmp, oid, "reg")
        txn.add(tmp, oid, "file")
        return oid, size

    def import_file_object(self, oid: str, meta: FileMeta, content: bytes) -> None:
        """Stage a file object received from elsewhere, verifying its id first.

        Raises:
            CorruptObjectError: the content does not match ``oid``.
        """
        h = file_hasher(meta)
        h.update(content)
        if h.hexdigest() != oid:
            raise CorruptObjectError(f"file object {oid}: content does not match its id")
        if self.has(oid, "file") and self._existing_matches(oid, meta, len(content)):
            return
        txn = self._stage()
        tmp = txn.tmp_for(oid, "file")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if meta.kind == "lnk":
            os.symlink(os.fsdecode(content), tmp)
        else:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(content)
        write_file_meta(tmp, meta)
        self._mark_verified(tmp, oid, meta.kind)
        txn.add(tmp, oid, "file")

    def import_file_stream(self, oid: str, meta: FileMeta, size: int,
                           pieces: Iterable[bytes | memoryview]) -> None:
        """:meth:`import_file_object` for content that arrives in pieces (a delta or
        pack being decompressed), never whole in memory: each piece is hashed and
        appended to a private temp file in the transaction's staging directory; only
        when ``size`` bytes came and their id is ``oid`` does that file become a
        staged object. ``pieces`` is read only as far as needed: not at all when the
        store already holds a whole copy.

        Raises:
            CorruptObjectError: the content does not match ``oid`` or ``size`` (the
                temp file is removed).
        """
        if meta.kind == "lnk":  # a symlink's target: a few bytes
            self.import_file_object(oid, meta, b"".join(pieces))
            return
        if self.has(oid, "file") and self._existing_matches(oid, meta, size):
            return
        txn = self._stage()
        tmp = txn.tmp_for(oid, "file")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        h = file_hasher(meta)
        n = 0
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            with os.fdopen(fd, "wb") as fh:
                for piece in pieces:
                    n += len(piece)
                    if n > size:
                        break
                    h.update(piece)
                    fh.write(piece)
                    del piece  # not held while the next one is made
            if n != size or h.hexdigest() != oid:
                raise CorruptObjectError(f"file object {oid}: content does not match its id")
            write_file_meta(tmp, meta)
            self._mark_verified(tmp, oid, meta.kind)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        txn.add(tmp, oid, "file")

    def file_path(self, oid: str) -> Path:
        """Where a file object's bytes can be read: in ``objects/``, or staged by the
        running transaction (read it in pieces; a symlink object is a symlink)."""
        return self._locate(oid, "file")

    def file_meta(self, oid: str) -> FileMeta:
        path = self._locate(oid, "file")
        st = os.lstat(path)
        return FileMeta.from_stat(st, read_xattrs(path))

    def read_file_content(self, oid: str) -> bytes:
        path = self._locate(oid, "file")
        if os.path.islink(path):
            return os.fsencode(os.readlink(path))
        return path.read_bytes()

    def _mark_verified(self, path: str, oid: str, kind: str) -> None:
        """Seal a file object whose content has just been verified (written from
        hashed bytes, or re-hashed): its seal mtime (:func:`atoll.store.seal.
        seal_mtime_ns`), and fs-verity on a regular file where the filesystem can
        (tried once per repository, then remembered).

        fs-verity first: enabling it writes the Merkle tree, and ext4 then sets the
        file's mtime to the current time (seen in Debian's 6.1 kernel), which
        would undo the seal mtime.

        Raises:
            OSError: sealing failed for another reason than lack of support (the
                disk is full, an I/O error); the object is left unsealed.
        """
        if kind == "reg" and self._can_seal is not False:
            self._can_seal = _seal.seal(path) is True
        _seal.stamp(path, oid)

    def is_sealed(self, oid: str) -> bool:
        """Whether a file object is unchanged since it was verified, by its seal
        alone (no hashing): a regular file or symlink with its seal mtime (which
        also covers its mode, owner and group) and, on a sealing store
        (:attr:`sealing`), a regular file carrying fs-verity; symlinks there are
        never taken as sealed (fs-verity cannot cover them; re-reading one is as
        cheap as this check). False when missing. A False object needs
        :meth:`verify_file`, not rejection. Extended attributes are not covered:
        fsck re-hashes them."""
        return self.sealed_stat(oid) is not None

    def sealed_stat(self, oid: str, objects_fd: int | None = None
                    ) -> os.stat_result | _seal.ObjectStat | None:
        """The ``lstat`` of a file object when it is sealed (:meth:`is_sealed`), else
        None. Where objects are sealed with fs-verity, one ``statx`` reads both.

        ``objects_fd``: an open descriptor of :attr:`objects`, for a caller that checks
        many objects (deploy checks every object of a tree): the lookup is then of two
        path components, not of the whole path. Not for objects staged in a running
        transaction."""
        if objects_fd is None:
            path, dir_fd = self._locate_s(oid, "file"), None
        else:
            path, dir_fd = f"{oid[:2]}/{oid[2:]}.file", objects_fd
        if self.sealing:  # only a regular file can carry fs-verity
            ost = _seal.stat_object(path, dir_fd)
            if (ost is None or not ost.verity or not stat.S_ISREG(ost.st_mode)
                    or ost.st_mtime_ns != _seal.seal_mtime_ns(oid, ost)):
                return None
            return ost
        try:
            st = os.lstat(path, dir_fd=dir_fd)
        except OSError:
            return None
        if st.st_mtime_ns != _seal.seal_mtime_ns(oid, st):
            return None
        return st if stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode) else None

    def reverify(self, oid: str) -> bool:
        """Re-hash a file object (:meth:`verify_file`); when it is whole, make sure it
        is sealed (its seal mtime; fs-verity where the filesystem can). Returns whether it
        is whole. A failure to seal (no space for the Merkle tree, a writer holding
        the file open) leaves a whole object unsealed, re-hashed again next time."""
        if not self.verify_file(oid):
            return False
        crash_point("seal:verified")
        path = os.fspath(self._locate(oid, "file"))
        try:
            st = os.lstat(path)
            kind = "lnk" if stat.S_ISLNK(st.st_mode) else "reg"
            verity = kind == "reg" and _seal.sealed(path)
            if verity:
                self._can_seal = True
            if st.st_mtime_ns != _seal.seal_mtime_ns(oid, st) or (
                    kind == "reg" and not verity and self._can_seal is not False):
                self._mark_verified(path, oid, kind)
        except OSError as exc:
            log.debug("store: could not seal %s: %s", oid, exc)
        return True

    def has_verity(self, oid: str) -> bool:
        """Whether a file object carries fs-verity."""
        return _seal.sealed(os.fspath(self._locate(oid, "file")))

    def verify_file(self, oid: str) -> bool:
        """Re-hash one file object; True when it matches its id (False when missing)."""
        path = self._locate(oid, "file")
        try:
            st = os.lstat(path)
            meta = FileMeta.from_stat(st, read_xattrs(path))
            h = file_hasher(meta)
            if meta.kind == "lnk":
                h.update(os.fsencode(os.readlink(path)))
            else:
                with open(path, "rb") as fh:
                    while chunk := fh.read(_CHUNK):
                        h.update(chunk)
        except (OSError, StoreError):
            return False
        return bool(h.hexdigest() == oid)

    def iter_objects(self) -> Iterator[tuple[str, str]]:
        """Every (id, kind) in ``objects/``."""
        if not self.objects.is_dir():
            return
        for sub in sorted(os.scandir(self.objects), key=lambda e: e.name):
            if not sub.is_dir() or len(sub.name) != 2:
                continue
            for entry in os.scandir(sub.path):
                stem, _, kind = entry.name.partition(".")
                if kind in KINDS:
                    yield sub.name + stem, kind

    # -- refs ----------------------------------------------------------

    @staticmethod
    def check_ref(name: str) -> str:
        """Raises: InputError: not a ref name atoll can store and resolve again (the
        characters, a part longer than a file name may be, a namespace's name first)."""
        if not _REF_RE.fullmatch(name) or ".." in name:
            raise InputError(f"invalid ref name '{printable(name)}'",
                             resolution="use letters, digits, '.', '_', '-' and '/' separators")
        longest = max(len(part.encode()) for part in name.split("/"))
        if longest > REF_PART_MAX or len(name) > REF_MAX:
            raise InputError(f"ref name too long ({len(name)} characters, a part of "
                             f"{longest}): '{printable(name[:40])}...'",
                             resolution=f"at most {REF_PART_MAX} characters between '/' and "
                             f"{REF_MAX} in all")
        first, sep, _ = name.partition("/")
        if sep and first in REF_NAMESPACES:
            raise InputError(f"invalid ref name '{printable(name)}': '{first}/' names a "
                             "namespace of refs, so the ref could not be named again",
                             resolution="choose a name that does not start with heads/, "
                             "remotes/ or deploy/")
        return name

    def _ref_path(self, name: str, namespace: str = "heads") -> Path:
        return self.refs_dir / namespace / self.check_ref(name)

    def _old_ref_path(self, name: str, namespace: str) -> Path:
        """The path of a ref to delete: names an older atoll let through (a namespace's
        name first) can still be deleted; nothing outside ``refs/`` can."""
        if not _REF_RE.fullmatch(name) or ".." in name:
            self.check_ref(name)  # raises
        return self.refs_dir / namespace / name

    def set_ref(self, name: str, commit: str | None, namespace: str = "heads") -> None:
        """Point a ref at ``commit`` (None: delete it), atomically and durably.

        Objects reach ``objects/`` only durably (see the module docstring), so the
        ref never points at an object a power cut could lose.

        Raises:
            StoreError: the commit object is missing.
        """
        path = self._ref_path(name, namespace) if commit else self._old_ref_path(name, namespace)
        with self.lock.shared():
            if commit is None:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                    fsync_dir(path.parent)
                    self._prune_ref_dirs(path.parent, self.refs_dir / namespace)
                return
            if not self.has(commit, "commit"):
                raise StoreError(f"cannot point ref {name} at missing commit {commit}")
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(path, commit.encode() + b"\n")

    @staticmethod
    def _prune_ref_dirs(d: Path, top: Path) -> None:
        while d != top and d.is_relative_to(top):
            try:
                d.rmdir()
            except OSError:
                return
            d = d.parent

    def refs(self, namespace: str = "heads") -> dict[str, str]:
        base = self.refs_dir / namespace
        out: dict[str, str] = {}
        if not base.is_dir():
            return out
        for dirpath, _, files in os.walk(base):
            for f in files:
                if f.startswith("."):
                    continue
                p = Path(dirpath) / f
                with contextlib.suppress(FileNotFoundError):
                    out[str(p.relative_to(base))] = p.read_text().strip()
        return dict(sorted(out.items()))

    def all_refs(self) -> dict[str, str]:
        out = {}
        if self.refs_dir.is_dir():
            for ns in sorted(os.listdir(self.refs_dir)):
                for name, oid in self.refs(ns).items():
                    out[f"{ns}/{name}"] = oid
        return out

    def resolve(self, rev: str) -> str:
        """A revision -> commit id (see :meth:`resolve_ref`)."""
        return self.resolve_ref(rev)[0]

    def resolve_ref(self, rev: str) -> tuple[str, str | None]:
        """A revision -> (commit id, the ref it names in origin form, or None).

        Revisions (as ``rpm-ostree``/git spell them)::

            site/db                a branch (refs/heads), else a remote ref ending so
            origin:site/db         remote ref remotes/origin/site/db ("REMOTE:CHANNEL")
            heads/site/db, remotes/origin/site/db, deploy/<id>   a ref by namespace
            <64 hex> | <8+ hex>    a commit id, or a unique prefix of one
            REV~N                  the Nth parent of REV

        The origin form is ``name`` for a branch and ``remote:channel`` for a remote ref
        (``REV~N``: REV's).

        Raises:
            InputError: unknown, ambiguous, or an ancestor that is not in the store.
        """
        base, sep, steps = rev.rpartition("~")
        if sep:  # '~' is in no ref name: REV~N
            if not (base and steps.isascii() and steps.isdigit() and len(steps) <= 9):
                raise InputError(f"{printable(rev)}: not a revision: ~N takes a number of "
                                 "ancestors (site/db~1: the commit before)",
                                 resolution=f"REV is {REV_FORMS}")
            cid, origin = self.resolve_ref(base)
            for n in range(int(steps)):
                parent = self.read_commit(cid).parent
                if parent is None:
                    raise InputError(f"{printable(rev)}: commit {cid[:12]} has no parent "
                                     f"(ancestor {n + 1} of {steps} does not exist)")
                if not self.has(parent, "commit"):
                    raise InputError(
                        f"{printable(rev)}: ancestor {n + 1}, commit {parent[:12]}, was never "
                        f"downloaded into {self.path}",
                        resolution="a host's store holds the commits it downloaded (an update "
                        "brings the newest of a channel, not its history): deploy one it has, "
                        "or import it from the build repository (atoll deploy REV --repo DIR)")
                cid = parent
            return cid, origin  # an older commit of the same branch follows the branch
        found = self._named_ref(rev)
        if found is not None:
            return found
        if is_object_id(rev) and self.has(rev, "commit"):
            return rev, None
        if len(rev) >= 8 and all(c in "0123456789abcdef" for c in rev):
            matches = [oid for oid, kind in self._iter_prefix(rev) if kind == "commit"]
            if len(matches) == 1:
                return matches[0], None
            if len(matches) > 1:
                raise InputError(f"{rev}: ambiguous commit prefix")
        short = (len(rev) < 8 and rev != "" and all(c in "0123456789abcdef" for c in rev))
        raise InputError(f"{printable(rev)}: no such ref or commit in {self.path}"
                         + (" (a commit prefix needs at least 8 hex digits)" if short else ""),
                         resolution=f"REV is {REV_FORMS}")

    def _named_ref(self, rev: str) -> tuple[str, str] | None:
        if ":" in rev:
            remote, _, channel = rev.partition(":")
            cid = self.refs("remotes").get(f"{remote}/{channel}")
            return (cid, rev) if cid else None
        ns, _, rest = rev.partition("/")
        if ns in ("heads", "remotes", "deploy") and rest:
            cid = self.refs(ns).get(rest)
            if cid is None:
                return None
            origin = rest if ns == "heads" else (
                ":".join(rest.split("/", 1)) if ns == "remotes" else None)
            return cid, origin or rest
        heads = self.refs("heads")
        if rev in heads:
            return heads[rev], rev
        matches = [(name, cid) for name, cid in self.refs("remotes").items()
                   if name.split("/", 1)[-1] == rev]
        if len(matches) == 1:
            return matches[0][1], ":".join(matches[0][0].split("/", 1))
        if len(matches) > 1:
            raise InputError(f"{rev}: several remotes have this channel: "
                             + ", ".join(":".join(n.split("/", 1)) for n, _ in matches),
                             resolution="name one: REMOTE:CHANNEL")
        return None

    def _iter_prefix(self, prefix: str) -> Iterator[tuple[str, str]]:
        sub = self.objects / prefix[:2]
        if not sub.is_dir():
            return
        for name in os.listdir(sub):
            stem, _, kind = name.partition(".")
            if (prefix[:2] + stem).startswith(prefix):
                yield prefix[:2] + stem, kind

    # -- commit a directory ----------------------------------------------

    def commit_dir(
        self,
        src: Path,
        *,
        ref: str | None = None,
        parent: str | None = None,
        version: str = "",
        subject: str = "",
        timestamp: int | None = None,
        manifest: list[dict[str, str]] | None = None,
        metadata: dict[str, Any] | None = None,
        link: bool = False,
        skip: frozenset[str] = frozenset(),
        known: Mapping[tuple[int, int], str] | None = None,
    ) -> str:
        """Commit the tree at ``src``; returns the commit id.

        The tree is checked whole before anything is written (see
        :func:`atoll.store.tree.scan`): names must be UTF-8, only regular files,
        symlinks and directories; a lone ``/etc`` is committed as ``/usr/etc``.

        Args:
            ref: move this ref to the new commit (its old target becomes the parent).
            manifest: the package manifest; None reads the tree's dpkg database
                (``var/lib/dpkg/status`` or atoll's ``usr/share/atoll/dpkg/status``).
            link: hardlink files into the store instead of copying (``src`` is throwaway).
            skip: relative paths whose *contents* are not committed (kept as empty dirs).
            known: {(st_dev, st_ino): file object id} of store objects (see
                :meth:`file_inodes`): a file of ``src`` that is one of them (a hardlink
                from a checkout) is that object, neither read nor hashed (OSTree's
                "devino cache"), as long as the object is still in place and its
                seal mark (:func:`atoll.store.seal.seal_mtime_ns`) is intact; else it
                is hashed as any file.

        Raises:
            InputError: a name is not UTF-8, a special file, or a layout atoll refuses
                (nothing was written).
            HostStateError: the disk filled (nothing was committed).
        """
        src = Path(src)
        if ref is not None:
            self.check_ref(ref)
        for what, text in (("version", version), ("subject", subject)):
            if not text.isprintable():
                raise InputError(f"{what} '{printable(text)}': control characters are not "
                                 "allowed (it is printed in status, logs and boot menus)")
        tree = scan(src, skip=skip)
        with self.lock.shared():  # held until the ref points at the commit (gc waits)
            if manifest is None:  # a tree from any tool: its own dpkg database, if any
                manifest = read_manifest(src)
            cid = self._commit_tree(src, tree, ref=ref, parent=parent, link=link,
                                    known=known or {}, commit=Commit(
                tree="", root=tree.dirs[""], parent=None, version=version,
                timestamp=int(time.time()) if timestamp is None else timestamp,
                subject=subject, manifest=tuple(manifest), metadata=metadata or {}))
            crash_point("commit:ref")
            if ref is not None:
                self.set_ref(ref, cid)
        return cid

    def _commit_tree(self, src: Path, tree: Tree, *, ref: str | None, parent: str | None,
                     link: bool, known: Mapping[tuple[int, int], str], commit: Commit) -> str:
        with self.transaction(f"commit of {printable(src)}"):
            if ref is not None and parent is None:
                parent = self.refs().get(ref)
            self.clean_tmp()
            ids: dict[str, str] = {}

            def one(item: tuple[str, str, os.stat_result]) -> tuple[str, str]:
                relpath, real, st = item
                oid = known.get((st.st_dev, st.st_ino))
                # still that object (the same inode in objects/), and its seal mark
                # says nothing wrote it since it was verified
                if oid is not None and st.st_mtime_ns == _seal.seal_mtime_ns(oid, st):
                    with contextlib.suppress(OSError):
                        if os.lstat(self.object_path(oid, "file")).st_ino == st.st_ino:
                            return relpath, oid
                p = os.path.join(src, real)
                try:
                    oid, _ = self.write_file_object(p, st, read_xattrs(p), link=link)
                except PermissionError as exc:
                    raise InputError(f"{printable(real)}: cannot read: permission denied",
                                     resolution="commit as root (a system tree holds files "
                                     "only root can read); nothing was committed") from exc
                return relpath, oid

            with progress(f"commit {src.name or src}", len(tree.files),
                          unit="files") as step, ThreadPoolExecutor(WORKERS) as pool:
                for relpath, oid in pool.map(one, tree.files, chunksize=64):
                    ids[relpath] = oid
                    step.advance()
            return self._write_trees(tree.dirs, ids, commit, parent)

    def _write_trees(self, dirs: dict[str, DirMeta], ids: dict[str, str], commit: Commit,
                     parent: str | None) -> str:
        """Stage the dirtrees (bottom-up) and the commit; returns the commit id."""
        children: dict[str, list[DirEntry]] = {d: [] for d in dirs}
        for relpath, oid in ids.items():
            parent_dir, _, name = relpath.rpartition("/")
            children[parent_dir].append(DirEntry(name, False, oid))
        tree_ids: dict[str, str] = {}
        for d in sorted(dirs, key=lambda x: x.count("/") if x else -1, reverse=True):
            entries = sorted(children[d], key=lambda e: e.name)
            tree_ids[d] = self.write_meta_object(dirtree_bytes(entries), "dirtree")
            if d:
                parent_dir, _, name = d.rpartition("/")
                children[parent_dir].append(DirEntry(name, True, tree_ids[d], dirs[d]))
        full = Commit(tree=tree_ids[""], root=commit.root, parent=parent,
                      version=commit.version, timestamp=commit.timestamp,
                      subject=commit.subject, manifest=commit.manifest,
                      metadata=commit.metadata)
        return self.write_meta_object(full.to_bytes(), "commit")

    def file_inodes(self, commit: str) -> dict[tuple[int, int], str]:
        """{(st_dev, st_ino): id} of the file objects of ``commit`` (for
        :meth:`commit_dir`'s ``known``). One ``lstat`` per object; the caller holds
        the lock (shared) from here to the commit, so gc removes none meanwhile.

        Raises:
            StoreError: a dirtree or a file object is missing.
        """
        inodes: dict[tuple[int, int], str] = {}
        for oid, kind in self.reachable(commit, parents=False):
            if kind == "file":
                try:
                    st = os.lstat(self.object_path(oid, "file"))
                except FileNotFoundError:
                    raise StoreError(f"file object {oid} is missing",
                                     resolution=REPAIR_HINT) from None
                inodes[(st.st_dev, st.st_ino)] = oid
        return inodes

    # -- local pull ------------------------------------------------------

    def pull_local(self, other: Repo, commit: str) -> int:
        """Import ``commit`` and its objects from another local repo; returns objects copied.

        Objects are hardlinked when both repos share a filesystem (and the link count
        allows): the same inode, so the same seal (deploy checks it), else copied
        with their metadata and verified. They become visible together, at the end
        of the transaction (the commit last).

        Raises:
            StoreError: an object is missing in ``other``.
        """
        with other.lock.shared(), self.transaction(f"import of {commit[:12]}"):
            needed = other.reachable(commit, parents=False)
            copied = 0
            files = [oid for oid, kind in needed if kind == "file" and not self.has(oid, "file")]
            txn = self._stage()

            def one(oid: str) -> None:
                src = os.fspath(other.object_path(oid, "file"))
                tmp = txn.tmp_for(oid, "file")
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
                try:
                    if os.lstat(src).st_size == 0:
                        raise OSError(errno.EMLINK, "empty files are copied")
                    os.link(src, tmp, follow_symlinks=False)
                except FileNotFoundError:
                    raise StoreError(f"file object {oid} is missing in {other.path}",
                                     resolution=REPAIR_HINT) from None
                except OSError as exc:
                    if exc.errno not in (errno.EXDEV, errno.EMLINK):
                        raise
                    st = os.lstat(src)
                    meta = FileMeta.from_stat(st, read_xattrs(src))
                    self.import_file_object(oid, meta, other.read_file_content(oid))
                    return
                txn.add(tmp, oid, "file")

            with progress(f"import {commit[:12]}", len(files), unit="files") as step, \
                    ThreadPoolExecutor(WORKERS) as pool:
                for _ in pool.map(one, files, chunksize=64):
                    copied += 1
                    step.advance()
            for kind in ("dirtree", "commit"):
                for oid, k in needed:
                    if k == kind and not self.has(oid, kind):
                        self.write_meta_object(other.read_meta_object(oid, kind), kind)
                        copied += 1
        return copied

    # -- walking -------------------------------------------------------

    def walk(self, tree: str, prefix: str = "") -> Iterator[tuple[str, DirEntry]]:
        """Yield (path, entry) for every entry below dirtree ``tree``, depth first."""
        for entry in self.read_dirtree(tree):
            path = f"{prefix}{entry.name}"
            yield path, entry
            if entry.is_dir:
                yield from self.walk(entry.id, path + "/")

    def reachable(self, commit: str, *, parents: bool = True) -> set[tuple[str, str]]:
        """Every (id, kind) needed for ``commit`` (and its parents if asked and present).

        Raises:
            StoreError: a dirtree is missing. CorruptObjectError: one is damaged.
        """
        seen: set[tuple[str, str]] = set()
        trees_done: set[str] = set()
        cid: str | None = commit
        while cid and self.has(cid, "commit"):
            seen.add((cid, "commit"))
            c = self.read_commit(cid)
            stack = [c.tree]
            while stack:
                t = stack.pop()
                if t in trees_done:
                    continue
                trees_done.add(t)
                seen.add((t, "dirtree"))
                for e in self.read_dirtree(t):
                    if e.is_dir:
                        stack.append(e.id)
                    else:
                        seen.add((e.id, "file"))
            cid = c.parent if parents else None
        return seen

    def missing(self, commit: str) -> list[tuple[str, str]]:
        """The objects ``commit`` needs that are not in the store, or not readable (a
        missing dirtree is listed itself; what is below it is unknown). Damaged dirtrees
        are quarantined on the way."""
        return [(oid, kind) for oid, kind, _ in self.gaps(commit)]

    def gaps(self, commit: str) -> list[tuple[str, str, str]]:
        """Like :meth:`missing`, with why: ``(id, kind, "missing" | "damaged" | "malformed")``."""
        out: set[tuple[str, str, str]] = set()

        def why(exc: StoreError) -> str:
            if not isinstance(exc, CorruptObjectError):
                return "missing"
            return "malformed" if "malformed" in exc.brief else "damaged"

        if not self.has(commit, "commit"):
            return [(commit, "commit", "missing")]
        try:
            c = self.read_commit(commit)
        except StoreError as exc:
            return [(commit, "commit", why(exc))]
        stack, done = [c.tree], set()
        while stack:
            t = stack.pop()
            if t in done:
                continue
            done.add(t)
            try:
                entries = self.read_dirtree(t)
            except StoreError as exc:
                out.add((t, "dirtree", why(exc)))
                continue
            for e in entries:
                if e.is_dir:
                    stack.append(e.id)
                elif not self.has(e.id, "file"):
                    out.add((e.id, "file", "missing"))
        return sorted(out)

    def is_complete(self, commit: str) -> bool:
        return not self.missing(commit)

    def remove_objects(self, objs: Iterable[tuple[str, str]]) -> None:
        """Unlink objects (gc; the caller holds the exclusive lock)."""
        for oid, kind in objs:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.object_path(oid, kind))


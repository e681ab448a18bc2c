"""The host side: remotes, ``update check`` and ``update download`` via ``tuf.ngclient``.

Host layout::

    <sysroot>/atoll/state/
    ├── remotes/<name>/remote.json        {"name", "url", "channel", "metadata_url", ...}
    ├── remotes/<name>/metadata -> metadata.N   trusted TUF metadata (swapped atomically)
    └── update.json                       what is available / downloaded (canonical JSON)
    <sysroot>/atoll/cache/downloads/<name>/   staging: partial and verified downloads

Every operation refreshes TUF metadata as the TUF client workflow says: each
role is kept as soon as it verifies, even when a later step fails (see
``UpdateClient._keep_verified``); a refused update leaves the host's store,
deployments and ``update.json`` as they were. Remotes: :mod:`atoll.repo.remotes`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import re
import shutil
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tuf.api import exceptions as tuf_exc
from tuf.api.metadata import Metadata, TargetFile  # type: ignore[attr-defined]
from tuf.ngclient import Updater, UpdaterConfig  # type: ignore[attr-defined]

from atoll.core import canonjson
from atoll.core.errors import (
    BusyError,
    DiskFullError,
    DownloadError,
    HostStateError,
    InputError,
    MetadataExpiredError,
    RepositoryError,
    StoreError,
)
from atoll.core.faults import crash_point
from atoll.core.fsutil import (
    atomic_symlink,
    atomic_write_json,
    disk_full,
    free_bytes,
    read_json,
    read_state_json,
    syncfs,
)
from atoll.core.lock import FileLock
from atoll.core.memory import release_large_buffers
from atoll.core.progress import progress
from atoll.repo.fetch import HttpFetcher, RangeFetcher
from atoll.repo.plan import ChannelInfo, DowngradeError, Plan, choose, is_older, pick_release
from atoll.repo.publish import ref_target
from atoll.repo.remotes import Remote, add_remote, list_remotes, load_remote, state_dir
from atoll.repo.tufrepo import target_url_path
from atoll.store.repo import Repo

__all__ = [
    "SUPPORTED_HASHES",
    "DowngradeError",
    "Remote",
    "UpdateClient",
    "add_remote",
    "list_remotes",
    "load_remote",
    "read_update_state",
    "repair_from_remotes",
    "trusted_metadata",
    "tuf_errors",
]

# Hash algorithms a target may list (TUF lets a repository choose; hashlib's names).
SUPPORTED_HASHES = ("sha256", "sha512", "sha384", "sha224", "blake2b", "blake2s")
_HEX = re.compile(r"^[0-9a-f]{32,128}$")

log = logging.getLogger("atoll.update")


def _iso(ts: float | datetime) -> str:
    dt = ts if isinstance(ts, datetime) else datetime.fromtimestamp(ts, UTC)
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def repair_from_remotes(sysroot: Path, incomplete: dict[str, str]) -> tuple[list[str], list[str]]:
    """Fetch what the store lacks of ``incomplete`` ({ref: commit}) from the host's
    remotes: a commit a remote still serves is downloaded again (verified, only the
    missing objects). Returns (repaired commits, messages about the others)."""
    wanted = set(incomplete.values())
    repaired: list[str] = []
    for remote in list_remotes(sysroot):
        client = UpdateClient(sysroot, remote.name)
        target = client.check()["target"]["commit"]
        if target in wanted:
            UpdateClient(sysroot, remote.name).download()
            repaired.append(target)
            wanted.discard(target)
    others = [f"{ref}: commit {cid[:12]} is not served by any remote now; deploy another "
              "commit and remove this one, or commit/compose it again"
              for ref, cid in sorted(incomplete.items()) if cid in wanted]
    return repaired, others


def trusted_metadata(remote: Remote) -> dict[str, dict[str, Any]]:
    """{role: {"version", "expires"}} of the metadata a host trusts for ``remote``."""
    out: dict[str, dict[str, Any]] = {}
    for role in ("root", "timestamp", "snapshot", "targets"):
        p = remote.metadata / f"{role}.json"
        try:
            signed = Metadata.from_bytes(p.read_bytes()).signed
        except (OSError, ValueError, tuf_exc.RepositoryError):
            continue
        out[role] = {"version": signed.version, "expires": _iso(signed.expires)}
    return out


def read_update_state(sysroot: Path) -> dict[str, Any]:
    """The content of ``state/update.json`` (empty when never checked, and when it does
    not read: a check writes it whole again)."""
    path = state_dir(sysroot) / "update.json"
    try:
        data = read_json(path, {})
    except ValueError:  # not UTF-8 JSON
        data = None
    if not isinstance(data, dict):
        log.warning("%s is damaged: written again", path)
        return {}
    return {k: v for k, v in data.items() if isinstance(v, str | int | None)}


@contextlib.contextmanager
def _tuf_errors(what: str) -> Iterator[None]:
    try:
        yield
    except tuf_exc.ExpiredMetadataError as exc:
        role = next((r for r in ("root", "timestamp", "snapshot", "targets")
                     if r in str(exc)), None)
        fix = ("the publisher must sign a new root with the offline root keys: `atoll keys "
               "rotate root --keys KEYS --to WWW --expires root=365d` (`atoll timestamp` "
               "cannot: it signs only the online roles)" if role == "root" else
               "the publisher must refresh the repository: `atoll timestamp --to WWW --keys "
               "KEYS` (re-signs every online role near expiry; run it from cron)")
        raise MetadataExpiredError(
            f"{what}: the update server's {f'{role}.json' if role else 'signed metadata'} "
            "has expired",
            details=str(exc),
            resolution=f"{fix}; if it is fresh on the server, someone may be replaying old "
            "metadata (a freeze attack)") from exc
    except tuf_exc.DownloadError as exc:
        raise DownloadError(f"{what}: download failed: {exc}",
                            resolution="check the network and the remote URL; retry later") \
            from exc
    except tuf_exc.RepositoryError as exc:
        raise RepositoryError(f"{what}: refused untrusted metadata: {exc}",
                              details=type(exc).__name__,
                              resolution="the server or the network path is serving tampered, "
                              "rolled-back or mismatched metadata; do not apply updates from it"
                              ) from exc


tuf_errors = _tuf_errors  # python-tuf's errors as atoll's, for other readers of a repository


def _same_files(a: Path, b: Path) -> bool:
    """Whether two metadata directories hold the same files (names, link targets, bytes)."""
    def listing(root: Path) -> dict[str, bytes]:
        out = {}
        for dirpath, _, files in os.walk(root):
            for name in files:
                p = Path(dirpath) / name
                rel = str(p.relative_to(root))
                out[rel] = os.readlink(p).encode() if p.is_symlink() else p.read_bytes()
        return out

    try:
        return listing(a) == listing(b)
    except OSError:
        return False


class UpdateClient:
    """``update check`` / ``update download`` for one remote of a host."""

    def __init__(self, sysroot: Path, remote: str = "origin", *,
                 fetcher: RangeFetcher | None = None, channel: str | None = None,
                 version: str | None = None, allow_downgrade: bool = False):
        """``channel``: follow this channel instead of the remote's (``atoll rebase``
        checks a channel before switching to it). ``version``: take this signed version
        of the channel (a version string or commit the head's signed release list
        names) instead of the head; one older than the host runs is refused
        (:class:`DowngradeError`) unless ``allow_downgrade``."""
        self.sysroot = Path(sysroot)
        self.remote = load_remote(self.sysroot, remote)
        if channel is not None:
            Repo.check_ref(channel)
            self.remote = dataclasses.replace(self.remote, channel=channel)
        self.fetcher = fetcher or HttpFetcher()
        self.store_path = self.sysroot / "atoll" / "repo"
        self.staging = self.sysroot / "atoll" / "cache" / "downloads" / self.remote.name
        self.version = version
        self.allow_downgrade = allow_downgrade
        self._work: Path | None = None
        self._updater: Updater | None = None
        self._info: ChannelInfo | None = None
        self._cves: dict[str, bytes] = {}  # commit -> verified CVE report (_fetch_cves)

    # -- trusted metadata ----------------------------------------------
    #
    # TUF's client workflow keeps each role as soon as it verifies (root, then
    # timestamp, snapshot, targets), so that a newer root (revoked keys), a newer
    # timestamp (freeze protection) and the version floors survive a later failure.
    # ngclient writes only verified metadata, into a copy of the trusted directory;
    # the copy replaces the trusted one (synced, then a symlink swap) after every
    # refresh, whether the operation then succeeds or fails. The store, the
    # deployments and update.json change only when the whole operation succeeds.

    def _open(self) -> Updater:
        cur = self.remote.metadata
        target = os.readlink(cur) if cur.is_symlink() else "metadata.0"
        serial = int(target.rpartition(".")[2]) + 1
        work = self.remote.dir / f"metadata.{serial}"
        shutil.rmtree(work, ignore_errors=True)
        shutil.copytree(self.remote.dir / target, work, symlinks=True)
        self._work = work  # a whole copy: from here on it holds only verified metadata
        cfg = UpdaterConfig(app_user_agent="atoll")
        self._updater = Updater(str(work), self.remote.metadata_base, None,
                                self.remote.targets_base, self.fetcher, cfg, bootstrap=None)
        with _tuf_errors("update check"):
            self._updater.refresh()
        return self._updater

    def _keep_verified(self) -> None:
        """Make what ngclient verified in this run the trusted metadata (see above)."""
        if self._work is None:
            return
        work, self._work = self._work, None
        old = os.readlink(self.remote.metadata)
        if _same_files(self.remote.dir / old, work):  # nothing new verified: keep the old
            shutil.rmtree(work, ignore_errors=True)
            return
        syncfs(work)  # ngclient writes without fsync: durable before it is trusted
        atomic_symlink(work.name, self.remote.metadata)
        shutil.rmtree(self.remote.dir / old, ignore_errors=True)

    def _trusted_root(self) -> Any:
        assert self._updater is not None
        root = self._work / "root.json" if self._work else self.remote.metadata / "root.json"
        return Metadata.from_bytes(root.read_bytes()).signed

    def _expires(self) -> str | None:
        assert self._work is not None
        out = []
        for role in ("timestamp", "snapshot", "targets"):
            p = self._work / f"{role}.json"
            if p.exists():
                out.append(Metadata.from_bytes(p.read_bytes()).signed.expires)
        return _iso(min(out)) if out else None

    # -- targets -----------------------------------------------------

    def _targetinfo(self, path: str) -> TargetFile:
        assert self._updater is not None
        with _tuf_errors("update"):
            tf = self._updater.get_targetinfo(path)
        if tf is None:
            raise RepositoryError(f"{path} is not in the signed metadata of {self.remote.name}",
                                  resolution="check the channel name; only signed targets are "
                                  "ever downloaded")
        unsupported = sorted(set(tf.hashes) - set(SUPPORTED_HASHES))
        if unsupported or not tf.hashes:
            raise RepositoryError(
                f"{path}: the signed metadata lists hash algorithm(s) atoll does not "
                f"support: {', '.join(unsupported) or '(none)'}",
                resolution=f"publish targets with one of {', '.join(SUPPORTED_HASHES)}")
        for algo, value in tf.hashes.items():
            if not _HEX.match(value):
                raise RepositoryError(f"{path}: {algo} hash {value!r} is not hexadecimal")
        return tf

    @staticmethod
    def _hash(tf: TargetFile) -> str:
        """The hash that names a target: the first one listed (python-tuf's choice for
        consistent-snapshot file names); sha256 when it is listed."""
        return str(tf.hashes.get("sha256") or next(iter(tf.hashes.values())))

    def _url(self, tf: TargetFile) -> str:
        """Where a target is: hash-prefixed when the root says ``consistent_snapshot``
        (TUF spec 5.7.3), else under its own path."""
        if self._trusted_root().consistent_snapshot:
            first = str(next(iter(tf.hashes.values())))
            return self.remote.targets_base + target_url_path(tf.path, first)
        return self.remote.targets_base + tf.path

    def _download(self, tf: TargetFile) -> Path:
        """Download a target into staging, resuming a partial file; verify it whole.

        A resumed file that does not verify (its first part was damaged, e.g. by a
        power cut before it reached the disk) is fetched again from byte 0, once; a
        fresh download that does not verify is refused as tampered.
        """
        self.staging.mkdir(parents=True, exist_ok=True)
        name = self._hash(tf)
        done = self.staging / f"{name}.target"
        if done.exists():
            with open(done, "rb") as fh:
                try:
                    tf.verify_length_and_hashes(fh)
                    return done
                except tuf_exc.LengthOrHashMismatchError:
                    pass
            done.unlink()
        part = self.staging / f"{name}.part"
        for attempt in range(2):
            resumed = self._fetch_part(tf, part)
            with open(part, "rb") as fh:
                try:
                    tf.verify_length_and_hashes(fh)
                    break
                except tuf_exc.LengthOrHashMismatchError as exc:
                    size = part.stat().st_size
                    if size < tf.length:
                        raise DownloadError(
                            f"download of {tf.path} was cut short ({size} of {tf.length} "
                            "bytes)", resolution="run `atoll update download` again: it "
                            "resumes") from exc
                    part.unlink()
                    if resumed and attempt == 0:
                        log.warning("%s: the resumed download does not verify; "
                                    "downloading it again from the start", tf.path)
                        continue
                    raise RepositoryError(
                        f"{tf.path}: downloaded bytes do not match the signed hash; refused",
                        resolution="the server or network path serves tampered files") from exc
        os.replace(part, done)
        return done

    def _fetch_part(self, tf: TargetFile, part: Path) -> bool:
        """Fetch what ``part`` lacks of ``tf``; returns whether it resumed earlier bytes.

        A server that ignores ``Range`` (answers 200 from byte 0) is handled by
        writing from the start; either way no more than the signed length is accepted.
        """
        have = part.stat().st_size if part.exists() else 0
        if have > tf.length:
            part.unlink()
            have = 0
        if have == tf.length:
            return have > 0
        with _tuf_errors(f"download {tf.path}"):
            offset, chunks = self.fetcher.fetch_range(self._url(tf), have, None, tf.length)
            if offset not in (0, have):
                raise tuf_exc.DownloadError(f"{tf.path}: server answered from byte {offset}")
            if offset == 0 and have:
                log.info("%s: the server ignores HTTP ranges; downloading from the start",
                         tf.path)
            limit = tf.length - offset
            got = 0
            try:
                with open(part, "ab" if offset else "wb") as fh, progress(
                        f"download {tf.path}", tf.length, unit="bytes", done=offset) as step:
                    for chunk in step.track(chunks, len):
                        got += len(chunk)
                        if got > limit:
                            raise tuf_exc.DownloadLengthMismatchError(
                                f"{tf.path}: server sent more than the signed length "
                                f"({tf.length} bytes)")
                        fh.write(chunk)
            except OSError as exc:
                full = disk_full(exc, self.staging, f"download of {tf.path}")
                if full is not None:
                    raise HostStateError(full.brief, resolution="free space and run "
                                         "`atoll update download` again (it resumes)") from exc
                raise
        return bool(offset and have)

    def _fetch_verified(self, path: str) -> bytes:
        tf = self._targetinfo(path)
        p = self._download(tf)
        data = p.read_bytes()
        p.unlink()
        return data

    # -- check -------------------------------------------------------

    def _channel(self) -> str:
        if self.remote.channel:
            return self.remote.channel
        chans = canonjson.loads(self._fetch_verified("channels.json"))["channels"]
        if len(chans) != 1:
            raise InputError(f"remote {self.remote.name} serves {len(chans)} channels",
                             details=", ".join(sorted(chans)),
                             resolution="add the remote again with --channel NAME")
        return str(next(iter(chans)))

    def _deployed(self) -> tuple[str | None, str | None]:
        """(booted commit, next-boot commit) from the boot pointer (Nones without one)."""
        deps = read_state_json(self.sysroot / "boot" / "loader" / "deployments.json", dict,
                               {}, resolution="`atoll status` says what to do")
        listed = [d for d in deps.get("deployments") or [] if isinstance(d, dict)
                  and isinstance(d.get("commit"), str)]
        booted = None
        p = self.sysroot / "run" / "atoll" / "booted"
        if p.exists():
            bid = p.read_bytes().decode(errors="replace").strip()
            booted = next((str(d["commit"]) for d in listed if d.get("id") == bid), None)
        nxt = str(listed[0]["commit"]) if listed else None
        return self._base(booted), self._base(nxt)

    def _base(self, commit: str | None) -> str | None:
        """A hotfix deployment counts as its base commit (updates apply to the base;
        docs/hotfix.md)."""
        try:
            repo = self._repo() if commit else None
            if commit is None or repo is None or not repo.has(commit, "commit"):
                return commit
            meta = repo.read_commit(commit).metadata.get("hotfix")
        except (StoreError, InputError, OSError):  # a damaged commit must not stop a check
            return commit
        base = meta.get("base") if isinstance(meta, dict) else None
        return base if isinstance(base, str) else commit

    def current_commit(self) -> str | None:
        """What the host runs: the booted deployment, else the one that boots next
        (None on a host without deployments: it runs nothing atoll deployed)."""
        booted, nxt = self._deployed()
        return booted or nxt

    def _repo(self) -> Repo | None:
        return Repo.open(self.store_path) if (self.store_path / "config.json").exists() else None

    def _plan(self, info: ChannelInfo, repo: Repo | None, *,
              no_delta: bool = False) -> tuple[Plan, Any]:
        from atoll.delta.pack import PackIndex

        have_commits = [c for c in info.deltas if repo is not None and repo.has(c, "commit")
                        and not no_delta]
        lengths = {}
        for frm in have_commits:
            lengths[info.deltas[frm]] = self._targetinfo(info.deltas[frm]).length
        pack_len = self._targetinfo(info.pack).length
        idx = None
        chunk_lengths: dict[int, int] | None = None
        have = repo is not None and repo.has(info.commit, "commit") \
            and repo.is_complete(info.commit)
        if not have and not lengths and repo is not None:
            idx = PackIndex.from_bytes(self._fetch_verified(info.index))
            missing = {(o[0], o[1]) for o in idx.objects if not repo.has(o[0], o[1])}
            chunk_lengths = {n: idx.chunks[n].clen for n in idx.chunks_for(missing)}
        plan = choose(info, have_commit=have, have_commits=have_commits, delta_lengths=lengths,
                      pack_length=pack_len, chunk_lengths=chunk_lengths)
        plan.unpacked = info.unpacked_size
        if plan.method == "delta" and plan.delta is not None:
            custom = self._targetinfo(plan.delta).custom or {}
            plan.unpacked = int(custom.get("atoll", {}).get("unpacked", info.unpacked_size))
        elif plan.method == "chunks" and idx is not None:
            plan.unpacked = sum(idx.chunks[n].usize for n in plan.chunks)
        return plan, idx

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """One `atoll update` per remote at a time (waits, or BusyError: atoll.core.lock)."""
        with FileLock(self.remote.dir / "lock", f"remote {self.remote.name}").exclusive():
            yield

    def check(self) -> dict[str, Any]:
        """Refresh metadata and say what an update would bring (nothing is downloaded
        but metadata, the manifest and, without a usable delta, the pack index).

        Raises:
            MetadataExpiredError, RepositoryError, DownloadError, InputError.
        """
        with self._locked():
            return self._check_locked()

    def _check_locked(self) -> dict[str, Any]:
        try:
            self._open()
            view = self._check()
            self._record(view)
            self._save_cves()
            return view
        finally:
            self._keep_verified()

    def _check(self) -> dict[str, Any]:
        from atoll.store.packages import package_view

        channel = self._channel()
        head = ChannelInfo.from_custom(self._targetinfo(ref_target(channel)).custom, channel)
        if head.ref != channel:
            raise RepositoryError(f"signed channel pointer names {head.ref}, expected {channel}")
        info = self._chosen(head)
        repo = self._repo()
        current = self.current_commit()
        running_seq, running_ts = self._running(head, current, repo)
        older = current is not None and info.commit != current and is_older(
            info, running_seq, running_ts)
        if older and self.version is not None and not self.allow_downgrade:
            raise DowngradeError(
                f"channel {channel}: version {info.version} (publication {info.sequence}) "
                f"is older than what this host runs ({str(current)[:12]}, publication "
                f"{running_seq or 'unknown'}); refused",
                details="TUF accepts any signed target; atoll refuses to go back unless an "
                "operator allows it (a control plane never can)",
                resolution="to go back on purpose: `atoll update download --version "
                f"{info.version} --allow-downgrade` (an operator at the host)")
        self._info = info
        plan, _ = self._plan(info, repo)
        new_manifest = canonjson.loads(self._fetch_verified(info.manifest))
        cves = self._fetch_cves(info.commit, current)
        # package changes against what the host runs; on a host without deployments,
        # against what it downloaded from this channel before
        base = current or (repo.refs("remotes").get(f"{self.remote.name}/{channel}")
                           if repo is not None else None)
        old_manifest = None
        if base and repo is not None and repo.has(base, "commit"):
            old_manifest = [dict(p) for p in repo.read_commit(base).manifest]
        booted, nxt = self._deployed()
        current_version = None
        if current and repo is not None and repo.has(current, "commit"):
            current_version = repo.read_commit(current).version
        return {
            "remote": self.remote.name, "channel": channel, "current": current,
            "current_version": current_version,
            "target": {"commit": info.commit, "version": info.version,
                       "timestamp": info.timestamp, "sequence": info.sequence},
            "requested_version": self.version, "head_version": head.version,
            "current_sequence": running_seq, "downgrade": older,
            "up_to_date": current == info.commit,
            "applied": nxt == info.commit and booted != info.commit,  # pending: boots next
            "downloaded": plan.method == "none",
            "method": plan.method, "download_bytes": plan.download_bytes,
            "delta_from": plan.delta_from, "unpacked_size": info.unpacked_size,
            "packages": package_view(old_manifest, new_manifest),
            "metadata_expires": self._expires(),
            "cves": cves,
        }

    def _fetch_cves(self, commit: str, current: str | None) -> str | None:
        """Verify the signed CVE reports of ``commit`` and ``current`` (none from a
        repository published without them), kept by :meth:`_save_cves` once the check or
        download succeeds; the update's summary, or None."""
        from atoll.security.report import check_report, fixes_summary, report_path

        assert self._updater is not None
        summary = None
        self._cves = {}
        for c in dict.fromkeys(x for x in (commit, current) if x):
            with _tuf_errors("update"):
                if self._updater.get_targetinfo(report_path(c)) is None:
                    continue
            data = self._fetch_verified(report_path(c))
            try:
                doc = check_report(canonjson.loads(data), c)
            except ValueError as exc:
                raise RepositoryError(f"{report_path(c)}: not JSON") from exc
            self._cves[c] = data
            if c == commit and c != current:
                summary = fixes_summary(doc)
        return summary

    def _save_cves(self) -> None:
        """Keep the reports :meth:`_fetch_cves` verified (atoll.security.host)."""
        from atoll.security.host import save_report

        for commit, data in self._cves.items():
            save_report(self.sysroot, commit, data)

    def _chosen(self, head: ChannelInfo) -> ChannelInfo:
        """The head, or the signed version asked for: its own signed record, which must
        say what the head's signed release list says of it.

        Raises:
            RepositoryError: not a signed version of the channel (never published,
                pruned, or records that disagree).
        """
        if self.version is None or self.version in (head.version, head.commit):
            return head
        rel = pick_release(head, self.version)
        info = ChannelInfo.from_custom(self._targetinfo(rel.target).custom, head.ref)
        if (info.ref, info.commit, info.sequence) != (head.ref, rel.commit, rel.sequence):
            raise RepositoryError(f"{rel.target}: its signed record does not match the "
                                  "channel's signed release list")
        return info

    def _sequences_path(self) -> Path:
        return self.remote.dir / "sequences.json"

    def _running(self, head: ChannelInfo, current: str | None,
                 repo: Repo | None) -> tuple[int | None, int | None]:
        """(publication sequence, commit timestamp) of what the host runs: the sequence
        from the channel's signed release list, else as recorded when it was downloaded
        (``remotes/<name>/sequences.json``); the timestamp from the host's store."""
        if current is None:
            return None, None
        seqs = [r.sequence for r in head.releases if r.commit == current]
        seq = max(seqs) if seqs else None
        if seq is None:
            try:
                known = read_json(self._sequences_path(), {})
            except ValueError:
                known = {}
            rec = (known.get(head.ref) or {}) if isinstance(known, dict) else {}
            got = rec.get(current) if isinstance(rec, dict) else None
            seq = got if isinstance(got, int) and got > 0 else None
        ts = None
        if repo is not None and repo.has(current, "commit"):
            ts = repo.read_commit(current).timestamp
        return seq, ts

    def _remember_sequence(self, info: ChannelInfo) -> None:
        """Record the sequence of a downloaded version (the last 50 per channel): the
        host still knows how old it is once the repository has pruned it."""
        if not info.sequence:
            return
        try:
            known = read_json(self._sequences_path(), {})
        except ValueError:
            known = {}
        known = known if isinstance(known, dict) else {}
        old = known.get(info.ref)
        rec = {k: v for k, v in (old if isinstance(old, dict) else {}).items()
               if k != info.commit and isinstance(v, int)}
        rec[info.commit] = info.sequence
        known[info.ref] = dict(sorted(rec.items(), key=lambda kv: kv[1])[-50:])
        atomic_write_json(self._sequences_path(), known)

    def _record(self, view: dict[str, Any], *, downloaded: bool = False) -> None:
        """Write ``state/update.json`` (schema in docs/delivery.md)."""
        path = state_dir(self.sysroot) / "update.json"
        prev = read_update_state(self.sysroot)
        now = _iso(time.time())
        target = view["target"]
        have = downloaded or view["downloaded"]
        state = "up-to-date" if view["up_to_date"] else ("downloaded" if have else "available")
        same = prev.get("commit") == target["commit"]
        out = {
            "format": 1,
            "state": state,
            "since": prev.get("since") if same and prev.get("state") == state else now,
            "remote": view["remote"],
            "channel": view["channel"],
            "commit": target["commit"],
            "version": target["version"],
            "current": view["current"],
            "download_bytes": 0 if have else view["download_bytes"],
            "method": "none" if have else view["method"],
            "packages": {k: len(v) for k, v in view["packages"].items()},
            "available_since": prev.get("available_since") if same else now,
            "downloaded_since": (prev.get("downloaded_since") if same
                                 and prev.get("downloaded_since") else now) if have else None,
            "checked": now,
            "metadata_expires": view["metadata_expires"],
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, out)

    # -- download ------------------------------------------------------

    def download(self) -> dict[str, Any]:
        """Verified pull of the channel's commit into the host's store, in bounded
        memory (docs/delivery.md, "Memory").

        Raises:
            HostStateError: not enough free space (checked first), or the disk filled.
            MetadataExpiredError, RepositoryError, DownloadError.
        """
        release_large_buffers()
        with self._locked():
            return self._download_locked()

    def _download_locked(self) -> dict[str, Any]:
        from atoll.repo import pull
        from atoll.store.checkout import bad_objects

        try:
            self._open()
            view = self._check()
            channel = view["channel"]
            info = self._info
            assert info is not None
            repo = self._repo()  # None on a host that never downloaded: created on import
            with contextlib.ExitStack() as stack:  # the store's lock (shared): gc waits
                if repo is not None:
                    stack.enter_context(repo.lock.shared())
                if repo is not None and repo.has(info.commit, "commit"):
                    # Downloaded before: make sure it is whole (damage from a disk, or a
                    # power cut under an older atoll); damaged objects go to quarantine
                    # and are fetched again below.
                    bad = bad_objects(repo, info.commit)
                    if bad:
                        log.warning("%d damaged or missing object(s) of %s: fetching them "
                                    "again", len(bad), info.commit[:12])
                plan, idx = self._plan(info, repo)
                if plan.method != "none":
                    self._check_space(plan, info)
                    files = pull.fetch(self, info, plan, idx)
                    crash_point("download:fetched")
                    repo = repo or Repo.create(self.store_path)
                    stack.enter_context(repo.lock.shared())
                    try:
                        pull.import_into(repo, info, plan, files)
                    except (BusyError, DiskFullError):
                        raise
                    except (StoreError, HostStateError) as exc:
                        if plan.method != "delta":
                            raise
                        # The delta itself was verified; but a file the host rebuilds (a
                        # recompressed initrd) did not match its id, or a patch base is
                        # gone from the store. Fetch the objects still missing instead.
                        log.warning("delta did not apply (%s); fetching missing objects", exc)
                        plan, idx = self._plan(info, repo, no_delta=True)
                        files = pull.fetch(self, info, plan, idx)
                        pull.import_into(repo, info, plan, files)
                    shutil.rmtree(self.staging, ignore_errors=True)
                assert repo is not None
                repo.set_ref(f"{self.remote.name}/{channel}", info.commit, namespace="remotes")
            self._remember_sequence(info)
            self._record(view, downloaded=True)
            self._save_cves()
            return view | {"downloaded": True, "ref": f"remotes/{self.remote.name}/{channel}",
                           "download_bytes": plan.download_bytes, "method": plan.method}
        finally:
            self._keep_verified()

    def _check_space(self, plan: Plan, info: ChannelInfo) -> None:
        self.staging.mkdir(parents=True, exist_ok=True)
        store_dev = self.store_path if self.store_path.exists() else self.store_path.parent
        store_dev.mkdir(parents=True, exist_ok=True)
        # what an earlier, interrupted run already put in the download cache is not
        # needed again (a verified *.target, a *.part, fetched chunks)
        have = sum(e.stat().st_size for e in self.staging.rglob("*") if e.is_file())
        need_stage, need_store = max(0, plan.download_bytes - have), plan.unpacked
        if os.stat(self.staging).st_dev == os.stat(store_dev).st_dev:
            checks = [(self.staging, need_stage + need_store)]
        else:
            checks = [(self.staging, need_stage), (store_dev, need_store)]
        for path, need in checks:
            free = free_bytes(path)
            if free < need:
                raise HostStateError(
                    f"not enough free space in {path}: need {need} bytes, {free} free",
                    resolution="free space (`atoll store gc`, `atoll undeploy N` for old "
                    "deployments, `atoll cleanup`) and run the command again")


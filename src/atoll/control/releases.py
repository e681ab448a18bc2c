"""The signed versions the control plane chooses among, read from the update repository.

``atoll fleet serve --repo URL|DIR --repo-root root.json`` makes the server read the
same TUF repository its hosts follow, with the hosts' own client code: python-tuf's
``tuf.ngclient.Updater`` verifies every role from the given root (walking newer root
versions), and each channel's signed head lists its kept versions
(``custom.atoll.releases``, :mod:`atoll.repo.publish`); each version's own record
(``releases/<channel>/<commit>.json``) is checked against that list. There is no
second verifier, and nothing here is trusted by a host: every host verifies again
with its own trusted metadata and refuses what is not signed, or older than what it
runs (docs/delivery.md, "Signed versions").

The trusted metadata lives in a private temporary directory for the life of the
server (seeded with the given root); it is refreshed at most every ``refresh_s``
seconds, when someone asks (``GET /v1/releases``, creating a rollout, the console).
Each signed version's package manifest (its ``manifests/<commit>.json`` target,
verified like every target) is downloaded once and kept in memory by commit, for the
console's package changes (:meth:`ReleaseSource.manifest`).
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from tuf.api import exceptions as tuf_exc
from tuf.api.metadata import Metadata
from tuf.ngclient import Updater, UpdaterConfig  # type: ignore[attr-defined]
from tuf.ngclient.fetcher import FetcherInterface

from atoll.control.errors import ApiError
from atoll.core import canonjson
from atoll.core.errors import AtollError, DownloadError, InputError, RepositoryError
from atoll.core.urls import check_http_url
from atoll.core.userfile import read_user_file
from atoll.repo.client import tuf_errors
from atoll.repo.fetch import HttpFetcher
from atoll.repo.plan import ChannelInfo, Release
from atoll.repo.publish import ref_target

__all__ = ["REFRESH_S", "ReleaseSource", "SignedVersion", "check_rollout_versions",
           "open_source", "releases_json", "rollout_versions"]

REFRESH_S = 30.0


@dataclass(frozen=True)
class SignedVersion:
    """One signed version of a channel: ``sequence`` orders them (the channel's
    publications, 1, 2, ...); ``head`` marks the channel's newest."""

    channel: str
    version: str
    commit: str
    sequence: int
    timestamp: int
    head: bool

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


class _DirFetcher(FetcherInterface):
    """``file://`` URLs: a repository directory on this machine."""

    def _fetch(self, url: str) -> Iterator[bytes]:
        path = Path(unquote(urlparse(url).path))
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise tuf_exc.DownloadHTTPError(f"{path}: not found", 404) from None
        return iter([data])


def _base(repo: str) -> tuple[str, FetcherInterface]:
    """(base URL ending in ``/``, fetcher) for a URL or a directory."""
    if "://" in repo:
        url = check_http_url(repo, "--repo")
        return url.rstrip("/") + "/", HttpFetcher()
    path = Path(repo).resolve()
    if not (path / "metadata").is_dir():
        raise InputError(f"--repo {repo}: no metadata/ directory there",
                         resolution="give the directory `atoll publish --to` writes, or "
                         "its URL")
    return path.as_uri() + "/", _DirFetcher()


class ReleaseSource:
    """The signed versions per channel of one TUF repository (thread-safe)."""

    def __init__(self, repo: str, root: Path, *, refresh_s: float = REFRESH_S) -> None:
        """Args:
            repo: the repository's base URL (``metadata/``, ``targets/`` below it) or
                its directory.
            root: a root.json of the repository (the start of the chain of trust).

        Raises:
            InputError: a bad URL, directory or root file.
        """
        self.base, self._fetcher = _base(repo)
        data = read_user_file(Path(root), 512000, "--repo-root")
        try:
            md = Metadata.from_bytes(data)
        except (ValueError, tuf_exc.RepositoryError) as exc:
            raise InputError(f"--repo-root {root}: not TUF metadata: {exc}") from None
        if md.signed.type != "root":
            raise InputError(f"--repo-root {root}: {md.signed.type} metadata, not root")
        self._dir = Path(tempfile.mkdtemp(prefix="atoll-control-tuf-"))
        (self._dir / "root.json").write_bytes(data)
        self.refresh_s = refresh_s
        self._lock = threading.Lock()
        self._cached: dict[str, list[SignedVersion]] | None = None
        self._at = 0.0
        # commit -> its signed package manifest (None: not in the repository); a
        # commit's manifest never changes, so each is downloaded once
        self._manifests: dict[str, list[dict[str, str]] | None] = {}

    def close(self) -> None:
        shutil.rmtree(self._dir, ignore_errors=True)

    def releases(self, *, fresh: bool = False) -> dict[str, list[SignedVersion]]:
        """{channel: its signed versions, newest first}, verified now or at most
        ``refresh_s`` ago (``fresh``: now).

        Raises:
            RepositoryError: the repository's metadata does not verify (including
                expired: :class:`MetadataExpiredError`).
            DownloadError: the repository cannot be reached.
        """
        with self._lock:
            if (fresh or self._cached is None
                    or time.monotonic() - self._at >= self.refresh_s):
                self._cached = self._read()
                self._at = time.monotonic()
            return self._cached

    def manifest(self, commit: str) -> list[dict[str, str]] | None:
        """The package manifest (``[{"name", "version", ...}]``, atoll.store.packages)
        of a signed version's commit, as verified when its channel was last read
        (:meth:`releases`); None for a commit not seen among the signed versions since
        the server started, or published without a manifest target."""
        with self._lock:
            return self._manifests.get(commit)

    def _read(self) -> dict[str, list[SignedVersion]]:
        updater = Updater(str(self._dir), self.base + "metadata/", str(self._dir / "t"),
                          self.base + "targets/", self._fetcher,
                          UpdaterConfig(app_user_agent="atoll-control"), bootstrap=None)
        with tuf_errors("control plane: read the update repository"):
            updater.refresh()
            tf = updater.get_targetinfo("channels.json")
            if tf is None:
                return {}
            (self._dir / "t").mkdir(exist_ok=True)
            path = updater.download_target(tf, str(self._dir / "t" / "channels.json"))
            channels = canonjson.loads(Path(path).read_bytes()).get("channels") or {}
            out: dict[str, list[SignedVersion]] = {}
            for channel in sorted(channels):
                head_tf = updater.get_targetinfo(ref_target(channel))
                if head_tf is None:
                    continue
                head = ChannelInfo.from_custom(head_tf.custom, channel)
                out[channel] = self._versions(updater, head, self._manifests)
        return out

    def _fetch_manifest(self, updater: Updater, info: ChannelInfo,
                        into: dict[str, list[dict[str, str]] | None]) -> None:
        """Download and verify ``info``'s manifest target into ``into`` (once per commit)."""
        if info.commit in into:
            return
        tf = updater.get_targetinfo(info.manifest) if info.manifest else None
        if tf is None:
            into[info.commit] = None
            return
        dest = self._dir / "t" / "manifests"
        dest.mkdir(parents=True, exist_ok=True)
        path = updater.download_target(tf, str(dest / f"{info.commit}.json"))
        doc = canonjson.loads(Path(path).read_bytes())
        into[info.commit] = [{str(k): str(v) for k, v in p.items() if v is not None}
                             for p in doc if isinstance(p, dict) and "name" in p
                             and "version" in p] if isinstance(doc, list) else None

    def _versions(self, updater: Updater, head: ChannelInfo,
                  manifests: dict[str, list[dict[str, str]] | None]) -> list[SignedVersion]:
        rels: Sequence[Release] = head.releases or (
            Release(head.version, head.commit, head.sequence, head.timestamp,
                    ref_target(head.ref)),)  # an older publisher: the head only
        out = []
        for r in rels:
            tf = updater.get_targetinfo(r.target)
            info = ChannelInfo.from_custom(tf.custom, head.ref) if tf is not None else None
            if info is None or (info.commit, info.sequence) != (r.commit, r.sequence):
                raise RepositoryError(f"{r.target}: missing from the signed metadata or not "
                                      "what the channel's signed release list says")
            self._fetch_manifest(updater, info, manifests)
            out.append(SignedVersion(head.ref, r.version, r.commit, r.sequence, r.timestamp,
                                     r.commit == head.commit))
        return sorted(out, key=lambda v: v.sequence, reverse=True)


def check_rollout_versions(signed: Mapping[str, Sequence[SignedVersion]], channel: str,
                           versions: Sequence[Mapping[str, str]], named: Sequence[str],
                           ) -> list[dict[str, str]]:
    """The versions a rollout chooses among, checked against what is signed: every one
    given must be a signed version of ``channel`` with that commit, and every version
    ``named`` (target, from, floors) among them. Without ``versions``, every signed
    version of the channel. Either way oldest first *by the signed publish sequence*,
    whatever order they were given in: the rollout's "older" and "newer" (hosts ahead
    of the target, floors) must be the hosts' own, or it would send hosts to a version
    they refuse as a downgrade, and release as "ahead" hosts that are behind. Pure.

    Raises:
        InputError: an unknown channel, a version that is not signed (or with another
            commit), or a named version outside the list.
    """
    kept = signed.get(channel)
    if kept is None:
        raise InputError(f"channel {channel!r} is not signed in the update repository",
                         details="signed channels: " + (", ".join(sorted(signed)) or "none"))
    by_version: dict[str, SignedVersion] = {}
    for sv in sorted(kept, key=lambda v: v.sequence):  # a version published twice: newest
        by_version[sv.version] = sv
    oldest_first = sorted(by_version.values(), key=lambda v: v.sequence)
    listing = ", ".join(f"{v.version} ({v.commit[:12]})" for v in oldest_first)
    if not versions:
        versions = [{"version": v.version, "commit": v.commit} for v in oldest_first]
    for given_v in versions:
        found = by_version.get(str(given_v.get("version")))
        if found is None or found.commit != given_v.get("commit"):
            raise InputError(
                f"version {given_v.get('version')!r} ({str(given_v.get('commit'))[:12]}) is "
                "not a signed "
                f"version of channel {channel}", details=f"signed versions: {listing}",
                resolution="choose among the signed versions (`atoll fleet releases`); a "
                "pruned version must be published again")
    given = {str(v["version"]) for v in versions}
    for name in named:
        if name not in given:
            raise InputError(f"version {name!r} is not a signed version of channel "
                             f"{channel}", details=f"signed versions: {listing}",
                             resolution="choose among the signed versions "
                             "(`atoll fleet releases`)")
    versions = sorted(versions, key=lambda v: by_version[str(v.get("version"))].sequence)
    return [{"version": str(v["version"]), "commit": str(v["commit"])} for v in versions]


@contextlib.contextmanager
def open_source(repo: str | None, root: Path | None) -> Iterator[ReleaseSource | None]:
    """A :class:`ReleaseSource` for ``fleet serve`` (None without ``repo``), closed after.

    Raises:
        InputError: ``repo`` without ``root`` or the other way round, or see
            :class:`ReleaseSource`.
    """
    if repo is None and root is None:
        yield None
        return
    if repo is None or root is None:
        raise InputError("--repo and --repo-root go together",
                         resolution="give the update repository and its root.json")
    src = ReleaseSource(repo, root)
    try:
        yield src
    finally:
        src.close()


# -- for the API (atoll.control.app) ----------------------------------------------


def _unavailable(exc: AtollError) -> ApiError:
    return ApiError(503, "repository_unavailable",
                    f"the update repository cannot be read: {exc.brief}",
                    details=exc.details, resolution=exc.resolution or "try again later",
                    headers={"Retry-After": "30"})


def releases_json(source: ReleaseSource | None) -> dict[str, Any]:
    """``GET /v1/releases``: ``{"repository", "channels": {channel: [SignedVersion]}}``,
    newest first.

    Raises:
        ApiError: 404 (the server reads no repository), 503 (it cannot be read now).
    """
    if source is None:
        raise ApiError(404, "not_found", "this control plane reads no update repository",
                       resolution="start it with `atoll fleet serve --repo URL --repo-root "
                       "root.json`")
    try:
        channels = source.releases()
    except (RepositoryError, DownloadError) as exc:
        raise _unavailable(exc) from None
    return {"repository": source.base,
            "channels": {ch: [v.to_json() for v in vs] for ch, vs in channels.items()}}


def rollout_versions(source: ReleaseSource | None, channel: str,
                     versions: Sequence[Mapping[str, str]], named: Sequence[str],
                     ) -> list[dict[str, str]]:
    """The versions a new rollout chooses among, checked against the signed ones read
    now (:func:`check_rollout_versions`); as given when the server reads no repository.

    Raises:
        ApiError: 422 (not signed), 503 (the repository cannot be read now).
    """
    if source is None:
        return [dict(v) for v in versions]
    try:
        signed = source.releases(fresh=True)
    except (RepositoryError, DownloadError) as exc:
        raise _unavailable(exc) from None
    try:
        return check_rollout_versions(signed, channel, versions, named)
    except InputError as exc:
        raise ApiError(422, "not_signed", exc.brief, details=exc.details,
                       resolution=exc.resolution) from None

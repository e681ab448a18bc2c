"""App images kept between builds, keyed by their inputs and the archive's signed state.

An app image is reproducible: the same inputs (:func:`atoll.apps.image.image_inputs`)
built from the same state of the Debian archive give the same bytes. The state of the
archive is what its ``InRelease`` files say (each binds every Packages index, hence
every package version, by its hash), so a build is reused only when the inputs and the
``InRelease`` of every source the build reads are the same as when it was made:

* each ``InRelease`` is fetched and checked with ``gpgv`` against the Debian archive
  keyring (the same check apt makes) and against its ``Valid-Until`` (the security
  suite's), so a replayed or forged one never selects a cached image;
* anything that cannot be fetched or checked (an offline mirror, a mirror signed by
  another key) means "build", never "reuse";
* a hit is checked against the sha256 recorded when it was stored (a damaged file is
  rebuilt), then copied out.

Layout, inside the package cache's directory (``atoll.compose.debcache``)::

    images/<name>-<key>.tar     the ``docker load`` archive
    images/<name>-<key>.json    build_image's result + the archive's sha256

Only the newest :data:`KEEP_PER_IMAGE` entries of each image are kept. The cache is
as trusted as the compose machine's ``/var/cache`` (root only), like the store it
builds into. Decision record: docs/compose.md "App images are built once per archive
state".
"""

from __future__ import annotations

import datetime as dt
import email.utils
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from atoll.core import canonjson, fsutil
from atoll.core.run import run

__all__ = ["DEBIAN_KEYRING", "KEEP_PER_IMAGE", "ImageCache", "archive_state", "release_url"]

log = logging.getLogger("atoll.apps.imagecache")

DEBIAN_KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
KEEP_PER_IMAGE = 2
FETCH_TIMEOUT_S = 30.0
MAX_INRELEASE_BYTES = 1 << 20  # bookworm's is ~150 KB


def release_url(source: str) -> str:
    """``deb URL SUITE COMPONENT...`` -> ``URL/dists/SUITE/InRelease``.

    Raises:
        ValueError: not a ``deb`` line with a URL and a suite.
    """
    parts = source.split()
    if len(parts) < 3 or parts[0] != "deb":
        raise ValueError(f"not a deb source line: {source!r}")
    return f"{parts[1].rstrip('/')}/dists/{parts[2]}/InRelease"


def _valid_until(text: str) -> dt.datetime | None:
    m = re.search(r"^Valid-Until:\s*(.+)$", text, re.MULTILINE)
    return email.utils.parsedate_to_datetime(m.group(1).strip()) if m else None


def _verified(data: bytes, keyring: Path, now: dt.datetime) -> bool:
    """``data`` is an InRelease signed by a key of ``keyring`` and not past its Valid-Until."""
    with tempfile.NamedTemporaryFile(prefix="atoll-inrelease-") as fh:
        fh.write(data)
        fh.flush()
        proc = run(["gpgv", "--keyring", str(keyring), fh.name], check=False,
                   what="gpgv InRelease", timeout=60)
    if proc.returncode != 0:
        return False
    try:
        until = _valid_until(data.decode("utf-8", "replace"))
    except (TypeError, ValueError):
        return False
    return until is None or until > now


def archive_state(sources: Sequence[str], *, keyring: Path = DEBIAN_KEYRING,
                  now: dt.datetime | None = None) -> str | None:
    """The sha256 (hex) of the verified ``InRelease`` of every source, in order; None
    when one of them cannot be fetched or does not verify (the caller builds)."""
    now = now or dt.datetime.now(dt.UTC)
    if not keyring.is_file():
        return None
    h = hashlib.sha256()
    for source in sources:
        try:
            url = release_url(source)
            with urllib.request.urlopen(url, timeout=FETCH_TIMEOUT_S) as resp:
                data = resp.read(MAX_INRELEASE_BYTES + 1)
        except (OSError, ValueError) as exc:
            log.info("app image cache: %s: %s: building", source, exc)
            return None
        if len(data) > MAX_INRELEASE_BYTES or not _verified(data, keyring, now):
            log.info("app image cache: %s: InRelease does not verify: building", url)
            return None
        h.update(hashlib.sha256(data).digest())
    return h.hexdigest()


class ImageCache:
    """Built app images under ``directory`` (see the module docstring)."""

    def __init__(self, directory: Path) -> None:
        self.dir = Path(directory)

    def key(self, inputs: dict[str, Any], state: str) -> str:
        """The entry key (32 hex) of an image with ``inputs`` built from archive ``state``."""
        return canonjson.sha256_of({"inputs": inputs, "archive": state})[:32]

    def _paths(self, name: str, key: str) -> tuple[Path, Path]:
        return self.dir / f"{name}-{key}.tar", self.dir / f"{name}-{key}.json"

    def get(self, name: str, key: str, out: Path) -> dict[str, Any] | None:
        """Copy the entry to ``out`` and return its build result; None on a miss (or a
        damaged entry, which is removed)."""
        tar, meta = self._paths(name, key)
        try:
            record = json.loads(meta.read_text())
            if fsutil.sha256_file(tar) != record["sha256"]:
                raise ValueError("its sha256 differs from the one recorded")
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("app image cache: %s is damaged (%s): building", tar, exc)
            tar.unlink(missing_ok=True)
            meta.unlink(missing_ok=True)
            return None
        tmp = out.with_name(f".{out.name}.cached")
        shutil.copyfile(tar, tmp)
        os.replace(tmp, out)
        os.utime(meta)  # last use, for pruning
        result: dict[str, Any] = record["result"]
        return result | {"out": str(out)}

    def put(self, name: str, key: str, built: Path, result: dict[str, Any]) -> None:
        """Keep a copy of ``built`` (with ``result``), then prune ``name``'s older entries.
        A failure is logged: the cache never fails a build."""
        tar, meta = self._paths(name, key)
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            os.chmod(self.dir, 0o700)
            tmp = tar.with_name(f".{tar.name}.{os.getpid()}")
            shutil.copyfile(built, tmp)
            record = {"sha256": fsutil.sha256_file(tmp),
                      "result": {k: v for k, v in result.items() if k != "out"}}
            os.replace(tmp, tar)
            fsutil.atomic_write(meta, json.dumps(record, sort_keys=True).encode())
            self._prune(name)
        except OSError as exc:
            log.warning("app image cache %s: not stored: %s", self.dir, exc)

    def _prune(self, name: str) -> None:
        metas = sorted(self.dir.glob(f"{name}-*.json"), key=lambda p: p.stat().st_mtime,
                       reverse=True)
        for meta in metas[KEEP_PER_IMAGE:]:
            meta.with_suffix(".tar").unlink(missing_ok=True)
            meta.unlink(missing_ok=True)
        for stale in self.dir.glob(f".{name}-*.tar.*"):  # a killed put's copy
            if stale.stat().st_mtime < dt.datetime.now().timestamp() - 3600:
                stale.unlink(missing_ok=True)

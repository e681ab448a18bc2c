"""The app image cache: reuse only for the same inputs and the same signed archive state.

InRelease files are signed for real (gpg, a key made for the test) and checked with gpgv,
as the Debian archive's are; the image build itself is replaced by a small layer writer
(the real build is exercised in tests/integration/apps_fixtures.py).
"""

from __future__ import annotations

import datetime as dt
import io
import os
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from atoll.apps import image as image_mod
from atoll.apps.imagecache import KEEP_PER_IMAGE, ImageCache, archive_state, release_url

NOW = dt.datetime(2026, 11, 30, 12, 0, tzinfo=dt.UTC)


class Archive:
    """A file:// mirror with clear-signed InRelease files and the keyring that signs them."""

    def __init__(self, root: Path, gnupg: Path, keyring: Path) -> None:
        self.root, self.gnupg, self.keyring = root, gnupg, keyring

    def publish(self, suite: str, body: str, *, valid_until: dt.datetime | None = None) -> Path:
        text = f"Origin: Test\nSuite: {suite}\nDate: Sat, 28 Nov 2026 02:16:20 UTC\n"
        if valid_until is not None:
            text += f"Valid-Until: {valid_until.strftime('%a, %d %b %Y %H:%M:%S UTC')}\n"
        text += body
        out = self.root / "dists" / suite / "InRelease"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.unlink(missing_ok=True)
        subprocess.run(["gpg", "--batch", "--yes", "--homedir", str(self.gnupg), "--clearsign",
                        "--output", str(out)], input=text.encode(), check=True,
                       capture_output=True)
        return out

    def source(self, suite: str) -> str:
        return f"deb file://{self.root} {suite} main"


def _gpg(home: Path, *args: str) -> bytes:
    return subprocess.run(["gpg", "--batch", "--homedir", str(home), *args], check=True,
                          capture_output=True).stdout


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Archive]:
    home = tmp_path_factory.mktemp("gnupg")
    os.chmod(home, 0o700)
    _gpg(home, "--passphrase", "", "--quick-gen-key", "Test Archive <archive@example.org>",
         "ed25519", "sign", "never")
    keyring = home.parent / "archive-keyring.gpg"
    keyring.write_bytes(_gpg(home, "--export"))
    yield Archive(tmp_path_factory.mktemp("mirror"), home, keyring)
    subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "all"], check=False)


def test_release_url_follows_the_archive_layout() -> None:
    assert (release_url("deb http://deb.debian.org/debian/ bookworm-updates main")
            == "http://deb.debian.org/debian/dists/bookworm-updates/InRelease")
    with pytest.raises(ValueError):
        release_url("deb-src http://x bookworm main")
    with pytest.raises(ValueError):
        release_url("deb http://x")


def test_the_state_is_the_signed_releases_and_moves_with_them(archive: Archive) -> None:
    archive.publish("s1", "SHA256:\n aa 1 main/binary-amd64/Packages\n")
    archive.publish("s1-security", "x\n", valid_until=NOW + dt.timedelta(days=7))
    sources = [archive.source("s1"), archive.source("s1-security")]
    first = archive_state(sources, keyring=archive.keyring, now=NOW)
    assert first is not None and len(first) == 64
    assert archive_state(sources, keyring=archive.keyring, now=NOW) == first
    assert archive_state(sources[:1], keyring=archive.keyring, now=NOW) != first
    archive.publish("s1", "SHA256:\n bb 1 main/binary-amd64/Packages\n")  # a new push
    moved = archive_state(sources, keyring=archive.keyring, now=NOW)
    assert moved is not None and moved != first


def test_anything_unverified_means_build(archive: Archive, tmp_path: Path) -> None:
    good = archive.publish("s2", "x\n")
    sources = [archive.source("s2")]
    assert archive_state(sources, keyring=archive.keyring, now=NOW) is not None
    # changed after signing
    good.write_bytes(good.read_bytes().replace(b"Suite: s2", b"Suite: s3"))
    assert archive_state(sources, keyring=archive.keyring, now=NOW) is None
    # signed, but past its Valid-Until (a replayed release)
    archive.publish("s2", "x\n", valid_until=NOW - dt.timedelta(seconds=1))
    assert archive_state(sources, keyring=archive.keyring, now=NOW) is None
    # signed by a key the keyring does not hold
    archive.publish("s2", "x\n")
    other = tmp_path / "other.gpg"
    other.write_bytes(b"")
    assert archive_state(sources, keyring=other, now=NOW) is None
    # no keyring, no release, no mirror
    assert archive_state(sources, keyring=tmp_path / "none.gpg", now=NOW) is None
    assert archive_state([archive.source("nosuch")], keyring=archive.keyring, now=NOW) is None
    assert archive_state(["deb http://127.0.0.1:9/ bookworm main"],
                         keyring=archive.keyring, now=NOW) is None


def _fake_rootfs(calls: list[str]) -> Any:
    def rootfs(r: Any, suite: str, mirror: str, epoch: int, out: Path, work: Path,
               deb_cache: Any = None) -> None:
        calls.append(suite)
        with tarfile.open(out, "w") as tar:
            info = tarfile.TarInfo("./etc/hostname")
            info.size, info.mtime = 6, epoch
            tar.addfile(info, io.BytesIO(b"atoll\n"))
    return rootfs


def test_the_same_inputs_and_archive_state_reuse_the_image(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    state = {"now": "a" * 64}
    monkeypatch.setattr(image_mod, "_rootfs", _fake_rootfs(calls))
    monkeypatch.setattr(image_mod, "archive_state", lambda sources: state["now"])
    cache = ImageCache(tmp_path / "images")

    def build(out: str, **kw: Any) -> dict[str, object]:
        return image_mod.build_image("mariadb", suite="bookworm", out=tmp_path / out,
                                     cache=cache, **kw)

    built = build("a.tar")
    reused = build("b.tar")
    assert calls == ["bookworm"]  # built once
    assert (tmp_path / "a.tar").read_bytes() == (tmp_path / "b.tar").read_bytes()
    assert reused == built | {"out": str(tmp_path / "b.tar")}
    build("c.tar", epoch=1700000001)  # other inputs: built
    assert len(calls) == 2
    state["now"] = "b" * 64  # the archive moved: built
    build("d.tar")
    assert len(calls) == 3
    state["now"] = None  # unverifiable: built, and nothing kept
    before = sorted(p.name for p in cache.dir.iterdir())
    build("e.tar")
    assert len(calls) == 4 and sorted(p.name for p in cache.dir.iterdir()) == before


def test_a_damaged_entry_is_rebuilt_and_old_entries_are_pruned(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    state = {"now": "a" * 64}
    monkeypatch.setattr(image_mod, "_rootfs", _fake_rootfs(calls))
    monkeypatch.setattr(image_mod, "archive_state", lambda sources: state["now"])
    cache = ImageCache(tmp_path / "images")
    image_mod.build_image("mariadb", suite="bookworm", out=tmp_path / "a.tar", cache=cache)
    (tar,) = cache.dir.glob("mariadb-*.tar")
    with open(tar, "r+b") as fh:
        fh.seek(100)
        fh.write(b"X")
    image_mod.build_image("mariadb", suite="bookworm", out=tmp_path / "b.tar", cache=cache)
    assert len(calls) == 2  # the damaged copy was not used
    assert (tmp_path / "a.tar").read_bytes() == (tmp_path / "b.tar").read_bytes()
    assert oct(cache.dir.stat().st_mode & 0o777) == "0o700"
    for n in range(KEEP_PER_IMAGE + 2):
        state["now"] = f"{n:064x}"
        image_mod.build_image("mariadb", suite="bookworm", out=tmp_path / "c.tar",
                              cache=cache)
    assert len(list(cache.dir.glob("mariadb-*.tar"))) == KEEP_PER_IMAGE
    assert len(list(cache.dir.glob("mariadb-*.json"))) == KEEP_PER_IMAGE

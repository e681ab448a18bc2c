"""The package cache with the real mmdebstrap and apt: a cached .deb that matches the
signed index is reused, one that does not (same size, other bytes) never reaches
apt. (Composes that fill and reuse the cache: test_compose*.py.)"""

from __future__ import annotations

import subprocess
from pathlib import Path

from atoll.compose.debcache import DebCache, parse_deb_filename

SOURCES = ["deb http://deb.debian.org/debian bookworm main",
           "deb http://deb.debian.org/debian bookworm-updates main",
           "deb http://deb.debian.org/debian-security bookworm-security main"]


def _mmdebstrap_extract(cache: DebCache, target: Path, *pkgs: str) -> str:
    """mmdebstrap's extract variant (download + unpack the named packages, nothing
    installed) with the cache's hooks; returns its stderr."""
    proc = subprocess.run(
        ["mmdebstrap", "--mode=root", "--variant=extract", f"--include={','.join(pkgs)}",
         *cache.mmdebstrap_args(), "bookworm", str(target), *SOURCES],
        capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stderr


def test_a_tampered_cached_deb_is_never_offered_to_apt(tmp_path: Path) -> None:
    # genuine .debs, as apt downloads them (verified against the signed index)
    dl = tmp_path / "dl"
    dl.mkdir()
    subprocess.run(["apt-get", "update", "-qq"], check=True, timeout=600)
    subprocess.run(["apt-get", "download", "-qq", "sl", "hello"], cwd=dl, check=True,
                   timeout=600, capture_output=True)
    cache = DebCache(tmp_path / "cache")
    cache.pool.mkdir(parents=True)
    debs = {parse_deb_filename(p.name)[0]: p for p in dl.glob("*.deb")}  # type: ignore[index]
    genuine_sl = debs["sl"].read_bytes()
    (cache.pool / debs["hello"].name).write_bytes(debs["hello"].read_bytes())
    tampered = bytearray(genuine_sl)
    tampered[len(tampered) // 2:] = b"\0" * (len(tampered) - len(tampered) // 2)
    (cache.pool / debs["sl"].name).write_bytes(bytes(tampered))  # same size as the real one

    err = _mmdebstrap_extract(cache, tmp_path / "root", "sl", "hello")
    assert "atoll: package cache: 1 .deb files" in err  # hello, verified
    assert "1 did not match and are not used" in err  # sl
    # apt works from the very lists the files were checked against (no second update)
    assert "skipping apt-get update because it was already run" in err
    # apt downloaded sl itself: the unpacked game is the real one
    assert (tmp_path / "root/usr/games/sl").stat().st_size > 10_000
    assert (tmp_path / "root/usr/bin/hello").is_file()

"""An image with the boot feature, composed twice from the same inputs, is the same
commit: kernel, initramfs, byte code, atoll's copy, every file.

The first compose is the run's cached one (tests/compose_fixtures.py, cold package
cache in a fresh CI run); the second reuses the package cache, so this also shows
that packages taken from the cache give the same image as downloaded ones.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from atoll.compose.build import HOSTNAME, compose
from atoll.compose.features import ATOLL_PREFIX
from atoll.compose.treefile import load_treefile
from atoll.store import ops
from atoll.store.checkout import checkout
from tests.compose_fixtures import BOOT_TREEFILE, ComposedBoot, composed_boot, deb_cache


@pytest.fixture(scope="module")
def boot(artifact_cache: Path) -> ComposedBoot:
    return composed_boot(artifact_cache)


def _compose_again(boot: ComposedBoot, cache: Path) -> str:
    """The same treefile composed again into the same store, on the same ref, as the
    first time: the ref is cleared first (no parent), and set back afterwards. (The
    ref is an input: the commit's subject names it.)"""
    tf = load_treefile(BOOT_TREEFILE)
    boot.repo.set_ref(tf.ref, None)
    try:
        return compose(tf, BOOT_TREEFILE.parent, boot.repo, deb_cache=deb_cache(cache)).commit
    finally:
        boot.repo.set_ref(tf.ref, boot.commit)


def test_boot_image_composed_twice_is_the_same_commit(boot: ComposedBoot,
                                                      artifact_cache: Path) -> None:
    first = boot.commit
    pool = deb_cache(artifact_cache).pool
    cached = set(pool.iterdir())
    again = _compose_again(boot, artifact_cache)

    def packages(commit: str) -> dict[str, dict[str, str]]:
        return boot.repo.read_commit(commit).packages()

    if again != first and packages(again) != packages(first):
        # the archive moved between the cached compose and this one (a security
        # push): those are other inputs. Compose the first one again, now.
        first = again
        cached = set(pool.iterdir())
        again = _compose_again(boot, artifact_cache)
    # a compose of what the cache holds downloads nothing (issue 15: compose once)
    assert sorted(p.name for p in set(pool.iterdir()) - cached) == []
    if again != first:
        a, b = boot.repo.read_commit(first), boot.repo.read_commit(again)
        files = ops.diff(boot.repo, first, again)["files"]
        pytest.fail(f"composing twice gave {first[:12]} and {again[:12]}; files that "
                    f"differ: {files}; same tree: {a.tree == b.tree}, same metadata: "
                    f"{a.metadata == b.metadata}")
    # every package of the image is in the cache, by name and version (the CVE report
    # reads changelogs there)
    cache = deb_cache(artifact_cache)
    missing = [p["name"] for p in boot.repo.read_commit(again).manifest
               if cache.path_of(p["name"], p["version"], p["architecture"]) is None]
    assert missing == []


def test_the_image_has_one_atoll_and_no_build_machine_identity(boot: ComposedBoot,
                                                               tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    checkout(boot.repo, boot.commit, tree)
    assert (tree / ATOLL_PREFIX / "atoll/cli/boot.py").is_file()
    assert (tree / ATOLL_PREFIX / "atoll/cli/__pycache__").is_dir()  # byte-compiled
    assert not list(tree.glob("usr/lib/python3*/*-packages/atoll"))
    unit = (tree / "usr/lib/systemd/system/atoll-boot-complete.service").read_text()
    assert f"PYTHONPATH=/{ATOLL_PREFIX}" in unit
    assert (tree / "usr/etc/hostname").read_text() == HOSTNAME
    assert "nameserver" not in (tree / "usr/etc/resolv.conf").read_text()
    assert (tree / "usr/etc/machine-id").read_text() == ""
    assert "RESUME=none" in (tree / "usr/etc/initramfs-tools/conf.d/atoll").read_text()
    kernels = list(tree.glob("usr/lib/modules/*/initrd.img"))
    assert len(kernels) == 1 and kernels[0].stat().st_size > 1 << 20
    assert os.listdir(tree / "var") == []

"""Compose: treefile -> mmdebstrap rootfs -> features -> files -> atoll layout -> commit.

Reproducible: the same treefile, atoll and archive state give the same commit
id (docs/compose.md lists what makes that true). Downloaded packages are kept
in a :class:`~atoll.compose.debcache.DebCache` when one is given, so a second
compose downloads only what changed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from atoll.compose import features
from atoll.compose.debcache import DebCache
from atoll.compose.layout import SLIM_DPKG_OPTS, to_atoll_layout
from atoll.compose.treefile import Treefile, treefile_hash
from atoll.core.errors import InputError, ToolError
from atoll.core.progress import progress, track
from atoll.core.run import require_tool, run
from atoll.store.packages import read_manifest
from atoll.store.repo import Repo

__all__ = ["ComposeResult", "build_rootfs", "compose", "normalize_rootfs"]

log = logging.getLogger("atoll.compose")

@dataclass(frozen=True)
class ComposeResult:
    commit: str
    ref: str
    changed: bool
    seconds: float
    packages: int


# What the build machine leaks into a rootfs (mmdebstrap copies both from the host):
# fixed contents, so that the image is the same wherever it is composed. The host
# config sets the real ones at first boot (hostname; network: dns).
HOSTNAME = "localhost\n"
RESOLV_CONF = ("# atoll: the image names no DNS server; the host config sets them "
               "(network: dns)\n")


def build_rootfs(tf: Treefile, target: Path, *, deb_cache: DebCache | None = None) -> None:
    """Run mmdebstrap for ``tf`` into the directory ``target`` (must not exist).

    Args:
        deb_cache: reuse and keep the downloaded packages there (verified against
            the signed index before apt sees them; see ``compose.debcache``).

    Raises:
        ToolError: mmdebstrap failed; apt's own "E:" lines are in the message.
    """
    require_tool("mmdebstrap")
    pkgs = list(tf.packages)
    env = {"SOURCE_DATE_EPOCH": str(tf.source_date_epoch)}
    for name in features.expand(tf.features):
        pkgs.extend(features.get(name).packages)
        env.update(features.get(name).build_env)
    argv: list[str | os.PathLike[str]] = [
        "mmdebstrap", "--mode=root", "--format=directory", f"--variant={tf.variant}",
        f"--components={','.join(tf.components)}", "--aptopt=Acquire::Retries \"3\"",
    ]
    argv += [f"--dpkgopt={o}" for o in SLIM_DPKG_OPTS]
    if deb_cache is not None:
        argv += deb_cache.mmdebstrap_args()
    if pkgs:
        argv.append(f"--include={','.join(sorted(set(pkgs)))}")
    argv += [tf.suite, target, *tf.apt_sources()]
    try:
        run(argv, env=env, what="mmdebstrap", timeout=3600)
    except ToolError as exc:
        apt_lines = [ln for ln in exc.stderr.splitlines() if ln.startswith(("E:", "W: Unable"))]
        raise ToolError(
            "mmdebstrap failed: " + (apt_lines[0][3:].strip() if apt_lines else "see details"),
            argv=exc.argv, returncode=exc.returncode, stderr=exc.stderr,
            resolution="check package names (apt-cache policy NAME) and the mirror in the treefile",
        ) from None


def normalize_rootfs(root: Path) -> None:
    """Replace what mmdebstrap copied from the build machine (``/etc/hostname``,
    ``/etc/resolv.conf`` when it is a plain file) with fixed contents."""
    etc = Path(root) / "etc"
    for name, text in (("hostname", HOSTNAME), ("resolv.conf", RESOLV_CONF)):
        p = etc / name
        if p.is_symlink() or (p.exists() and not p.is_file()):
            continue  # a package made it a link (systemd-resolved): not the build host's
        p.write_text(text)
        os.chmod(p, 0o644)


@contextlib.contextmanager
def _reproducible(epoch: int) -> Iterator[None]:
    """``SOURCE_DATE_EPOCH`` for the features' commands (``run`` passes it on:
    mkinitramfs then sorts, clamps mtimes and compresses single-threaded), and
    umask 022 (what mmdebstrap uses), so that files and directories the features
    create get the same modes whatever the caller's umask."""
    old = os.environ.get("SOURCE_DATE_EPOCH")
    os.environ["SOURCE_DATE_EPOCH"] = str(epoch)
    old_umask = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old_umask)
        if old is None:
            os.environ.pop("SOURCE_DATE_EPOCH", None)
        else:
            os.environ["SOURCE_DATE_EPOCH"] = old


def _add_files(tf: Treefile, base: Path, root: Path) -> None:
    for f in tf.files:
        dest = root / f.path.lstrip("/")
        if dest.is_symlink() or not dest.parent.resolve().is_relative_to(root.resolve()):
            raise InputError(f"files: {f.path}: refusing to write through a symlink")
        dest.parent.mkdir(parents=True, exist_ok=True)
        if f.content is not None:
            dest.write_text(f.content)
        else:
            assert f.source is not None
            shutil.copyfile(base / f.source, dest)
        os.chmod(dest, int(f.mode, 8))
        os.chown(dest, 0, 0)


def _build_app_images(tf: Treefile, out: Path, deb_cache: DebCache | None) -> Path:
    """Build the treefile's app images into ``out`` (``<name>.tar`` each); ``out``."""
    from atoll.apps.image import build_image

    out.mkdir(parents=True, exist_ok=True)
    for name in track(tf.app_images, "compose: app images", unit="images"):
        log.info("compose: app image %s (%s)", name, tf.suite)
        build_image(name, suite=tf.suite, out=out / f"{name}.tar", mirror=tf.mirror,
                    epoch=tf.source_date_epoch, deb_cache=deb_cache)
    return out


def _add_app_images(built: Path, root: Path) -> None:
    """Move the built app images into /usr/share/atoll/app-images (+ index.json)."""
    from atoll.apps.image import BUNDLE_DIR, write_bundle_index

    dest = root / BUNDLE_DIR.relative_to("/")
    dest.mkdir(parents=True, exist_ok=True)
    for tar in sorted(built.glob("*.tar")):
        os.replace(tar, dest / tar.name)
    write_bundle_index(dest)


def compose(tf: Treefile, base: Path, repo: Repo, *, ref: str | None = None,
            deb_cache: DebCache | None = None) -> ComposeResult:
    """Compose ``tf`` and commit it on ``ref`` (default: the treefile's ref).

    Same treefile, same atoll, same archive state -> same commit id. When the
    tree is the same as the ref's current commit, no new commit is made.

    Args:
        deb_cache: keep downloaded packages there and reuse them (None: download
            everything); trimmed to its size at the end.

    Raises:
        InputError: a bad ref or an unknown feature (nothing is built).
        ToolError: mmdebstrap or a feature's command failed (nothing is committed).
    """
    ref = ref or tf.ref
    repo.check_ref(ref)
    wanted = features.expand(tf.features)  # fails early on an unknown feature
    start = time.monotonic()
    tfhash = treefile_hash(tf, base)
    try:
        with repo.staging_dir("compose-") as staging:
            return _compose_in(tf, base, repo, ref, wanted, tfhash, staging / "rootfs", start,
                               deb_cache)
    finally:
        if deb_cache is not None:
            deb_cache.trim()


def _compose_in(tf: Treefile, base: Path, repo: Repo, ref: str, wanted: list[str], tfhash: str,
                root: Path, start: float, deb_cache: DebCache | None) -> ComposeResult:
    log.info("compose %s: mmdebstrap %s (%s, %d packages requested)",
             ref, tf.suite, tf.variant, len(tf.packages))
    # App images are built beside the rootfs, at the same time: each mmdebstrap
    # leaves a core idle much of the time (downloads, dpkg's fsyncs, scripts).
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="compose-apps") as pool:
        apps = (pool.submit(_build_app_images, tf, root.parent / "app-images", deb_cache)
                if tf.app_images else None)
        with progress(f"compose {ref}: mmdebstrap"):
            build_rootfs(tf, root, deb_cache=deb_cache)
        normalize_rootfs(root)
        with _reproducible(tf.source_date_epoch):
            for name in track(wanted, f"compose {ref}: features", unit="features"):
                log.info("compose %s: feature %s", ref, name)
                features.get(name).install(root)
            _add_files(tf, base, root)
            if apps is not None:
                _add_app_images(apps.result(), root)
            manifest = read_manifest(root)
            to_atoll_layout(root)
    log.info("compose %s: committing %d packages", ref, len(manifest))
    with repo.lock.shared():  # gc cannot take the new commit before the ref points at it
        result = _commit_rootfs(tf, repo, ref, wanted, tfhash, root, manifest, start)
    if result.changed and deb_cache is not None:  # before the cache is trimmed
        from atoll.security.build import record_changelog_fixes  # python-debian

        record_changelog_fixes(repo, repo.read_commit(result.commit).parent, result.commit,
                               deb_cache.path_of)
    return result


def _commit_rootfs(tf: Treefile, repo: Repo, ref: str, wanted: list[str], tfhash: str,
                   root: Path, manifest: list[dict[str, str]], start: float) -> ComposeResult:
    old = repo.refs().get(ref)
    cid = repo.commit_dir(
        root, parent=old, version=tf.version, subject=tf.subject or f"compose {ref}",
        timestamp=tf.source_date_epoch, manifest=manifest, link=True,
        metadata={"treefile_sha256": tfhash, "suite": tf.suite, "features": wanted},
    )
    changed = True
    if old is not None and repo.has(old, "commit"):
        prev = repo.read_commit(old)
        new = repo.read_commit(cid)
        if prev.tree == new.tree and prev.metadata == new.metadata \
                and prev.version == new.version:
            cid, changed = old, False
    if changed:
        repo.set_ref(ref, cid)
    return ComposeResult(cid, ref, changed, time.monotonic() - start, len(manifest))

"""Hotfixes on a host: one Debian package laid over the base commit, offline and confined.

A hotfix deployment is a local derivation of a signed base commit: the base is
checked out into a throwaway root under the store's ``tmp/`` (hardlinks), the
packages are installed there by dpkg on an overlay, so that nothing is written
through the hardlinks (``dpkg --root``: maintainer scripts run chrooted into
the throwaway root, inside new mount, network, IPC, UTS and PID namespaces;
never on the live system), and the result is committed with the package in its
manifest and ``metadata.hotfix`` naming the base. The base commit stays in the
store; updates still apply to it (the update client counts a host by its base).

On disk (beside the sysroot's other state; every write atomic)::

    atoll/state/hotfixes.json          {"version": 1, "hotfixes": [Hotfix.to_json()...]}
    atoll/state/hotfixes/<sha256>.deb  the package, kept to re-apply it on a new base
    atoll/state/sbom/<commit>.cdx.json the CycloneDX SBOM of each derived commit

A derived commit's metadata: the base's, plus ``hotfix: {"base": COMMIT,
"base_version": V, "packages": [{"name", "version", "kind", "sha256"}...]}``.

The lifecycle decisions (drop, keep, block) are pure: :mod:`atoll.deploy.hotfixplan`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import logging
import os
import re
import shlex
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from atoll.compose.layout import SLIM_DPKG_OPTS, TMPFILES_NAME, to_atoll_layout
from atoll.core.errors import AtollError, HostStateError, InputError, ToolError
from atoll.core.fsutil import atomic_write, atomic_write_json, damaged, fsync_dir, read_state_json
from atoll.core.overlayfs import MOUNT_OPTIONS, fold_upper
from atoll.core.run import require_tool, run
from atoll.core.text import printable
from atoll.deploy.hotfixplan import BasePlan, Hotfix, Kind, base_of, plan_for_base, valid_name
from atoll.deploy.sysroot import Deployment, Sysroot
from atoll.store.checkout import checkout
from atoll.store.packages import parse_dpkg_status, read_manifest

__all__ = ["DebInfo", "HotfixResult", "add", "fetch_from_archive", "hotfixes",
           "inspect_deb",
           "list_view", "rebase_hotfixes", "remove", "sbom_path"]

log = logging.getLogger("atoll.deploy")

MAX_DEB_BYTES = 2 << 30
_MOUNT_FAILED = 97  # the exit status of _install's script when the overlay mount failed
# the memory devices (major 1) maintainer scripts count on: null, zero, full, random, urandom
_DEVICES = (("null", 3), ("zero", 5), ("full", 7), ("random", 8), ("urandom", 9))
_SHA = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class DebInfo:
    """The control fields of a .deb that a hotfix needs."""

    name: str
    version: str
    architecture: str
    conflicts: tuple[str, ...]  # package names in Conflicts and Breaks (no versions)


@dataclass(frozen=True)
class HotfixResult:
    hotfix: Hotfix | None
    deployment: Deployment
    base: str
    carried: tuple[Hotfix, ...]


# -- records ------------------------------------------------------------

def _records_path(sr: Sysroot) -> Path:
    return sr.state / "hotfixes.json"


def _debs_dir(sr: Sysroot) -> Path:
    return sr.state / "hotfixes"


def hotfixes(sr: Sysroot) -> list[Hotfix]:
    """The hotfix records, active and dropped, in the order they were added.

    Raises:
        DamagedStateError: hotfixes.json does not read.
    """
    path = _records_path(sr)
    fix = ("restore it from a backup, or remove it: the deployments keep their packages; "
           "`atoll hotfix add` then starts a new list")
    data = read_state_json(path, dict, {"hotfixes": []}, resolution=fix)
    entries = data.get("hotfixes")
    if not isinstance(entries, list):
        raise damaged(path, "'hotfixes' is not a list", fix)
    try:
        return [Hotfix.from_json(e) for e in entries]
    except ValueError as exc:
        raise damaged(path, str(exc), fix) from None


def _save(sr: Sysroot, records: list[Hotfix]) -> None:
    atomic_write_json(_records_path(sr), {"version": 1,
                                          "hotfixes": [h.to_json() for h in records]})


def _deb_path(sr: Sysroot, h: Hotfix) -> Path:
    return _debs_dir(sr) / f"{h.sha256}.deb"


# -- the package ---------------------------------------------------------

def _forget_unrecorded(sr: Sysroot, records: list[Hotfix]) -> None:
    """Remove kept packages (and half copies) that neither a record nor a deployment
    names: what an add killed before it deployed left (SIGKILL, a power cut). Under the
    sysroot lock."""
    named = {h.sha256 for h in records}
    for dep in sr.deployments():  # a deployment whose add was killed before its record
        try:
            meta = sr.repo.read_commit(dep.commit).metadata.get("hotfix") or {}
        except AtollError:
            return  # unreadable: keep everything rather than guess
        named |= {str(p.get("sha256")) for p in meta.get("packages", [])}
    d = _debs_dir(sr)
    for p in d.glob("*.deb") if d.is_dir() else ():
        if p.stem not in named:
            p.unlink(missing_ok=True)
    for p in d.glob(".*.tmp") if d.is_dir() else ():
        p.unlink(missing_ok=True)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _names(field: str) -> tuple[str, ...]:
    """Package names of a relationship field (``a (>= 1) | b, c:any``), versions dropped."""
    out = []
    for alt in re.split(r"[,|]", field):
        name = alt.strip().split(" ", 1)[0].split("(", 1)[0].split(":", 1)[0].strip()
        if name:
            out.append(name)
    return tuple(out)


def inspect_deb(path: Path) -> DebInfo:
    """Read a .deb's control fields with ``dpkg-deb``.

    Raises:
        InputError: not a regular file, or not a Debian binary package (dpkg-deb's reason).
    """
    require_tool("dpkg-deb", package="dpkg")
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: not a file", resolution="give the path of a .deb file")
    fields = ("Package", "Version", "Architecture", "Conflicts", "Breaks")
    proc = run(["dpkg-deb", "--field", p, *fields], check=False, timeout=60)
    if proc.returncode != 0:
        why = proc.stderr.decode(errors="replace").strip().splitlines()
        raise InputError(f"{p}: not a Debian package" + (f" ({why[0]})" if why else ""),
                         resolution="give a .deb file (dpkg-deb --info FILE reads one)")
    got: dict[str, str] = {}
    for line in proc.stdout.decode(errors="replace").splitlines():
        key, sep, value = line.partition(":")
        if sep and not line.startswith(" "):
            got[key.strip()] = value.strip()
    name, version = got.get("Package", ""), got.get("Version", "")
    if not valid_name(name) or not re.fullmatch(r"(?:[0-9]+:)?[0-9][A-Za-z0-9.+~:-]*", version):
        raise InputError(f"{p}: not a Debian package (no valid Package or Version field)")
    return DebInfo(name, version, got.get("Architecture", ""),
                   _names(got.get("Conflicts", "")) + _names(got.get("Breaks", "")))


def _check_members(deb: Path, root: Path, work: Path, links: set[str]) -> None:
    """Refuse a .deb whose data would land outside the throwaway ``root``.

    ``dpkg --root`` unpacks without a chroot (only maintainer scripts are chrooted):
    a member named ``../x``, a hard link to ``/etc/shadow``, or a file under a
    symlink that points outside (shipped by this or an earlier package of the same
    run, ``links``, or already in the base) would be written to, or read from, the
    live system. Device nodes and fifos are refused too (images hold none).

    Raises:
        InputError: such a member (its name).
    """
    import posixpath
    import tarfile

    tar = work / "data.tar"
    with open(tar, "wb") as fh:
        run(["dpkg-deb", "--fsys-tarfile", deb], stdout=fh, what="dpkg-deb --fsys-tarfile",
            timeout=1800)

    def outside(name: str) -> bool:
        return name.startswith("/") or ".." in name.split("/")

    def escapes(where: str, target: str) -> bool:
        """A symlink at ``where`` to ``target`` resolves outside the root (no chroot)."""
        return target.startswith("/") or posixpath.normpath(
            posixpath.join(posixpath.dirname(where), target)).split("/")[0] == ".."

    try:
        with tarfile.open(tar, "r:") as tf:
            for m in tf:
                name = m.name[2:] if m.name.startswith("./") else m.name
                bad = None
                if outside(name):
                    bad = "a path outside the package root"
                elif m.isdev() or m.isfifo():
                    bad = "a device node or fifo"
                elif m.islnk() and outside(m.linkname[2:] if m.linkname.startswith("./")
                                           else m.linkname):
                    bad = f"a hard link to {m.linkname!r}"
                else:
                    parts = name.rstrip("/").split("/")
                    for i in range(1, len(parts)):
                        up = "/".join(parts[:i])
                        p = root / up
                        if up in links or (p.is_symlink() and escapes(up, os.readlink(p))):
                            bad = f"a path under the symlink /{up}"
                            break
                if m.issym() and escapes(name, m.linkname):
                    links.add(name.rstrip("/"))
                if bad:
                    raise InputError(
                        f"{deb.name}: member {printable(m.name[:200])!r} is {bad}",
                        resolution="nothing was changed; a hotfix package may only write "
                        "inside the image (dpkg --root unpacks it without a chroot)")
    except tarfile.TarError as exc:
        raise InputError(f"{deb.name}: its data archive does not read ({exc})") from None
    finally:
        tar.unlink(missing_ok=True)


def _essential(status_text: str) -> set[str]:
    """Names of the installed packages marked ``Essential: yes`` in a dpkg status file."""
    out = set()
    for para in status_text.split("\n\n"):
        fields = dict(ln.split(":", 1) for ln in para.splitlines()
                      if ":" in ln and not ln.startswith(" "))
        if fields.get("Essential", "").strip() == "yes" and \
                "installed" in fields.get("Status", ""):
            out.add(fields.get("Package", "").strip())
    return out


def fetch_from_archive(sr: Sysroot, name: str, version: str, dest: Path) -> tuple[Path, str]:
    """Download ``name`` at ``version`` from the archive the host is configured for (the
    apt sources, keyrings and settings in the /etc of the booted deployment, else the one
    that boots next) into the directory ``dest``; returns (the .deb, its sha256).

    apt verifies it: the Release files' signatures against the host's trusted keys,
    then the package's hash against the signed index. Nothing of the host's own apt
    state is touched (lists and cache live in ``dest``; the dpkg status is the base's).

    Raises:
        InputError: not NAME=VERSION, or the archive has no such version.
        DownloadError: the archive could not be reached or did not verify.
    """
    from atoll.core.errors import DownloadError

    if not valid_name(name) or not re.fullmatch(r"(?:[0-9]+:)?[0-9][A-Za-z0-9.+~:-]*", version):
        raise InputError(f"{name}={version}: not PKG=VERSION (a Debian package and version)")
    require_tool("apt-get", package="apt")
    etc_apt = sr.deployment_path(_current(sr)) / "etc/apt"
    if not (etc_apt / "sources.list").is_file() and not any(
            (etc_apt / "sources.list.d").glob("*")):
        raise HostStateError(f"{etc_apt}: no apt sources configured on this host",
                             resolution="use a .deb with --sha256 (an offline host)")
    work = Path(dest)
    for d in ("lists/partial", "cache/archives/partial", "state", "debs"):
        (work / d).mkdir(parents=True, exist_ok=True)
    status = work / "state/status"
    status.touch()
    conf = work / "apt.conf"
    opts = {"Dir::Etc": str(etc_apt), "Dir::State": str(work / "state"),
            "Dir::State::Lists": str(work / "lists"), "Dir::State::status": str(status),
            "Dir::Cache": str(work / "cache"), "Debug::NoLocking": "1",
            "APT::Sandbox::User": "root", "Acquire::Retries": "3"}
    conf.write_text("".join(f'{k} "{v}";\n' for k, v in opts.items()))
    env = {"APT_CONFIG": str(conf)}
    try:
        run(["apt-get", "-q", "update"], env=env, what="apt-get update", timeout=900)
    except ToolError as exc:
        raise DownloadError("the host's archive could not be read or did not verify: "
                            + _apt_error(exc.stderr), details=exc.stderr,
                            resolution="check the network and the apt sources in /etc/apt; "
                            "on an offline host, add a .deb with --sha256") from None
    proc = run(["apt-get", "-q", "download", f"{name}={version}"], env=env, check=False,
               cwd=work / "debs", what="apt-get download", timeout=900)
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace")
        if "not found" in err or "Unable to locate" in err:
            raise InputError(f"{name}={version}: the host's archive has no such version "
                             f"({_apt_error(err)})",
                             resolution=f"`apt-cache policy {name}` on a machine with the "
                             "same sources lists the versions") from None
        raise DownloadError(f"{name}={version}: download failed: {_apt_error(err)}",
                            details=err)
    debs = sorted((work / "debs").glob("*.deb"))
    if len(debs) != 1:
        raise DownloadError(f"{name}={version}: apt-get download left {len(debs)} files")
    return debs[0], _sha256(debs[0])


def _apt_error(stderr: str) -> str:
    lines = [ln[2:].strip() for ln in stderr.splitlines() if ln.startswith(("E:", "W:"))]
    return lines[0] if lines else (stderr.strip().splitlines() or ["see details"])[-1]


# -- deriving a commit ---------------------------------------------------

def _to_debian_layout(root: Path) -> list[str]:
    """Undo atoll's layout in a throwaway checkout so dpkg finds /etc and its database;
    returns the image's tmpfiles lines (kept across the re-layout)."""
    etc, usr_etc = root / "etc", root / "usr/etc"
    shutil.rmtree(etc, ignore_errors=True)
    os.rename(usr_etc, etc)
    (root / "var/lib").mkdir(parents=True, exist_ok=True)
    os.rename(root / "usr/share/atoll/dpkg", root / "var/lib/dpkg")
    tmpfiles = root / TMPFILES_NAME
    if not tmpfiles.is_file():
        return []
    lines = tmpfiles.read_text().splitlines()[1:]
    tmpfiles.unlink()  # a hardlink into the store: to_atoll_layout writes a new one
    return lines


def _install(tree: Path, staging: Path, debs: list[Path]) -> None:
    """dpkg --install ``debs`` onto ``tree``, confined (see the module docstring).

    dpkg runs on an overlay mounted in its own mount namespace: ``tree`` (hardlinks
    into the store) is the lower layer and is never written; what dpkg and the
    maintainer scripts change lands in ``staging/upper``, folded into ``tree`` when
    dpkg is done (:func:`atoll.core.overlayfs.fold_upper`). A killed dpkg leaves no
    mount behind: the namespace goes with it.

    Raises:
        ToolError: dpkg refused (dependencies, conflicts, a failing maintainer script).
        HostStateError: overlayfs is not available.
    """
    require_tool("unshare", package="util-linux")
    require_tool("setpriv", package="util-linux")
    require_tool("mount", package="mount")
    require_tool("dpkg")
    upper = staging / "upper"
    for d in (upper, staging / "work", staging / "root"):
        d.mkdir(mode=0o700)
    # the merged root takes the upper directory's owner and mode: the tree root's
    st = os.lstat(tree)
    os.chown(upper, st.st_uid, st.st_gid)
    os.chmod(upper, stat.S_IMODE(st.st_mode))
    # relative paths, looked up from ``staging``: no path can break the option string
    options = f"lowerdir={tree.relative_to(staging)},upperdir=upper,workdir=work,{MOUNT_OPTIONS}"
    dpkg = ["dpkg", "--root=root", "--force-confold"]
    install = [*dpkg, "--no-triggers", *[f"--{o}" for o in SLIM_DPKG_OPTS], "--install"]
    script = "\n".join((
        "set -e",
        f"mount -t overlay overlay -o {shlex.quote(options)} root || exit {_MOUNT_FAILED}",
        # the image's /dev is empty: maintainer scripts get the usual character devices
        # on a tmpfs of this namespace only (nothing of it reaches the commit)
        f"mount -t tmpfs -o mode=0755,size=64k atoll-dev root/dev || exit {_MOUNT_FAILED}",
        *[f"mknod -m 0666 root/dev/{name} c 1 {minor}" for name, minor in _DEVICES],
        # no service starts in a throwaway root
        "printf '#!/bin/sh\\nexit 101\\n' > root/usr/sbin/policy-rc.d",
        "chmod 0755 root/usr/sbin/policy-rc.d",
        " ".join(shlex.quote(w) for w in install) + ' "$@"',
        " ".join(shlex.quote(w) for w in [*dpkg, "--triggers-only", "--pending"]), ""))
    # killed with atoll (setpriv --pdeathsig), and all of dpkg with it (--kill-child, the
    # PID namespace): nothing goes on writing in the staging directory afterwards
    argv: list[str | os.PathLike[str]] = [
        "setpriv", "--pdeathsig", "KILL", "--",
        "unshare", "--mount", "--net", "--ipc", "--uts", "--pid", "--fork", "--kill-child",
        "--", "sh", "-c", script, "dpkg", *[d.resolve() for d in debs]]
    try:
        run(argv, env={"DEBIAN_FRONTEND": "noninteractive"}, what="dpkg --install",
            timeout=1800, cwd=staging)
    except ToolError as exc:
        lines = [ln.strip() for ln in exc.stderr.splitlines() if ln.strip()]
        if exc.returncode == _MOUNT_FAILED:
            raise HostStateError(
                "cannot mount the overlay a hotfix is installed on: "
                + (lines[-1] if lines else "see details"), details=exc.stderr,
                resolution="atoll needs overlayfs (`modprobe overlay`, as Docker does) on "
                "a store whose filesystem can hold an overlay's upper layer (not itself "
                "an overlay); nothing was changed") from None
        first = next((i for i, ln in enumerate(lines) if ln.startswith("dpkg")), None)
        why = (" ".join(lines[first:first + 2]) if first is not None else
               lines[-1] if lines else "see details")
        raise ToolError(
            "dpkg refused the hotfix: " + why,
            argv=exc.argv, returncode=exc.returncode, stderr=exc.stderr,
            resolution="nothing was changed; a hotfix installs only what the base "
            "satisfies (dependencies must already be in it)") from None
    sbin = staging / "upper/usr/sbin"  # the base's own policy-rc.d, if any, stays
    if sbin.is_dir() and not sbin.is_symlink():  # else refused after the fold
        (sbin / "policy-rc.d").unlink(missing_ok=True)
    fold_upper(os.fspath(staging / "upper"), os.fspath(tree))


# what to_atoll_layout reads, moves into or clears: a package or maintainer script that
# made one of them a symlink would have it work on what the link points at (the live
# system); they must be directories where they exist
_LAYOUT_DIRS = ("boot", "etc", "etc/ssh", "usr", "usr/etc", "usr/lib", "usr/lib/modules",
                "usr/lib/tmpfiles.d", "usr/sbin", "usr/share", "usr/share/atoll", "var",
                "var/lib", "var/lib/dbus", "var/lib/dpkg")


def _check_layout_paths(root: Path) -> None:
    """Raises InputError when a path atoll's layout step works on is not what it must be:
    one of :data:`_LAYOUT_DIRS` (and each kernel's module directory) not a directory, a
    kernel or initrd in /boot not a regular file, or ``usr/share/atoll/dpkg`` there
    (the layout step moves the dpkg database to it)."""
    def refuse(rel: str, what: str) -> InputError:
        return InputError(f"the hotfix made /{printable(rel)} {what}: refused",
                          resolution="nothing was changed; a hotfix may not move the "
                          "image's system directories")

    dirs = list(_LAYOUT_DIRS)
    boot = root / "boot"
    if boot.is_dir() and not boot.is_symlink():  # a symlink: refused below
        for p in sorted(boot.iterdir()):
            if p.name.startswith(("vmlinuz-", "initrd.img-")):
                if not stat.S_ISREG(os.lstat(p).st_mode):
                    raise refuse(f"boot/{p.name}", "something other than a regular file")
                dirs.append("usr/lib/modules/" + p.name.split("-", 1)[1])
    for rel in dirs:
        try:
            st = os.lstat(root / rel)
        except FileNotFoundError:
            continue
        if not stat.S_ISDIR(st.st_mode):
            raise refuse(rel, "something other than a directory (a symlink?)")
    if os.path.lexists(root / "usr/share/atoll/dpkg"):
        raise refuse("usr/share/atoll/dpkg", "exist (the image's dpkg database goes there)")


def _derive(sr: Sysroot, base: str, carried: list[Hotfix]) -> str:
    """Commit ``base`` + ``carried`` (their kept .deb files); returns the commit id.

    Raises:
        InputError: a package would remove an essential package of the base.
        ToolError: dpkg refused. Nothing is committed then.
    """
    repo = sr.repo
    b = repo.read_commit(base)
    debs = [_deb_path(sr, h) for h in carried]
    for d in debs:
        if not d.is_file():
            raise HostStateError(f"{d}: the kept package of a hotfix is missing",
                                 resolution="`atoll hotfix remove NAME`, then add it again")
    # held to the commit: gc removes none of the objects the checkout links to
    with repo.lock.shared(), repo.staging_dir("hotfix-") as staging:
        # hardlinks into the store: nothing below writes a file of ``root`` in place
        # (dpkg writes on an overlay, see _install; the layout steps rename and unlink)
        root = staging / "tree"
        checkout(repo, base, root, verify=True)
        known = repo.file_inodes(base)
        image_tmpfiles = _to_debian_layout(root)
        status = root / "var/lib/dpkg/status"
        essential = _essential(status.read_text(errors="replace"))
        links: set[str] = set()
        for h, d in zip(carried, debs, strict=True):
            _check_members(d, root, staging, links)
            info = inspect_deb(d)
            hit = sorted(set(info.conflicts) & essential)
            if hit:
                raise InputError(
                    f"hotfix {h.name} {h.version} would remove essential package(s) "
                    f"{', '.join(hit)} (Conflicts/Breaks)",
                    resolution="nothing was changed; a hotfix may replace packages, never "
                    "remove the base's essential ones")
        _install(root, staging, debs)
        _check_layout_paths(root)
        after = parse_dpkg_status(status.read_text(errors="replace"))
        gone = essential - {p["name"] for p in after}
        if gone:
            raise InputError(f"the hotfix removed essential package(s) {', '.join(sorted(gone))}",
                             resolution="nothing was changed")
        to_atoll_layout(root)
        tmpfiles = root / TMPFILES_NAME
        lines = tmpfiles.read_text().splitlines()
        atomic_write(tmpfiles, (lines[0] + "\n" + "\n".join(
            sorted(set(lines[1:]) | set(image_tmpfiles))) + "\n").encode(), sync=False)
        manifest = read_manifest(root)
        meta = dict(b.metadata) | {"hotfix": {
            "base": base, "base_version": b.version,
            "packages": [{"name": h.name, "version": h.version, "kind": h.kind,
                          "sha256": h.sha256} for h in carried]}}
        names = ", ".join(f"{h.name} {h.version}" for h in carried)
        commit = repo.commit_dir(root, parent=base, version=b.version, link=True, known=known,
                                 subject=f"hotfix: {names} on {b.version or base[:12]}",
                                 timestamp=b.timestamp, manifest=manifest, metadata=meta)
    _write_sbom(sr, commit, b.version or base[:12])
    return commit


def sbom_path(sr: Sysroot, commit: str) -> Path:
    """Where the SBOM of a hotfix commit derived on this host is kept."""
    return sr.root / "atoll/state/sbom" / f"{commit}.cdx.json"


def _write_sbom(sr: Sysroot, commit: str, base_version: str) -> None:
    """The CycloneDX SBOM of a derived commit, from its manifest (the document publish
    makes for a published commit, written without cyclonedx-python-lib: hosts do not
    carry it), kept at :func:`sbom_path`. The SBOMs of commits no longer in the store
    (``atoll gc`` removed them) are removed then: a file there always describes a commit
    the host has."""
    from atoll.deploy.hostsbom import sbom_json

    c = sr.repo.read_commit(commit)
    path = sbom_path(sr, commit)
    path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    atomic_write(path, sbom_json(commit, name=f"atoll {base_version} + hotfixes",
                                 version=c.version or "", timestamp=c.timestamp,
                                 manifest=list(c.manifest)))
    for old in path.parent.glob("*.cdx.json"):
        gone = old.name[:-len(".cdx.json")]
        if _SHA.fullmatch(gone) and not sr.repo.has(gone, "commit"):
            old.unlink(missing_ok=True)


def _current(sr: Sysroot) -> Deployment:
    """The booted deployment, else the one that boots next.

    Raises: HostStateError: nothing is deployed.
    """
    deps = sr.deployments()
    booted = sr.booted_id()
    for d in deps:
        if d.id == booted:
            return d
    if not deps:
        raise HostStateError("nothing is deployed: a hotfix needs a base deployment",
                             resolution="deploy or update first")
    return deps[0]


def _stage(sr: Sysroot, base: str, carried: list[Hotfix], origin: str | None) -> Deployment:
    """Make base + ``carried`` the next boot (the base itself when nothing is carried)."""
    with sr.repo.lock.shared():  # gc cannot take the new commit before it is deployed
        commit = _derive(sr, base, carried) if carried else base
        return sr.deploy(commit, origin=origin)


def add(sr: Sysroot, deb: Path, sha256: str, *, kind: Kind = "fast-track", reason: str = "",
        expires: dt.datetime | None = None, now: dt.datetime | None = None) -> HotfixResult:
    """Add a hotfix from a local .deb and stage base + active hotfixes as the next boot.

    The base is the base commit of the booted deployment (else the one that boots
    next). A hotfix of a package that already has one replaces it.

    Raises:
        InputError: wrong sha256, not a .deb, an essential package would go, an expiry
            in the past or on a fast-track hotfix. Nothing changes then.
        ToolError: dpkg refused (its reason). Nothing changes.
        HostStateError: nothing is deployed; the sysroot is locked or damaged.
    """
    now = now or dt.datetime.now(dt.UTC)
    want = sha256.strip().lower()
    if not _SHA.fullmatch(want):
        raise InputError(f"--sha256 {sha256[:80]!r} is not 64 hex digits",
                         resolution="give the package's digest from a trusted source "
                         "(sha256sum FILE on the machine you checked it on)")
    if expires is not None and kind != "pin":
        raise InputError("--expires needs --pin (a fast-track hotfix drops itself when the "
                         "base ships its version)")
    if expires is not None and expires <= now:
        raise InputError(f"--expires {expires.isoformat()} is not in the future")
    deb = Path(deb)
    if not deb.is_file():
        raise InputError(f"{deb}: not a file", resolution="give the path of a .deb file")
    if deb.stat().st_size > MAX_DEB_BYTES:
        raise InputError(f"{deb}: larger than {MAX_DEB_BYTES >> 20} MiB")
    got = _sha256(deb)
    if got != want:
        raise InputError(f"{deb}: sha256 is {got}, not the {want} given",
                         resolution="nothing was changed; check where the file came from")
    info = inspect_deb(deb)
    if not _printable(reason):
        raise InputError("--reason: control characters are not allowed")
    sr.check()
    with sr.lock.exclusive():
        current = _current(sr)
        base, _ = base_of(sr.repo, current.commit)
        records = hotfixes(sr)
        _forget_unrecorded(sr, records)
        new = Hotfix(name=info.name, version=info.version, kind=kind, sha256=got,
                     added=now.strftime("%Y-%m-%dT%H:%M:%SZ"), reason=reason, expires=expires,
                     architecture=info.architecture)
        others = [h for h in records if h.name != info.name]
        carried = [h for h in others if h.state == "active"] + [new]
        dest = _debs_dir(sr)
        dest.mkdir(mode=0o755, exist_ok=True)
        kept = dest / f"{got}.deb"
        fresh = not kept.exists()
        if fresh:
            tmp = dest / f".{got}.tmp"
            try:
                shutil.copyfile(deb, tmp)
                os.chmod(tmp, 0o644)
                if _sha256(tmp) != got:  # the file changed while we read it
                    raise InputError(f"{deb}: changed while it was read",
                                     resolution="try again")
                os.replace(tmp, kept)
            except BaseException:  # Ctrl-C, a full disk: no half copy left behind
                tmp.unlink(missing_ok=True)
                with contextlib.suppress(OSError):
                    dest.rmdir()
                raise
            fsync_dir(dest)
        try:
            dep = _stage(sr, base, carried, current.origin)
        except BaseException:
            if fresh and not any(h.sha256 == got for h in records):
                kept.unlink(missing_ok=True)
                with contextlib.suppress(OSError):
                    dest.rmdir()  # only when empty: as it was before
            raise
        _save(sr, [*others, new])
        sr.record_event("hotfix-add", package=info.name, version=info.version, kind=kind,
                        deployment=dep.id, base=base)
    return HotfixResult(new, dep, base, tuple(carried))


def _printable(text: str) -> bool:
    return text == "" or text.isprintable()


def remove(sr: Sysroot, name: str) -> HotfixResult:
    """Forget the hotfix of ``name`` and stage base + the remaining active hotfixes.

    Raises:
        InputError: no hotfix of that package.
    """
    sr.check()
    with sr.lock.exclusive():
        records = hotfixes(sr)
        gone = next((h for h in records if h.name == name), None)
        if gone is None:
            raise InputError(f"no hotfix of {name}",
                             resolution="`atoll hotfix list` shows the hotfixes")
        current = _current(sr)
        base, _ = base_of(sr.repo, current.commit)
        rest = [h for h in records if h.name != name]
        carried = [h for h in rest if h.state == "active"]
        dep = _stage(sr, base, carried, current.origin)
        _save(sr, rest)
        if not any(h.sha256 == gone.sha256 for h in rest):
            _deb_path(sr, gone).unlink(missing_ok=True)
        sr.record_event("hotfix-remove", package=name, deployment=dep.id, base=base)
    return HotfixResult(gone, dep, base, tuple(carried))


def rebase_hotfixes(sr: Sysroot, new_base: str, now: dt.datetime | None = None
                    ) -> tuple[str, BasePlan]:
    """What to prepare for the new base commit ``new_base`` (an update): the commit of
    new base + the hotfixes kept, or ``new_base`` itself when none is kept. Records the
    dropped ones as such (with why). The caller holds the sysroot lock or none.

    Raises:
        HostStateError: a hotfix blocks the update (the message says which and what to do).
        ToolError: dpkg refused a kept hotfix on the new base (the update is blocked).
    """
    now = now or dt.datetime.now(dt.UTC)
    records = hotfixes(sr)
    if not any(h.state == "active" for h in records):
        return new_base, BasePlan((), (), ())
    plan = plan_for_base(records, list(sr.repo.read_commit(new_base).manifest), now)
    if plan.block:
        raise HostStateError(
            "a hotfix blocks this update: " + "; ".join(why for _, why in plan.block),
            resolution="the update waits; nothing was changed")
    try:
        commit = _derive(sr, new_base, list(plan.keep)) if plan.keep else new_base
    except (ToolError, InputError) as exc:
        raise HostStateError(f"a hotfix blocks this update: it does not install on the new "
                             f"base: {exc.brief}", details=exc.details,
                             resolution="remove it (`atoll hotfix remove NAME`) to take the "
                             "update; nothing was changed") from None
    if plan.drop:
        dropped = {h.name: why for h, why in plan.drop}
        _save(sr, [h if h.name not in dropped else Hotfix.from_json(
            h.to_json() | {"state": "dropped", "why": dropped[h.name]}) for h in records])
        for h, why in plan.drop:
            sr.record_event("hotfix-drop", package=h.name, version=h.version, why=why,
                            base=new_base)
    return commit, plan


def list_view(sr: Sysroot, now: dt.datetime | None = None) -> list[dict[str, Any]]:
    """Every hotfix record with where it is (``in_booted``, ``in_next``) and a status:
    ``active``, ``expired`` (an active pin past its expiry: dropped at the next update),
    or ``dropped`` (why)."""
    now = now or dt.datetime.now(dt.UTC)
    deps = sr.deployments()
    booted = sr.booted_id()
    repo = sr.repo

    def carried(dep: Deployment | None) -> dict[str, str]:
        if dep is None or not repo.has(dep.commit, "commit"):
            return {}
        return {str(p.get("name")): str(p.get("version")) for p in base_of(repo, dep.commit)[1]}

    in_booted = carried(next((d for d in deps if d.id == booted), None))
    in_next = carried(sr.prepared() or (deps[0] if deps else None))
    out = []
    for h in hotfixes(sr):
        status: str = h.state
        why = h.why
        if status == "active" and h.expired(now):
            status, why = "expired", "expired: dropped at the next update (or `hotfix remove`)"
        elif status == "active":
            why = h.reason or ("pinned" if h.kind == "pin" else
                               "until the base ships this version")
        out.append(h.to_json() | {"status": status, "why": why,
                                  "in_booted": in_booted.get(h.name) == h.version,
                                  "in_next": in_next.get(h.name) == h.version})
    return out

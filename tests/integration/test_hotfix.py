"""Hotfixes on a real Debian tree (the quickstart's v1 and v2, composed once per run):
small .deb files built here with dpkg-deb, installed by real dpkg in a throwaway root,
committed, staged, listed, shown by status, dropped or kept by the next base (v2),
and bad packages refused with nothing changed (docs/hotfix.md)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import jsonschema
import pytest

from atoll.agent.host import Host
from atoll.cli import main
from atoll.core.errors import HostStateError
from atoll.deploy.sysroot import Deployment, Sysroot
from tests.compose_fixtures import Composed, composed, deb_cache
from tests.conftest import ROOT

SCHEMA = json.loads((ROOT / "docs/status.schema.json").read_text())
MARKER = "usr/share/atoll-hotfix-test/postinst-ran"


@pytest.fixture(scope="session")
def trees(artifact_cache: Path) -> Composed:
    return composed(artifact_cache)


def build_deb(tmp: Path, name: str, version: str, *, arch: str = "all",
              extra: str = "", postinst: bool = False) -> tuple[Path, str]:
    """A small real .deb (dpkg-deb --build) and its sha256."""
    src = tmp / f"src-{name}-{version}"
    (src / "DEBIAN").mkdir(parents=True)
    (src / "DEBIAN/control").write_text(
        f"Package: {name}\nVersion: {version}\nArchitecture: {arch}\n"
        f"Maintainer: atoll tests <tests@example.org>\n{extra}"
        "Description: a fake security fix for atoll's hotfix tests\n")
    d = src / "usr/share/atoll-hotfix-test"
    d.mkdir(parents=True)
    (d / f"{name}.txt").write_text(f"{name} {version}\n")
    if postinst:  # runs as a maintainer script: where it writes shows where it ran
        (src / "DEBIAN/postinst").write_text(
            f"#!/bin/sh\nset -e\necho ran > /{MARKER}\n")
        os.chmod(src / "DEBIAN/postinst", 0o755)
    deb = tmp / f"{name}_{version}_{arch}.deb"
    subprocess.run(["dpkg-deb", "--build", "--root-owner-group", str(src), str(deb)],
                   check=True, capture_output=True)
    return deb, hashlib.sha256(deb.read_bytes()).hexdigest()


def newer_real_deb(tmp: Path, cache: Path, name: str, version: str) -> tuple[Path, str, str]:
    """The archive's .deb of ``name`` (from the tests' package cache, as composed into
    v1), repacked at a newer version ``VERSION+atoll1``: a real package's "security
    fix" that the archive does not have yet. Returns (deb, sha256, new version)."""
    from atoll.compose.debcache import deb_filename

    src = deb_cache(cache).pool / deb_filename(name, version, "amd64")
    assert src.is_file(), f"{src.name} is not in the tests' package cache"
    new = f"{version}+atoll1"
    work = tmp / f"repack-{name}"
    subprocess.run(["dpkg-deb", "-R", str(src), str(work)], check=True, capture_output=True)
    control = work / "DEBIAN/control"
    control.write_text(control.read_text().replace(f"\nVersion: {version}\n",
                                                   f"\nVersion: {new}\n"))
    deb = tmp / f"{name}_{new}_amd64.deb"
    subprocess.run(["dpkg-deb", "--build", "--root-owner-group", str(work), str(deb)],
                   check=True, capture_output=True)
    return deb, hashlib.sha256(deb.read_bytes()).hexdigest(), new


def v1_cve_report(sysroot: Path, trees: Composed, fixed: str) -> None:
    """v1's CVE report as `atoll update check` keeps it, computed by the publisher's own
    code from v1's real manifest and tracker data in the tracker's format: less carries
    CVE-2099-0002 (high, fixed in ``fixed``) and CVE-2099-0003 (low, no fix yet)."""
    from datetime import UTC, datetime

    from atoll.core import canonjson
    from atoll.security.build import make_report
    from atoll.security.host import save_report
    from atoll.security.tracker import parse_tracker

    def entry(status: str, urgency: str, fix: str | None) -> dict[str, object]:
        rel: dict[str, object] = {"status": status, "urgency": urgency, "repositories": {}}
        if fix:
            rel["fixed_version"] = fix
        return {"description": "a test CVE", "scope": "local", "releases": {"bookworm": rel}}

    tracker = parse_tracker(json.dumps({"less": {
        "CVE-2099-0002": entry("resolved", "high", fixed),
        "CVE-2099-0003": entry("open", "low", None)}}).encode(), "tracker.json")
    doc = make_report(trees.v1, "quickstart/base", "bookworm",
                      list(trees.repo.read_commit(trees.v1).manifest), since=None,
                      since_manifest=None, changelog=[], missing=[], tracker=tracker,
                      now=datetime.now(UTC).replace(microsecond=0))
    save_report(sysroot, trees.v1, canonjson.dumps(doc))


def host_state(sysroot: Path) -> dict[str, object]:
    """What a refused hotfix must leave alone: the store's objects, refs and tmp, the
    state files, the boot pointer and deployments."""
    out: dict[str, object] = {}
    for sub in ("atoll/repo", "atoll/state", "boot", "atoll/deploy"):
        for dirpath, dirs, files in os.walk(sysroot / sub):
            if sub == "atoll/deploy" and Path(dirpath) != sysroot / sub:
                dirs[:] = []
                continue
            for name in dirs + files:
                p = Path(dirpath) / name
                if name == "lock" or ("/objects/" in str(p) and p.is_file()):
                    out[str(p.relative_to(sysroot))] = "object"
                    continue
                out[str(p.relative_to(sysroot))] = (
                    os.readlink(p) if p.is_symlink() else
                    p.read_bytes() if p.is_file() else "dir")
    return out


def v1_host(trees: Composed, tmp_path: Path) -> tuple[Path, Sysroot, Deployment]:
    """A host sysroot under ``tmp_path/host`` with v1 deployed and booted."""
    host = tmp_path / "host"
    sr = Sysroot(host)
    sr.init()
    dep = sr.deploy(trees.v1, repo=trees.repo)
    boot(sr, dep.id)
    return host, sr, dep


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def boot(sr: Sysroot, dep_id: str) -> None:
    """What the initramfs hook does at boot: record the booted deployment."""
    (sr.root / "run/atoll").mkdir(parents=True, exist_ok=True)
    (sr.root / "run/atoll/booted").write_text(dep_id + "\n")


def test_hotfix_add_list_status_then_next_base_drops_fast_track_keeps_pin(
        trees: Composed, artifact_cache: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    host, sr, base = v1_host(trees, tmp_path)
    v2_nc = {p["name"]: p["version"] for p in trees.repo.read_commit(trees.v2).manifest}[
        "netcat-openbsd"]
    assert "netcat-openbsd" not in {p["name"] for p in trees.repo.read_commit(trees.v1).manifest}
    # the "security fix": netcat-openbsd at a version v2 (the next base) supersedes
    nc, nc_sha = build_deb(tmp_path, "netcat-openbsd", "1.0-1", postinst=True)
    code, out, err = cli(capsys, "--sysroot", str(host), "--json", "hotfix", "add", str(nc),
                         "--sha256", nc_sha, "--reason", "CVE-2099-0001")
    assert code == 0, err
    res = json.loads(out)
    dep = res["deployment"]
    assert res["base"] == trees.v1 and dep["commit"] != trees.v1
    deps = sr.deployments()
    assert [d.id for d in deps] == [dep["id"], base.id]  # staged as the next boot; rollback
    repo = sr.repo
    c = repo.read_commit(dep["commit"])
    pkgs = {p["name"]: p["version"] for p in c.manifest}
    assert pkgs["netcat-openbsd"] == "1.0-1"
    assert c.parent == trees.v1 and c.metadata["hotfix"]["base"] == trees.v1
    assert c.metadata["hotfix"]["packages"][0]["name"] == "netcat-openbsd"
    assert repo.has(trees.v1, "commit")  # the base stays in the store
    root = sr.deployment_path(dep["id"])
    # the maintainer script ran in the throwaway root (its file is in the commit),
    # never on the live system
    assert (root / MARKER).read_text() == "ran\n"
    assert not Path("/" + MARKER).exists()
    assert "L /var/lib/dpkg - - - - /usr/share/atoll/dpkg" in (
        root / "usr/lib/tmpfiles.d/atoll-var.conf").read_text()
    assert not (root / "usr/sbin/policy-rc.d").exists() and os.listdir(root / "var") == []
    assert "Package: netcat-openbsd" in (root / "usr/share/atoll/dpkg/status").read_text()

    boot(sr, dep["id"])  # as after the reboot into it
    code, out, _ = cli(capsys, "--sysroot", str(host), "--json", "status")
    st = json.loads(out)
    jsonschema.validate(st, SCHEMA)
    assert st["booted"]["hotfix"]["base"] == trees.v1
    assert st["booted"]["hotfix"]["packages"] == [
        {"name": "netcat-openbsd", "version": "1.0-1", "kind": "fast-track", "expires": None}]
    assert st["rollback"]["hotfix"] is None
    code, out, _ = cli(capsys, "--sysroot", str(host), "status")
    assert "Hotfixes: netcat-openbsd 1.0-1 (fast-track)" in out and "Base: 1 (" in out
    code, out, _ = cli(capsys, "--sysroot", str(host), "hotfix", "list")
    assert "netcat-openbsd 1.0-1  fast-track  active" in out and "CVE-2099-0001" in out

    # v1's signed CVE report (per package version): less carries two open CVEs, which a
    # hotfix deployment of another package still carries (re-read against its manifest)
    less_v1 = {p["name"]: p["version"] for p in trees.repo.read_commit(trees.v1).manifest}[
        "less"]
    pin, pin_sha, less_fix = newer_real_deb(tmp_path, artifact_cache, "less", less_v1)
    v1_cve_report(host, trees, less_fix)
    code, out, err = cli(capsys, "--sysroot", str(host), "--json", "cve", "list", "--host")
    assert code == 0, err
    view = json.loads(out)["booted"]
    assert {c["cve"] for c in view["open"]} == {"CVE-2099-0002", "CVE-2099-0003"}
    assert view["derived"]["base"] == trees.v1 and view["derived"]["closed"] == []
    # v1 has no netcat-openbsd: its report cannot know that source's CVEs, and says so
    assert view["derived"]["unknown"] == [
        {"source": "netcat-openbsd", "version": "1.0-1", "base_version": None}]
    assert "not known for netcat-openbsd 1.0-1 (not in the base)" in view["derived"]["note"]

    # a pin: the real less at a newer version, which fixes CVE-2099-0002
    code, out, err = cli(capsys, "--sysroot", str(host), "--json", "hotfix", "add", str(pin),
                         "--sha256", pin_sha, "--pin", "--expires", "2099-01-01",
                         "--reason", "vendor fix")
    assert code == 0, err
    both = json.loads(out)
    assert both["base"] == trees.v1  # the booted deployment's base, not the hotfix commit
    assert sorted(both["carried"]) == ["less", "netcat-openbsd"]
    boot(sr, both["deployment"]["id"])
    code, out, _ = cli(capsys, "--sysroot", str(host), "--json", "status")
    assert {p["name"]: p["expires"] for p in json.loads(out)["booted"]["hotfix"]["packages"]} \
        == {"netcat-openbsd": None, "less": "2099-01-01T00:00:00Z"}  # a pin's expiry
    code, out, err = cli(capsys, "--sysroot", str(host), "--json", "cve", "list", "--host")
    assert code == 0, err
    view = json.loads(out)["booted"]
    assert view["commit"] == both["deployment"]["commit"]
    assert [(c["cve"], c["source_version"]) for c in view["open"]] == [
        ("CVE-2099-0003", less_fix)]  # no fix yet: still open, at the hotfix's version
    assert view["open_counts"]["high"] == 0 and view["open_counts"]["low"] == 1
    assert [(c["cve"], c["version"]) for c in view["derived"]["closed"]] == [
        ("CVE-2099-0002", less_fix)]
    assert "base image's signed CVE data" in view["derived"]["note"]
    code, out, _ = cli(capsys, "--sysroot", str(host), "cve", "list", "--host")
    assert "closed by hotfix CVE-2099-0002" in out and "hotfix's package versions" in out
    assert "not known for netcat-openbsd 1.0-1 (not in the base)" in out  # said in text too
    # the derived commit's SBOM names the hotfix's version
    from atoll.deploy.hotfix import sbom_path

    sbom = json.loads(sbom_path(sr, both["deployment"]["commit"]).read_text())
    versions = {c["name"]: c["version"] for c in sbom["components"]}
    assert versions["less"] == less_fix and versions["netcat-openbsd"] == "1.0-1"
    assert sbom["metadata"]["component"]["bom-ref"] == \
        f"atoll-commit:{both['deployment']['commit']}"
    # written without cyclonedx-python-lib (hosts lack it): the document publish makes
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    from atoll.repo.sbom import sbom_json

    assert sbom == json.loads(sbom_json(both["deployment"]["commit"], repo.read_commit(
        both["deployment"]["commit"]), name=sbom["metadata"]["component"]["name"]))
    assert JsonStrictValidator(SchemaVersion.V1_5).validate_str(json.dumps(sbom)) is None

    # the next base update (v2 ships netcat-openbsd, newer): prepared as an update is
    repo.pull_local(trees.repo, trees.v2)
    gone = sbom_path(sr, "0" * 64)  # the SBOM of a commit no longer in the store
    gone.write_text("{}")
    out2 = Host(host).prepare(trees.v2)
    assert sbom_path(sr, out2["commit"]).is_file() and not gone.exists()
    assert sbom_path(sr, both["deployment"]["commit"]).is_file()  # still in the store
    new = repo.read_commit(out2["commit"])
    assert new.metadata["hotfix"]["base"] == trees.v2
    assert [p["name"] for p in new.metadata["hotfix"]["packages"]] == ["less"]
    newpkgs = {p["name"]: p["version"] for p in new.manifest}
    assert newpkgs["netcat-openbsd"] == v2_nc and newpkgs["less"] == less_fix
    assert out2["hotfixes"]["kept"] == ["less"]
    assert v2_nc in out2["hotfixes"]["dropped"]["netcat-openbsd"]
    code, out, _ = cli(capsys, "--sysroot", str(host), "--json", "hotfix", "list")
    rows = {r["name"]: r for r in json.loads(out)["hotfixes"]}
    assert rows["netcat-openbsd"]["status"] == "dropped"
    assert "the base ships netcat-openbsd" in rows["netcat-openbsd"]["why"]
    assert rows["less"]["status"] == "active" and rows["less"]["in_next"]
    assert rows["less"]["in_booted"]
    # the update client counts the host by its base (what it runs is v1 + hotfixes)
    from atoll.repo.client import UpdateClient

    assert UpdateClient._base(_client_stub(host), dep["commit"]) == trees.v1

    # remove the pin: the booted base (v1) + what is left active (nothing) boots next
    code, out, err = cli(capsys, "--sysroot", str(host), "--json", "hotfix", "remove",
                         "less")
    assert code == 0, err
    assert json.loads(out)["deployment"]["commit"] == trees.v1
    code, out, _ = cli(capsys, "--sysroot", str(host), "--json", "hotfix", "list")
    assert [r["name"] for r in json.loads(out)["hotfixes"]] == ["netcat-openbsd"]


def _client_stub(host: Path) -> object:
    """Just enough of an UpdateClient for ``_base`` (the host's store)."""
    class Stub:
        store_path = host / "atoll/repo"

        def _repo(self) -> object:
            from atoll.store.repo import Repo

            return Repo.open(self.store_path)

    return Stub()


def test_bad_packages_are_refused_and_nothing_changes(
        trees: Composed, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    host = tmp_path / "host"
    sr = Sysroot(host)
    sr.init()
    sr.deploy(trees.v1, repo=trees.repo)
    good, good_sha = build_deb(tmp_path, "atoll-good-test", "1.0")
    text = tmp_path / "notadeb.deb"
    text.write_text("this is not a Debian package\n")
    text_sha = hashlib.sha256(text.read_bytes()).hexdigest()
    # Conflicts with an essential package of the base: dpkg would have to remove it
    ess, ess_sha = build_deb(tmp_path, "atoll-evil-test", "1.0",
                             extra="Conflicts: sed\nReplaces: sed\nProvides: sed\n")
    # a dependency the base does not satisfy: dpkg itself refuses
    dep, dep_sha = build_deb(tmp_path, "atoll-deps-test", "1.0",
                             extra="Depends: atoll-no-such-package\n")
    before = host_state(host)
    cases = [
        ([str(good), "--sha256", "0" * 64], 2, "sha256 is"),
        ([str(good)], 2, "needs --sha256"),
        ([str(text), "--sha256", text_sha], 2, "not a Debian package"),
        ([str(ess), "--sha256", ess_sha], 2, "essential package(s) sed"),
        ([str(dep), "--sha256", dep_sha], 9, "dpkg refused the hotfix"),
        (["atoll-no-such-package=1.0"], 2, "the host's archive has no such version"),
        (["less=1.0", "--sha256", good_sha], 2, "--sha256 is for a local .deb"),
        ([str(good), "--sha256", good_sha, "--expires", "2099-01-01"], 2, "--expires needs"),
        ([str(good), "--sha256", good_sha, "--pin", "--expires", "2001-01-01"], 2,
         "not in the future"),
    ]
    for argv, want, words in cases:
        code, out, err = cli(capsys, "--sysroot", str(host), "hotfix", "add", *argv)
        assert code == want, (argv, out, err)
        assert words in err and "Traceback" not in err, (argv, err)
        assert host_state(host) == before, argv  # nothing changed, no leftovers
    code, _, err = cli(capsys, "--sysroot", str(host), "hotfix", "remove", "openssl")
    assert code == 2 and "no hotfix of openssl" in err
    assert host_state(host) == before

    # Ctrl-C while the package is copied into the state: no half copy left behind
    import shutil

    def interrupted(src: Path, dst: Path) -> None:
        Path(dst).write_bytes(Path(src).read_bytes()[:100])
        raise KeyboardInterrupt

    monkeypatch.setattr(shutil, "copyfile", interrupted)
    from atoll.deploy.hotfix import add

    with pytest.raises(KeyboardInterrupt):
        add(sr, good, good_sha)
    assert host_state(host) == before


def test_hotfix_from_the_hosts_archive(trees: Composed, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    """PKG=VERSION: downloaded by apt from the archive the deployment's /etc/apt names
    (Release signatures and package hash checked by apt), then laid over the base."""
    host, sr, _ = v1_host(trees, tmp_path)
    assert "netbase" not in {p["name"] for p in trees.repo.read_commit(trees.v1).manifest}
    policy = subprocess.run(["apt-cache", "policy", "netbase"], check=True,
                            capture_output=True, text=True).stdout
    version = next(ln.split()[1] for ln in policy.splitlines() if "Candidate:" in ln)
    code, out, err = cli(capsys, "--sysroot", str(host), "--json", "hotfix", "add",
                         f"netbase={version}", "--reason", "from the archive")
    assert code == 0, err
    res = json.loads(out)
    c = sr.repo.read_commit(res["deployment"]["commit"])
    assert {p["name"]: p["version"] for p in c.manifest}["netbase"] == version
    kept = host / f"atoll/state/hotfixes/{res['hotfix']['sha256']}.deb"
    assert hashlib.sha256(kept.read_bytes()).hexdigest() == res["hotfix"]["sha256"]
    assert list((host / "atoll/cache").iterdir()) == []  # apt's lists and download: gone


def test_pin_older_than_the_new_base_blocks_the_update(
        trees: Composed, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    host, sr, _ = v1_host(trees, tmp_path)
    nc, nc_sha = build_deb(tmp_path, "netcat-openbsd", "1.0-1")
    code, _, err = cli(capsys, "--sysroot", str(host), "hotfix", "add", str(nc), "--sha256",
                       nc_sha, "--pin")
    assert code == 0, err
    sr.repo.pull_local(trees.repo, trees.v2)
    before = host_state(host)
    with pytest.raises(HostStateError) as err:
        Host(host).prepare(trees.v2)
    assert err.value.brief.startswith("a hotfix blocks this update: pinned netcat-openbsd "
                                      "1.0-1 but the new base ships the newer")
    assert sr.prepared() is None and host_state(host) == before


def test_hotfix_deployment_boots_in_nspawn(artifact_cache: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    """The derived tree boots (systemd-nspawn, the boot feature's tree): boot-complete
    marks it good, and required health checks see the hotfix package installed."""
    from atoll.boot import state
    from atoll.boot.devsysroot import cached_repo, make_sysroot
    from tests.integration.test_boot_nspawn import add_check, nspawn_boot, simulate_grub

    repo, _ = cached_repo(artifact_cache)
    host = tmp_path / "sysroot"
    (v1,) = make_sysroot(host, repo, ["test/v1"], good=["test/v1"])
    boot(Sysroot(host), v1)
    deb, sha = build_deb(tmp_path, "atoll-boot-hotfix-test", "1.0", postinst=True)
    code, out, err = cli(capsys, "--sysroot", str(host), "--json", "hotfix", "add", str(deb),
                         "--sha256", sha)
    assert code == 0, err
    dep = json.loads(out)["deployment"]["id"]
    add_check(host, dep, "required.d", "50-hotfix",
              "test -f /usr/share/atoll-hotfix-test/atoll-boot-hotfix-test.txt && "
              f"test -f /{MARKER} && "
              "dpkg-query --admindir=/usr/share/atoll/dpkg -W -f='${Version}' "
              "atoll-boot-hotfix-test | grep -qx 1.0")
    deployment, fallback = simulate_grub(host)
    assert (deployment, fallback) == (dep, False)
    rc, console = nspawn_boot(host, deployment, fallback)
    assert rc == 0, console
    assert "ATOLL-BOOT-COMPLETE" in console
    ev = state.read_events(host)[-1]
    assert (ev["deployment"], ev["result"], ev["event"]) == (dep, "good", "boot")
    checks = {c["name"]: c for c in ev["checks"]}  # type: ignore[attr-defined]
    assert checks["50-hotfix"]["ok"] is True


def craft_deb(tmp: Path, name: str, members: list[tuple[str, str, str]]) -> tuple[Path, str]:
    """A .deb that dpkg-deb --build would not make: data members given as (name, type,
    link target or ""), type "f" (file), "d", "l" (symlink), "h" (hard link)."""
    import io
    import tarfile

    def tgz(items: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz", format=tarfile.GNU_FORMAT) as tf:
            for info, data in items:
                tf.addfile(info, io.BytesIO(data) if data is not None else None)
        return buf.getvalue()

    def info(n: str, kind: bytes, size: int = 0, link: str = "") -> tarfile.TarInfo:
        t = tarfile.TarInfo(n)
        t.type, t.size, t.linkname = kind, size, link
        t.mode = 0o755 if kind in (tarfile.DIRTYPE, tarfile.SYMTYPE) else 0o644
        return t

    control = (f"Package: {name}\nVersion: 1.0\nArchitecture: all\nMaintainer: t "
               "<t@example.org>\nDescription: a crafted package\n").encode()
    kinds = {"f": tarfile.REGTYPE, "d": tarfile.DIRTYPE, "l": tarfile.SYMTYPE,
             "h": tarfile.LNKTYPE}
    data = [(info(n, kinds[k], 2 if k == "f" else 0, link), b"x\n" if k == "f" else None)
            for n, k, link in [("./", "d", ""), ("./usr/", "d", ""), ("./usr/share/", "d", ""),
                               *members]]
    parts = [("debian-binary", b"2.0\n"),
             ("control.tar.gz", tgz([(info("./", tarfile.DIRTYPE), None),
                                     (info("./control", tarfile.REGTYPE, len(control)),
                                      control)])),
             ("data.tar.gz", tgz(data))]
    blob = b"!<arch>\n"
    for n, body in parts:
        blob += (f"{n:<16}{0:<12}{0:<6}{0:<6}{'100644':<8}{len(body):<10}`\n".encode()
                 + body + (b"\n" if len(body) % 2 else b""))
    deb = tmp / f"{name}.deb"
    deb.write_bytes(blob)
    return deb, hashlib.sha256(blob).hexdigest()


def test_packages_that_write_outside_the_image_are_refused(
        trees: Composed, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """dpkg --root unpacks without a chroot: a member ``../..``, a hard link out of the
    root, or a file under a symlink that points out (shipped by an earlier hotfix) would
    reach the live system. Refused, nothing written there, nothing changed."""
    host, sr, _ = v1_host(trees, tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    up = "./" + "../" * 40 + str(outside).lstrip("/")
    link, link_sha = craft_deb(tmp_path, "atoll-link-test",
                               [("./usr/share/out", "l", str(outside))])
    code, out, err = cli(capsys, "--sysroot", str(host), "--json", "hotfix", "add", str(link),
                         "--sha256", link_sha)  # a symlink alone is allowed
    assert code == 0, err
    linked = json.loads(out)["deployment"]["commit"]
    boot(sr, json.loads(out)["deployment"]["id"])
    bad = [
        (craft_deb(tmp_path, "atoll-dotdot-test", [(up + "/escaped", "f", "")]),
         "a path outside the package root"),
        (craft_deb(tmp_path, "atoll-hardlink-test",
                   [("./usr/share/passwd", "h", "./" + "../" * 40 + "etc/passwd")]),
         "is a hard link to"),
        (craft_deb(tmp_path, "atoll-under-test", [("./usr/share/out/", "d", ""),
                                                 ("./usr/share/out/escaped", "f", "")]),
         "under the symlink /usr/share/out"),
    ]
    before = host_state(host)
    for (deb, sha), words in bad:
        code, out, err = cli(capsys, "--sysroot", str(host), "hotfix", "add", str(deb),
                             "--sha256", sha)
        assert code == 2 and words in err and "Traceback" not in err, (deb, err)
        assert list(outside.iterdir()) == [] and host_state(host) == before, deb
    assert not (tmp_path / "escaped").exists()

    # the update path does not depend on the hotfix commit being readable: a damaged
    # one is counted as itself (atolld and `update check` go on), never a traceback
    from atoll.repo.client import UpdateClient

    obj = sr.repo.object_path(linked, "commit")
    obj.chmod(0o644)
    obj.write_bytes(b"damaged")
    st = Host(host).state()
    assert st.booted == linked
    assert UpdateClient._base(_client_stub(host), linked) == linked  # type: ignore[arg-type]


def deb_with_postinst(tmp: Path, name: str, body: str, links: dict[str, str] | None = None
                      ) -> tuple[Path, str]:
    """:func:`build_deb`'s package with a postinst running ``body`` (sh, ``set -e``) and
    ``links`` ({path: target}) shipped as symlinks; (deb, sha256)."""
    deb, _ = build_deb(tmp, name, "1.0")
    work = tmp / f"src-{name}-postinst"
    subprocess.run(["dpkg-deb", "-R", str(deb), str(work)], check=True)
    (work / "DEBIAN/postinst").write_text("#!/bin/sh\nset -e\n" + body)
    os.chmod(work / "DEBIAN/postinst", 0o755)
    for path, target in (links or {}).items():
        (work / path).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(target, work / path)
    subprocess.run(["dpkg-deb", "--build", "--root-owner-group", str(work), str(deb)],
                   check=True, capture_output=True)
    return deb, hashlib.sha256(deb.read_bytes()).hexdigest()


def test_a_system_directory_turned_into_a_symlink_is_refused(
        trees: Composed, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """atoll's layout step works on /etc, /etc/ssh, /var, /boot, the kernels' module
    directories, the dpkg database's new place...: a package or maintainer script that
    points one of them at the live system is refused before that step, as is a name
    under /var that a tmpfiles.d line cannot hold; the live system's files and the
    host's state are as they were."""
    host, _, _ = v1_host(trees, tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "machine-id").write_text("the live system's file\n")
    cases = [
        ("ssh", f"rm -rf /etc/ssh\nln -s {outside} /etc/ssh\n", {}, "/etc/ssh"),
        ("dbus", f"rm -rf /var/lib/dbus\nln -s {outside} /var/lib/dbus\n", {},
         "/var/lib/dbus"),
        ("dpkgdb", "", {"usr/share/atoll/dpkg": str(outside)}, "/usr/share/atoll/dpkg"),
        ("kernel", "mkdir -p /boot /usr/lib/modules\necho x > /boot/vmlinuz-evil\n"
         f"ln -s {outside} /usr/lib/modules/evil\n",
         {}, "/usr/lib/modules/evil"),
        ("odd", "mkdir '/var/lib/odd name'\n", {}, "a tmpfiles.d line cannot hold"),
    ]
    before = host_state(host)
    for name, body, links, words in cases:
        deb, sha = deb_with_postinst(tmp_path, f"atoll-{name}-test", body, links=links)
        code, _, err = cli(capsys, "--sysroot", str(host), "hotfix", "add", str(deb),
                           "--sha256", sha)
        assert code == 2 and words in err and "Traceback" not in err, (name, err)
        assert os.listdir(outside) == ["machine-id"], name
        assert host_state(host) == before, name


def test_hotfix_add_killed_while_dpkg_runs_leaves_the_host_as_it_was(
        trees: Composed, tmp_path: Path) -> None:
    """SIGKILL to `atoll hotfix add` while a maintainer script runs: dpkg and the script
    die with it (nothing goes on writing), no overlay stays mounted, the store, state,
    boot pointer and deployments are as they were, and the next `hotfix add` works."""
    import signal
    import sys
    import time

    from atoll.deploy.hotfix import hotfixes

    host, sr, _ = v1_host(trees, tmp_path)
    slow, slow_sha = deb_with_postinst(tmp_path, "atoll-slow-test",
                                       "touch /started\nexec sleep 293.5\n")
    good, good_sha = build_deb(tmp_path, "atoll-good-test", "1.0")
    before = host_state(host)
    proc = subprocess.Popen([sys.executable, "-m", "atoll.cli", "--sysroot", str(host), "hotfix",
                             "add", str(slow), "--sha256", slow_sha],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not list((host / "atoll/repo/tmp").glob("hotfix-*/upper/started")):
        assert proc.poll() is None and time.monotonic() < deadline, "the script never ran"
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    time.sleep(1)
    left = subprocess.run(["pgrep", "-f", "sleep 293.5"], capture_output=True, text=True)
    assert left.stdout == "", "the maintainer script outlived atoll"
    # as it was, but for the staging directory and the package kept for the record that
    # was never written: the next command of the kind removes both
    leftovers = ("atoll/repo/tmp", "atoll/state/hotfixes")
    after = {k: v for k, v in host_state(host).items() if not k.startswith(leftovers)}
    assert after == {k: v for k, v in before.items() if not k.startswith(leftovers)}
    code = subprocess.run([sys.executable, "-m", "atoll.cli", "--sysroot", str(host), "hotfix",
                           "add", str(good), "--sha256", good_sha], capture_output=True,
                          text=True)
    assert code.returncode == 0, code.stderr
    assert [h.name for h in hotfixes(sr)] == ["atoll-good-test"]
    assert [p.name for p in (host / "atoll/state/hotfixes").iterdir()] == [f"{good_sha}.deb"]
    # a package a deployment carries stays kept, even with no record (an add killed after
    # it deployed, before it wrote the record)
    from atoll.deploy.hotfix import _forget_unrecorded

    _forget_unrecorded(sr, [])
    assert (host / "atoll/state/hotfixes" / f"{good_sha}.deb").is_file()
    # the killed add's staging directory: nobody holds it, the next clean-up (past its
    # grace period) removes it
    assert sr.repo.clean_tmp(older_than=0) == 1
    assert [p.name for p in (host / "atoll/repo/tmp").iterdir()] == []


def test_maintainer_scripts_that_edit_the_base_change_the_hotfix_never_the_store(
        trees: Composed, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The throwaway root is the base checked out as hardlinks into the store, under an
    overlay: a maintainer script that appends to a base file, changes its mode, deletes
    one, or replaces a whole directory changes the hotfix commit as it would a plain
    root, and no store object (each file of the base, re-hashed) nor the base's own
    deployment; overlayfs's bookkeeping xattrs are not in the commit."""
    host, sr, base = v1_host(trees, tmp_path)
    broot = sr.deployment_path(base.id)
    copyright_v1 = (broot / "usr/share/doc/less/copyright").read_bytes()
    assert (broot / "usr/share/doc/bash/copyright").is_file()
    assert (broot / "usr/share/doc/sed/copyright").is_file()
    deb, sha = deb_with_postinst(
        tmp_path, "atoll-edit-test",
        "echo appended >> /usr/share/doc/less/copyright\n"  # in place, through O_APPEND
        "chmod 0700 /usr/bin/less\n"
        "rm /usr/share/doc/bash/copyright\n"
        "rm -r /usr/share/doc/sed\nmkdir /usr/share/doc/sed\n"
        "echo only > /usr/share/doc/sed/only\n"
        # a script that drops privileges still reads the image (the root is not 0700)
        "setpriv --reuid=65534 --regid=65534 --clear-groups cat /usr/share/doc/sed/only\n"
        # and the usual devices
        "echo quiet > /dev/null\nhead -c 16 /dev/urandom > /dev/null\n",
        # a symlink where atoll writes the image's tmpfiles.d: replaced, never followed
        links={"usr/lib/tmpfiles.d/atoll-var.conf": "../../bin/less"})
    code, out, err = cli(capsys, "--sysroot", str(host), "--json", "hotfix", "add", str(deb),
                         "--sha256", sha)
    assert code == 0, err
    dep = json.loads(out)["deployment"]
    root = sr.deployment_path(dep["id"])
    assert (root / "usr/share/doc/less/copyright").read_bytes() == copyright_v1 + b"appended\n"
    assert (root / "usr/bin/less").stat().st_mode & 0o7777 == 0o700
    assert not (root / "usr/share/doc/bash/copyright").exists()
    assert os.listdir(root / "usr/share/doc/sed") == ["only"]
    assert (root / "usr/share/atoll-hotfix-test/atoll-edit-test.txt").is_file()
    assert not (root / "usr/sbin/policy-rc.d").exists()
    tmpfiles = root / "usr/lib/tmpfiles.d/atoll-var.conf"
    assert not tmpfiles.is_symlink() and "L /var/lib/dpkg" in tmpfiles.read_text()
    assert root.stat().st_mode & 0o777 == broot.stat().st_mode & 0o777
    marks = [str(p) for p in [root, *root.rglob("*")]
             if any(n.startswith("trusted.overlay.")
                    for n in os.listxattr(p, follow_symlinks=False))]
    assert marks == []
    # the store and the base's deployment are as they were
    assert (broot / "usr/share/doc/less/copyright").read_bytes() == copyright_v1
    assert (broot / "usr/bin/less").stat().st_mode & 0o7777 == 0o755
    assert (broot / "usr/share/doc/bash/copyright").is_file()
    repo = sr.repo
    files = [oid for oid, kind in repo.reachable(trees.v1, parents=False) if kind == "file"]
    assert files and [oid for oid in files if not repo.verify_file(oid)] == []
    # the hotfix shares every untouched file with its base
    old = {p: e.id for p, e in repo.walk(repo.read_commit(trees.v1).tree) if not e.is_dir}
    new = {p: e.id for p, e in repo.walk(repo.read_commit(dep["commit"]).tree)
           if not e.is_dir}
    changed = {p for p in old.keys() & new.keys() if old[p] != new[p]}
    assert {"usr/share/doc/less/copyright", "usr/bin/less"} <= changed
    assert all(p.startswith(("usr/share/atoll/dpkg/", "usr/lib/tmpfiles.d/", "usr/bin/less",
                             "usr/share/doc/less/")) for p in changed), sorted(changed)

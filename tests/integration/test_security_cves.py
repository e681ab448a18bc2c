"""CVEs end to end: a real openssl .deb from the archive in a package cache, its
changelog read at compose time, a report published with a tracker excerpt (in the
tracker's own format), signed, served over HTTP on 127.0.0.1, downloaded by a host
with the update and shown by `atoll cve list` (docs/security.md)."""

from __future__ import annotations

import gzip
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from atoll.cli import main
from atoll.compose.debcache import DebCache, deb_filename
from atoll.deploy.sysroot import Sysroot
from atoll.security.build import record_changelog_fixes
from atoll.store.repo import Repo
from tests.integration.delivery_fixtures import WwwServer, serve_www, snapshot_host

pytestmark = pytest.mark.integration

EXCERPT = Path(__file__).parent.parent / "data" / "security-tracker" / "bookworm-excerpt.json"
_HEAD = re.compile(r"^(\S+) \(([^)]+)\) ", re.M)


def _download_openssl(dest: Path) -> tuple[Path, str]:
    """The archive's candidate openssl .deb (whatever version it is today)."""
    if shutil.which("apt-get") is None:
        pytest.fail("apt-get is needed to download a real package")
    subprocess.run(["apt-get", "download", "-q", "openssl"], cwd=dest, check=True,
                   capture_output=True)
    deb = next(dest.glob("openssl_*.deb"))
    version = subprocess.run(["dpkg-deb", "-f", str(deb), "Version"], check=True,
                             capture_output=True, text=True).stdout.strip()
    return deb, version


def _changelog_by_dpkg(deb: Path, tmp: Path) -> str:
    """The changelog as dpkg-deb unpacks it (independent of python-debian)."""
    subprocess.run(["dpkg-deb", "-x", str(deb), str(tmp / "x")], check=True)
    return gzip.decompress((tmp / "x/usr/share/doc/openssl/changelog.Debian.gz")
                           .read_bytes()).decode()


def pkg(name: str, version: str, source: str) -> dict[str, str]:
    return {"name": name, "version": version, "architecture": "amd64", "source": source,
            "source_version": version}


STABLE = [pkg("libsystemd0", "252.39-1~deb12u2", "systemd"),
          pkg("libc6", "2.36-9+deb12u14", "glibc")]


class Env:
    def __init__(self, tmp: Path, server: WwwServer):
        self.tmp, self.url, self.server = tmp, server.url, server
        self.repo = Repo.create(tmp / "pub")
        self.www, self.keys, self.host = tmp / "www", tmp / "keys", tmp / "host"
        assert main(["-q", "keys", "init", str(self.keys), "--to", str(self.www)]) == 0

    def commit(self, n: int, manifest: list[dict[str, str]]) -> str:
        tree = self.tmp / f"t{n}"
        (tree / "usr/lib").mkdir(parents=True)
        (tree / "usr/lib/os-release").write_text(f"VERSION={n}\n")
        return self.repo.commit_dir(tree, ref="site/base", version=str(n), manifest=manifest,
                                    metadata={"suite": "bookworm"})

    def publish(self, *extra: str) -> int:
        return main(["-q", "publish", "site/base", "--repo", str(self.repo.path), "--to",
                     str(self.www), "--keys", str(self.keys), "--deltas", "1", "--level", "3",
                     *extra])

    def atoll(self, *argv: str) -> int:
        return main(["-q", "--sysroot", str(self.host), *argv])


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    (tmp_path / "www").mkdir()
    with serve_www(tmp_path / "www") as server:
        yield Env(tmp_path, server)


def test_changelog_and_tracker_cves_published_signed_and_listed(
        env: Env, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dl = tmp_path / "dl"
    dl.mkdir()
    deb, new = _download_openssl(dl)
    text = _changelog_by_dpkg(deb, tmp_path)
    heads = _HEAD.findall(text)
    assert heads[0] == ("openssl", new)
    old = heads[1][1]  # the version before: what the previous image held
    top = text[:text.index(f"openssl ({old})")]
    expected = sorted(set(re.findall(r"CVE-\d{4}-\d{4,}", top)))
    cache = DebCache(tmp_path / "debs")
    cache.pool.mkdir(parents=True)
    shutil.copy(deb, cache.pool / deb_filename("openssl", new, "amd64"))

    # compose-time record: openssl upgraded (cached .deb), zlib upgraded (not cached)
    c1 = env.commit(1, [pkg("openssl", old, "openssl"), pkg("zlib1g", "1:1.2.12", "zlib"),
                        *STABLE])
    assert env.publish("--security-tracker", str(EXCERPT)) == 0
    c2 = env.commit(2, [pkg("openssl", new, "openssl"),
                        pkg("zlib1g", "1:1.2.13.dfsg-1", "zlib"), *STABLE])
    record_changelog_fixes(env.repo, c1, c2, cache.path_of)
    assert env.publish("--security-tracker", str(EXCERPT)) == 0

    # the report is a signed target listed by the channel pointer
    targets = json.loads(_newest_targets(env.www))
    entry = targets["signed"]["targets"][f"cves/{c2}.json"]
    assert entry["custom"]["atoll"]["kind"] == "cves"
    assert targets["signed"]["targets"]["refs/site/base.json"]["custom"]["atoll"]["cves"] \
        == f"cves/{c2}.json"

    # the host: booted on c1, c2 downloaded
    assert env.atoll("remote", "add", "origin", env.url, "--root",
                     str(env.www / "metadata/root.json")) == 0
    Sysroot(env.host).init()
    assert env.atoll("deploy", c1, "--repo", str(env.repo.path)) == 0
    sr = Sysroot(env.host)
    (env.host / "run/atoll").mkdir(parents=True, exist_ok=True)
    (env.host / "run/atoll/booted").write_text(sr.deployments()[0].id + "\n")
    assert env.atoll("update", "download") == 0
    capsys.readouterr()
    assert main(["--sysroot", str(env.host), "update", "check"]) == 0
    assert "this update fixes" in capsys.readouterr().out  # the check says it too
    assert env.atoll("--json", "cve", "list") == 0
    view = json.loads(capsys.readouterr().out)

    booted, update = view["booted"], view["update"]
    assert booted["commit"] == c1 and booted["report"] and update["commit"] == c2
    assert not booted["stale"] and booted["tracker"]["sha256"]
    open_booted = {c["cve"]: c for c in booted["open"]}
    assert open_booted["CVE-2023-7008"]["fixed_version"] is None  # systemd: no fix yet
    assert open_booted["CVE-2023-7008"]["from"] == ["tracker"]
    assert "CVE-2010-4756" in open_booted and "CVE-2023-4911" not in open_booted
    # every CVE the new openssl's changelog names since the old version, from the changelog
    fixes = {c["cve"]: c for c in update["fixes"] if c["source"] == "openssl"}
    assert sorted(c for c, f in fixes.items() if "changelog" in f["from"]) == expected
    assert update["summary"].startswith(f"this update fixes {len({*fixes, *_zlib(update)})}")
    # zlib changed but its .deb was not in the cache: said, not guessed
    assert update["fixes_missing"] == ["zlib"]
    # nothing the tracker says is fixed at or before the new version stays open
    assert all(c["fixed_version"] is None for c in update["open"] if c["source"] == "openssl")

    assert env.atoll("cve", "list") == 0
    out = capsys.readouterr().out
    assert f"booted {c1[:12]}" in out and "this update fixes" in out and "CVE-2023-7008" in out

    # security-only: the agent takes c2 for its high fixes, not at a threshold none reaches
    from atoll.agent.host import Host
    from atoll.agent.policy import decide

    high = sorted(c for c, f in fixes.items() if f["urgency"] == "high")
    assert high  # the excerpt rates two of the changelog's CVEs high
    assert env.atoll("policy", "set", "--mode", "download", "--updates", "security-only",
                     "--security-threshold", "high") == 0
    st = Host(env.host).state()
    assert st.security_fixes is not None and set(high) <= set(st.security_fixes)
    policy = Host(env.host).files.policy()
    fresh = replace(st, last_check=_now(), downloaded=None)  # as before the download
    assert decide(policy, fresh, _now()).action == "download"
    assert decide(policy, replace(fresh, security_fixes=()), _now()).action == "none"
    from atoll.security.host import update_fixes

    assert update_fixes(env.host, c1, c2, "high") == st.security_fixes
    # monitoring reads the booted commit's report
    from atoll.monitor.facts import load_host_facts

    facts = load_host_facts(env.host)
    assert facts.cves is not None and facts.cves.report
    assert dict(facts.cves.open_counts)["high"] == sum(
        1 for c in booted["open"] if c["urgency"] == "high")
    # what atolld reports to the control plane: valid for the check-in, the same counts
    from atoll.control.protocol import CveFacts
    from atoll.security.host import checkin_facts

    sent = checkin_facts(env.host, _now())
    CveFacts.model_validate(sent)
    assert sent["source"] == "tracker" and sent["commit"] == c1 and sent["stale"] is False
    assert sent["open"]["not yet assigned"] >= 1  # systemd CVE-2023-7008: the tracker's word
    assert {c["cve"] for c in sent["open_cves"]} == set(open_booted)
    assert sent["update"]["commit"] == c2 and sent["update"]["source"] == "tracker"
    assert sent["update"]["fixes_total"] == len({c["cve"] for c in update["fixes"]})


def _now() -> datetime:
    return datetime.now(UTC)


def _zlib(update: dict[str, object]) -> set[str]:
    return {c["cve"] for c in update["fixes"] if c["source"] != "openssl"}  # type: ignore


def _newest_targets(www: Path) -> str:
    files = sorted((www / "metadata").glob("*.targets.json"),
                   key=lambda p: int(p.name.split(".")[0]))
    return files[-1].read_text()


def test_bad_tracker_changes_nothing(env: Env, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    env.commit(1, STABLE)
    truncated = tmp_path / "json"
    truncated.write_bytes(EXCERPT.read_bytes()[:2000])
    before = {p: p.read_bytes() for p in env.www.rglob("*") if p.is_file()}
    assert env.publish("--security-tracker", str(truncated)) == 2
    assert "truncated download" in capsys.readouterr().err
    forged = tmp_path / "forged.json"
    forged.write_text(json.dumps({"systemd": {"CVE-2023-7008": {"releases": {
        "bookworm": {"status": "patched"}}}}}))
    assert env.publish("--security-tracker", str(forged)) == 2
    assert "'patched' is not one of" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in env.www.rglob("*") if p.is_file()} == before
    # a commit that records no suite (atoll store commit): which release is unknown
    tree = tmp_path / "plain"
    (tree / "usr").mkdir(parents=True)
    env.repo.commit_dir(tree, ref="site/base", version="2", manifest=STABLE)
    assert env.publish("--security-tracker", str(EXCERPT)) == 2
    assert "records no Debian suite" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in env.www.rglob("*") if p.is_file()} == before
    assert snapshot_host(env.host) == {}


def test_timestamp_recomputes_reports_from_a_newer_tracker(
        env: Env, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The cron command re-signs the reports with new tracker data and a new expiry; the
    host sees the new open CVE after its next check; a bad file changes nothing."""
    c1 = env.commit(1, STABLE)
    assert env.publish("--security-tracker", str(EXCERPT)) == 0
    c2 = env.commit(2, [pkg("libsystemd0", "252.39-1~deb12u2", "systemd"),
                        pkg("libc6", "2.36-9+deb12u15", "glibc")])
    assert env.publish("--security-tracker", str(EXCERPT)) == 0
    newer = json.loads(EXCERPT.read_text())
    newer["glibc"]["CVE-2026-0001"] = {"description": "hand-made for this test", "releases": {
        "bookworm": {"status": "resolved", "fixed_version": "2.36-9+deb12u15",
                     "urgency": "high", "repositories": {}}}}
    (tmp_path / "newer.json").write_text(json.dumps(newer))
    assert env.atoll("remote", "add", "origin", env.url, "--root",
                     str(env.www / "metadata/root.json")) == 0
    Sysroot(env.host).init()
    assert env.atoll("deploy", c1, "--repo", str(env.repo.path)) == 0
    (env.host / "run/atoll").mkdir(parents=True, exist_ok=True)
    (env.host / "run/atoll/booted").write_text(Sysroot(env.host).deployments()[0].id + "\n")

    bad = tmp_path / "bad.json"
    bad.write_text('{"glibc": {"CVE-1": {"releases": {"bookworm": {"status": 1}}}}}')
    before = {p: p.read_bytes() for p in env.www.rglob("*") if p.is_file()}
    assert main(["-q", "timestamp", "--to", str(env.www), "--keys", str(env.keys),
                 "--security-tracker", str(bad)]) == 2
    assert {p: p.read_bytes() for p in env.www.rglob("*") if p.is_file()} == before

    capsys.readouterr()
    assert main(["--json", "timestamp", "--to", str(env.www), "--keys", str(env.keys),
                 "--security-tracker", str(tmp_path / "newer.json")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert sorted(out["cve_reports"]) == sorted([f"cves/{c1}.json", f"cves/{c2}.json"])
    assert env.atoll("update", "check") == 0
    capsys.readouterr()
    assert env.atoll("--json", "cve", "list") == 0
    view = json.loads(capsys.readouterr().out)
    booted_open = {c["cve"]: c for c in view["booted"]["open"]}
    assert booted_open["CVE-2026-0001"]["fixed_version"] == "2.36-9+deb12u15"
    assert view["booted"]["tracker"]["name"] == "newer.json"
    fixes = {c["cve"]: c for c in view["update"]["fixes"]}
    assert fixes["CVE-2026-0001"] == {"cve": "CVE-2026-0001", "source": "glibc",
                                      "version": "2.36-9+deb12u15", "urgency": "high",
                                      "from": ["tracker"]}
    assert view["update"]["summary"] == "this update fixes 1 CVE, 1 high"


def test_compose_records_the_cves_the_changelogs_name(artifact_cache: Path,
                                                       tmp_path: Path) -> None:
    """A real compose (from the tests' package cache) onto a ref whose previous commit
    held an older glibc: the record names the CVEs of the libc6 changelog entries in
    between, as dpkg-deb unpacks that changelog."""
    from atoll.compose.build import compose
    from atoll.compose.treefile import load_treefile
    from tests.compose_fixtures import EXAMPLES, composed, deb_cache

    trees = composed(artifact_cache)  # fills the cache (shared with test_compose.py)
    manifest = [dict(p) for p in trees.repo.read_commit(trees.v1).manifest]
    libc6 = next(p for p in manifest if p["name"] == "libc6")
    cache = deb_cache(artifact_cache)
    deb = cache.path_of("libc6", libc6["version"], libc6["architecture"])
    assert deb is not None, "the compose kept libc6's .deb"
    subprocess.run(["dpkg-deb", "-x", str(deb), str(tmp_path / "x")], check=True)
    text = gzip.decompress((tmp_path / "x/usr/share/doc/libc6/changelog.Debian.gz")
                           .read_bytes()).decode()
    versions = [v for _, v in _HEAD.findall(text)]
    old = versions[min(4, len(versions) - 1)]  # a few uploads back
    expected = sorted(set(re.findall(r"CVE-\d{4}-\d{4,}", text[:text.index(f"glibc ({old})")])))
    older = [p | {"version": old, "source_version": old} if p.get("source") == "glibc" else p
             for p in manifest]
    repo = Repo.create(tmp_path / "repo")
    tree = tmp_path / "prev"
    (tree / "usr").mkdir(parents=True)
    tf = load_treefile(EXAMPLES / "base.yaml")
    parent = repo.commit_dir(tree, ref=tf.ref, version="0", manifest=older)
    res = compose(tf, EXAMPLES, repo, deb_cache=cache)
    assert res.changed and repo.read_commit(res.commit).parent == parent
    record = json.loads((repo.path / "cves" / f"{res.commit}.changelog.json").read_text())
    assert record["parent"] == parent
    assert record["changelog"]["sources"]["glibc"]["old"] == old
    got = sorted({c["cve"] for c in record["changelog"]["cves"] if c["source"] == "glibc"})
    assert got == expected
    assert "glibc" not in record["changelog"]["missing"]


def test_a_forged_report_is_refused_and_nothing_is_kept(env: Env) -> None:
    """The report is a signed target: other bytes on the server are refused (exit 4)
    and the host keeps neither the report nor a new update state."""
    env.commit(1, STABLE)
    assert env.publish("--security-tracker", str(EXCERPT)) == 0
    assert env.atoll("remote", "add", "origin", env.url, "--root",
                     str(env.www / "metadata/root.json")) == 0
    before = snapshot_host(env.host)
    for p in (env.www / "targets/cves").iterdir():  # hash-prefixed file names
        env.server.faults[p.name] = ("tamper",)  # the same length, one byte changed
    assert env.atoll("update", "check") == 4
    assert snapshot_host(env.host) == before
    forged = json.dumps({"kind": "atoll-cves", "format": 1, "open": [],
                         "fixes": {"cves": []}}).encode()
    for p in (env.www / "targets/cves").iterdir():
        env.server.faults[p.name] = ("replace", forged)  # not the signed length either
    assert env.atoll("update", "check") == 6
    assert snapshot_host(env.host) == before
    assert not (env.host / "atoll/state/cves").exists()


def test_an_update_without_tracker_data_fixes_nothing_by_omission(
        env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    """The booted image's report lists open CVEs; the update is published without
    --security-tracker (its open list is empty because it knows none): under
    security-only the update fixes nothing by that omission and waits, the reason says
    the data lacks tracker ratings, and `cve list` shows its open CVEs as unknown."""
    from atoll.agent.host import Host
    from atoll.agent.policy import decide

    c1 = env.commit(1, STABLE)
    assert env.publish("--security-tracker", str(EXCERPT)) == 0
    c2 = env.commit(2, STABLE)
    assert env.publish() == 0  # no tracker data this time
    assert env.atoll("remote", "add", "origin", env.url, "--root",
                     str(env.www / "metadata/root.json")) == 0
    Sysroot(env.host).init()
    assert env.atoll("deploy", c1, "--repo", str(env.repo.path)) == 0
    (env.host / "run/atoll").mkdir(parents=True, exist_ok=True)
    (env.host / "run/atoll/booted").write_text(Sysroot(env.host).deployments()[0].id + "\n")
    assert env.atoll("policy", "set", "--mode", "download", "--updates", "security-only",
                     "--security-threshold", "unimportant") == 0
    assert env.atoll("update", "check") == 0
    capsys.readouterr()
    assert env.atoll("--json", "cve", "list") == 0
    view = json.loads(capsys.readouterr().out)
    assert view["booted"]["open_known"] and view["booted"]["open"]  # systemd, glibc, ...
    assert view["update"]["commit"] == c2 and view["update"]["open_known"] is False
    assert view["update"]["open"] is None and view["update"]["open_counts"] is None
    assert view["policy"] == {"updates": "security-only", "security_threshold": "unimportant",
                              "unassigned_as": "medium", "qualifies": []}
    st = Host(env.host).state()
    assert st.security_fixes == () and "no tracker data" in st.security_note
    d = decide(Host(env.host).files.policy(), replace(st, last_check=_now()), _now())
    assert d.action == "none" and "no tracker data" in d.reason
    assert env.atoll("cve", "list") == 0
    out = capsys.readouterr().out
    assert "open CVEs unknown (published without tracker data)" in out
    assert "the update fixes no open CVE that high: it waits" in out


DSA = EXCERPT.parent / "DSA-list.txt"
DLA = EXCERPT.parent / "DLA-list.txt"


def _published_report(www: Path, commit: str) -> dict[str, object]:
    entry = json.loads(_newest_targets(www))["signed"]["targets"][f"cves/{commit}.json"]
    digest = entry["hashes"]["sha256"]
    return json.loads((www / "targets/cves" / f"{digest}.{commit}.json").read_text())


def test_advisory_lists_name_the_advisories_of_each_cve(
        env: Env, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """DSA/DLA lists given to publish and timestamp: each CVE of the signed report names
    the advisories that fix it in the image's release; a truncated or malformed list
    publishes nothing and says file:line."""
    old_ssl = [pkg("openssl", "3.0.20-1~deb12u2", "openssl"),
               pkg("libc6", "2.36-9+deb12u1", "glibc")]
    c1 = env.commit(1, old_ssl)
    before = {p: p.read_bytes() for p in env.www.rglob("*") if p.is_file()}
    truncated = tmp_path / "DSA-list"
    truncated.write_bytes(DSA.read_bytes()[:-20])
    assert env.publish("--security-tracker", str(EXCERPT), "--dsa-list", str(truncated)) == 2
    assert f"{truncated}:21: the file ends mid-line" in capsys.readouterr().err
    cut = tmp_path / "cut"
    cut.write_bytes(DSA.read_bytes() + b"[01 Dec 2026] DSA-6200-1 openssl - security update\n")
    assert env.publish("--security-tracker", str(EXCERPT), "--dsa-list", str(cut)) == 2
    assert f"{cut}:22: DSA-6200-1: no CVEs and no fixed versions follow" \
        in capsys.readouterr().err
    assert env.publish("--dsa-list", str(DSA)) == 2  # lists without the tracker
    assert "need --security-tracker" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in env.www.rglob("*") if p.is_file()} == before

    assert env.publish("--security-tracker", str(EXCERPT), "--dsa-list", str(DSA),
                       "--dla-list", str(DLA)) == 0
    doc = _published_report(env.www, c1)
    opened = {c["cve"]: c["advisories"] for c in doc["open"]}  # type: ignore[attr-defined]
    assert opened["CVE-2026-84782"] == ["DSA-6112-1"]  # bullseye's DLA-4402-1 left out
    assert opened["CVE-2023-4911"] == ["DSA-5514-1"] and opened["CVE-2007-6755"] == []
    assert [x["name"] for x in doc["advisory_lists"]] == ["DSA-list.txt",  # type: ignore
                                                          "DLA-list.txt"]
    c2 = env.commit(2, [pkg("openssl", "3.0.22-1~deb12u1", "openssl"), old_ssl[1]])
    assert env.publish("--security-tracker", str(EXCERPT), "--dsa-list", str(DSA)) == 0
    fixes = {c["cve"]: c["advisories"]
             for c in _published_report(env.www, c2)["fixes"]["cves"]}  # type: ignore
    assert fixes == {"CVE-2026-63072": ["DSA-6090-1"], "CVE-2026-75803": ["DSA-6090-1"]}

    # the host lists them (column and JSON field)
    assert env.atoll("remote", "add", "origin", env.url, "--root",
                     str(env.www / "metadata/root.json")) == 0
    Sysroot(env.host).init()
    assert env.atoll("deploy", c1, "--repo", str(env.repo.path)) == 0
    (env.host / "run/atoll").mkdir(parents=True, exist_ok=True)
    (env.host / "run/atoll/booted").write_text(Sysroot(env.host).deployments()[0].id + "\n")
    assert env.atoll("update", "check") == 0
    capsys.readouterr()
    assert env.atoll("--json", "cve", "list") == 0
    view = json.loads(capsys.readouterr().out)
    assert {c["cve"]: c["advisories"] for c in view["booted"]["open"]}["CVE-2026-75806"] \
        == ["DSA-6112-1"]
    assert env.atoll("cve", "list") == 0
    assert re.search(r"CVE-2026-63072 +medium .* \(DSA-6090-1\)", capsys.readouterr().out)

    # timestamp re-computes with newer lists; a bad one changes nothing
    newer = tmp_path / "DSA-newer"
    newer.write_bytes(b"[30 Nov 2026] DSA-6201-1 openssl - security update\n"
                      b"\t{CVE-2007-6755}\n\t[bookworm] - openssl 3.0.22-1~deb12u3\n"
                      + DSA.read_bytes())
    before = {p: p.read_bytes() for p in env.www.rglob("*") if p.is_file()}
    assert main(["-q", "timestamp", "--to", str(env.www), "--keys", str(env.keys),
                 "--security-tracker", str(EXCERPT), "--dsa-list", str(cut)]) == 2
    assert main(["-q", "timestamp", "--to", str(env.www), "--keys", str(env.keys),
                 "--dla-list", str(DLA)]) == 2  # lists without the tracker
    assert {p: p.read_bytes() for p in env.www.rglob("*") if p.is_file()} == before
    assert main(["-q", "timestamp", "--to", str(env.www), "--keys", str(env.keys),
                 "--security-tracker", str(EXCERPT), "--dsa-list", str(newer)]) == 0
    doc = _published_report(env.www, c1)
    opened = {c["cve"]: c["advisories"] for c in doc["open"]}  # type: ignore[attr-defined]
    assert opened["CVE-2007-6755"] == ["DSA-6201-1"] and opened["CVE-2026-84782"] == [
        "DSA-6112-1"]

"""The tracker's JSON (a hand-made excerpt in its format), open CVEs per manifest,
urgency order and the published report's rules (docs/security.md)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from atoll.core.errors import InputError, RepositoryError
from atoll.security import report, urgency
from atoll.security.tracker import load_tracker, open_cves, parse_tracker, version_compare

EXCERPT = Path(__file__).parent.parent / "data" / "security-tracker" / "bookworm-excerpt.json"


def pkg(name: str, version: str, source: str | None = None,
        source_version: str | None = None) -> dict[str, str]:
    return {"name": name, "version": version, "architecture": "amd64",
            "source": source or name, "source_version": source_version or version}


OLD = [pkg("libssl3", "3.0.20-1~deb12u2", "openssl"), pkg("openssl", "3.0.20-1~deb12u2"),
       pkg("libcurl4", "7.88.1-10+deb12u3", "curl"),
       pkg("libc6", "2.36-9+deb12u14", "glibc"),
       pkg("libsystemd0", "252.39-1~deb12u2", "systemd"),
       pkg("zlib1g", "1:1.2.13.dfsg-1", "zlib"), pkg("tzdata", "2025b-0+deb12u1")]


def test_open_cves_of_a_manifest() -> None:
    data = load_tracker(EXCERPT)
    got = {(c["cve"], c["source"]): c for c in open_cves(OLD, data, "bookworm")}
    # resolved in a newer version than the image's: open, with the fixed version
    ossl = got[("CVE-2026-84782", "openssl")]
    assert ossl["fixed_version"] == "3.0.22-1~deb12u2" and ossl["urgency"] == "high"
    assert ossl["packages"] == ["libssl3", "openssl"] and ossl["from"] == ["tracker"]
    assert got[("CVE-2023-38545", "curl")]["fixed_version"] == "7.88.1-10+deb12u4"
    # open, no fix in the release
    assert got[("CVE-2023-7008", "systemd")]["fixed_version"] is None
    assert got[("CVE-2023-7008", "systemd")]["urgency"] == "not yet assigned"
    assert got[("CVE-2023-45853", "zlib")]["status"] == "open"
    # fixed at or before the image's version; never affected ("0"); no entry
    assert ("CVE-2026-45447", "openssl") not in got  # fixed in 3.0.20-1~deb12u2 itself
    assert ("CVE-2023-4911", "glibc") not in got
    assert ("CVE-2023-32001", "curl") not in got
    assert not any(s == "tzdata" for _, s in got)
    assert data.sha256 and data.size == EXCERPT.stat().st_size and data.taken.endswith("Z")


def test_other_release_is_not_mixed_in() -> None:
    data = load_tracker(EXCERPT)
    assert open_cves([pkg("curl", "7.74.0-1.3+deb11u14")], data, "bullseye") == []
    assert [c["cve"] for c in open_cves([pkg("openssl", "3.5.0-1")], data, "trixie")] == [
        "CVE-2026-35189", "CVE-2026-45447", "CVE-2026-63072", "CVE-2026-75803",
        "CVE-2026-75806", "CVE-2026-84782"]


def test_debian_version_order() -> None:
    assert version_compare("1:1.0", "2.0") > 0
    assert version_compare("3.0.22-1~deb12u1", "3.0.22-1") < 0
    assert version_compare("7.88.1-10+deb12u15", "7.88.1-10+deb12u4") > 0
    with pytest.raises(InputError, match="not a Debian version"):
        version_compare("1.0", "a b")


def test_truncated_file_says_so(tmp_path: Path) -> None:
    bad = tmp_path / "json"
    bad.write_bytes(EXCERPT.read_bytes()[:3000])
    with pytest.raises(InputError, match=r"not JSON: .*truncated download"):
        load_tracker(bad)


@pytest.mark.parametrize(("doc", "match"), [
    ({"openssl": []}, r"openssl: expected an object of CVEs, got a list"),
    ({"openssl": {"CVE-1": {"releases": []}}}, r"openssl\.CVE-1\.releases: expected an object"),
    ({"openssl": {"CVE-1": {"releases": {"bookworm": {"status": "fixed"}}}}},
     r"openssl\.CVE-1\.releases\.bookworm\.status: 'fixed' is not one of"),
    ({"openssl": {"CVE-1": {"releases": {"bookworm": {"status": "resolved"}}}}},
     r"fixed_version: missing in a resolved entry"),
    ({"openssl": {"CVE-1": {"releases": {"bookworm": {"status": "open", "urgency": 3}}}}},
     r"urgency: expected a string, got a number"),
])
def test_wrong_shapes_are_located(doc: object, match: str) -> None:
    data = parse_tracker(json.dumps(doc).encode(), "t.json")
    with pytest.raises(InputError, match=match):
        open_cves([pkg("openssl", "3.0.20-1~deb12u2")], data, "bookworm")


def test_huge_or_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="expected an object of source packages, got a list"):
        parse_tracker(b"[]", "t.json")
    with pytest.raises(InputError, match="larger than the 0 MiB"):
        load_tracker(EXCERPT, max_bytes=1000)
    with pytest.raises(InputError, match="no such file"):
        load_tracker(tmp_path / "nope.json")
    (tmp_path / "bin").write_bytes(b"\xff\xfe{")
    with pytest.raises(InputError, match=r"not UTF-8 JSON|not JSON"):
        load_tracker(tmp_path / "bin")


def test_urgency_order_and_unassigned() -> None:
    assert urgency.rank("high") > urgency.rank("medium") > urgency.rank("low") \
        > urgency.rank("unimportant")
    assert urgency.rank("low**") == urgency.rank("low")
    assert urgency.rank("not yet assigned", unassigned="high") == urgency.rank("high")
    assert urgency.rank("not yet assigned", unassigned="low") == urgency.rank("low")
    assert urgency.rank("end-of-life") == urgency.rank("unimportant")
    with pytest.raises(InputError, match="not an urgency"):
        urgency.validate("critical")


def _report(open_: list[dict[str, object]], fixes: list[dict[str, object]],
            tracker: dict[str, object] | None = None) -> dict[str, object]:
    return {"kind": report.KIND, "format": report.FORMAT, "commit": "c" * 64, "ref": "main",
            "release": "bookworm", "generated": "2026-11-20T00:00:00Z",
            "expires": "2026-11-27T00:00:00Z", "tracker": tracker,
            "open": [{"source": "src", "source_version": "1.0-1", "status": "open", **c}
                     for c in open_],
            "fixes": {"since": None, "cves": [{"source": "src", **c} for c in fixes],
                      "missing": []}}


def _tracker(sha: str, taken: str) -> dict[str, object]:
    return {"name": "json", "sha256": sha, "size": 1, "taken": taken}


def test_report_summary_policy_and_staleness() -> None:
    booted = _report([{"cve": "CVE-A", "urgency": "high"}, {"cve": "CVE-B", "urgency": "low"},
                      {"cve": "CVE-C", "urgency": "not yet assigned"}], [])
    update = _report([{"cve": "CVE-C", "urgency": "not yet assigned"}],
                     [{"cve": "CVE-A", "urgency": "high"}, {"cve": "CVE-B", "urgency": "low"},
                      {"cve": "CVE-D", "urgency": None}])
    assert report.fixes_summary(update) == \
        "this update fixes 3 CVEs, 1 high, 1 low, 1 not yet assigned"
    assert report.qualifies(booted, update, "high") == ["CVE-A"]
    assert report.qualifies(booted, update, "low") == ["CVE-A", "CVE-B", "CVE-D"]
    assert report.counts(booted["open"]) == {"unimportant": 0, "low": 1, "medium": 0,
                                             "high": 1, "not yet assigned": 1}
    only_low = _report([], [{"cve": "CVE-B", "urgency": "low"}])
    assert report.qualifies(None, only_low, "medium") == []
    # a CVE still open in the update is not fixed by it, whatever its changelog says
    assert report.qualifies(None, _report([{"cve": "CVE-X", "urgency": "high"}],
                                          [{"cve": "CVE-X", "urgency": "high"}]), "low") == []
    now = datetime(2026, 11, 28, tzinfo=UTC)
    assert report.is_stale(update, now) and report.age_seconds(update, now) == 8 * 86400
    assert report.check_report(update, "c" * 64) is update
    with pytest.raises(RepositoryError, match="for commit cccccccccccc"):
        report.check_report(update, "d" * 64)
    with pytest.raises(RepositoryError, match="not an atoll CVE report"):
        report.check_report({"kind": "other"})


_VERSION = st.builds(
    lambda epoch, up, rev: (f"{epoch}:" if epoch else "") + up + (f"-{rev}" if rev else ""),
    st.sampled_from([0, 0, 1, 2]),
    st.from_regex(r"[0-9][0-9a-z.+~]{0,8}", fullmatch=True),
    st.one_of(st.none(), st.from_regex(r"[0-9a-z.+~]{1,8}", fullmatch=True)))


@given(_VERSION, _VERSION)
def test_one_debian_order(a: str, b: str) -> None:
    """python-debian's order (the tracker and changelog code) and the store's own
    ``compare_versions`` (package views) agree: one Debian version order in atoll."""
    from atoll.store.packages import compare_versions

    def sign(n: int) -> int:
        return (n > 0) - (n < 0)

    assert sign(version_compare(a, b)) == sign(compare_versions(a, b))


def test_missing_or_older_tracker_data_fixes_nothing_by_omission() -> None:
    """A booted CVE "no longer open" in the update counts only when the update's open
    list was computed from the same tracker file or a newer one: a report published
    without tracker data (open: [] = unknown) or from an older file fixes nothing."""
    t1, t2 = _tracker("1" * 64, "2026-11-01T00:00:00Z"), _tracker("2" * 64,
                                                                  "2026-11-20T00:00:00Z")
    booted = _report([{"cve": "CVE-H", "urgency": "high"}], [], t2)
    assert report.qualifies(booted, _report([], [], None), "low") == []
    assert report.qualifies(booted, _report([], [], t1), "low") == []  # older file
    assert report.qualifies(booted, _report([], [], t2), "high") == ["CVE-H"]  # same file
    newer = _tracker("3" * 64, "2026-11-25T00:00:00Z")
    assert report.qualifies(booted, _report([], [], newer), "high") == ["CVE-H"]
    # the update's own fixes (changelogs) count whatever the tracker data
    assert report.qualifies(booted, _report([], [{"cve": "CVE-H", "urgency": "high"}], None),
                            "high") == ["CVE-H"]


@pytest.mark.parametrize(("path", "value", "match"), [
    (("open", 0, "urgency"), 3, r"open\[0\]\.urgency \(CVE-A\): unexpected int"),
    (("open", 0, "source"), None, r"open\[0\]\.source"),
    (("open", 0, "fixed_version"), ["1"], r"fixed_version"),
    (("open", 0, "packages"), "libssl3", r"packages .*list of strings"),
    (("open", 0, "from"), [1], r"from .*list of strings"),
    (("fixes", "cves", 0, "version"), 1.5, r"fixes\.cves\[0\]\.version"),
    (("fixes", "cves", 0), "CVE-B", r"fixes\.cves\[0\]: an entry without a CVE id"),
    (("fixes", "missing"), "glibc", r"fixes\.missing"),
    (("fixes", "since"), 7, r"fixes\.since"),
    (("tracker",), [], r"tracker: expected an object"),
    (("release",), None, r"release"),
])
def test_wrong_types_deep_in_a_report_are_refused(path: tuple[object, ...], value: object,
                                                  match: str) -> None:
    """A signed report read on a host is checked as far as hosts read it: a wrong type
    deep inside is a RepositoryError naming the field, not a traceback later."""
    doc = _report([{"cve": "CVE-A", "urgency": "high", "packages": ["libssl3"]}],
                  [{"cve": "CVE-B", "urgency": "low", "version": "1.0-2"}])
    report.check_report(doc)
    node: object = doc
    for key in path[:-1]:
        node = node[key]  # type: ignore[index]
    node[path[-1]] = value  # type: ignore[index]
    with pytest.raises(RepositoryError, match=match):
        report.check_report(doc)


def _tracker_doc(entries: dict[str, dict[str, object]]) -> bytes:
    return json.dumps({src: {cve: {"description": "", "scope": "remote",
                                   "releases": {"bookworm": rel}}
                             for cve, rel in cves.items()}
                       for src, cves in entries.items()}).encode()


def test_odd_versions_and_names() -> None:
    """Source, not binary, names and versions are compared (binNMU +b1 binaries, a
    source named differently, epochs, tildes); a multiarch pair is listed once; an
    urgency word the order lacks is kept and ranks as "not yet assigned"."""
    data = parse_tracker(_tracker_doc({
        "foo": {"CVE-2026-1": {"status": "resolved", "fixed_version": "1.2-3",
                               "urgency": "high"},
                "CVE-2026-2": {"status": "resolved", "fixed_version": "1.2-4",
                               "urgency": "critical"}},
        "zlib": {"CVE-2026-3": {"status": "resolved", "fixed_version": "1:1.2.13-2",
                                "urgency": "low*"},
                 "CVE-2026-4": {"status": "resolved", "fixed_version": "1.3-1",
                                "urgency": "low"}},
        "tilde": {"CVE-2026-5": {"status": "resolved", "fixed_version": "2.0-1",
                                 "urgency": "medium"}},
        # the binary's own name is not a source: its entries never apply
        "libfoo1": {"CVE-2026-6": {"status": "open", "urgency": "high"}}}))
    manifest = [pkg("libfoo1", "1.2-3+b1", "foo", "1.2-3"),
                {**pkg("libfoo1", "1.2-3+b1", "foo", "1.2-3"), "architecture": "i386"},
                pkg("zlib1g", "1:1.2.13-1", "zlib"), pkg("tilde", "2.0~rc1-1")]
    got = {c["cve"]: c for c in open_cves(manifest, data, "bookworm")}
    assert sorted(got) == ["CVE-2026-2", "CVE-2026-3", "CVE-2026-5"]
    assert got["CVE-2026-2"]["packages"] == ["libfoo1"]
    assert got["CVE-2026-2"]["source_version"] == "1.2-3"
    assert got["CVE-2026-2"]["urgency"] == "critical"
    assert urgency.rank("critical", unassigned="low") == urgency.rank("low")
    assert report.counts(list(got.values()))["not yet assigned"] == 1
    assert got["CVE-2026-3"]["urgency"] == "low"  # NVD's mark dropped; epoch 1 > epoch 0


def test_a_fixed_version_that_is_not_a_version_is_located() -> None:
    data = parse_tracker(_tracker_doc({"foo": {"CVE-2026-1": {
        "status": "resolved", "fixed_version": "1.0 beta", "urgency": "high"}}}), "json")
    with pytest.raises(InputError, match=r"json: foo\.CVE-2026-1\.releases\.bookworm\."
                                         r"fixed_version: '1\.0 beta' against"):
        open_cves([pkg("foo", "1.0-1")], data, "bookworm")


def test_the_recorded_hash_is_of_the_bytes_read(tmp_path: Path) -> None:
    import hashlib

    f = tmp_path / "json"
    f.write_bytes(_tracker_doc({}))
    assert load_tracker(f).sha256 == hashlib.sha256(f.read_bytes()).hexdigest()


def test_changelog_chain_from_another_lineage_claims_nothing(tmp_path: Path) -> None:
    """The previously published commit is not an ancestor (the channel moved to another
    lineage): the changelogs of the new commit's history are not fixes since it."""
    from types import SimpleNamespace

    from atoll.core import canonjson
    from atoll.security.build import _changelog_since

    a, b, other = "a" * 64, "b" * 64, "f" * 64
    (tmp_path / "cves").mkdir()
    (tmp_path / "cves" / f"{b}.changelog.json").write_bytes(canonjson.dumps({
        "commit": b, "parent": a, "changelog": {"cves": [{"cve": "CVE-2026-1", "source": "x",
                                                          "version": "2"}],
                                                "sources": {}, "missing": []}}))
    parents = {a: None, b: a}
    repo = SimpleNamespace(path=tmp_path, has=lambda c, kind: c in parents,
                           read_commit=lambda c: SimpleNamespace(parent=parents[c]))
    cves, missing = _changelog_since(repo, b, a)  # type: ignore[arg-type]
    assert [c["cve"] for c in cves] == ["CVE-2026-1"]
    assert missing == []
    cves, missing = _changelog_since(repo, b, other)  # type: ignore[arg-type]
    assert cves == [] and "is not an ancestor" in missing[0]

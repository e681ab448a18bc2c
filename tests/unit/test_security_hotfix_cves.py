"""A base image's CVE report re-read against a hotfix derivation's manifest (pure)."""

from __future__ import annotations

from typing import Any

from atoll.security.report import open_for_manifest, unknown_sources


def _open(cve: str, source: str, version: str, fix: str | None) -> dict[str, Any]:
    return {"cve": cve, "source": source, "source_version": version, "packages": [source],
            "status": "resolved" if fix else "open", "urgency": "high", "fixed_version": fix}


def _pkg(name: str, version: str, source: str = "") -> dict[str, str]:
    return {"name": name, "version": version, "source": source or name,
            "source_version": version}


REPORT = {"open": [
    _open("CVE-1", "openssl", "3.0.15-1~deb12u1", "3.0.16-1~deb12u1"),
    _open("CVE-2", "openssl", "3.0.15-1~deb12u1", "3.0.17-1~deb12u1"),
    _open("CVE-3", "openssl", "3.0.15-1~deb12u1", None),
    _open("CVE-4", "less", "590-2.1", "590-2.1~deb12u2"),
    _open("CVE-5", "curl", "7.88.1-10", "7.88.1-10+deb12u4")]}


def test_the_hotfix_version_closes_what_it_fixes_and_nothing_else() -> None:
    manifest = [_pkg("openssl", "3.0.16-1~deb12u1"), _pkg("libssl3", "3.0.16-1~deb12u1",
                                                           "openssl"),
                _pkg("less", "590-2.1~deb12u1"), _pkg("curl", "7.88.1-10")]
    still, closed = open_for_manifest(REPORT, manifest)
    assert [(c["cve"], c["version"]) for c in closed] == [("CVE-1", "3.0.16-1~deb12u1")]
    # a newer version short of the fix, or no fix at all: open, at the new version
    assert [(c["cve"], c["source_version"]) for c in still] == [
        ("CVE-2", "3.0.16-1~deb12u1"), ("CVE-3", "3.0.16-1~deb12u1"),
        ("CVE-4", "590-2.1~deb12u1"),  # ~deb12u1 sorts before the fix ~deb12u2
        ("CVE-5", "7.88.1-10")]
    assert REPORT["open"][0]["source_version"] == "3.0.15-1~deb12u1"  # not changed


def test_a_source_half_upgraded_stays_open_and_a_removed_one_closes() -> None:
    mixed = [_pkg("openssl", "3.0.16-1~deb12u1"), _pkg("libssl3", "3.0.15-1~deb12u1",
                                                       "openssl"),
             _pkg("less", "590-2.1"), _pkg("curl", "7.88.1-10")]
    still, closed = open_for_manifest(REPORT, mixed)
    assert "CVE-1" in {c["cve"] for c in still} and closed == []
    gone = [_pkg("openssl", "3.0.15-1~deb12u1"), _pkg("less", "590-2.1")]
    still, closed = open_for_manifest(REPORT, gone)
    assert [(c["cve"], c["version"]) for c in closed] == [("CVE-5", None)]


def test_a_lost_manifest_closes_nothing() -> None:
    # a hotfix commit whose manifest did not survive is not "every package removed"
    still, closed = open_for_manifest(REPORT, [])
    assert closed == [] and still == REPORT["open"]


def test_epochs_and_tildes_in_debian_order() -> None:
    report = {"open": [_open("CVE-6", "glibc", "1:2.36-9", "1:2.36-9+deb12u4"),
                       _open("CVE-7", "less", "590-2.1", "590-2.1~deb12u2")]}
    # no epoch is epoch 0: 2.36-10 is older than 1:2.36-9+deb12u4, the CVE stays open
    still, closed = open_for_manifest(report, [_pkg("libc6", "2.36-10", "glibc"),
                                               _pkg("less", "590-2.1~deb12u2")])
    assert [c["cve"] for c in still] == ["CVE-6"] and [c["cve"] for c in closed] == ["CVE-7"]
    still, closed = open_for_manifest(report, [_pkg("libc6", "1:2.36-9+deb12u4", "glibc"),
                                               _pkg("less", "590-2.1~deb12u1")])
    assert [c["cve"] for c in still] == ["CVE-7"] and [c["cve"] for c in closed] == ["CVE-6"]


def test_sources_the_base_report_cannot_know_are_named() -> None:
    base = [_pkg("openssl", "3.0.15-1~deb12u1"), _pkg("libssl3", "3.0.15-1~deb12u1", "openssl"),
            _pkg("less", "590-2.1"), _pkg("curl", "7.88.1-10")]
    # an older openssl (CVEs fixed since are resolved for the base: not in its report),
    # a package the base lacks, a newer less (known), curl unchanged
    hotfix = [_pkg("openssl", "3.0.15-1~deb12u1"), _pkg("libssl3", "3.0.11-1~deb12u2",
                                                        "openssl"),
              _pkg("less", "590-2.1+deb12u1"), _pkg("curl", "7.88.1-10"),
              _pkg("netcat-openbsd", "1.0-1")]
    assert unknown_sources(base, hotfix) == [
        {"source": "netcat-openbsd", "version": "1.0-1", "base_version": None},
        {"source": "openssl", "version": "3.0.11-1~deb12u2", "base_version": "3.0.15-1~deb12u1"}]
    still, closed = open_for_manifest(REPORT, hotfix)  # the downgrade closes nothing
    assert [c["cve"] for c in closed] == ["CVE-4"]
    assert {c["cve"] for c in still} == {"CVE-1", "CVE-2", "CVE-3", "CVE-5"}
    assert unknown_sources(base, base) == [] and unknown_sources([], hotfix) == []
    # a base already holding two versions of one source, unchanged: nothing to say
    mixed = [*base[:1], _pkg("libssl3", "3.0.16-1~deb12u1", "openssl")]
    assert unknown_sources(mixed, mixed) == []


def test_the_policy_compares_a_hotfix_deployment_by_its_base() -> None:
    # as atolld does (atoll.agent.host counts a hotfix commit as its base): `cve list`'s
    # policy line must say what atolld decides
    from atoll.security.host import policy_booted

    base, hotfix = "b" * 64, "h" * 64
    assert policy_booted({"commit": hotfix, "report": True,
                          "derived": {"base": base}}) == base
    assert policy_booted({"commit": base, "report": True, "derived": None}) == base
    assert policy_booted({"commit": hotfix, "report": False}) == hotfix
    assert policy_booted(None) is None

"""A base image's CVE report re-read against a hotfix derivation's manifest (pure)."""

from __future__ import annotations

from typing import Any

from atoll.security.report import open_for_manifest


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

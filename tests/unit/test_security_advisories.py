"""The tracker's DSA/DLA lists (a real excerpt, and hand-made ones in their format that
name the CVEs of the tracker excerpt): parsing, errors that say file:line, and
advisories attached to the CVEs of a report (docs/security.md)."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from atoll.core.errors import InputError
from atoll.security.advisories import load_advisories, parse_advisories
from atoll.security.build import make_report
from atoll.security.report import check_report
from atoll.security.tracker import load_tracker

DATA = Path(__file__).parent.parent / "data" / "security-tracker"
DSA, DLA = DATA / "DSA-list.txt", DATA / "DLA-list.txt"


def pkg(name: str, version: str, source: str) -> dict[str, str]:
    return {"name": name, "version": version, "source": source, "source_version": version}


def test_lists_parse_into_advisories_by_cve_source_and_release() -> None:
    index = load_advisories([DSA, DLA])
    assert [i["advisories"] for i in index.info()] == [6, 3]
    netty = next(a for a in index.advisories if a.id == "DSA-5558-1")
    assert netty.date == "21 Nov 2023" and netty.source == "netty"
    assert netty.cves == ("CVE-2023-34462", "CVE-2023-44487")
    assert ("bookworm", "netty", "1:4.1.48-7+deb12u1") in netty.fixed
    # the same CVE fixed in bookworm by a DSA and in bullseye by a DLA: by release
    assert index.ids("CVE-2026-84782", "openssl", "bookworm") == ["DSA-6112-1"]
    assert index.ids("CVE-2026-84782", "openssl", "bullseye") == ["DLA-4402-1"]
    assert index.ids("CVE-2026-84782", "curl", "bookworm") == []  # another source
    # <not-affected> is no fix; a regression update without CVEs attaches to nothing
    assert index.ids("CVE-2023-4806", "glibc", "buster") == []
    assert any(a.id == "DSA-5450-1" and a.cves == () for a in index.advisories)


REAL_DSA, REAL_DLA = DATA / "DSA-list-real.txt", DATA / "DLA-list-real.txt"


def test_a_real_excerpt_of_the_lists_parses_with_its_facts() -> None:
    """The tracker's own data/DSA/list and data/DLA/list (17 and 20 consecutive entries,
    27 Feb to 1 Apr 2023: provenance in tests/data/security-tracker/README.md)."""
    index = load_advisories([REAL_DSA, REAL_DLA])
    assert [i["advisories"] for i in index.info()] == [17, 20]
    by_id = {a.id: a for a in index.advisories}
    # the newest first, as the lists are kept
    assert [a.id for a in index.advisories][:2] == ["DSA-5380-1", "DSA-5379-1"]
    assert by_id["DSA-5380-1"].date == "29 Mar 2023"
    assert by_id["DSA-5380-1"].fixed == (("bullseye", "xorg-server", "2:1.20.11-1+deb11u6"),)
    # one CVE, fixed in bullseye by a DSA and in buster by a DLA: told apart by release
    assert index.ids("CVE-2023-1393", "xorg-server", "bullseye") == ["DSA-5380-1"]
    assert index.ids("CVE-2023-1393", "xorg-server", "buster") == ["DLA-3372-1"]
    assert index.ids("CVE-2023-1393", "xorg-server", "bookworm") == []
    # the same CVEs in two sources (thunderbird, firefox-esr): by source
    assert index.ids("CVE-2023-25751", "thunderbird", "bullseye") == ["DSA-5375-1"]
    assert index.ids("CVE-2023-25751", "firefox-esr", "bullseye") == ["DSA-5374-1"]
    assert index.ids("CVE-2023-25751", "thunderbird", "buster") == ["DLA-3365-1"]
    assert len(by_id["DSA-5371-1"].cves) == 24 and by_id["DSA-5371-1"].source == "chromium"
    # regression updates ("-2") without CVEs: a fixed version, nothing to attach to
    for rid, src, version in [("DSA-5356-2", "sox", "14.4.2+git20190427-2+deb11u2"),
                              ("DLA-3315-2", "sox", "14.4.2+git20190427-1+deb10u2"),
                              ("DLA-3357-2", "imagemagick", "8:6.9.10.23+dfsg-2.1+deb10u4")]:
        assert by_id[rid].cves == () and by_id[rid].fixed[0][1:] == (src, version)
    # a "-2" that is a security update with its CVE; updates without CVE ids
    assert by_id["DLA-3193-2"].cves == ("CVE-2022-21797",)
    assert index.ids("CVE-2022-21797", "joblib", "buster") == ["DLA-3193-2"]
    assert by_id["DLA-3355-1"].cves == () and by_id["DLA-3366-1"].source == "tzdata"
    assert by_id["DLA-3367-1"].fixed == (("buster", "libdatetime-timezone-perl",
                                          "1:2.23-1+2023b"),)


GOOD = b"[21 Nov 2023] DSA-5558-1 netty - security update\n\t{CVE-2023-34462}\n" \
       b"\t[bookworm] - netty 1:4.1.48-7+deb12u1\n"


@pytest.mark.parametrize(("data", "where"), [
    (GOOD[:-10], "l:3: the file ends mid-line"),
    (GOOD + b"[20 Nov 2023] DSA-5557-1 webkit2gtk - security update\n", "l:4: DSA-5557-1: no "
     "CVEs and no fixed versions follow"),
    (b"\t{CVE-2023-1}\n", "l:1: an indented line before the first advisory header"),
    (GOOD.replace(b"{CVE-2023-34462}", b"{CVE-2023-34462 XSA-1}"), "l:2: DSA-5558-1: 'XSA-1' "
     "is not a CVE id"),
    (GOOD.replace(b"[21 Nov 2023] ", b""), "l:1: not an advisory header"),
    (GOOD.replace(b" 1:4.1.48-7+deb12u1", b""), "l:3: DSA-5558-1: [bookworm] - netty: no "
     "version"),
    (GOOD + b"\tfixed it all\n", "l:4: DSA-5558-1: expected {CVE ids}"),
    (GOOD + GOOD, "l:4: DSA-5558-1 appears twice"),
    (b"\n\n", "l:1: empty"),
    (GOOD.replace(b"netty - ", b"n\xffy - "), "l:1: not UTF-8"),
])
def test_malformed_lists_say_file_and_line(data: bytes, where: str) -> None:
    with pytest.raises(InputError, match="^" + where.replace("[", r"\[").replace("{", r"\{")
                       .replace("+", r"\+").replace("(", r"\(")):
        parse_advisories(data, "l")


def test_an_id_in_two_lists_or_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="DSA-6112-1 is also in"):
        load_advisories([DSA, DSA])
    with pytest.raises(InputError, match="no such file"):
        load_advisories([tmp_path / "list"])


def test_report_entries_name_the_advisories_that_fix_them() -> None:
    old = [pkg("libssl3", "3.0.20-1~deb12u2", "openssl"),
           pkg("libc6", "2.36-9+deb12u1", "glibc")]
    new = [pkg("libssl3", "3.0.22-1~deb12u1", "openssl"),
           pkg("libc6", "2.36-9+deb12u1", "glibc")]
    index = load_advisories([DSA, DLA])
    doc = make_report("c" * 64, "site/base", "bookworm", new, since="b" * 64,
                      since_manifest=old, changelog=[], missing=[],
                      tracker=load_tracker(DATA / "bookworm-excerpt.json"),
                      now=datetime(2026, 11, 29, tzinfo=UTC), advisories=index)
    check_report(doc, "c" * 64)
    opened = {c["cve"]: c["advisories"] for c in doc["open"]}
    assert opened["CVE-2026-84782"] == ["DSA-6112-1"]  # not bullseye's DLA-4402-1
    assert opened["CVE-2023-4911"] == ["DSA-5514-1"]
    assert opened["CVE-2010-4756"] == []  # open, no advisory
    fixed = {c["cve"]: c["advisories"] for c in doc["fixes"]["cves"]}
    assert fixed == {"CVE-2026-63072": ["DSA-6090-1"], "CVE-2026-75803": ["DSA-6090-1"]}
    assert [x["name"] for x in doc["advisory_lists"]] == ["DSA-list.txt", "DLA-list.txt"]
    plain = make_report("c" * 64, "site/base", "bookworm", new, since=None,
                        since_manifest=None, changelog=[], missing=[], tracker=None,
                        now=datetime(2026, 11, 29, tzinfo=UTC))
    assert plain["advisory_lists"] is None


def test_hostile_lists_crlf_other_digits_control_chars_and_unreadable_files(
        tmp_path: Path) -> None:
    """A list saved with CRLF reads as the same list; digits of other scripts are not CVE
    ids; a control character in an error is escaped; an unreadable file is an InputError
    (not a traceback); a huge list of tiny lines parses without a list of all its lines."""
    assert parse_advisories(GOOD.replace(b"\n", b"\r\n"), "l") == parse_advisories(GOOD, "l")
    arabic = "CVE-\u0662\u0660\u0662\u0663-\u0661\u0662\u0663\u0664".encode()
    with pytest.raises(InputError, match="is not a CVE id"):
        parse_advisories(GOOD.replace(b"CVE-2023-34462", arabic), "l")
    with pytest.raises(InputError, match=r"- \\x1b\[2Jnetty: no version") as err:
        parse_advisories(GOOD.replace(b"- netty 1:4.1.48-7+deb12u1", b"- \x1b[2Jnetty"), "l")
    assert "\x1b" not in str(err.value)
    os.symlink("loop", tmp_path / "loop")  # a link to itself: ELOOP, as root too
    with pytest.raises(InputError, match="loop: cannot read"):
        load_advisories([tmp_path / "loop"])
    many = GOOD + b"\t{CVE-2023-1234}\n" * 200_000
    assert parse_advisories(many, "l")[0].cves.count("CVE-2023-1234") == 200_000

"""Names with control characters never break a line-based output."""

from __future__ import annotations

import os

from hypothesis import given
from hypothesis import strategies as st

from atoll.core.text import printable
from atoll.monitor.localchecks import LocalCheck, render_local


def test_escapes() -> None:
    assert printable("plain/name-ü.conf") == "plain/name-ü.conf"
    assert printable("a\nb\tc\\d\x1b[31m") == "a\\nb\\tc\\\\d\\x1b[31m"
    assert printable(os.fsdecode(b"caf\xe9")) == "caf\\xe9"
    assert printable(b"\xff\x00") == "\\xff\\x00"
    assert printable("\u2028x\x85") == "\\u2028x\\x85"


@given(st.text())
def test_any_name_prints_on_one_line(name: str) -> None:
    out = printable(name)
    assert len(out.splitlines()) <= 1 and "\t" not in out  # no line or column breaks
    assert not any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in out)


@given(st.text(), st.text())
def test_a_local_check_is_one_line_whatever_its_text(name: str, summary: str) -> None:
    section = render_local([LocalCheck(1, name, f"2 /etc merge conflict(s): {summary}")])
    lines = section.splitlines()
    assert len(lines) == 2 and lines[0] == "<<<local:sep(0)>>>"
    assert lines[1].startswith('1 "')


def test_terminal_safe_keeps_layout_and_escapes_controls() -> None:
    from atoll.core.text import terminal_safe

    text = "a\tb\nc \\x d \u00e9"
    assert terminal_safe(text) == text
    assert terminal_safe("x\x1b[31mRED\x07\r\u202e") == "x\\x1b[31mRED\\x07\\r\\u202e"


@given(st.text())
def test_terminal_safe_never_lets_a_control_through(text: str) -> None:
    import unicodedata

    from atoll.core.text import terminal_safe

    out = terminal_safe(text)
    assert all(c in "\n\t" or unicodedata.category(c) not in ("Cc", "Cs")
               for c in out)
    assert "\x1b" not in out and "\u202e" not in out

"""Names made safe to print in line-based output (status, logs, Checkmk sections).

A file name may hold any byte but ``/`` and NUL: a newline in a name must not
start a new line of a Checkmk section, a tab must not shift a column, and an
undecodable byte must not raise. :func:`printable` escapes them the way
``ls -b`` and Python do: ``\\n``, ``\\t``, ``\\\\``, ``\\xNN``.

:func:`terminal_safe` is the last line of defence where text reaches a terminal
(every command's human output, errors, logs): it keeps newlines and tabs, which
the text itself lays out, and escapes every other control character, so that
no value printed (a URL, a group, a reason read from a file) can carry an
escape sequence to the operator's terminal.
"""

from __future__ import annotations

import os

__all__ = ["printable", "terminal_safe"]

_NAMED = {"\n": "\\n", "\t": "\\t", "\r": "\\r", "\\": "\\\\"}
# line and paragraph separators, and the bidirectional controls that make a name
# display as another (U+202E shows "exe.txt" for "txt.exe")
_INVISIBLE = frozenset([0x2028, 0x2029, 0x85, 0x200E, 0x200F, *range(0x202A, 0x202F),
                        *range(0x2066, 0x206A)])


def _escape(ch: str) -> str:
    if ch in _NAMED:
        return _NAMED[ch]
    code = ord(ch)
    if 0xDC80 <= code <= 0xDCFF:  # a byte os.fsdecode could not decode (surrogateescape)
        return f"\\x{code - 0xDC00:02x}"
    if code < 0x20 or code == 0x7F or 0x80 <= code < 0xA0:
        return f"\\x{code:02x}"
    if 0xD800 <= code <= 0xDFFF or code in _INVISIBLE:
        return f"\\u{code:04x}"
    return ch


def printable(name: str | bytes | os.PathLike[str]) -> str:
    """``name`` with control characters, backslashes and undecodable bytes escaped.

    Accepts a str (possibly holding surrogate escapes from ``os.fsdecode``),
    bytes (decoded with surrogateescape) or a path.
    """
    if isinstance(name, bytes):
        name = name.decode("utf-8", "surrogateescape")
    text = os.fspath(name)
    if isinstance(text, bytes):  # a PathLike that returns bytes
        text = text.decode("utf-8", "surrogateescape")
    if text.isprintable() and "\\" not in text and not any(ord(c) in _INVISIBLE for c in text):
        return text
    return "".join(_escape(c) for c in text)


def terminal_safe(text: str) -> str:
    """``text`` with control characters other than newline and tab escaped (``\\x1b``),
    and the invisible and bidirectional controls too; backslashes are left alone
    (the names in it were escaped with :func:`printable` already)."""
    if text.isprintable() and not any(ord(c) in _INVISIBLE for c in text):
        return text
    return "".join(c if c in "\n\t" or (c.isprintable() and ord(c) not in _INVISIBLE)
                   else (_escape(c) if c != "\\" else c) for c in text)

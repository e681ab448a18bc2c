"""The Debian security tracker's advisory lists: DSA (``data/DSA/list``) and DLA
(``data/DLA/list``) in the security-tracker repository (publishing side, pure).

Format (one entry per advisory, newest first; body lines indented by a tab)::

    [21 Nov 2023] DSA-5558-1 netty - security update
            {CVE-2023-34462 CVE-2023-44487}
            [bookworm] - netty 1:4.1.48-7+deb12u1
            [bullseye] - netty 1:4.1.48-4+deb11u2
            NOTE: free text (ignored)

``{...}`` names the CVEs the advisory fixes (it may be absent or empty: a
regression update); ``[release] - source version`` the version that fixes them in
that release (``<not-affected>`` and other ``<...>`` words: no fix there). An
advisory is attached to a CVE of ``source`` in ``release`` when it names the CVE and
fixes ``source`` in ``release`` (docs/security.md).

A list is read whole and checked line by line: a line of another shape, an entry
cut short or a file that ends mid-line (a truncated download) is an
:class:`~atoll.core.errors.InputError` ``FILE:LINE: problem``, so nothing is
published from half a list.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from atoll.core.errors import InputError
from atoll.core.text import printable

__all__ = ["MAX_BYTES", "Advisory", "AdvisoryIndex", "ListInfo", "attach", "load_advisories",
           "parse_advisories"]

MAX_BYTES = 64 << 20  # data/DSA/list is ~2 MB, data/DLA/list ~1 MB

# re.ASCII: \d and \S are ASCII digits and non-space, not other scripts' digits
_HEAD = re.compile(r"^\[(\d{1,2} [A-Z][a-z]{2} \d{4})\] ((?:DSA|DLA)-\d+(?:-\d+)?) "
                   r"(\S+)(?: - (.*))?$", re.ASCII)
_CVES = re.compile(r"^\{([^{}]*)\}$")
_CVE = re.compile(r"^(CVE-\d{4}-\d{4,}|TEMP-\d+-[0-9A-Fa-f]+)$", re.ASCII)
_FIXED = re.compile(r"^\[([a-z][a-z0-9-]*)\] - (\S+)(?: (\S+))?(?: .*)?$", re.ASCII)
_RESOLUTION = ("give data/DSA/list or data/DLA/list of "
               "https://salsa.debian.org/security-tracker-team/security-tracker as downloaded")


@dataclass(frozen=True)
class Advisory:
    """One DSA or DLA: ``fixed`` maps (release, source) to the version that fixes it."""

    id: str  # DSA-5558-1
    date: str  # "21 Nov 2023", as the list writes it
    source: str  # the package the header names
    cves: tuple[str, ...]
    fixed: tuple[tuple[str, str, str], ...]  # (release, source, version)


@dataclass(frozen=True)
class ListInfo:
    """Where a list came from (recorded in the report: ``advisory_lists``)."""

    name: str
    sha256: str
    size: int  # bytes
    advisories: int


@dataclass(frozen=True)
class AdvisoryIndex:
    """Advisories of one or more lists, by CVE."""

    advisories: tuple[Advisory, ...]
    lists: tuple[ListInfo, ...] = ()
    _by_cve: dict[str, list[Advisory]] = field(default_factory=dict, repr=False,
                                               compare=False)

    def __post_init__(self) -> None:
        for a in self.advisories:
            for cve in a.cves:
                self._by_cve.setdefault(cve, []).append(a)

    def ids(self, cve: str, source: str, release: str) -> list[str]:
        """The advisories (sorted ids) that fix ``cve`` in ``source`` in ``release``."""
        return sorted({a.id for a in self._by_cve.get(cve, ())
                       if (release, source) in {(r, s) for r, s, _ in a.fixed}})

    def info(self) -> list[dict[str, object]]:
        """``[{"name", "sha256", "size", "advisories"}]`` of the lists read."""
        return [{"name": i.name, "sha256": i.sha256, "size": i.size,
                 "advisories": i.advisories} for i in self.lists]


def _bad(name: str, line: int, problem: str) -> InputError:
    return InputError(f"{name}:{line}: {problem}", resolution=_RESOLUTION)


def parse_advisories(data: bytes, name: str = "advisory list") -> list[Advisory]:
    """Parse one DSA or DLA list (see module docstring).

    Raises:
        InputError: ``NAME:LINE: problem`` for the first line that is not of the
            format, an entry without CVEs or fixed versions at the end of the file,
            a duplicate advisory id, a file that is empty, not UTF-8 or ends mid-line.
    """
    try:
        text = data.decode()
    except UnicodeDecodeError as exc:
        raise _bad(name, data[:exc.start].count(b"\n") + 1, "not UTF-8") from exc
    if not text.strip():
        raise _bad(name, 1, "empty: not an advisory list")
    if not text.endswith("\n"):
        raise _bad(name, text.count("\n") + 1, "the file ends mid-line (a truncated download?)")
    out: list[Advisory] = []
    seen: set[str] = set()
    cur: _Entry | None = None
    for no, raw in enumerate(_lines(text), 1):
        if not raw.strip():
            continue
        if not raw[0].isspace():
            m = _HEAD.match(raw.rstrip())
            if m is None:
                raise _bad(name, no, f"not an advisory header ('[DD Mon YYYY] DSA-N-N "
                           f"source - ...'): {raw[:80]!r}")
            if cur is not None:
                out.append(cur.close(name))
            if m[2] in seen:
                raise _bad(name, no, f"{m[2]} appears twice")
            seen.add(m[2])
            cur = _Entry(no, m[2], m[1], m[3])
            continue
        if cur is None:
            raise _bad(name, no, "an indented line before the first advisory header")
        line = raw.strip()
        cur.body += 1
        if line.startswith("NOTE:"):
            continue
        if (m := _CVES.match(line)) is not None:
            for token in m[1].split():
                if _CVE.match(token) is None:
                    raise _bad(name, no, f"{cur.id}: {token[:40]!r} is not a CVE id")
                cur.cves.append(token)
            continue
        if (m := _FIXED.match(line)) is not None:
            if m[3] is None:
                raise _bad(name, no, f"{cur.id}: [{m[1][:40]}] - {printable(m[2][:80])}: "
                           "no version")
            if not m[3].startswith("<"):  # <not-affected>, <unfixed>...: no fix there
                cur.fixed.append((m[1], m[2], m[3]))
            continue
        raise _bad(name, no, f"{cur.id}: expected {{CVE ids}}, [release] - source "
                   f"version or NOTE:, got {line[:80]!r}")
    if cur is not None:
        out.append(cur.close(name))
    return out


def _lines(text: str) -> Iterator[str]:
    """The lines of ``text`` (which ends with a newline), one at a time: a list of them
    all would cost some 50 bytes a line on top of the text (GBs for a list of tiny lines)."""
    start = 0
    while start < len(text):
        end = text.index("\n", start)
        yield text[start:end]
        start = end + 1


@dataclass
class _Entry:
    """An advisory while its lines are read."""

    line: int
    id: str
    date: str
    source: str
    body: int = 0  # indented lines so far
    cves: list[str] = field(default_factory=list)
    fixed: list[tuple[str, str, str]] = field(default_factory=list)

    def close(self, name: str) -> Advisory:
        if self.body == 0:
            raise _bad(name, self.line, f"{self.id}: no CVEs and no fixed versions follow "
                       "(an entry cut short?)")
        return Advisory(self.id, self.date, self.source, tuple(self.cves), tuple(self.fixed))


def load_advisories(paths: Iterable[Path], *, max_bytes: int = MAX_BYTES) -> AdvisoryIndex:
    """Read and parse DSA/DLA lists into one index.

    Raises:
        InputError: a missing file, one larger than ``max_bytes``, or one that does not
            parse (``FILE:LINE: problem``); an id in two lists.
    """
    advisories: list[Advisory] = []
    infos: list[ListInfo] = []
    ids: dict[str, str] = {}
    for path in paths:
        try:
            with open(path, "rb") as f:
                data = f.read(max_bytes + 1)
        except FileNotFoundError as exc:
            raise InputError(f"{path}: no such file", resolution=_RESOLUTION) from exc
        except IsADirectoryError as exc:
            raise InputError(f"{path}: is a directory, not an advisory list") from exc
        except OSError as exc:  # unreadable: permissions, a loop of links, a name too long
            raise InputError(f"{path}: cannot read: {exc.strerror or exc}",
                             resolution=_RESOLUTION) from exc
        if len(data) > max_bytes:
            raise InputError(f"{path}: larger than the {max_bytes >> 20} MiB an advisory "
                             "list may be", resolution=_RESOLUTION)
        parsed = parse_advisories(data, str(path))
        for a in parsed:
            if a.id in ids:
                raise InputError(f"{path}: {a.id} is also in {ids[a.id]}")
            ids[a.id] = str(path)
        advisories += parsed
        infos.append(ListInfo(Path(path).name, hashlib.sha256(data).hexdigest(), len(data),
                              len(parsed)))
    return AdvisoryIndex(tuple(advisories), tuple(infos))


def attach(entries: Sequence[dict[str, object]], index: AdvisoryIndex, release: str,
           *, source_key: str = "source") -> None:
    """Set ``advisories`` (sorted ids, maybe empty) on each CVE entry, in place."""
    for e in entries:
        e["advisories"] = index.ids(str(e["cve"]), str(e[source_key]), release)

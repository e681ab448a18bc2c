"""A request body decoded as airlock decodes it (pure).

airlock reads a FleetLock body with Go's ``json.NewDecoder(req.Body).Decode(&input)``
into ``struct { ClientParams struct { Group, ID string } `json:"client_params"` }``
(``internal/server/http_params.go``). What that does, and so what this does:

* **One value.** ``Decode`` reads the first JSON value and ignores whatever follows
  it (``{...}xyz``, two objects back to back). Leading whitespace (space, tab, CR,
  LF) is skipped; an empty body is the error ``EOF``.
* **Strict JSON syntax in the whole value** (unknown members included): no ``NaN``,
  ``Infinity``, comments, single quotes, leading zeros, raw control characters in
  strings, or a byte-order mark; at most 10000 levels of nesting (Go's
  ``maxNestingDepth``). Numbers are never converted, so any length is fine.
* **Keys match case-insensitively** (Go's ``bytes.EqualFold``: ``Client_Params``,
  ``ID``, ``GROUP``; also the Kelvin sign for ``k`` and long s for ``s``), after their
  escapes are decoded. Unknown keys are ignored.
* **Repeated keys merge into the struct:** a later ``client_params`` object sets only
  the fields it has; ``null`` (for the object or a field) leaves what was there.
* **Types:** the top level must be an object or ``null``, ``client_params`` an object
  or ``null``, ``id`` and ``group`` strings or ``null``; anything else is an
  ``UnmarshalTypeError`` (the request is refused).

One deliberate difference, documented in docs/fleet.md: Go turns invalid UTF-8 and
lone surrogates (``"\\ud800"``) in strings into U+FFFD silently; here such an ``id``
or ``group`` keeps them (as lone surrogates, see :func:`decode_params`), so that the
protocol layer refuses it as not valid Unicode. Elsewhere in the body they are
accepted, as airlock accepts them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["MAX_DEPTH", "GoDecodeError", "Params", "decode_params"]

MAX_DEPTH = 10000  # Go's encoding/json maxNestingDepth
_WS = re.compile(rb"[ \t\r\n]*")
_STRING = re.compile(rb'"(?:[^"\\\x00-\x1f]|\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4}))*"')
_NUMBER = re.compile(rb"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_LITERALS = {ord("t"): b"true", ord("f"): b"false", ord("n"): b"null"}
# Go's simple case folding reaches these from ASCII letters: K (U+212A) folds to k,
# long s (U+017F) to s.
_SPECIAL_FOLDS = {("k", "\u212a"), ("s", "\u017f")}


class GoDecodeError(ValueError):
    """What Go's decoder would return as an error (the request is refused)."""


@dataclass(frozen=True)
class Params:
    """The struct airlock decodes into: ``None`` for a field never set."""

    group: str | None = None
    id: str | None = None


def fold_equal(key: str, name: str) -> bool:
    """Go's ``bytes.EqualFold(key, name)`` for a lower-case ASCII field ``name``."""
    return len(key) == len(name) and all(
        k == n or (k.isascii() and k.lower() == n) or (n, k) in _SPECIAL_FOLDS
        for k, n in zip(key, name, strict=True))


def _describe(c: int) -> str:
    ch = chr(c) if c < 0x80 else f"\\x{c:02x}"
    return f"invalid character {ch!r}"


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.b = data
        self.i = 0

    def ws(self) -> None:
        m = _WS.match(self.b, self.i)
        assert m is not None  # matches the empty string
        self.i = m.end()

    def peek(self) -> int | None:
        return self.b[self.i] if self.i < len(self.b) else None

    def fail(self, what: str) -> GoDecodeError:
        c = self.peek()
        return GoDecodeError("unexpected EOF" if c is None else f"{_describe(c)} {what}")

    def expect(self, char: bytes, what: str) -> None:
        self.ws()
        if self.b[self.i:self.i + 1] != char:
            raise self.fail(what)
        self.i += 1

    def string(self) -> str:
        m = _STRING.match(self.b, self.i)
        if m is None:
            raise self.fail("in string literal" if self.peek() == ord('"') else
                            "looking for beginning of object key string")
        self.i = m.end()
        # invalid UTF-8 kept as lone surrogates (surrogateescape), escapes decoded by json:
        # a string that is not valid Unicode stays recognisable (str.encode fails on it)
        return str(json.loads(m.group().decode("utf-8", "surrogateescape")))

    def scalar(self) -> None:
        c = self.peek()
        if c == ord('"'):
            self.string()
            return
        if c in _LITERALS:
            word = _LITERALS[c]
            if self.b[self.i:self.i + len(word)] != word:
                raise self.fail("in literal")
            self.i += len(word)
            return
        m = _NUMBER.match(self.b, self.i)
        if m is None:
            if c == ord("-"):
                self.i += 1
                raise self.fail("in numeric literal")
            raise self.fail("looking for beginning of value")
        self.i = m.end()

    def skip(self, depth: int) -> None:
        """Skip one value (checked as Go checks it) whose container would be at ``depth``;
        iterative, so any nesting up to ``MAX_DEPTH`` costs no recursion."""
        closers: list[int] = []
        while True:
            self.ws()
            c = self.peek()
            if c in (ord("{"), ord("[")):
                if depth + len(closers) > MAX_DEPTH:
                    raise GoDecodeError("exceeded max depth")
                self.i += 1
                self.ws()
                close = ord("}") if c == ord("{") else ord("]")
                if self.peek() == close:
                    self.i += 1
                else:
                    closers.append(close)
                    if close == ord("}"):
                        self.string()
                        self.expect(b":", "after object key")
                    continue
            else:
                self.scalar()
            while True:  # after a value: a comma, or the end of the enclosing container
                if not closers:
                    return
                self.ws()
                c = self.peek()
                if c == ord(","):
                    self.i += 1
                    if closers[-1] == ord("}"):
                        self.ws()
                        self.string()
                        self.expect(b":", "after object key")
                    break
                if c == closers[-1]:
                    self.i += 1
                    closers.pop()
                    continue
                raise self.fail("after array element" if closers[-1] == ord("]")
                                else "after object key:value pair")

    def null(self) -> bool:
        """Consume ``null`` if it comes next (Go: no effect on the target)."""
        self.ws()
        if self.b[self.i:self.i + 4] == b"null":
            self.scalar()
            return True
        return False


def decode_params(body: bytes) -> Params:
    """(group, id) as airlock's decoder leaves them for ``body`` (module docstring).

    Raises:
        GoDecodeError: where Go's ``Decode`` returns an error (the message is Go's).
    """
    r = _Reader(body)
    r.ws()
    if r.peek() is None:
        raise GoDecodeError("EOF")
    group: str | None = None
    client_id: str | None = None
    type_error: str | None = None

    def each_member(depth: int, on_value: Callable[[str], None]) -> None:
        """Walk the object at ``r`` (``{`` next, its container at ``depth``): call
        ``on_value(key)`` with the reader at each member's value, which consumes it."""
        if depth > MAX_DEPTH:
            raise GoDecodeError("exceeded max depth")
        r.i += 1  # "{"
        r.ws()
        if r.peek() == ord("}"):
            r.i += 1
            return
        while True:
            r.ws()
            key = r.string()
            r.expect(b":", "after object key")
            r.ws()
            on_value(key)
            r.ws()
            c = r.peek()
            r.i += 1
            if c == ord(","):
                continue
            if c == ord("}"):
                return
            r.i -= 1
            raise r.fail("after object key:value pair")

    def field_value(key: str) -> None:
        nonlocal group, client_id, type_error
        name = "group" if fold_equal(key, "group") else "id" if fold_equal(key, "id") else None
        if name is None:
            r.skip(3)
        elif r.peek() == ord('"'):
            value = r.string()
            if name == "group":
                group = value
            else:
                client_id = value
        elif not r.null():
            kind = _kind(r.peek())
            r.skip(3)
            type_error = type_error or (f"json: cannot unmarshal {kind} into Go struct field "
                                        f"Params.client_params.{name} of type string")

    def top_value(key: str) -> None:
        nonlocal type_error
        if not fold_equal(key, "client_params"):
            r.skip(2)
        elif r.peek() == ord("{"):
            each_member(2, field_value)
        elif not r.null():
            kind = _kind(r.peek())
            r.skip(2)
            type_error = type_error or (f"json: cannot unmarshal {kind} into Go struct field "
                                        "HTTPParams.client_params of type server.Params")

    if r.peek() == ord("{"):
        each_member(1, top_value)
    elif not r.null():
        kind = _kind(r.peek())
        r.skip(1)
        type_error = f"json: cannot unmarshal {kind} into Go value of type server.HTTPParams"
    if type_error:
        raise GoDecodeError(type_error)
    return Params(group, client_id)


def _kind(c: int | None) -> str:
    """Go's name for the JSON type of a value starting with ``c``."""
    return {ord('"'): "string", ord("["): "array", ord("{"): "object", ord("t"): "bool",
            ord("f"): "bool"}.get(c or 0, "number")

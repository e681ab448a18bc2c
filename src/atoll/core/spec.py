"""Load YAML that people write into typed, immutable pydantic models.

Every problem is reported as ``file:line: field: problem``: the YAML node tree
is kept beside the data so that a pydantic error location (``packages.3``)
maps back to the line the user wrote. All problems found in one pass are
reported together, sorted by line, each once, in atoll's words (not
pydantic's). The ``field`` is the dotted path (``files.1.path``) or one of:

    (encoding)   the bytes are not UTF-8, or a character YAML refuses (NUL...)
    (syntax)     the text is not YAML
    (top level)  the file is empty, is not a mapping, or exceeds a limit

Limits, checked while the YAML is read and composed (before an alias is
expanded or a value reaches pydantic), so that a small hostile file (nested
aliases: "billion laughs") is refused at once instead of eating the host:

    MAX_SPEC_BYTES  1 MiB of text
    MAX_ALIASES     1,000 aliases (``*name``)
    MAX_NODES       100,000 values, an alias counting as all the values it stands for
    MAX_DEPTH       64 levels of nesting, an alias counting as the levels it stands for

A duplicate key in a mapping is a problem (YAML loaders silently keep the last).
"""

from __future__ import annotations

import re
from collections.abc import Hashable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError
from pydantic_core import ErrorDetails

from atoll.core.errors import InputError, SpecError
from atoll.core.userfile import open_user_file

__all__ = [
    "MAX_ALIASES",
    "MAX_DEPTH",
    "MAX_NODES",
    "MAX_SPEC_BYTES",
    "SingleLine",
    "Spec",
    "line_of",
    "load_spec",
    "load_spec_text",
    "read_spec_text",
    "single_line",
]

# Real specs are a few KiB with a few hundred values (a treefile naming every package of a
# large image: a few thousand), and use aliases a handful of times. The limits leave ample
# room and bound the worst case: a 1 MiB file parses in ~3 s (pure-Python YAML, no expansion);
# 100,000 values made by aliases from a small file validate in ~0.1 s.
MAX_SPEC_BYTES = 1024 * 1024
MAX_ALIASES = 1_000
MAX_NODES = 100_000
MAX_DEPTH = 64

M = TypeVar("M", bound=BaseModel)

Loc = tuple[str | int, ...]
Lines = dict[Loc, int]  # keys as pydantic locates them: str or int
Problem = SpecError.Problem

_MERGE_TAG = "tag:yaml.org,2002:merge"
_UNREADABLE = object()
_TAG_NAMES = {"int": "integer", "float": "number", "bool": "boolean", "timestamp": "date",
              "binary": "base64 value", "null": "null"}
# The characters YAML accepts (yaml.reader.Reader.NON_PRINTABLE is the complement).
_NOT_YAML = re.compile("[^\x09\x0a\x0d\x20-\x7e\x85\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_BREAK = re.compile("\r\n|[\n\r\x85\u2028\u2029]")  # line breaks as YAML counts them
_CHAR_NAMES = {0: "NUL", 0x1B: "ESC", 0x7F: "DEL", 0xFFFE: "non-character",
               0xFFFF: "non-character"}
# The type names pydantic adds to an error location for union members and dict keys.
_TYPE_TAGS = {"str", "int", "float", "bool", "bytes", "none", "list", "dict", "set", "tuple"}


class Spec(BaseModel):
    """Base for user-written specs: frozen, unknown fields are errors."""

    model_config = ConfigDict(frozen=True, extra="forbid")


# --- reading: bytes, size, characters ----------------------------------------------------


def _position(text: str, index: int) -> tuple[int, int]:
    """1-based (line, column) of ``text[index]``, counting line breaks as YAML does."""
    line, start = 1, 0
    for m in _BREAK.finditer(text, 0, index):
        line, start = line + 1, m.end()
    return line, index - start + 1


def _too_big(source: str) -> SpecError:
    limit = f"larger than {MAX_SPEC_BYTES / 2**20:g} MiB: a spec may be at most " \
        f"{MAX_SPEC_BYTES:,} bytes"
    return SpecError([Problem(source, 1, "(top level)", limit)])


def _check_text(text: str, source: str) -> None:
    if len(text) > MAX_SPEC_BYTES or len(text.encode("utf-8", "surrogatepass")) > MAX_SPEC_BYTES:
        raise _too_big(source)
    bad = _NOT_YAML.search(text)
    if bad:
        line, column = _position(text, bad.start())
        code = ord(bad.group())
        name = _CHAR_NAMES.get(code, "a control character" if code < 0xA0 else
                               "a lone surrogate" if 0xD800 <= code < 0xE000 else "")
        what = f"U+{code:04X}" + (f" ({name})" if name else "")
        raise SpecError([Problem(source, line, "(encoding)",
                                 f"character {what} at column {column} is not allowed in YAML")])


def read_spec_text(path: Path) -> str:
    """The text of the spec file at ``path``: UTF-8, at most ``MAX_SPEC_BYTES``.

    Raises:
        InputError: the file cannot be read, or is not a regular file (a FIFO, a device).
        SpecError: too big, or not UTF-8 (``file:line: (encoding): ...``, naming the column).
    """
    source = str(path)
    with open_user_file(path, "spec") as f:  # a regular file: never a FIFO or a device
        try:
            data = f.read(MAX_SPEC_BYTES + 1)
        except OSError as exc:
            raise InputError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    if len(data) > MAX_SPEC_BYTES:
        raise _too_big(source)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        before = data[: exc.start].decode("utf-8")
        line, column = _position(before, len(before))
        raise SpecError([Problem(source, line, "(encoding)",
                                 f"byte 0x{data[exc.start]:02x} at column {column} is not UTF-8 "
                                 "(a spec is UTF-8 text)")]) from None


# --- composing: limits, line map, duplicate keys -----------------------------------------


class _BadValue(Exception):
    """A YAML value its tag's constructor cannot build."""

    def __init__(self, node: yaml.Node, exc: Exception) -> None:
        super().__init__(str(exc))
        self.node = node
        tag = str(node.tag).replace("tag:yaml.org,2002:", "")
        why = f" ({exc})" if isinstance(exc, ValueError | OverflowError) and str(exc) else ""
        self.problem = f"not a valid {_TAG_NAMES.get(tag, tag)}{why}"


class _Loader(yaml.SafeLoader):
    """SafeLoader that counts aliases, values and depth as it composes (aliases included)."""

    def __init__(self, text: str, source: str) -> None:
        super().__init__(text)
        self.source = source
        self.aliases = 0
        self.nodes = 0
        self.depth = 0  # level of the node being composed (the root is 1)
        self.reach = 0  # deepest level reached so far
        self.sizes: dict[yaml.Node, tuple[int, int]] = {}  # anchored node: (values, height)

    def _refuse(self, line: int, problem: str) -> SpecError:
        return SpecError([Problem(self.source, line, "(top level)", problem)])

    def _grow(self, nodes: int, reach: int, line: int) -> None:
        self.nodes += nodes
        self.reach = max(self.reach, reach)
        if self.nodes > MAX_NODES:
            raise self._refuse(line, f"more than {MAX_NODES:,} values once aliases are "
                               "expanded (the limit for a spec)")
        if self.reach > MAX_DEPTH:
            raise self._refuse(line, f"nested more than {MAX_DEPTH} levels deep once aliases "
                               "are expanded (the limit for a spec)")

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        # A value its tag cannot build (``!!int x``, ``2023-02-30``) is located at its node.
        try:
            return super().construct_object(node, deep)
        except (ValueError, TypeError, AttributeError, OverflowError, LookupError) as exc:
            raise _BadValue(node, exc) from exc

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        event: yaml.Event = self.peek_event()  # type: ignore[no-untyped-call]
        line = event.start_mark.line + 1 if event.start_mark is not None else 1
        if isinstance(event, yaml.AliasEvent):
            self.aliases += 1
            if self.aliases > MAX_ALIASES:
                raise self._refuse(line, f"more than {MAX_ALIASES:,} aliases (the limit for "
                                   "a spec)")
            node = super().compose_node(parent, index)
            known = self.sizes.get(node) if node is not None else None
            if known is None:  # its anchor is still being composed: an endless value
                raise self._refuse(line, f"the alias *{event.anchor} refers to a value that "
                                   "contains it")
            nodes, height = known
            self._grow(nodes, self.depth + height, line)
            return node
        start, outer_reach = self.nodes, self.reach
        self.depth += 1
        self.reach = self.depth
        self._grow(1, self.depth, line)
        node = super().compose_node(parent, index)
        height = self.reach - self.depth + 1
        self.depth -= 1
        self.reach = max(outer_reach, self.reach)
        if node is not None and getattr(event, "anchor", None) is not None:
            self.sizes[node] = (self.nodes - start, height)
        return node


class _Walk:
    """The line of every path in a composed document, and its duplicate keys."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.lines: Lines = {}
        self.duplicates: list[SpecError.Problem] = []
        self.paths: dict[yaml.Node, Loc] = {}  # each node's first path
        self._checked: set[yaml.MappingNode] = set()
        self._keys = yaml.constructor.SafeConstructor()

    def key(self, node: yaml.Node) -> Hashable:
        """A mapping key as the constructor will build it (so that ``1`` and ``0x1`` clash)."""
        value = self._scalar(node)
        if value is not _UNREADABLE:
            return value
        return (node.tag, node.value) if isinstance(node, yaml.ScalarNode) else id(node)

    def name(self, node: yaml.Node) -> str | int:
        """A mapping key as pydantic names it in an error location."""
        value = self._scalar(node)
        if value is _UNREADABLE:
            return node.value if isinstance(node, yaml.ScalarNode) else "(complex key)"
        if isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)):
            return value
        return str(value)

    def _scalar(self, node: yaml.Node) -> object:
        if not isinstance(node, yaml.ScalarNode):
            return _UNREADABLE
        try:
            value = self._keys.construct_object(node)
        except (yaml.YAMLError, ValueError, TypeError, AttributeError, OverflowError,
                LookupError):  # an unreadable key: construction reports it with its line
            self._keys = yaml.constructor.SafeConstructor()
            return _UNREADABLE
        return value if isinstance(value, Hashable) else _UNREADABLE

    def walk(self, node: yaml.Node, path: Loc) -> None:
        line = node.start_mark.line + 1
        self.lines[path] = line
        self.paths.setdefault(node, path)
        if isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                self.walk(item, (*path, i))
        elif isinstance(node, yaml.MappingNode):
            # Merged keys (<<: *base) first: keys written in this mapping override them.
            for key, value in node.value:
                if key.tag == _MERGE_TAG:
                    merged = value.value if isinstance(value, yaml.SequenceNode) else [value]
                    for m in merged:
                        if isinstance(m, yaml.MappingNode):
                            self.walk(m, path)
            self.lines[path] = line
            check = node not in self._checked
            self._checked.add(node)
            first: dict[Hashable, int] = {}
            for key, value in node.value:
                if key.tag == _MERGE_TAG:
                    continue
                name = self.name(key)
                key_line = key.start_mark.line + 1
                self.paths.setdefault(key, (*path, name))
                if check:
                    ident = self.key(key)
                    if ident in first:
                        self.duplicates.append(Problem(
                            self.source, key_line, _field((*path, name)),
                            f"duplicate key (first defined at line {first[ident]})"))
                    else:
                        first[ident] = key_line
                self.walk(value, (*path, name))
                self.lines[(*path, name)] = key_line


def _compose(text: str, source: str) -> tuple[_Loader, yaml.Node | None]:
    """Compose ``text`` within the limits (the loader is returned to construct the data).

    Raises:
        SpecError: a character YAML refuses, a syntax error or a limit.
    """
    _check_text(text, source)
    loader = _Loader(text, source)
    try:
        return loader, loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        raise _syntax(exc, source) from None
    except yaml.YAMLError as exc:  # ReaderError: a character refused (already checked above)
        raise SpecError([Problem(source, 1, "(encoding)", _clean(str(exc)))]) from None


def _syntax(exc: yaml.MarkedYAMLError, source: str) -> SpecError:
    mark = exc.problem_mark or exc.context_mark
    line = mark.line + 1 if mark else 1
    problem = exc.problem or ""
    if exc.context and (not problem or problem.startswith("but ")):
        problem = f"{exc.context}, {problem}" if problem else exc.context
    return SpecError([Problem(source, line, "(syntax)", _clean(problem or "not valid YAML"))])


def _construct(loader: _Loader, node: yaml.Node, walk: _Walk) -> object:
    """The Python data of a composed document (aliases shared, not copied).

    Raises:
        SpecError: a value its tag cannot build (``!!int x``, ``2023-02-30``, ``!!python/x``).
    """
    source = walk.source
    try:
        return loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        raise _syntax(exc, source) from None
    except _BadValue as exc:
        path = walk.paths.get(exc.node)
        field = _field(path) if path is not None else "(syntax)"
        raise SpecError([Problem(source, exc.node.start_mark.line + 1, field,
                                 _clean(exc.problem))]) from None
    except (ValueError, TypeError, AttributeError, OverflowError, LookupError) as exc:
        # not raised by one value (those are _BadValue)
        raise SpecError([Problem(source, node.start_mark.line + 1, "(syntax)",
                                 _clean(f"cannot read this document: {exc}"))]) from None


# --- validation problems in atoll's words -------------------------------------------------


def _clean(text: str) -> str:
    """One line of text (newlines and runs of spaces collapsed)."""
    return " ".join(text.split()) or "invalid"


def _part(p: str | int) -> str:
    s = str(p)
    if s and s.isprintable() and not any(c.isspace() for c in s):
        return s
    return repr(s)


def _field(parts: tuple[str | int, ...]) -> str:
    return ".".join(_part(p) for p in parts) or "(top level)"


def _user_loc(loc: Loc, lines: Lines, missing: bool) -> Loc:
    """``loc`` without the type names pydantic inserts (``ports.0.str``, ``env.K.[key]``)."""
    out: list[str | int] = []
    probe: Loc = ()
    for i, part in enumerate(loc):
        probe = (*probe, part)
        # a class name (FileSpec), a type (str, list[str]) or pydantic's "[key]"
        is_tag = isinstance(part, str) and (
            "[" in part or part in _TYPE_TAGS
            or (part[:1].isupper() and part.isalnum() and not part.isupper()))
        if probe in lines or not is_tag or (missing and i == len(loc) - 1):
            out.append(part)
        else:
            probe = probe[:-1]
    return tuple(out)


def _line_for(loc: Loc, lines: Lines) -> int:
    probe = loc
    while probe:
        if probe in lines:
            return lines[probe]
        probe = probe[:-1]
    return lines.get((), 1)


def _choices(expected: str) -> str:
    """``'a', 'b' or 'c'`` (pydantic's wording) as ``a, b, c``."""
    items = re.split(r", | or ", expected)
    return ", ".join(i[1:-1] if len(i) >= 2 and i[0] == i[-1] == "'" else i for i in items)


_PHRASES = {
    "missing": "required",
    "extra_forbidden": "unknown field",
    "invalid_key": "expected a string key (put it in quotes)",
    "int_type": "expected an integer",
    "int_parsing": "expected an integer",
    "int_from_float": "expected an integer",
    "int_parsing_size": "the number is too large",
    "float_type": "expected a number",
    "float_parsing": "expected a number",
    "finite_number": "expected a finite number",
    "bool_type": "expected true or false",
    "bool_parsing": "expected true or false",
    "string_type": "expected a string",
    "string_unicode": "expected a string",
    "bytes_type": "expected a string",
    "list_type": "expected a list",
    "tuple_type": "expected a list",
    "set_type": "expected a list",
    "frozen_set_type": "expected a list",
    "iterable_type": "expected a list",
    "dict_type": "expected a mapping",
    "mapping_type": "expected a mapping",
    "model_type": "expected a mapping of fields",
    "model_attributes_type": "expected a mapping of fields",
    "dataclass_type": "expected a mapping of fields",
    "none_required": "must be empty (null)",
    "recursion_loop": "refers to itself",
}


def _message(err: ErrorDetails) -> str:
    """pydantic's error as a short plain phrase."""
    kind, ctx, msg = err["type"], err.get("ctx") or {}, err["msg"]
    if kind == "string_type" and isinstance(err.get("input"), bool | int | float):
        return "expected a string (put the value in quotes)"
    if kind in _PHRASES:
        return _PHRASES[kind]
    if kind in ("enum", "literal_error") and "expected" in ctx:
        return f"expected one of: {_choices(str(ctx['expected']))}"
    if kind in ("string_too_short", "too_short") and ctx.get("min_length") == 1:
        return "must not be empty"
    bounds = {
        "string_too_short": ("too short: at least {} characters", "min_length"),
        "string_too_long": ("too long: at most {} characters", "max_length"),
        "too_short": ("too few items: at least {}", "min_length"),
        "too_long": ("too many items: at most {}", "max_length"),
        "greater_than": ("must be greater than {}", "gt"),
        "greater_than_equal": ("must be at least {}", "ge"),
        "less_than": ("must be less than {}", "lt"),
        "less_than_equal": ("must be at most {}", "le"),
        "multiple_of": ("must be a multiple of {}", "multiple_of"),
        "string_pattern_mismatch": ("must match {}", "pattern"),
    }
    if kind in bounds and bounds[kind][1] in ctx:
        text, key = bounds[kind]
        return text.format(ctx[key])
    for prefix, new in (("Value error, ", ""), ("Assertion failed, ", ""),
                        ("Input should be ", "must be ")):
        if msg.startswith(prefix):
            return new + msg[len(prefix):]
    return msg


def _validation_problems(exc: ValidationError, lines: Lines, source: str) -> list[Problem]:
    problems: list[Problem] = []
    for err in exc.errors():
        loc = _user_loc(tuple(err["loc"]), lines, err["type"] == "missing")
        problems.append(Problem(source, _line_for(loc, lines), _field(loc),
                                _clean(_message(err))))
    return problems


def _tidy(problems: list[Problem]) -> list[Problem]:
    """Sorted by line, each once; alternatives of a union at one field joined with "or"."""
    out: list[Problem] = []
    seen: set[Problem] = set()
    for p in sorted(problems, key=lambda p: p.line or 0):
        last = out[-1] if out else None
        if p in seen:
            continue
        seen.add(p)
        if (last is not None and (last.line, last.field) == (p.line, p.field)
                and last.problem.startswith("expected ") and p.problem.startswith("expected ")):
            out[-1] = Problem(p.file, p.line, p.field,
                              f"{last.problem} or {p.problem.removeprefix('expected ')}")
            continue
        out.append(p)
    return out


# --- the entry points ---------------------------------------------------------------------


# In values, YAML escapes ("\\ud800", "\\x00") can make what the file's bytes may not hold.
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")


def _unsafe_strings(value: object, loc: Loc, lines: Lines, source: str) -> list[Problem]:
    """A problem for every string (key or value) holding a lone surrogate or a control
    character other than tab and newline: they cannot be written to files, logs or
    command lines safely."""
    out: list[Problem] = []
    items: list[tuple[object, object]] = []
    if isinstance(value, dict):
        items = list(value.items())
    elif isinstance(value, list):
        items = list(enumerate(value))
    elif isinstance(value, str):
        bad = _UNSAFE.search(value)
        if bad:
            code = ord(bad.group())
            what = "a lone surrogate (not valid Unicode)" if 0xD800 <= code < 0xE000 else \
                f"control character U+{code:04X}"
            out.append(Problem(source, _line_for(loc, lines), _field(loc) if loc else
                               "(top level)", f"{what} is not allowed in a value"))
        return out
    for key, item in items:
        here = (*loc, key if isinstance(key, (str, int)) else str(key))
        if isinstance(key, str):
            out += _unsafe_strings(key, here, lines, source)
        out += _unsafe_strings(item, here, lines, source)
    return out


def single_line(value: str) -> str:
    """A pydantic ``AfterValidator``: refuse line breaks and tabs in a one-line field
    (a version, a key, a host name), which would inject lines where it is written."""
    if any(c in value for c in "\n\r\t\x85\u2028\u2029"):
        raise ValueError("must be one line (no line breaks or tabs)")
    return value


SingleLine = Annotated[str, AfterValidator(single_line)]


def load_spec_text(text: str, model: type[M], source: str) -> M:
    """Parse YAML ``text`` (named ``source`` in errors) into ``model``.

    Raises:
        SpecError: with one ``file:line: field: problem`` line per problem, sorted by line.
    """
    loader, node = _compose(text, source)
    try:
        if node is None:
            raise SpecError([Problem(source, 1, "(top level)", "the file is empty")])
        walk = _Walk(source)
        walk.walk(node, ())
        data = _construct(loader, node, walk)
    finally:
        loader.dispose()
    root = node.start_mark.line + 1
    if data is None:
        raise SpecError([Problem(source, root, "(top level)", "the file is empty")])
    if not isinstance(data, dict):
        raise SpecError([Problem(source, root, "(top level)", "expected a mapping of fields")])
    problems = list(walk.duplicates) + _unsafe_strings(data, (), walk.lines, source)
    try:
        spec = model.model_validate(data)
    except ValidationError as exc:
        problems += _validation_problems(exc, walk.lines, source)
    except (TypeError, AttributeError, LookupError, ArithmeticError) as exc:
        # A validator that assumed the shape of its input (a bug to fix in that model): the
        # user still gets a located problem, never a traceback.
        problems.append(Problem(source, root, "(top level)", _clean(
            f"a check failed on this input ({type(exc).__name__}: {exc}); fix the "
            "values of the wrong type, and report this as a bug in atoll")))
    if problems:
        raise SpecError(_tidy(problems))
    return spec


def load_spec(path: Path, model: type[M]) -> M:
    """Read and validate the YAML file at ``path``.

    Raises:
        InputError: the file cannot be read.
        SpecError: the content is not valid.
    """
    return load_spec_text(read_spec_text(path), model, str(path))


def line_of(path: Path, loc: Loc) -> int:
    """The line of the field at ``loc`` in the YAML file (1 when it cannot be found).

    For problems found after validation (a file a spec names does not exist).
    """
    try:
        loader, node = _compose(read_spec_text(path), str(path))
    except InputError:  # SpecError included
        return 1
    loader.dispose()
    if node is None:
        return 1
    walk = _Walk(str(path))
    walk.walk(node, ())
    return _line_for(loc, walk.lines)

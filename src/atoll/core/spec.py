"""Load YAML that people write into typed, immutable pydantic models.

Every problem is reported as ``file:line: field: problem``: the YAML node tree
is kept beside the data so that a pydantic error location (``packages.3``)
maps back to the line the user wrote.
"""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from atoll.core.errors import InputError, SpecError

__all__ = ["Spec", "line_of", "load_spec", "load_spec_text"]

M = TypeVar("M", bound=BaseModel)

Loc = tuple[str | int, ...]


class Spec(BaseModel):
    """Base for user-written specs: frozen, unknown fields are errors."""

    model_config = ConfigDict(frozen=True, extra="forbid")


def _lines(node: yaml.Node, path: Loc, out: dict[Loc, int]) -> None:
    out[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            name = key.value if isinstance(key, yaml.ScalarNode) else str(key.value)
            out[(*path, name)] = key.start_mark.line + 1
            _lines(value, (*path, name), out)
            out[(*path, name)] = key.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _lines(item, (*path, i), out)


def _line_for(loc: Loc, lines: dict[Loc, int]) -> int:
    probe = tuple(loc)
    while probe:
        if probe in lines:
            return lines[probe]
        probe = probe[:-1]
    return lines.get((), 1)


def _field(loc: Loc) -> str:
    # pydantic adds the type name of a tagged/union member to loc; keep user-facing parts.
    parts = [str(p) for p in loc if not (isinstance(p, str) and p[:1].isupper())]
    return ".".join(parts) or "(top level)"


def load_spec_text(text: str, model: type[M], source: str) -> M:
    """Parse YAML ``text`` (named ``source`` in errors) into ``model``.

    Raises:
        SpecError: with one ``file:line: field: problem`` line per problem.
    """
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line = mark.line + 1 if mark else 1
        raise SpecError([f"{source}:{line}: (syntax): {exc.problem}"]) from exc
    if node is None or data is None:
        raise SpecError([f"{source}:1: (top level): the file is empty"])
    lines: dict[Loc, int] = {}
    _lines(node, (), lines)
    if not isinstance(data, dict):
        raise SpecError([f"{source}:1: (top level): expected a mapping of fields"])
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc: Loc = tuple(err["loc"])
            msg = err["msg"]
            if err["type"] == "extra_forbidden":
                msg = "unknown field"
            problems.append(f"{source}:{_line_for(loc, lines)}: {_field(loc)}: {msg}")
        raise SpecError(problems) from exc


def load_spec(path: Path, model: type[M]) -> M:
    """Read and validate the YAML file at ``path``.

    Raises:
        InputError: the file cannot be read.
        SpecError: the content is not valid.
    """
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror}") from exc
    return load_spec_text(text, model, str(path))




def line_of(path: Path, loc: Loc) -> int:
    """The line of the field at ``loc`` in the YAML file (1 when it cannot be found).

    For problems found after validation (a file a spec names does not exist).
    """
    try:
        node = yaml.compose(Path(path).read_text(), Loader=yaml.SafeLoader)
    except (OSError, yaml.YAMLError):
        return 1
    if node is None:
        return 1
    lines: dict[Loc, int] = {}
    _lines(node, (), lines)
    return _line_for(loc, lines)

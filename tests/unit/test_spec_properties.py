"""Property tests for the spec loader: any text or bytes gives a model or located problems.

Whatever people (or a corrupted disk) put in a spec file, ``load_spec`` and
``load_spec_text`` raise nothing but ``SpecError``/``InputError``, and every
problem reads ``FILE:LINE: field: problem``, sorted by line. Duplicate keys in
otherwise valid treefiles are always reported, naming both lines.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel

from atoll.apps.spec import AppSpec
from atoll.compose.treefile import Treefile
from atoll.core.errors import InputError, SpecError
from atoll.core.spec import load_spec, load_spec_text

MODELS: list[type[BaseModel]] = [Treefile, AppSpec]

# Characters that make YAML structure, plus the ones it refuses or counts as line breaks.
_YAML_CHARS = (
    "abcxyz019 :-?,[]{}#&*!|>'\"%@`\n\t\r" + "\x00\x01\x07\x1b\x7f\x85\x9b\xa0"
    + "\u2028\u2029\ufeff\ufffe\U0001f600"
)
_FRAGMENTS = [
    "ref: a\n", "version: '1'\n", "packages:\n", "  - bash\n", "- x\n", "files:\n",
    "  - path: /etc/x\n", "    content: hi\n", "&a ", "*a", "<<: ", "{", "}", "[", "]", ", ",
    "? ", ": ", "!!int ", "!!timestamp ", "!!binary ", "!!set ", "!!omap ", "!!python/name:x ",
    "---\n", "...\n", "'", '"', "|\n", ">-\n", "  ", "\t", "#", "~", "0x1", "2023-02-30",
    "image: x\n", "environment:\n", "  MYSQL_PWD: x\n", "ports: [1]\n", "security: maybe\n",
]

texts = st.one_of(
    st.text(),
    st.text(alphabet=_YAML_CHARS, max_size=80),
    st.lists(st.one_of(st.sampled_from(_FRAGMENTS), st.text(alphabet=_YAML_CHARS, max_size=4)),
             max_size=25).map("".join),
)
raw_bytes = st.one_of(
    st.binary(max_size=200),
    st.tuples(texts, st.binary(max_size=3), texts).map(
        lambda t: t[0].encode("utf-8", "surrogatepass") + t[1] + t[2].encode("utf-8", "replace")
    ),
)


def _check_problems(exc: SpecError, source: str) -> None:
    line_re = re.compile(rf"^{re.escape(source)}:\d+: \S.*: .+$")
    assert exc.problems, "a SpecError without problems"
    for problem in exc.problems:
        assert line_re.match(problem), problem
    lines = [p.line for p in exc.located]
    assert all(isinstance(n, int) and n >= 1 for n in lines), exc.located
    assert lines == sorted(lines, key=lambda n: n or 0), exc.problems
    assert [str(p) for p in exc.located] == exc.problems
    assert len(set(exc.problems)) == len(exc.problems), exc.problems


@given(text=texts, model=st.sampled_from(MODELS))
def test_any_text_gives_a_model_or_located_problems(text: str, model: type[BaseModel]) -> None:
    try:
        load_spec_text(text, model, "t.yaml")
    except SpecError as exc:
        _check_problems(exc, "t.yaml")


@given(data=raw_bytes, model=st.sampled_from(MODELS))
def test_any_bytes_give_a_model_or_located_problems(
    tmp_path: Path, data: bytes, model: type[BaseModel]
) -> None:
    path = tmp_path / "spec.yaml"
    path.write_bytes(data)
    try:
        load_spec(path, model)
    except SpecError as exc:
        _check_problems(exc, str(path))
    except InputError as exc:  # only for a file that cannot be read: not here
        pytest.fail(f"InputError for a readable file: {exc}")


# --- duplicate keys in valid treefiles ---------------------------------------------------

_names = st.from_regex(r"[a-z][a-z0-9]{0,6}", fullmatch=True)
_words = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789 .-_", min_size=1, max_size=12)
_files = st.fixed_dictionaries(
    {"path": _names.map(lambda n: f"/etc/{n}"), "content": _words},
    optional={"mode": st.sampled_from(["0644", "0600", "0755"])},
)
treefiles = st.fixed_dictionaries(
    {"ref": st.lists(_names, min_size=1, max_size=3).map("/".join), "version": _words},
    optional={
        "suite": _names,
        "security": st.booleans(),
        "updates": st.booleans(),
        "variant": st.sampled_from(["apt", "minbase", "standard"]),
        "packages": st.lists(_names.map(lambda n: n + "x"), max_size=4),
        "components": st.lists(_names, min_size=1, max_size=3),
        "files": st.lists(_files, min_size=1, max_size=3),
        "source_date_epoch": st.integers(min_value=0, max_value=2**40),
        "subject": _words,
    },
)


def _dump(data: dict[str, Any], flow: bool) -> str:
    """Block YAML; with ``flow``, one ``key: <JSON>`` line per key (JSON is flow YAML)."""
    if flow:
        return "".join(f"{key}: {json.dumps(value)}\n" for key, value in data.items())
    return yaml.safe_dump(data, default_flow_style=False, sort_keys=False, width=1000)


@given(tf=treefiles, flow=st.booleans(), pick=st.integers(min_value=0))
def test_duplicate_top_level_key_is_reported(tf: dict[str, Any], flow: bool, pick: int) -> None:
    text = _dump(tf, flow)
    assert load_spec_text(text, Treefile, "t.yaml")  # valid as generated
    key = list(tf)[pick % len(tf)]
    lines = text.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith(f"{key}:")) + 1
    text += _dump({key: tf[key]}, flow)  # the same value again: only the duplicate is wrong
    with pytest.raises(SpecError) as exc:
        load_spec_text(text, Treefile, "t.yaml")
    assert exc.value.problems == [
        f"t.yaml:{len(lines) + 1}: {key}: duplicate key (first defined at line {first})"
    ]


@given(tf=treefiles, pick=st.integers(min_value=0), field=st.sampled_from(["path", "content"]))
def test_duplicate_nested_key_is_reported(tf: dict[str, Any], pick: int, field: str) -> None:
    files = tf.setdefault("files", [{"path": "/etc/x", "content": "x"}])
    index = pick % len(files)
    text = _dump(tf, False)
    lines = text.splitlines()
    start = lines.index("files:") + 1
    # block style: each entry starts with "- "; its keys follow, indented by two
    stop = next((i for i in range(start, len(lines)) if not lines[i].startswith(("- ", "  "))),
                len(lines))
    entries = [i for i in range(start, stop) if lines[i].startswith("- ")]
    begin = entries[index]
    end = entries[index + 1] if index + 1 < len(entries) else stop
    first = next(i for i in range(begin, end) if lines[i][2:].startswith(f"{field}:")) + 1
    again = _dump({field: files[index][field]}, False).rstrip("\n")
    lines.insert(end, "  " + again)
    with pytest.raises(SpecError) as exc:
        load_spec_text("\n".join(lines) + "\n", Treefile, "t.yaml")
    assert exc.value.problems == [
        f"t.yaml:{end + 1}: files.{index}.{field}: duplicate key (first defined at line {first})"
    ]

"""Malformed specs (treefiles here) say file:line: field: problem, once each, by line."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from pydantic import field_validator

from atoll.cli import main
from atoll.compose.treefile import Treefile, load_treefile
from atoll.core.errors import SpecError
from atoll.core.spec import (
    MAX_ALIASES,
    MAX_DEPTH,
    MAX_NODES,
    MAX_SPEC_BYTES,
    Spec,
    line_of,
    load_spec,
    load_spec_text,
)


def _problems(text: str) -> list[str]:
    with pytest.raises(SpecError) as exc:
        load_spec_text(text, Treefile, "t.yaml")
    return exc.value.problems


def test_bad_package_name_is_located() -> None:
    text = "ref: a/b\nversion: '1'\npackages:\n  - bash\n  - 'Not A Package'\n"
    assert _problems(text) == [
        "t.yaml:3: packages: 'Not A Package' is not a Debian package name"
    ]


def test_unknown_field_and_wrong_type() -> None:
    text = "ref: a/b\nversion: '1'\nsecurity: maybe\npakages: [bash]\n"
    problems = _problems(text)
    assert problems == ["t.yaml:3: security: expected true or false",
                        "t.yaml:4: pakages: unknown field"]


def test_missing_field_points_at_top() -> None:
    assert _problems("version: '1'\n") == ["t.yaml:1: ref: required"]


def test_nested_file_entry_error_names_its_line() -> None:
    text = "ref: a\nversion: '1'\nfiles:\n  - path: /etc/x\n    content: hi\n  - path: etc/y\n" \
        "    content: hi\n"
    problems = _problems(text)
    assert problems == ["t.yaml:6: files.1.path: must be an absolute path inside "
                        "the image, without '..'"]


def test_syntax_error_is_located() -> None:
    problems = _problems("ref: a\nversion: [1\n")
    assert problems[0].startswith("t.yaml:3: (syntax):")


def test_example_treefiles_are_valid() -> None:
    root = Path(__file__).resolve().parents[2] / "examples"
    for name in ("base.yaml", "base-v2.yaml"):  # examples/site.yaml is a host config
        load_treefile(root / name)


def test_app_images_need_docker_and_a_known_recipe() -> None:
    text = "ref: a/b\nversion: '1'\nfeatures: [boot]\napp_images:\n  - mariadb\n"
    assert _problems(text) == [
        "t.yaml:4: app_images: needs the docker feature (features: [docker])"
    ]
    text = "ref: a/b\nversion: '1'\nfeatures: [docker]\napp_images: [mysql9]\n"
    (problem,) = _problems(text)
    assert problem.startswith("t.yaml:4: app_images: unknown app image 'mysql9'")


# --- limits: a small hostile file is refused while it is composed -------------------------

LAUGHS = "lol: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"{b}: &{b} [{', '.join(['*' + a] * 9)}]\n" for a, b in zip("abcdefgh", "bcdefghi", strict=True)
)


@pytest.mark.timeout(20)
def test_billion_laughs_is_refused_before_it_expands(tmp_path: Path) -> None:
    assert len(LAUGHS) < 600  # expands to 9**9 strings
    limit = f"more than {MAX_NODES:,} values once aliases are expanded (the limit for a spec)"
    assert _problems(LAUGHS) == [f"t.yaml:6: (top level): {limit}"]
    path = tmp_path / "laughs.yaml"
    path.write_text(LAUGHS)
    with pytest.raises(SpecError) as exc:
        load_spec(path, Treefile)
    assert exc.value.problems == [f"{path}:6: (top level): {limit}"]


@pytest.mark.timeout(20)
def test_too_many_aliases() -> None:
    text = "ref: &r a\nversion: '1'\nx:\n" + "  - *r\n" * (MAX_ALIASES + 1)
    assert _problems(text) == [
        f"t.yaml:{4 + MAX_ALIASES}: (top level): more than {MAX_ALIASES:,} aliases "
        "(the limit for a spec)"
    ]


@pytest.mark.timeout(20)
def test_nesting_is_bounded_and_aliases_count_their_depth() -> None:
    limit = f"nested more than {MAX_DEPTH} levels deep once aliases are expanded"
    (flow,) = _problems("ref: " + "[" * 100_000)
    assert flow.startswith("t.yaml:1: (top level): " + limit)
    half = MAX_DEPTH // 2 + 1
    text = f"a: &a {'[' * half}x{']' * half}\nb: &b [*a]\nc: {'[' * half}*a{']' * half}\n"
    assert _problems(text) == [f"t.yaml:3: (top level): {limit} (the limit for a spec)"]


def test_recursive_alias_is_refused() -> None:
    assert _problems("ref: &a [*a]\n") == [
        "t.yaml:1: (top level): the alias *a refers to a value that contains it"
    ]


@pytest.mark.timeout(20)
def test_size_limit(tmp_path: Path) -> None:
    big = "ref: a\nversion: '1'\n" + "#" * MAX_SPEC_BYTES + "\n"
    message = "(top level): larger than 1 MiB: a spec may be at most 1,048,576 bytes"
    assert _problems(big) == [f"t.yaml:1: {message}"]
    path = tmp_path / "big.yaml"
    path.write_text(big)
    with pytest.raises(SpecError) as exc:
        load_spec(path, Treefile)
    assert exc.value.problems == [f"{path}:1: {message}"]
    assert load_spec_text(big[: MAX_SPEC_BYTES - 10] + "\n", Treefile, "t.yaml").ref == "a"


# --- encoding: bytes that are not UTF-8, characters YAML refuses -------------------------


def test_invalid_utf8_names_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_bytes(b"ref: a\nversion: '1'\nsuite: b\xffokworm\n")
    with pytest.raises(SpecError) as exc:
        load_spec(path, Treefile)
    assert exc.value.problems == [
        f"{path}:3: (encoding): byte 0xff at column 9 is not UTF-8 (a spec is UTF-8 text)"
    ]
    path.write_bytes("ref: é\n".encode("latin-1"))
    with pytest.raises(SpecError) as exc:
        load_spec(path, Treefile)
    assert exc.value.problems == [
        f"{path}:1: (encoding): byte 0xe9 at column 6 is not UTF-8 (a spec is UTF-8 text)"
    ]


@pytest.mark.parametrize(
    ("char", "name"),
    [
        ("\x00", "U+0000 (NUL)"),
        ("\x01", "U+0001 (a control character)"),
        ("\x07", "U+0007 (a control character)"),
        ("\x0c", "U+000C (a control character)"),
        ("\x1b", "U+001B (ESC)"),
        ("\x7f", "U+007F (DEL)"),
        ("\x9b", "U+009B (a control character)"),
        ("\ufffe", "U+FFFE (non-character)"),
        ("\ud800", "U+D800 (a lone surrogate)"),
    ],
)
def test_characters_yaml_refuses_are_located(tmp_path: Path, char: str, name: str) -> None:
    text = f"ref: a\nversion: '1'\n\nsuite: bo{char}kworm\n"
    expected = f"(encoding): character {name} at column 10 is not allowed in YAML"
    assert _problems(text) == [f"t.yaml:4: {expected}"]
    if char != "\ud800":  # a lone surrogate cannot be written as UTF-8
        path = tmp_path / "t.yaml"
        path.write_text(text, encoding="utf-8")
        with pytest.raises(SpecError) as exc:
            load_spec(path, Treefile)
        assert exc.value.problems == [f"{path}:4: {expected}"]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("ref: !!int x\nversion: '1'\n",
         "t.yaml:1: ref: not a valid integer (invalid literal for int() with base 10: 'x')"),
        ("ref: a\nversion: 2023-02-30\n",
         "t.yaml:2: version: not a valid date (day is out of range for month)"),
        ("ref: a\nversion: !!timestamp soon\n", "t.yaml:2: version: not a valid date"),
        ("ref: a\nversion: !!python/name:os.system x\n",
         "t.yaml:2: (syntax): could not determine a constructor for the tag "
         "'tag:yaml.org,2002:python/name:os.system'"),
        ("? [a]\n: b\n", "t.yaml:1: (syntax): found unhashable key"),
        ("ref: a\n---\nref: b\n",
         "t.yaml:2: (syntax): expected a single document in the stream, but found another "
         "document"),
    ],
)
def test_values_yaml_cannot_build_are_located(text: str, problem: str) -> None:
    assert _problems(text) == [problem]


# --- duplicate keys ----------------------------------------------------------------------


def test_duplicate_keys_are_refused_naming_both_lines() -> None:
    text = "ref: a\nversion: '1'\nsuite: bookworm\nref: b\n"
    assert _problems(text) == ["t.yaml:4: ref: duplicate key (first defined at line 1)"]
    nested = ("ref: a\nversion: '1'\nfiles:\n  - path: /etc/a\n    content: x\n"
              "    path: /etc/b\n")
    assert _problems(nested) == [
        "t.yaml:6: files.0.path: duplicate key (first defined at line 4)"
    ]
    flow = "ref: a\nversion: '1'\nfiles: [{path: /a, content: x,\n  content: y}]\n"
    assert _problems(flow) == [
        "t.yaml:4: files.0.content: duplicate key (first defined at line 3)"
    ]
    # "1" and 1 differ; 1 and 0x1 are the same key once built (the last one wins)
    assert _problems("ref: a\nversion: '1'\n\"1\": x\n1: y\n0x1: z\n") == [
        "t.yaml:3: 1: unknown field",
        "t.yaml:5: 1: duplicate key (first defined at line 4)",
        "t.yaml:5: 1: expected a string key (put it in quotes)",
    ]


def test_merge_keys_are_not_duplicates() -> None:
    text = "x-base: &base {suite: bookworm, ref: base}\n<<: *base\nref: a\nversion: '1'\n"
    assert _problems(text) == ["t.yaml:1: x-base: unknown field"]
    good = "<<: {suite: trixie, ref: base, version: '1'}\nref: a\n"
    tf2 = load_spec_text(good, Treefile, "t.yaml")
    assert (tf2.ref, tf2.suite) == ("a", "trixie")
    bad = "<<: &b {suite: trixie, ref: base, version: '1', sute: x}\nref: a\n"
    assert _problems(bad) == ["t.yaml:1: sute: unknown field"]


# --- output: one pass, sorted by line, once each, in atoll's words -----------------------


def test_problems_come_sorted_once_each_in_plain_words() -> None:
    text = (
        "bogus: 1\n"  # extra (pydantic reports it last)
        "files:\n  - {path: etc/x, content: hi}\n"  # a field late in the model
        "version: '1'\n"
        "security: maybe\n"  # overridden below
        "variant: tiny\n"
        "security: true\n"  # duplicate
        "source_date_epoch: soon\n"
        "components: {main: 1}\n"
        "packages: [bash, [x], '']\n"
    )
    # the later "security" wins, as in any YAML loader: its duplicate is the problem
    assert _problems(text) == [
        "t.yaml:1: ref: required",
        "t.yaml:1: bogus: unknown field",
        "t.yaml:3: files.0.path: must be an absolute path inside the image, without '..'",
        "t.yaml:6: variant: expected one of: essential, apt, minbase, required, important, "
        "standard",
        "t.yaml:7: security: duplicate key (first defined at line 5)",
        "t.yaml:8: source_date_epoch: expected an integer",
        "t.yaml:9: components: expected a list",
        "t.yaml:10: packages.1: expected a string",
    ]


def test_a_number_where_text_is_expected_says_to_quote_it() -> None:
    assert _problems("ref: a\nversion: 2026.11\n") == [
        "t.yaml:2: version: expected a string (put the value in quotes)"
    ]
    assert _problems("ref: a\nversion: '1'\nsource_date_epoch: -1\n") == [
        "t.yaml:3: source_date_epoch: must be at least 0"
    ]


def test_spec_error_is_structured_and_says_each_problem_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "t.yaml"
    path.write_text("ref: a\nversion: [1\n")
    assert main(["treefile-validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("(syntax)") == 1, err
    assert err.startswith(f"error: {path}:3: (syntax): ")

    path.write_text("version: 1\nsecurity: maybe\n")
    assert main(["--json", "treefile-validate", str(path)]) == 2
    out, err = capsys.readouterr()
    data = json.loads(out)
    assert data["brief"] == f"3 problems in {path}"
    assert data["problems"] == [
        {"file": str(path), "line": 1, "field": "ref", "problem": "required"},
        {"file": str(path), "line": 1, "field": "version",
         "problem": "expected a string (put the value in quotes)"},
        {"file": str(path), "line": 2, "field": "security", "problem": "expected true or false"},
    ]
    assert err.splitlines() == [
        f"error: 3 problems in {path}",
        f"  {path}:1: ref: required",
        f"  {path}:1: version: expected a string (put the value in quotes)",
        f"  {path}:2: security: expected true or false",
    ]


def test_spec_error_keeps_problem_lines_from_other_formats() -> None:
    one = SpecError(["f.toml: lock.bogus: unknown setting"])
    assert (one.brief, one.details) == ("f.toml: lock.bogus: unknown setting", None)
    assert one.to_dict()["problems"] == [
        {"file": "f.toml", "line": None, "field": "lock.bogus", "problem": "unknown setting"}
    ]
    two = SpecError(["a.yaml:3: x: bad", SpecError.Problem("b.yaml", 1, "y", "worse")])
    assert two.problems == ["a.yaml:3: x: bad", "b.yaml:1: y: worse"]
    assert two.brief == "2 problems in the spec"
    assert two.details == "a.yaml:3: x: bad\nb.yaml:1: y: worse"
    assert two.to_dict()["problems"][0] == {"file": "a.yaml", "line": 3, "field": "x",
                                            "problem": "bad"}


def test_line_of_finds_fields_and_survives_bad_files(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text("ref: a\nfiles:\n  - path: /x\n    source: y\n")
    assert line_of(path, ("files", 0, "source")) == 4
    path.write_bytes(b"\xff")
    assert line_of(path, ("files",)) == 1
    assert line_of(tmp_path / "missing.yaml", ("x",)) == 1


class _Fragile(Spec):
    """A model whose validator assumes its input is text (as a buggy one might)."""

    name: Any = None

    @field_validator("name")
    @classmethod
    def _name(cls, v: Any) -> Any:
        return re.match("x", v)


def test_a_validator_that_crashes_still_gives_a_located_problem() -> None:
    with pytest.raises(SpecError) as exc:
        load_spec_text("\n\nname: {a: 1}\n", _Fragile, "f.yaml")
    (problem,) = exc.value.problems
    assert problem.startswith("f.yaml:3: (top level): a check failed on this input (TypeError: ")
    assert problem.endswith("report this as a bug in atoll")


def test_escaped_surrogates_and_controls_in_values_are_located() -> None:
    problems = _problems('ref: a/b\nversion: "\\ud800"\nsubject: "a\\x00b"\n')
    assert problems == [
        "t.yaml:2: version: a lone surrogate (not valid Unicode) is not allowed in a value",
        "t.yaml:3: subject: control character U+0000 is not allowed in a value",
    ]


def test_one_line_fields_refuse_line_breaks() -> None:
    problems = _problems('ref: a/b\nversion: "1.0\\n<<<local>>>"\n')
    assert problems == ["t.yaml:2: version: must be one line (no line breaks or tabs)"]


def test_host_config_keys_and_ntp_are_one_line(tmp_path: Path) -> None:
    from atoll.provision.config import HostConfig

    text = ('hostname: db01\nntp: ["pool\\nmalicious"]\nusers:\n  - name: ops\n'
            '    ssh_authorized_keys: ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA x\\nssh-rsa B"]\n')
    with pytest.raises(SpecError) as exc:
        load_spec_text(text, HostConfig, "h.yaml")
    assert "h.yaml:2: ntp.0: must be one line (no line breaks or tabs)" in exc.value.problems
    assert any(p.startswith("h.yaml:5: users.0.ssh_authorized_keys.0: must be one line")
               for p in exc.value.problems), exc.value.problems

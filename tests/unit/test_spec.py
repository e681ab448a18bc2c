"""Malformed treefiles say file:line: field: problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from atoll.compose.treefile import Treefile, load_treefile
from atoll.core.errors import SpecError
from atoll.core.spec import load_spec_text


def _problems(text: str) -> list[str]:
    with pytest.raises(SpecError) as exc:
        load_spec_text(text, Treefile, "t.yaml")
    return exc.value.problems


def test_bad_package_name_is_located() -> None:
    text = "ref: a/b\nversion: '1'\npackages:\n  - bash\n  - 'Not A Package'\n"
    assert _problems(text) == [
        "t.yaml:3: packages: Value error, 'Not A Package' is not a Debian package name"
    ]


def test_unknown_field_and_wrong_type() -> None:
    text = "ref: a/b\nversion: '1'\nsecurity: maybe\npakages: [bash]\n"
    problems = _problems(text)
    assert "t.yaml:3: security: Input should be a valid boolean, unable to interpret input" \
        in problems
    assert "t.yaml:4: pakages: unknown field" in problems


def test_missing_field_points_at_top() -> None:
    assert _problems("version: '1'\n") == ["t.yaml:1: ref: Field required"]


def test_nested_file_entry_error_names_its_line() -> None:
    text = "ref: a\nversion: '1'\nfiles:\n  - path: /etc/x\n    content: hi\n  - path: etc/y\n" \
        "    content: hi\n"
    problems = _problems(text)
    assert problems == ["t.yaml:6: files.1.path: Value error, must be an absolute path inside "
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
        "t.yaml:4: app_images: Value error, needs the docker feature (features: [docker])"
    ]
    text = "ref: a/b\nversion: '1'\nfeatures: [docker]\napp_images: [mysql9]\n"
    (problem,) = _problems(text)
    assert problem.startswith("t.yaml:4: app_images: Value error, unknown app image 'mysql9'")

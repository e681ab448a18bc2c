"""Property tests (Hypothesis, derandomized in CI: tests/conftest.py) for trees: any
names, modes and /etc layouts commit and check out exactly, or are refused before
anything is written."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atoll.core.errors import InputError
from atoll.deploy.sysroot import Sysroot
from atoll.store.checkout import checkout
from atoll.store.repo import Repo
from tests.trees import describe

# Names: any characters but "/" and NUL (control characters, spaces, non-ASCII, a
# leading dash or dot), at most 255 bytes; "." and ".." are not names.
_name = st.text(st.characters(blacklist_characters="/\0", blacklist_categories=("Cs",)),
                min_size=1, max_size=40).filter(
    lambda n: n not in (".", "..") and len(n.encode()) <= 255)
_mode = st.integers(0, 0o7777)
_content = st.binary(max_size=300)
_file = st.tuples(st.sampled_from(["reg", "lnk"]), _mode, _content)
_tree = st.dictionaries(_name, st.one_of(_file, st.dictionaries(_name, _file, max_size=4)),
                        min_size=1, max_size=8)


def _write(root: Path, spec: dict[str, object]) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for name, item in spec.items():
        p = root / name
        if isinstance(item, dict):
            _write(p, item)
            os.chmod(p, 0o750)
            continue
        kind, mode, content = item  # type: ignore[misc]
        if kind == "lnk":
            os.symlink(os.fsdecode(content.replace(b"\0", b"")) or "target", p)
        else:
            p.write_bytes(content)
            os.chmod(p, mode)


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("props")


@settings(max_examples=60)
@given(spec=_tree)
def test_any_names_and_modes_round_trip(work: Path, spec: dict[str, object]) -> None:
    shutil.rmtree(work, ignore_errors=True)
    src = work / "src" / "usr"
    _write(src, spec)
    repo = Repo.create(work / "repo")
    cid = repo.commit_dir(work / "src", ref="p/t")
    out = work / "out"
    checkout(repo, cid, out)
    assert describe(out / "usr") == describe(src)


_bad_byte = st.binary(min_size=1, max_size=3).filter(lambda b: _not_utf8(b))


def _not_utf8(b: bytes) -> bool:
    try:
        b.decode()
    except UnicodeDecodeError:
        return b"/" not in b and b"\0" not in b
    return False


@settings(max_examples=40)
@given(prefix=st.binary(max_size=8).filter(lambda b: b"/" not in b and b"\0" not in b),
       bad=_bad_byte)
def test_names_that_are_not_utf8_are_refused_before_any_write(work: Path, prefix: bytes,
                                                              bad: bytes) -> None:
    shutil.rmtree(work, ignore_errors=True)
    (work / "src/usr/lib").mkdir(parents=True)
    (work / "src/usr/lib/ok").write_text("fine")
    name = prefix + bad
    with open(os.fsencode(work / "src/usr/lib") + b"/" + name, "wb") as fh:
        fh.write(b"x")
    repo = Repo.create(work / "repo")
    with pytest.raises(InputError, match="not valid UTF-8") as exc:
        repo.commit_dir(work / "src", ref="p/t")
    assert exc.value.brief.isprintable()
    assert list(repo.iter_objects()) == [] and repo.refs() == {}


_etc_kind = st.sampled_from([None, "empty", "files", "symlink", "file"])


@settings(max_examples=40)
@given(etc=_etc_kind, usr_etc=st.booleans(),
       etc_files=st.dictionaries(_name.filter(lambda n: n.isprintable()), _content,
                                 min_size=1, max_size=3),
       usr_files=st.dictionaries(_name.filter(lambda n: n.isprintable()), _content,
                                 min_size=1, max_size=3))
def test_etc_layouts_follow_ostrees_rule(work: Path, etc: str | None, usr_etc: bool,
                                         etc_files: dict[str, bytes],
                                         usr_files: dict[str, bytes]) -> None:
    shutil.rmtree(work, ignore_errors=True)
    src = work / "src"
    (src / "usr/bin").mkdir(parents=True)
    if usr_etc:
        (src / "usr/etc").mkdir()
        for n, c in usr_files.items():
            (src / "usr/etc" / n).write_bytes(c)
    if etc in ("empty", "files"):
        (src / "etc").mkdir()
        for n, c in etc_files.items() if etc == "files" else ():
            (src / "etc" / n).write_bytes(c)
    elif etc == "symlink":
        os.symlink("usr/etc", src / "etc")
    elif etc == "file":
        (src / "etc").write_text("x")
    # the rule, stated independently of the code: refused when /etc is a symlink or not
    # a directory, or when /etc has files beside a /usr/etc
    refused = etc in ("symlink", "file") or (etc == "files" and usr_etc)
    sr = Sysroot(work / "host")
    sr.init()
    if refused:
        with pytest.raises(InputError):
            sr.repo.commit_dir(src, ref="p/l")
        assert list(sr.repo.iter_objects()) == []
        return
    sr.repo.commit_dir(src, ref="p/l")
    dep = sr.deploy("p/l")
    got = {f.name: f.read_bytes() for f in (sr.deployment_path(dep) / "etc").iterdir()}
    expected = etc_files if etc == "files" else (usr_files if usr_etc else {})
    assert got == expected

"""Help texts, the exit-status table, `atoll man` and `atoll completion bash`.

The completion script is driven the way bash drives it: source it, set
COMP_WORDS/COMP_CWORD, call ``_atoll``, read COMPREPLY.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from atoll.cli import (
    EXIT_CODES,
    EXIT_INTERNAL,
    EXIT_MEANINGS,
    FAST_PATH,
    NOTHING_NEW,
    PATH_TYPES,
    build_parser,
    exit_status_table,
    main,
)
from atoll.cli.docs import (
    DIR_DESTS,
    DYNAMIC,
    DYNAMIC_AT,
    FILES,
    bash_completion,
    commands,
    is_global,
    man_page,
    names,
    subcommands,
)
from atoll.store.repo import Repo
from tests.conftest import ROOT
from tests.unit.cli_shape import shape

PARSER = build_parser()
EVERY = [((), PARSER), *((path, p) for path, p, _ in commands(PARSER))]


def _roff(text: str) -> str:
    return text.replace("-", "\\-")


def _actions() -> Iterator[tuple[tuple[str, ...], argparse.Action]]:
    for path, p in EVERY:
        for a in p._actions:
            if not isinstance(a, argparse._SubParsersAction | argparse._HelpAction):
                yield path, a


# -- help texts ------------------------------------------------------------------------


def test_every_option_positional_and_command_has_help() -> None:
    missing = [f"atoll {' '.join(path)}: {'/'.join(a.option_strings) or a.dest}"
               for path, a in _actions()
               if not a.help or a.help == argparse.SUPPRESS or not a.help.strip()]
    for path, p in EVERY:
        sub = next((a for a in p._actions if isinstance(a, argparse._SubParsersAction)), None)
        if sub is not None:
            shown = {c.dest for c in sub._choices_actions if c.help and c.help.strip()}
            missing += [f"atoll {' '.join((*path, n))}: the command itself"
                        for n in sub.choices if n not in shown]
    assert not missing, "add help= to:\n" + "\n".join(missing)


def test_the_walk_reaches_nested_commands() -> None:
    paths = {path for path, _ in EVERY}
    assert {("store", "log"), ("app", "image", "build"), ("checkmk-agent", "serve"),
            ("completion", "bash"), ("man",), ("update", "apply")} <= paths


# -- exit status -----------------------------------------------------------------------


def test_exit_table_covers_every_exit_code() -> None:
    table = {code: (meaning, classes) for code, meaning, classes in exit_status_table()}
    for cls, code in EXIT_CODES:
        assert code in EXIT_MEANINGS, f"{cls.__name__}: exit {code} has no meaning"
        assert cls.__name__ in table[code][1]
    assert {0, 1, 2, EXIT_INTERNAL, 75, NOTHING_NEW, 130, 141} <= set(table)
    assert (NOTHING_NEW, EXIT_INTERNAL) == (77, 70)
    assert [c for c, _, _ in exit_status_table()] == sorted(table)


def test_help_shows_the_exit_table(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "exit status:" in out
    for code, meaning, _ in exit_status_table():
        assert f"{code:>3}  {meaning}" in out


def test_docs_commands_md_has_the_exit_table() -> None:
    text = (ROOT / "docs/commands.md").read_text()
    for code, meaning, classes in exit_status_table():
        row = f"| {code} | {meaning} | {', '.join(f'`{c}`' for c in classes) or '-'} |"
        assert row in text, f"docs/commands.md lacks the row: {row}"


# -- man page --------------------------------------------------------------------------


def test_man_page_has_every_command_option_and_exit_status() -> None:
    page = man_page(PARSER)
    for path, p, _ in commands(PARSER):
        assert f'.SS "{_roff(" ".join(("atoll", *path)))}"' in page
        for a in p._actions:
            if a.option_strings and not is_global(a):
                for s in a.option_strings:
                    assert f"\\fB{_roff(s)}\\fR" in page, (path, s)
    for section in ("NAME", "SYNOPSIS", "DESCRIPTION", "COMMANDS", "GLOBAL OPTIONS",
                    "EXIT STATUS", "FILES", "SEE ALSO"):
        assert f"\n.SH {section}\n" in page
    exits = page.split(".SH EXIT STATUS")[1].split(".SH FILES")[0]
    for code, meaning, _ in exit_status_table():
        assert f".TP\n.B {code}\n{_roff(meaning).split('`')[0]}" in exits
    for s in ("--sysroot", "--json", "--no-wait", "--lock-timeout"):
        assert f"\\fB{_roff(s)}\\fR" in page.split(".SH GLOBAL OPTIONS")[1]


def test_man_page_is_roff_and_the_same_every_time() -> None:
    page = man_page(PARSER)
    assert page == man_page(build_parser())
    assert page.splitlines()[1].startswith('.TH ATOLL 1 "" "atoll ')  # no date
    for line in page.splitlines():
        assert line.isascii()
        assert not line.startswith("'") and (not line.startswith(".") or line[1:2].isalpha()
                                             or line.startswith('.\\"')), line


def test_man_files_are_those_of_docs_on_disk() -> None:
    on_disk = (ROOT / "docs/on-disk.md").read_text()
    for path, _ in FILES:
        assert path.rstrip("/").rsplit("/", 1)[-1] in on_disk, path


def test_atoll_man_prints_it(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["man"]) == 0
    assert capsys.readouterr().out == man_page(PARSER)


# -- completion ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def script(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("completion") / "atoll"
    path.write_text(bash_completion(PARSER))
    return path


def complete(script: Path, *words: str, env: dict[str, str] | None = None) -> list[str]:
    """COMPREPLY for the command line ``words`` (the last one is being completed)."""
    driver = (  # sourced in a function, as bash-completion loads it: its tables stay global
        'load() { source "$1"; }; load "$1"; shift\n'
        'COMP_WORDS=("$@"); COMP_CWORD=$((${#COMP_WORDS[@]} - 1)); COMPREPLY=()\n'
        '_atoll\n'
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    proc = subprocess.run(["bash", "--norc", "--noprofile", "-c", driver, "bash", str(script),
                           "atoll", *words], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PATH": path, **(env or {})})
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == "", proc.stderr  # completing never prints an error
    return [w for w in proc.stdout.splitlines() if w]


def test_completion_script_is_valid_bash(script: Path) -> None:
    proc = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert script.read_text().rstrip().endswith("complete -F _atoll atoll")


def test_completes_commands_at_every_level(script: Path) -> None:
    assert complete(script, "sto") == ["store"]
    store = [n for n, _, _ in subcommands(dict((p, x) for p, x in EVERY)[("store",)])]
    assert complete(script, "store", "") == store
    assert "log" in store and "gc" in store
    assert complete(script, "app", "image", "") == ["build"]
    assert set(complete(script, "")) == {n for n, _, _ in subcommands(PARSER)}


def test_global_options_anywhere(script: Path, tmp_path: Path) -> None:
    assert complete(script, "--json", "store", "") == complete(script, "store", "")
    assert complete(script, "store", "log", "--sys") == ["--sysroot"]
    assert "--no-wait" in complete(script, "store", "gc", "--")
    assert "--repo" in complete(script, "store", "gc", "--")
    (tmp_path / "sysroot-dir").mkdir()
    (tmp_path / "sysroot-file").touch()
    assert complete(script, "store", "log", "--sysroot", f"{tmp_path}/sysroot-") == [
        f"{tmp_path}/sysroot-dir"]  # a directory option: directories only
    # a global option's value is not taken for the command
    assert complete(script, "--sysroot", str(tmp_path), "sto") == ["store"]


def test_completes_choices_and_paths(script: Path, tmp_path: Path) -> None:
    assert complete(script, "image", "build", "--format", "") == ["raw", "qcow2"]
    assert complete(script, "image", "build", "--format=q") == ["--format=qcow2"]
    assert complete(script, "image", "build", "--firmware", "=", "u") == ["uefi"]
    assert complete(script, "rollback", "") == ["ack"]
    (tmp_path / "tree.yaml").touch()
    assert complete(script, "compose", f"{tmp_path}/tr") == [f"{tmp_path}/tree.yaml"]
    # several values: `--delete A B`; free text: nothing offered
    assert complete(script, "store", "commit", "--version", "") == []


def test_completes_refs_and_remotes_from_the_host(script: Path, tmp_path: Path) -> None:
    repo = Repo.create(tmp_path / "repo")
    (tmp_path / "t").mkdir()
    (tmp_path / "t/f").write_text("x")
    cid = repo.commit_dir(tmp_path / "t", ref="site/base", version="1")
    repo.set_ref("site/db", cid)
    repo.set_ref("origin/site/base", cid, namespace="remotes")
    r = str(repo.path)
    assert complete(script, "store", "log", "--repo", r, "") == [
        "site/base", "site/db", "origin:site/base"]
    assert complete(script, "store", "diff", "--repo", r, "site/base", "site/d") == ["site/db"]
    assert complete(script, "store", "refs", "--repo", r, "--delete", "site/db", "site/b") == [
        "site/base"]
    sysroot = tmp_path / "sysroot"
    remote = sysroot / "atoll/state/remotes/origin"
    remote.mkdir(parents=True)
    (remote / "remote.json").write_text(json.dumps({
        "name": "origin", "url": "https://updates.example.invalid/", "channel": None}))
    assert names("remotes", sysroot) == ["origin"]
    assert complete(script, "--sysroot", str(sysroot), "update", "check", "--remote", "") == [
        "origin"]
    assert complete(script, "remote", "show", "--sysroot", str(sysroot), "o") == ["origin"]
    # nothing there: nothing offered, and no error
    assert complete(script, "--sysroot", str(tmp_path / "none"), "deploy", "") == []
    assert complete(script, "update", "check", "--sysroot", str(tmp_path / "none"),
                    "--remote", "") == []


def test_completes_refspecs_for_db_diff_rebase_and_deploy(script: Path, tmp_path: Path) -> None:
    """REMOTE:CHANNEL is offered, and completed as bash splits it (at ':')."""
    sysroot = tmp_path / "sysroot"
    repo = Repo.create(sysroot / "atoll/repo")
    (tmp_path / "t").mkdir()
    (tmp_path / "t/f").write_text("x")
    cid = repo.commit_dir(tmp_path / "t", ref="site/base", version="1")
    repo.set_ref("origin/site/db", cid, namespace="remotes")
    remote = sysroot / "atoll/state/remotes/t4"
    remote.mkdir(parents=True)
    (remote / "remote.json").write_text(json.dumps({
        "name": "t4", "url": "https://updates.example.invalid/", "channel": "site/lts"}))
    s = str(sysroot)
    assert complete(script, "--sysroot", s, "db", "diff", "") == ["site/base", "origin:site/db"]
    assert complete(script, "--sysroot", s, "db", "diff", "site/base", "ori") == [
        "origin:site/db"]
    assert complete(script, "--sysroot", s, "rebase", "") == ["t4:site/lts", "origin:site/db"]
    # `deploy origin:si`: bash hands over "origin" ":" "si" and replaces only "si"
    assert complete(script, "--sysroot", s, "deploy", "origin", ":", "si") == ["site/db"]
    assert complete(script, "--sysroot", s, "deploy", "origin", ":") == ["site/db"]
    assert names("channels", sysroot) == ["t4:site/lts", "origin:site/db"]


def test_names_never_fail(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "repo").mkdir()
    (tmp_path / "repo/config.json").write_text("{")
    for argv in (["completion", "names", "refs", "--repo", str(tmp_path / "missing")],
                 ["completion", "names", "remotes", "--sysroot", str(tmp_path / "missing")],
                 ["completion", "names", "refs", "--repo", str(tmp_path / "repo")]):
        assert main(argv) == 0
        assert capsys.readouterr() == ("", "")


def test_completion_tables_name_real_options() -> None:
    dests = {a.dest for _, a in _actions()}
    at = {(*path, a.dest) for path, a in _actions()}
    assert set(DYNAMIC) <= dests
    assert set(DYNAMIC_AT) <= at
    path_dests = {a.dest for _, a in _actions() if a.type in PATH_TYPES}
    assert path_dests >= DIR_DESTS, DIR_DESTS - path_dests


# -- fast paths --------------------------------------------------------------------------

@pytest.mark.parametrize("command", sorted(FAST_PATH))
def test_a_fast_path_parses_its_command_as_the_whole_parser_does(command: str) -> None:
    """A command on its fast path (only its CLI modules loaded, in a fresh interpreter:
    modules add to others' groups when imported) has every subcommand and option the
    whole parser gives it: a module adding to its group was not forgotten."""
    code = ("import json\n"
            "from atoll.cli import FAST_PATH, build_parser\n"
            "from tests.unit.cli_shape import shape\n"
            f"print(json.dumps(shape(build_parser(FAST_PATH[{command!r}]), {command!r})))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, check=True)
    whole = shape(PARSER, command)
    assert whole and json.loads(proc.stdout) == whole

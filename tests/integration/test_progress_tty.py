"""Progress of real ``atoll`` commands in a pseudo-terminal, and none off a terminal.

Load-independent: the assertions use what is drawn whatever the timing (a step's
row when it opens, its line when it ends), never how often rows were refreshed.
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
from dataclasses import dataclass
from pathlib import Path

import pytest

from atoll.store import Repo

FILES = 3000
_CSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@dataclass
class Run:
    rc: int
    tty: str  # everything written to the terminal, escape sequences included
    stdout: str | None  # when stdout was a pipe
    stderr: str | None  # when stderr was a pipe

    @property
    def text(self) -> str:
        """The terminal's text without escape sequences, one drawn piece a line."""
        return "\n".join(_CSI.sub("", p) for p in re.split(r"\r|\n|\x1b\[2K", self.tty))


def atoll(*args: str, stdout_tty: bool = True, stderr_tty: bool = True) -> Run:
    """Run ``atoll ARGS`` with stdin (and stdout, stderr unless told) on a 120x40 pty."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    env = {"PATH": os.environ["PATH"], "TERM": "xterm-256color", "LANG": "C.UTF-8"}
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "atoll.cli", *args], stdin=slave,
            stdout=slave if stdout_tty else subprocess.PIPE,
            stderr=slave if stderr_tty else subprocess.PIPE, env=env)
    finally:
        os.close(slave)
    out = bytearray()
    try:
        while True:
            ready, _, _ = select.select([master], [], [], 300)
            assert ready, "atoll wrote nothing for 300 s"
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: every end of the slave is closed
                break
            if not data:
                break
            out += data
    finally:
        os.close(master)
    stdout, stderr = proc.communicate(timeout=300)
    return Run(proc.returncode, out.decode("utf-8", "replace"),
               None if stdout is None else stdout.decode(),
               None if stderr is None else stderr.decode())


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("progress") / "tree"
    data = root / "usr/share/data"
    data.mkdir(parents=True)
    for i in range(FILES):
        (data / f"f{i:05d}").write_text(f"file {i}\n")
    return root


def no_progress(text: str) -> None:
    assert "\x1b[" not in text, text[:2000]  # no cursor movement, no colour
    assert "commit tree" not in text and "fsck " not in text, text[:2000]


def test_commit_and_fsck_draw_progress_on_a_terminal(tree: Path, tmp_path: Path) -> None:
    repo = Repo.create(tmp_path / "repo").path
    r = atoll("store", "commit", str(tree), "--ref", "t/a", "--repo", str(repo))
    assert r.rc == 0, r.tty
    assert re.search(r"commit tree .*/3,000 files", r.text), r.text  # the row
    assert re.search(r"^commit tree  3,000 files  \d", r.text, re.M), r.text  # its line
    assert re.search(r"^[0-9a-f]{64}  \(t/a\)", r.text, re.M), r.text  # the result, as before

    r = atoll("store", "fsck", "--repo", str(repo))
    assert r.rc == 0, r.tty
    assert re.search(r"^fsck  3,0\d\d objects  \d", r.text, re.M), r.text


def test_no_progress_when_stderr_is_a_pipe(tree: Path, tmp_path: Path) -> None:
    repo = Repo.create(tmp_path / "repo").path
    r = atoll("store", "commit", str(tree), "--ref", "t/a", "--repo", str(repo),
              stderr_tty=False)
    assert r.rc == 0, r.stderr
    assert r.stderr == ""
    no_progress(r.tty)
    assert re.fullmatch(r"[0-9a-f]{64}  \(t/a\)\r?\n", r.tty), r.tty

    r = atoll("store", "fsck", "--repo", str(repo), stderr_tty=False)
    assert r.rc == 0 and r.stderr == "", r.stderr
    no_progress(r.tty)


def test_no_progress_under_quiet(tree: Path, tmp_path: Path) -> None:
    repo = Repo.create(tmp_path / "repo").path
    r = atoll("-q", "store", "commit", str(tree), "--ref", "t/a", "--repo", str(repo))
    assert r.rc == 0, r.tty
    no_progress(r.tty)
    r = atoll("store", "fsck", "-q", "--repo", str(repo))
    assert r.rc == 0, r.tty
    no_progress(r.tty)


def test_no_progress_under_json_and_stdout_stays_json(tree: Path, tmp_path: Path) -> None:
    repo = Repo.create(tmp_path / "repo").path
    r = atoll("--json", "store", "commit", str(tree), "--ref", "t/a", "--repo", str(repo),
              stdout_tty=False)
    assert r.rc == 0, r.tty
    assert json.loads(r.stdout or "")["ref"] == "t/a"
    no_progress(r.tty)

    r = atoll("store", "fsck", "--repo", str(repo), "--json", stdout_tty=False)
    assert r.rc == 0, r.tty
    assert json.loads(r.stdout or "")["ok"] is True
    no_progress(r.tty)

    r = atoll("store", "fsck", "--repo", str(repo), "--json")  # both on the terminal
    assert r.rc == 0, r.tty
    assert json.loads(r.tty)["ok"] is True

"""atoll's bsdiff (divsufsort, from detools) makes bsdiff4's blocks, byte for byte."""

from __future__ import annotations

import importlib.util
import io
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import bsdiff4.core  # type: ignore[import-untyped]
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atoll.core.errors import AtollError, InputError
from atoll.delta import _bsdiff


def _same_as_bsdiff4(base: bytes, content: bytes) -> None:
    blocks = _bsdiff.diff(base, content)
    assert blocks == tuple(bsdiff4.core.diff(base, content))
    assert bsdiff4.core.patch(base, len(content), *blocks) == content


@pytest.mark.parametrize("base, content", [
    (b"", b""), (b"", b"new"), (b"old", b""), (b"a", b"a"), (b"x" * 1000, b"y" * 1000),
    (bytes(range(256)) * 64, bytes(range(255, -1, -1)) * 64),
])
def test_edge_cases(base: bytes, content: bytes) -> None:
    _same_as_bsdiff4(base, content)


@st.composite
def _edited(draw: st.DrawFn) -> tuple[bytes, bytes]:
    """A base and a version of it with bytes changed, inserted and deleted (the moves
    bsdiff's seeks and negative offsets are for)."""
    base = draw(st.binary(max_size=3000))
    content = bytearray(base)
    for _ in range(draw(st.integers(0, 8))):
        at = draw(st.integers(0, len(content)))
        edit = draw(st.sampled_from(["set", "insert", "delete", "move"]))
        if edit == "insert":
            content[at:at] = draw(st.binary(min_size=1, max_size=200))
        elif edit == "delete":
            del content[at:at + draw(st.integers(1, 200))]
        elif edit == "move":
            piece = bytes(content[at:at + draw(st.integers(1, 400))])
            del content[at:at + len(piece)]
            to = draw(st.integers(0, len(content)))
            content[to:to] = piece
        elif at < len(content):
            content[at] = draw(st.integers(0, 255))
    return base, bytes(content)


@settings(max_examples=300, deadline=None)
@given(_edited())
def test_edited_inputs(pair: tuple[bytes, bytes]) -> None:
    _same_as_bsdiff4(*pair)


def test_a_relocated_binary() -> None:
    # what kernel modules look like across an ABI bump: a real ELF whose code moved
    # and whose addresses all changed by a little
    elf = Path(sys.executable).resolve().read_bytes()[:1 << 20]
    rng = random.Random(7)
    new = bytearray(elf[:4096] + rng.randbytes(300) + elf[4096:])
    for _ in range(2000):
        at = rng.randrange(len(new))
        new[at] = (new[at] + rng.choice((1, 4, 8))) & 0xFF
    _same_as_bsdiff4(elf, bytes(new))


def test_inputs_beyond_32_bit_positions_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_bsdiff, "MAX_INPUT", 10)
    with pytest.raises(ValueError, match="1 GiB"):
        _bsdiff.diff(b"x" * 11, b"y")


def test_workers_make_the_same_blocks_from_several_threads(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    rng = random.Random(3)
    pairs = []
    for n in (0, 10, 5000, 200_000):
        base = rng.randbytes(n)
        new = bytearray(base)
        for _ in range(n // 100):
            new[rng.randrange(n)] ^= 1
        pairs.append((base, bytes(new[: n // 2]) + rng.randbytes(64) + bytes(new[n // 2:])))
    with _bsdiff.Workers(2, tmp_path) as workers, ThreadPoolExecutor(4) as threads:
        got = list(threads.map(lambda p: workers.diff(*p), pairs * 3))
    assert list(tmp_path.iterdir()) == []  # no file left
    assert got == [tuple(bsdiff4.core.diff(*p)) for p in pairs * 3]


def test_a_worker_killed_is_an_error_that_says_so(tmp_path: Path) -> None:
    base = Path(sys.executable).resolve().read_bytes() * 4  # a few seconds of work
    errors: list[BaseException] = []
    with _bsdiff.Workers(1, tmp_path) as workers:
        workers.diff(b"a", b"b")
        t = threading.Thread(target=lambda: _catch(errors, workers.diff, base, base[::-1]))
        t.start()
        while not list(tmp_path.glob("bsdiff-*/*/new")) and t.is_alive():
            time.sleep(0.01)
        time.sleep(0.5)  # the worker is in the middle of it
        for p in workers._procs:
            os.kill(p.pid, signal.SIGKILL)
        t.join(timeout=60)
        assert not t.is_alive()
        assert len(errors) == 1 and isinstance(errors[0], AtollError)
        assert "worker process died (signal 9: killed, or out of memory?)" in str(errors[0])
        with pytest.raises(AtollError, match="worker process died"):  # and it stays so
            workers.diff(b"a", b"b")
    assert list(tmp_path.iterdir()) == []


def test_workers_ignore_sigint_and_end_with_the_block(tmp_path: Path) -> None:
    with _bsdiff.Workers(2, tmp_path) as workers:
        procs = list(workers._procs)
        deadline = time.monotonic() + 20
        for p in procs:  # once they are ready
            while not _ignores_sigint(p.pid):
                assert time.monotonic() < deadline, "the worker does not ignore SIGINT"
                time.sleep(0.01)
        for p in procs:
            os.kill(p.pid, signal.SIGINT)  # ^C reaches the whole process group
        time.sleep(0.2)
        assert workers.diff(b"abc" * 100, b"abd" * 100) == tuple(
            bsdiff4.core.diff(b"abc" * 100, b"abd" * 100))
    assert all(p.poll() == 0 for p in procs)


def test_workers_die_with_a_killed_parent(tmp_path: Path) -> None:
    # one worker idle, one in the middle of a diff of many seconds
    code = ("import sys, threading, time\n"
            "from pathlib import Path\n"
            "from atoll.delta import _bsdiff\n"
            "base = Path(sys.executable).resolve().read_bytes() * 6\n"
            f"with _bsdiff.Workers(2, Path({str(tmp_path)!r})) as w:\n"
            "    threading.Thread(target=w.diff, args=(base, base[::-1]), daemon=True).start()\n"
            f"    while not list(Path({str(tmp_path)!r}).glob('bsdiff-*/*/new')):\n"
            "        time.sleep(0.01)\n"
            "    time.sleep(0.5)\n"
            "    print(*[p.pid for p in w._procs], flush=True)\n"
            "    time.sleep(600)\n")
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    pids = [int(p) for p in parent.stdout.readline().split()]
    assert len(pids) == 2 and all(_running(p) for p in pids)
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 2  # the diff alone takes longer
    while any(_running(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_running(p) for p in pids)


def _ignores_sigint(pid: int) -> bool:
    status = Path(f"/proc/{pid}/status").read_text()
    ignored = int(next(ln for ln in status.splitlines() if ln.startswith("SigIgn:")).split()[1], 16)
    return bool(ignored & (1 << (signal.SIGINT - 1)))


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_a_worker_answers_an_error_and_goes_on(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"old")
    (tmp_path / "b").write_bytes(b"new")
    requests = io.BytesIO(b"".join(json.dumps(r).encode() + b"\n" for r in (
        [str(tmp_path / "missing"), str(tmp_path / "b"), str(tmp_path / "o1")],
        [str(tmp_path / "a"), str(tmp_path / "b"), str(tmp_path / "o2")])))
    answers = io.BytesIO()
    _bsdiff._serve(requests, answers)
    first, second = answers.getvalue().decode().splitlines()
    assert first.startswith("error FileNotFoundError:") and "missing" in first
    lengths = [int(n) for n in second.split()[1:]]
    assert second.startswith("ok ") and sum(lengths) == (tmp_path / "o2").stat().st_size


def test_publishing_without_detools_says_what_to_install(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from atoll.delta.static import require_tools

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "detools" else real(name, *a))
    with pytest.raises(InputError, match="detools is not installed") as e:
        require_tools()
    assert "bootstrap" in (e.value.resolution or "")


def test_a_worker_that_fails_or_exits_is_an_error_that_says_how(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_bsdiff, "WORKER", "import sys\nfor _ in sys.stdin: print('error boom', "
                        "flush=True)\n")
    with _bsdiff.Workers(1, tmp_path) as workers, \
            pytest.raises(AtollError, match="bsdiff failed: boom"):
        workers.diff(b"a", b"b")
    monkeypatch.setattr(_bsdiff, "WORKER", "import sys\nsys.stdin.readline()\n"
                        "sys.exit('cannot go on')\n")
    with _bsdiff.Workers(1, tmp_path) as workers, \
            pytest.raises(AtollError, match=r"died \(exit code 1\)$") as e:
        workers.diff(b"a", b"b")
    assert "cannot go on" in (e.value.details or "")
    assert "OOM" not in (e.value.resolution or "")
    assert list(tmp_path.iterdir()) == []


def test_workers_do_not_import_from_the_current_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    here = tmp_path / "here"
    here.mkdir()
    for name in ("json", "queue", "atoll"):  # what a worker imports
        (here / f"{name}.py").write_text("raise SystemExit('planted module ran')\n")
    monkeypatch.chdir(here)
    with _bsdiff.Workers(1, tmp_path) as workers:
        assert workers.diff(b"abc" * 50, b"abd" * 50) == tuple(
            bsdiff4.core.diff(b"abc" * 50, b"abd" * 50))


def test_a_detools_that_makes_other_blocks_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    real = _bsdiff.diff
    monkeypatch.setattr(_bsdiff, "diff", lambda b, c: (b"", *real(b, c)[1:]))
    with pytest.raises(InputError, match="does not make bsdiff4's blocks"):
        _bsdiff.require()
    monkeypatch.setattr(_bsdiff, "diff", real)
    _bsdiff.require()


def _catch(errors: list[BaseException], fn: object, *args: object) -> None:
    try:
        fn(*args)  # type: ignore[operator]
    except BaseException as e:  # the test looks at it
        errors.append(e)

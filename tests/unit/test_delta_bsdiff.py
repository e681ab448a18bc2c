"""atoll's bsdiff (divsufsort, from detools) makes bsdiff4's blocks, byte for byte."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import bsdiff4.core  # type: ignore[import-untyped]
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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
    with pytest.raises(ValueError, match="2 GiB"):
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
    import os
    import signal
    import threading
    import time

    from atoll.core.errors import AtollError

    base = Path(sys.executable).resolve().read_bytes() * 4  # a few seconds of work
    errors: list[BaseException] = []
    with _bsdiff.Workers(1, tmp_path) as workers:
        workers.diff(b"a", b"b")  # the process is started
        pids = list(workers._pool._processes)  # type: ignore[attr-defined]
        t = threading.Thread(target=lambda: _catch(errors, workers.diff, base, base[::-1]))
        t.start()
        while not list(tmp_path.glob("bsdiff-*/new")) and t.is_alive():
            time.sleep(0.01)
        time.sleep(0.5)  # the worker is in the middle of it
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        t.join(timeout=120)
    assert not t.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], AtollError)
    assert "worker process died" in str(errors[0])
    assert list(tmp_path.iterdir()) == []


def _catch(errors: list[BaseException], fn: object, *args: object) -> None:
    try:
        fn(*args)  # type: ignore[operator]
    except BaseException as e:  # the test looks at it
        errors.append(e)

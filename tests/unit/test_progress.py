"""The progress mechanism: silent unless enabled; on a (fake) terminal, rows and final lines."""

from __future__ import annotations

import io
import logging
import re
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from rich.console import Console

from atoll.core import progress as P
from atoll.core.log import setup_logging

_CSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def screen_lines(raw: str) -> list[str]:
    """What stays on each line of a terminal: the text after the last erase or carriage
    return of the line, without escape sequences."""
    out = []
    for line in raw.split("\n"):
        erase = line.rfind("\x1b[2K")
        last = max(erase + 4 if erase >= 0 else 0, line.rfind("\r") + 1)
        out.append(_CSI.sub("", line[last:]))
    return out


def drawn(raw: str) -> list[str]:
    """Every piece of text drawn, rows since overwritten included."""
    return [_CSI.sub("", p) for p in re.split(r"\r|\n|\x1b\[2K", raw) if _CSI.sub("", p)]


@pytest.fixture
def term() -> Iterator[io.StringIO]:
    """Progress on, drawn on a fake 100x25 terminal; off again afterwards."""
    buf = io.StringIO()
    console = Console(file=buf, force_terminal=True, width=100, height=25, color_system=None)
    assert P.enable(console=console)
    try:
        yield buf
    finally:
        P.disable()


def test_silent_by_default_and_rich_not_loaded() -> None:
    code = (
        "import sys\n"
        "from atoll.core import progress as P\n"
        "assert not P.enabled()\n"
        "with P.progress('fsck', 3, unit='objects') as s:\n"
        "    s.advance(); s.advance(2)\n"
        "assert list(P.track(range(3), 'x', unit='things')) == [0, 1, 2]\n"
        "assert 'rich' not in sys.modules, 'rich imported while progress is off'\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "" and proc.stderr == ""


def test_off_steps_are_one_shared_noop(capsys: pytest.CaptureFixture[str]) -> None:
    a = P.progress("a", 10, unit="files")
    b = P.progress("b")
    assert a is b
    with a as step:
        step.advance(5)
        assert list(step.track([1, 2], len)) == [1, 2]
    assert capsys.readouterr() == ("", "")


def test_enable_refuses_what_is_not_a_terminal() -> None:
    assert not P.enable(stream=io.StringIO())
    assert not P.enabled()


def test_rows_show_description_units_and_a_final_line(term: io.StringIO) -> None:
    with P.progress("commit tree", 1000, unit="files") as step:
        for _ in range(1000):
            step.advance()
    lines = screen_lines(term.getvalue())
    rows = drawn(term.getvalue())
    assert any(re.fullmatch(r"commit tree .*/1,000 files +eta .*", ln) for ln in rows), rows
    assert re.fullmatch(r"commit tree  1,000 files  \d+\.\ds", lines[-2]), lines
    assert lines[-1] == ""


def test_bytes_are_humanised(term: io.StringIO) -> None:
    with P.progress("download pack", 5_000_000, unit="bytes", done=1_000_000) as step:
        step.advance(4_000_000)
    lines = screen_lines(term.getvalue())
    assert any("1.0/5.0 MB" in ln for ln in drawn(term.getvalue())), term.getvalue()
    assert re.fullmatch(r"download pack  5\.0 MB  \d+\.\ds", lines[-2]), lines


def test_a_step_of_unknown_length_shows_its_time(term: io.StringIO) -> None:
    with P.progress("compose stable: mmdebstrap"):
        pass
    assert re.fullmatch(r"compose stable: mmdebstrap  \d+\.\ds", screen_lines(term.getvalue())[-2])


def test_advance_from_a_thread_pool_counts_every_unit(term: io.StringIO) -> None:
    with P.progress("fsck", 80_000, unit="objects") as step:
        def work(_: int) -> None:
            for _ in range(10_000):
                step.advance()

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(work, range(8)))
    assert re.fullmatch(r"fsck  80,000 objects  \d+\.\ds", screen_lines(term.getvalue())[-2])


def test_nested_steps_are_indented_and_each_leaves_a_line(term: io.StringIO) -> None:
    with P.progress("publish stable"):
        with P.progress("pack 0123456789ab" + "c" * 52, 10, unit="chunks") as pack:
            pack.advance(10)
        for _ in P.track(range(3), "delta from abc: patches", unit="files"):
            pass
    lines = [ln for ln in screen_lines(term.getvalue()) if ln]
    finals = [ln for ln in lines if re.search(r"\s\d+\.\ds$", ln)]
    assert [re.sub(r"  \d+\.\ds$", "", ln) for ln in finals] == [
        "  pack 0123456789ab  10 chunks",  # a long object id is cut to 12 characters
        "  delta from abc: patches  3 files",
        "publish stable",
    ]


def test_a_step_ended_by_an_exception_says_so(term: io.StringIO) -> None:
    with pytest.raises(KeyboardInterrupt), P.progress("verify", 10, unit="files") as step:
        step.advance(4)
        raise KeyboardInterrupt
    with pytest.raises(OSError), P.progress("checkout", unit="files") as step:
        step.advance(2)
        raise OSError("disk")
    for _ in P.track([1, 2, 3], "gc: mark", unit="refs"):
        break  # the first item was taken, not done with
    finals = [ln for ln in screen_lines(term.getvalue()) if ln]
    assert re.fullmatch(r"verify  4/10 files  \d+\.\ds  interrupted", finals[-3]), finals
    assert re.fullmatch(r"checkout  2 files  \d+\.\ds  failed", finals[-2]), finals
    assert re.fullmatch(r"gc: mark  0/3 refs  \d+\.\ds  stopped", finals[-1]), finals


def test_nothing_to_do_shows_nothing(term: io.StringIO) -> None:
    with P.progress("import abc", 0, unit="files"):
        pass
    assert list(P.track([], "download pack chunks", unit="bytes")) == []
    assert term.getvalue() == ""


def test_disabled_again_draws_nothing(term: io.StringIO) -> None:
    P.disable()
    with P.progress("fsck", 5, unit="objects") as step:
        step.advance(5)
    assert term.getvalue() == ""


def test_log_lines_print_above_the_rows(term: io.StringIO) -> None:
    before = sys.stderr
    setup_logging()
    try:
        with P.progress("fsck", 2, unit="objects") as step:
            step.advance()
            logging.getLogger("atoll.test").warning("a warning meanwhile")
            step.advance()
    finally:
        logging.getLogger("atoll").handlers.clear()
    lines = [ln for ln in screen_lines(term.getvalue()) if ln]
    assert "a warning meanwhile" in lines
    assert re.fullmatch(r"fsck  2 objects  \d+\.\ds", lines[-1])
    assert sys.stderr is before  # rich's redirection is undone when the last step ends


def test_a_tiny_terminal_crops_without_breaking() -> None:
    buf = io.StringIO()
    P.enable(console=Console(file=buf, force_terminal=True, width=12, height=2,
                             color_system=None))
    try:
        with P.progress("publish stable"), P.progress("pack", 10**9, unit="bytes") as step, \
                P.progress("delta from 0123456789ab: compress", 5, unit="bytes") as inner:
            step.advance(10**8)
            inner.advance(5)
    finally:
        P.disable()
    lines = [ln for ln in screen_lines(buf.getvalue()) if ln]
    assert lines and all(len(ln) <= 12 for ln in lines), lines


def test_formatting() -> None:
    assert P.format_amount(512_000_000, 1_200_000_000, "bytes") == "0.5/1.2 GB"
    assert P.format_amount(999, None, "bytes") == "999 B"
    assert P.format_amount(1_234_567, None, "bytes") == "1.2 MB"
    assert P.format_amount(12_034, 20_000, "files") == "12,034/20,000 files"
    assert P.format_amount(1, None, "refs") == "1 ref"
    assert P.format_amount(3, None, "") == ""
    assert P.format_amount(3, 5, "") == "3/5"
    assert P.format_rate(12_500_000, "bytes") == "12.5 MB/s"
    assert P.format_rate(4210.4, "files") == "4,210 files/s"
    assert P.format_rate(2.25, "chunks") == "2.2 chunks/s"
    assert P.format_rate(None, "files") == ""
    assert P.format_duration(0.44) == "0.4s"
    assert P.format_duration(151) == "2m31s"
    assert P.format_duration(3725) == "1h02m"


def test_descriptions_are_printable(term: io.StringIO) -> None:
    with P.progress("commit a\nb"):
        pass
    assert re.fullmatch(r"commit a\\nb  \d+\.\ds", screen_lines(term.getvalue())[-2])


def test_log_mode_logs_each_tenth_and_the_end(caplog: pytest.LogCaptureFixture) -> None:
    """atolld's journal: a line per tenth (never two for one tenth, however the
    advances fall), one at the end; nothing drawn, rich not needed."""
    P.enable_log()
    try:
        with caplog.at_level(logging.INFO, logger="atoll.progress"):
            with P.progress("verify " + "ab" * 32, 1000, unit="files") as step:
                for n in (50, 50, 1, 249, 400, 250):  # 5%, 10%, 10.1%, 35%, 75%, 100%
                    step.advance(n)
            with pytest.raises(RuntimeError), P.progress("download x", 100, unit="bytes") as s:
                s.advance(3)
                raise RuntimeError("cut")
    finally:
        P.disable()
    lines = [r.getMessage() for r in caplog.records]
    assert lines[:3] == ["verify abababababab: 100/1,000 files (10%)",
                         "verify abababababab: 350/1,000 files (30%)",
                         "verify abababababab: 750/1,000 files (70%)"]
    assert re.fullmatch(r"verify abababababab  1,000 files  \d+(\.\d)?s", lines[3])
    assert re.fullmatch(r"download x  3/100 B  \d+(\.\d)?s  failed", lines[4])
    assert len(lines) == 5
    with caplog.at_level(logging.INFO, logger="atoll.progress"), \
            P.progress("after disable", 10) as step:
        step.advance(10)
    assert len(caplog.records) == 5

"""Simulated power loss after a killed command: what a power cut could have lost.

A command run with ``ATOLL_TRACE_SYNC=FILE`` logs its durability points
(``syncfs-begin``/``syncfs-end`` of a filesystem, ``durable PATH`` for a file
made durable on its own: fsync of the file and its directory). After the
command is killed (SIGKILL), :func:`power_cut` damages every regular file
whose *content* may not have reached the disk: written (mtime) after the last
completed syncfs, and not made durable on its own since. Each such file is,
by a seeded choice, emptied, cut in half or zero-filled, as ext4 can leave it.

The model is conservative in one direction only: a file written while a
syncfs ran is left alone (it may have been synced), so a failure the
simulation reports is a real ordering fault, never an artefact. Renames are
not undone (a lost rename only removes a new name, which the write order
already allows for).
"""

from __future__ import annotations

import os
import random
import stat
from pathlib import Path

__all__ = ["power_cut"]


def _trace(trace: Path) -> tuple[int, dict[str, int]]:
    last_end = 0
    durable: dict[str, int] = {}
    try:
        lines = trace.read_text().splitlines()
    except FileNotFoundError:
        return 0, {}
    for line in lines:
        parts = line.split(" ", 2)
        if len(parts) != 3:
            continue  # a line cut by the kill
        t, event, path = int(parts[0]), parts[1], parts[2]
        if event == "syncfs-end":
            last_end = max(last_end, t)
        elif event == "durable":
            durable[path] = max(durable.get(path, 0), t)
    return last_end, durable


def power_cut(trace: Path, roots: list[Path], rnd: random.Random) -> list[str]:
    """Damage what a power cut could have lost under ``roots``; returns those paths."""
    last_end, durable = _trace(trace)
    damaged = []
    for root in roots:
        for dirpath, _, files in os.walk(root):
            for name in files:
                p = os.path.join(dirpath, name)
                st = os.lstat(p)
                if not stat.S_ISREG(st.st_mode) or name == "lock" or st.st_size == 0:
                    continue
                if st.st_mtime_ns <= last_end:
                    continue
                if durable.get(os.path.abspath(p), 0) >= st.st_mtime_ns:
                    continue
                how = rnd.choice(("empty", "half", "zero"))
                with open(p, "r+b") as fh:
                    if how == "empty":
                        fh.truncate(0)
                    elif how == "half":
                        fh.truncate(st.st_size // 2)
                    else:
                        fh.write(b"\0" * st.st_size)
                os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
                damaged.append(f"{p} ({how})")
    return damaged

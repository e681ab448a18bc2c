"""atolld at rest: resident memory and CPU of the host agent.

    .venv/bin/python bench/bench_agent.py [--seconds 30]

Starts ``atolld`` on a scratch sysroot (policy mode ``check``, no remote
reachable, so its first check fails and it waits), lets it settle, then
reports its RSS and the CPU time it used while idle. Targets: <= 40 MB RSS,
CPU negligible (< 0.1% of one core).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from atoll.agent.policy import Policy
from atoll.agent.state import AgentFiles
from atoll.deploy.sysroot import Sysroot


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=30)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="atoll-bench-agent-"))
    try:
        sr = Sysroot(work / "host")
        sr.init()
        AgentFiles(sr.root).save_policy(Policy(mode="check"))
        proc = subprocess.Popen([sys.executable, "-m", "atoll.agent.daemon", "--sysroot",
                                 str(sr.root)], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        try:
            sock = sr.root / "run/atoll/agent.sock"
            deadline = time.monotonic() + 30
            while not sock.exists():
                assert time.monotonic() < deadline and proc.poll() is None, "atolld did not start"
                time.sleep(0.1)
            time.sleep(3)  # first tick done
            c0, t0 = cpu_s(proc.pid), time.monotonic()
            time.sleep(args.seconds)
            c1, t1 = cpu_s(proc.pid), time.monotonic()
            rss = rss_kb(proc.pid)
        finally:
            proc.terminate()
            proc.wait(timeout=10)
        print(f"atolld idle: RSS {rss / 1024:.1f} MB (target <= 40 MB), "
              f"CPU {100 * (c1 - c0) / (t1 - t0):.3f}% of one core over {t1 - t0:.0f} s")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

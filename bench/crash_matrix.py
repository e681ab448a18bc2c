"""The full crash matrix: SIGKILL at every named step and at many instants of commit,
download and deploy, each followed by a simulated power cut and the next command.

    .venv/bin/python -m bench.crash_matrix [--points 40] [--seeds 3]

CI runs tests/integration/test_crash.py with 6 timed points and one seed; this runs
the same tests with more points and several seeds and prints how many crash points
passed. Any failure is a real ordering fault (see tests/integration/powerloss.py).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STEPS = {"commit": 4, "download": 8, "deploy": 2}  # named steps per test (test_crash.py)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=40, help="timed kill points per command")
    ap.add_argument("--seeds", type=int, default=3)
    args = ap.parse_args()
    failed = 0
    rows = []
    for seed in range(args.seeds):
        env = dict(os.environ, ATOLL_CRASH_POINTS=str(args.points), ATOLL_CRASH_SEED=str(seed))
        for name in STEPS:
            t0 = time.monotonic()
            p = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                                str(ROOT / "tests/integration/test_crash.py"), "-k", name],
                               cwd=ROOT, env=env, capture_output=True, text=True)
            ok = p.returncode == 0
            failed += not ok
            rows.append((seed, name, STEPS[name] + args.points, ok, time.monotonic() - t0))
            if not ok:
                print(p.stdout[-3000:], file=sys.stderr)
    print(f"{'seed':>4}  {'command':<9} {'points':>6}  {'result':<6} {'seconds':>8}")
    for seed, name, points, ok, secs in rows:
        print(f"{seed:>4}  {name:<9} {points:>6}  {'pass' if ok else 'FAIL':<6} {secs:>8.1f}")
    total = sum(r[2] for r in rows)
    print(f"{total} crash points, {failed} failing test run(s)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

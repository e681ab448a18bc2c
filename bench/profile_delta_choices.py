"""Where a delta's per-file work goes: each paired file's choice, timed on one thread.

    .venv/bin/python bench/profile_delta_choices.py [--variant kernel|db] [--work DIR]
        [--limit N] [--json OUT]

Uses the two commits ``bench_delta.py`` composes (cached in ``--work``, default as
there; the db variant by default). For every new file with a partner, largest
first, it runs the generator's choice (no cache) on one thread and reports the
seconds spent in bsdiff (the diff and its rough size; the level-19 size, when
needed, counts in the total only), in zstd patches (python and the ``zstd``
command) and in all, the choices by kind and the sum of the chosen sizes (bsdiff:
at the level that decided). Times are wall time on one thread, the ``zstd``
command's included: on a quiet machine, the CPU time of the choices. What the
publish's patches step takes is about this total divided by the cores.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from atoll.delta import static

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_delta import PACKAGES, composed


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--variant", choices=sorted(PACKAGES), default="db")
    ap.add_argument("--work", type=Path)
    ap.add_argument("--limit", type=int, help="only the N largest files")
    ap.add_argument("--json", type=Path, help="write each file's figures here")
    opts = ap.parse_args()
    work: Path = opts.work or Path("/var/tmp/atoll-bench-delta" + (
        "" if opts.variant == "kernel" else f"-{opts.variant}"))
    work.mkdir(parents=True, exist_ok=True)
    repo, old, new = composed(work, opts.variant)
    current = threading.local()
    spent: dict[str, dict[str, float]] = {}

    def timed(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def inner(*a: Any, **k: Any) -> Any:
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                d = spent.setdefault(current.fid, {})
                d[name] = d.get(name, 0.0) + time.perf_counter() - t
        return inner

    static._patch = timed("patch", static._patch)  # type: ignore[method-assign]
    static._Bsdiff = timed("bsdiff", static._Bsdiff)  # type: ignore[misc]

    plan = static._plan(repo, old, new)
    pairs = plan.pairs
    decide = static._decider(repo, pairs, plan.paths, static.PATCH_LEVEL, None,
                             static.DeltaStats())
    order = sorted((f for f in plan.files if f.id in pairs), key=lambda f: -f.size)
    order = order[:opts.limit] if opts.limit else order
    rows: list[dict[str, Any]] = []

    def run() -> None:
        for f in order:
            current.fid = f.id
            t = time.perf_counter()
            _fid, choice = decide(f.id)
            how = None if choice is None else choice[1]["how"]
            size = None if choice is None else choice[1].get("_est", len(choice[0]))
            rows.append({"path": f.path, "size": f.size, "total": time.perf_counter() - t,
                         **spent.get(f.id, {}), "how": how, "chosen": size})

    static_stack = threading.stack_size(256 << 20)  # as generate_delta: bsdiff recurses
    th = threading.Thread(target=run)
    th.start()
    th.join()
    threading.stack_size(static_stack)
    sums = {k: round(sum(r.get(k, 0.0) for r in rows), 1) for k in ("bsdiff", "patch", "total")}
    print(f"{len(rows)} paired files of {len(plan.files)} new: seconds {sums}")
    print("choices:", dict(collections.Counter(str(r["how"]) for r in rows)))
    print("chosen bytes (patches and bsdiff sizes):",
          sum(r["chosen"] for r in rows if r["chosen"] is not None))
    if opts.json:
        opts.json.write_text(json.dumps(rows, indent=0))
    return 0


if __name__ == "__main__":
    sys.exit(main())

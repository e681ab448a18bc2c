"""Health checks: greenboot-style drop-in directories of executables.

    /usr/lib/atoll/health.d/{required,wanted}.d/NN-name   shipped in the image
    /etc/atoll/health.d/{required,wanted}.d/NN-name       added on the host

Each runs with no arguments; exit 0 passes. A file in /etc overrides the one
with the same name in /usr. Checks run in name order, each bounded in time.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from atoll.core.errors import ToolError
from atoll.core.run import run

__all__ = ["CheckResult", "discover", "run_checks", "summary"]

DIRS = ("usr/lib/atoll/health.d", "etc/atoll/health.d")
CHECK_TIMEOUT = 120.0


@dataclass(frozen=True)
class CheckResult:
    name: str
    required: bool
    ok: bool
    exit_code: int
    output: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "required": self.required, "ok": self.ok,
                "exit_code": self.exit_code, "output": self.output}


def discover(root: Path) -> list[tuple[str, bool, Path]]:
    """(name, required, path) of every check under ``root``, /etc overriding /usr."""
    found: dict[tuple[str, bool], Path] = {}
    for base in DIRS:
        for kind, required in (("required.d", True), ("wanted.d", False)):
            d = root / base / kind
            if not d.is_dir():
                continue
            for p in d.iterdir():
                if p.name.startswith(".") or p.name.endswith(("~", ".dpkg-old", ".disabled")):
                    continue
                found[(p.name, required)] = p
    return [(name, req, path) for (name, req), path in sorted(found.items(),
                                                              key=lambda kv: kv[0][0])]


def run_checks(root: Path = Path("/"), timeout: float = CHECK_TIMEOUT) -> list[CheckResult]:
    """Run every check; a check that is not executable or times out fails."""
    results: list[CheckResult] = []
    for name, required, path in discover(root):
        if not (path.is_file() and os.access(path, os.X_OK)):
            results.append(CheckResult(name, required, False, 126, "not an executable file"))
            continue
        try:
            proc = run([path], check=False, timeout=timeout)
        except ToolError as exc:
            results.append(CheckResult(name, required, False, exc.returncode, exc.brief))
            continue
        out = (proc.stdout + proc.stderr).decode("utf-8", "replace").strip()
        results.append(CheckResult(name, required, proc.returncode == 0, proc.returncode,
                                   out[-400:]))
    return results


def summary(results: list[CheckResult]) -> tuple[bool, str]:
    """(all required passed, why not) for a list of results."""
    bad = [r for r in results if r.required and not r.ok]
    if not bad:
        return True, ""
    parts = []
    for r in bad:
        detail = f": {r.output.splitlines()[-1]}" if r.output else ""
        parts.append(f"required health check {r.name} failed (exit {r.exit_code}){detail}")
    return False, "; ".join(parts)

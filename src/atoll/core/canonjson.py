"""Canonical JSON: what machines write, and what ids are computed from.

Keys sorted, no insignificant whitespace, UTF-8. The same value always gives
the same bytes, so ``sha256(dumps(x))`` is a stable id.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

__all__ = ["dumps", "loads", "sha256_of"]


def dumps(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def loads(data: bytes | str) -> Any:
    return json.loads(data)


def sha256_of(value: Any) -> str:
    return hashlib.sha256(dumps(value)).hexdigest()

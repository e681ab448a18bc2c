"""The agent's persistent state: policy, apply request, decision log, fleet slot.

    <sysroot>/atoll/state/
    ├── policy.json     the update policy (atoll policy set)
    └── agent.json      {"request", "last_check", "last_apply_s", "lock_held",
                         "applied", "decisions": [last 50 {"time","action","reason","at"}]}

Both are canonical JSON written atomically; the agent survives restarts and
reboots by reading them back.
"""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path
from typing import Any

from atoll.agent.policy import ApplyRequest, Decision, Policy
from atoll.core.errors import InputError
from atoll.core.fsutil import atomic_write_json, read_json

__all__ = ["MAX_DECISIONS", "AgentFiles"]

MAX_DECISIONS = 50
log = logging.getLogger("atoll.agent")


def iso(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).isoformat(timespec="seconds")


class AgentFiles:
    def __init__(self, sysroot: Path):
        self.dir = Path(sysroot) / "atoll" / "state"
        self.policy_path = self.dir / "policy.json"
        self.agent_path = self.dir / "agent.json"

    def policy(self) -> Policy:
        data = read_json(self.policy_path, {}) or {}
        try:
            return Policy.from_json(data)
        except ValueError as exc:
            raise InputError(f"{self.policy_path}: {exc}",
                             resolution="fix it with `atoll policy set`") from exc

    def save_policy(self, policy: Policy) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.policy_path, policy.to_json())

    def load(self) -> dict[str, Any]:
        data: dict[str, Any] = read_json(self.agent_path, {}) or {}
        data.setdefault("decisions", [])
        return data

    def save(self, data: dict[str, Any]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        data["decisions"] = data.get("decisions", [])[-MAX_DECISIONS:]
        atomic_write_json(self.agent_path, data)

    def request(self) -> ApplyRequest | None:
        raw = self.load().get("request")
        return ApplyRequest.from_json(raw) if raw else None

    def set_request(self, request: ApplyRequest | None) -> None:
        data = self.load()
        data["request"] = request.to_json() if request else None
        self.save(data)

    def record(self, decision: Decision, now: dt.datetime) -> None:
        """Log a decision and keep it (only when it differs from the last one)."""
        data = self.load()
        entry = {"time": iso(now), **decision.to_json()}
        last = data["decisions"][-1] if data["decisions"] else None
        if last is None or (last["action"], last["reason"]) != (decision.action, decision.reason):
            log.info("decision: %s: %s", decision.action, decision.reason)
            data["decisions"].append(entry)
        data["last_decision"] = entry
        self.save(data)

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
from atoll.core.errors import DamagedStateError
from atoll.core.fsutil import atomic_write_json, damaged, read_state_json

__all__ = ["MAX_DECISIONS", "AgentFiles"]

MAX_DECISIONS = 50
_POLICY_FIX = "set it again with `atoll policy set` (it writes a whole, checked policy)"
log = logging.getLogger("atoll.agent")


def iso(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).isoformat(timespec="seconds")


class AgentFiles:
    def __init__(self, sysroot: Path):
        self.dir = Path(sysroot) / "atoll" / "state"
        self.policy_path = self.dir / "policy.json"
        self.agent_path = self.dir / "agent.json"

    def policy(self) -> Policy:
        """The update policy (the defaults when none was set).

        Raises:
            DamagedStateError: policy.json does not read, or holds a bad value.
        """
        data = self.raw_policy(strict=True)
        try:
            return Policy.from_json(data)
        except ValueError as exc:
            raise damaged(self.policy_path, str(exc), _POLICY_FIX) from None

    def raw_policy(self, *, strict: bool = False) -> dict[str, Any]:
        """policy.json as stored ({} when there is none; not strict: {} when it does
        not read either, so that `atoll policy set` can write a good one over it)."""
        try:
            return dict(read_state_json(self.policy_path, dict, {}, resolution=_POLICY_FIX))
        except DamagedStateError:
            if strict:
                raise
            log.warning("%s does not read; starting from the default policy",
                        self.policy_path)
            return {}

    def save_policy(self, policy: Policy) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.policy_path, policy.to_json())

    def load(self) -> dict[str, Any]:
        """agent.json: the agent's own record. A damaged one reads as empty, with a
        warning, and the next save replaces it: it holds the decision log and a scheduled
        apply, which the agent and the customer can make again, and refusing to run
        would stop updates on the host."""
        try:
            data: dict[str, Any] = read_state_json(self.agent_path, dict, {},
                                                   resolution="") or {}
        except DamagedStateError as exc:
            log.warning("%s: read as empty (a scheduled apply in it is lost: schedule it "
                        "again)", exc.brief)
            data = {}
        if not isinstance(data.get("decisions"), list):
            data["decisions"] = []
        return data

    def save(self, data: dict[str, Any]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        data["decisions"] = data.get("decisions", [])[-MAX_DECISIONS:]
        atomic_write_json(self.agent_path, data)

    def request(self) -> ApplyRequest | None:
        raw = self.load().get("request")
        if not raw:
            return None
        try:
            return ApplyRequest.from_json(raw)
        except (ValueError, TypeError, KeyError):
            log.warning("the scheduled apply in %s does not read; dropped (schedule it "
                        "again)", self.agent_path)
            return None

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

"""What the control plane tells one host at its check-in: a target and the steps allowed.

:func:`decide_for_host` is the one place that decides it. The check-in calls it
inside its own transaction, after the host's row has been updated from the report
(and locked, on PostgreSQL, until the transaction ends): whatever it reads or writes
(rollout and wave tables) commits together with the check-in, or not at all.

The default is "no rollout": no target, every step allowed, so the host follows
its own policy exactly as it does without a control plane. When an active rollout
includes the host, its answer (:func:`atoll.control.rollout_store.decide`) is the
directive: the version to move to and the steps allowed now, or that version with
no step allowed (held).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy.orm import Session

from atoll.control import rollout_store
from atoll.control.models import Host

__all__ = ["ALL_STEPS", "Directive", "Target", "decide_for_host"]

ALL_STEPS: tuple[str, ...] = ("download", "prepare", "apply")


@dataclass(frozen=True)
class Target:
    """A signed version: the channel it is signed on, its version string, its commit."""

    channel: str
    version: str
    commit: str


@dataclass(frozen=True)
class Directive:
    """``target`` None: the host follows its own policy (``allow`` is then every step).
    With a target: move to it, by the steps in ``allow`` (a subset of ALL_STEPS)."""

    target: Target | None = None
    allow: tuple[str, ...] = ALL_STEPS
    reason: str = "no rollout governs this host: it follows its own policy"


def decide_for_host(session: Session, host: Host, now: dt.datetime) -> Directive:
    """The directive for ``host`` at ``now`` (its row holds the check-in just received)."""
    held = rollout_store.decide(session, host, now)
    if held is None:
        return Directive()
    return Directive(Target(held.channel, held.version, held.commit), held.allow,
                     held.reason)

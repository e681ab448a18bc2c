"""Boot counting: the pure state machine shared by GRUB and boot-complete.

State lives in grubenv (see docs/boot.md):

    atoll_pending   id of the deployment on trial ("" when none)
    atoll_tries     tries left for it ("0".."9")
    atoll_max_tries tries it was given (for messages)

GRUB (the script rendered by :mod:`atoll.boot.grubcfg`) implements
:func:`grub_step`; the boot-complete service implements :func:`complete_step`;
the bootloader writer implements :func:`stage_env`. The GRUB script is
generated from the same constants, and unit tests check both agree.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = [
    "DEFAULT_TRIES",
    "MAX_TRIES",
    "CompleteAction",
    "GrubChoice",
    "complete_step",
    "grub_step",
    "stage_env",
]

DEFAULT_TRIES = 3
MAX_TRIES = 9

PENDING = "atoll_pending"
TRIES = "atoll_tries"
MAX = "atoll_max_tries"


def _tries(env: Mapping[str, str]) -> int:
    value = env.get(TRIES, "")
    return int(value) if value.isdigit() and len(value) == 1 else 0


@dataclass(frozen=True)
class GrubChoice:
    """What GRUB does for one boot attempt."""

    entry: int  # index into deployments.json's list
    fallback: bool  # booted the rollback because the pending one ran out of tries
    env: dict[str, str]  # grubenv after GRUB's save_env


def grub_step(env: Mapping[str, str], deployment_ids: Sequence[str]) -> GrubChoice:
    """What GRUB does at power-on, given grubenv and the loader's deployments.

    * deployments[0] is pending with tries left: boot it, one try fewer.
    * deployments[0] is pending with no tries left: boot deployments[1]
      (``atoll.fallback=1``); if there is none, boot deployments[0] anyway.
    * otherwise (no pending, or pending names another deployment, e.g. after
      an interrupted deploy): boot deployments[0]; grubenv unchanged.
    """
    new = dict(env)
    if not deployment_ids:
        return GrubChoice(0, False, new)
    if env.get(PENDING, "") == deployment_ids[0] and env.get(PENDING, ""):
        tries = _tries(env)
        if tries >= 1:
            new[TRIES] = str(tries - 1)
            return GrubChoice(0, False, new)
        if len(deployment_ids) > 1:
            return GrubChoice(1, True, new)
    return GrubChoice(0, False, new)


def stage_env(
    env: Mapping[str, str],
    deployment_ids: Sequence[str],
    good: Sequence[str],
    tries: int = DEFAULT_TRIES,
) -> dict[str, str]:
    """grubenv after writing a loader whose first deployment is ``deployment_ids[0]``.

    A deployment never marked good becomes pending with ``tries`` tries;
    re-rendering the same pending deployment keeps its remaining tries; a
    deployment already good clears the pending state.
    """
    new = dict(env)
    tries = max(1, min(MAX_TRIES, tries))
    first = deployment_ids[0] if deployment_ids else ""
    if not first or first in good:
        new[PENDING] = ""
        new[TRIES] = ""
        new.pop(MAX, None)
    elif env.get(PENDING) != first:
        new[PENDING] = first
        new[TRIES] = str(tries)
        new[MAX] = str(tries)
    return new


@dataclass(frozen=True)
class CompleteAction:
    """What boot-complete does once the health checks have run."""

    result: str  # "good" | "rolled-back" | "failed"
    reason: str
    env: dict[str, str]  # grubenv to write (same as input when unchanged)
    mark_good: bool  # add the booted deployment to the good set
    reboot: bool  # reboot now (GRUB will then boot the rollback)


def complete_step(
    env: Mapping[str, str],
    booted: str,
    fallback: bool,
    checks_ok: bool,
    failure: str = "",
    pending_failure: str = "",
) -> CompleteAction:
    """Decide the outcome of a boot after the health checks.

    Args:
        env: grubenv as read now.
        booted: the running deployment id.
        fallback: GRUB booted the rollback (``atoll.fallback=1``).
        checks_ok: every required health check passed.
        failure: why the required checks failed (when not ``checks_ok``).
        pending_failure: the recorded reason the pending deployment failed, if any.
    """
    new = dict(env)
    pending = env.get(PENDING, "")
    if not checks_ok:
        if pending and pending == booted:
            new[TRIES] = "0"
            return CompleteAction("failed", failure, new, False, True)
        # An already-good deployment (or the rollback itself) failing: report
        # it; rebooting would only loop, there is nothing better to boot.
        return CompleteAction("failed", failure, new, False, False)
    if pending and pending == booted:
        new[PENDING] = ""
        new[TRIES] = ""
        new.pop(MAX, None)
        return CompleteAction("good", "all required health checks passed", new, True, False)
    if fallback and pending and pending != booted:
        if pending_failure:
            why = f"deployment {pending} failed: {pending_failure}"
        else:
            why = (
                f"deployment {pending} did not reach boot-complete in "
                f"{env.get(MAX, '?')} tries"
            )
        return CompleteAction("rolled-back", why, new, True, False)
    return CompleteAction("good", "all required health checks passed", new, True, False)

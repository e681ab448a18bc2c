"""Pure decisions about deployments: order after a deploy, rollback, what to keep.

A loader list is ordered: ``[0]`` boots next; the booted deployment is
somewhere in it (or nowhere, for a sysroot that has never booted).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Entry", "after_deploy", "after_rollback", "roles", "without_pending"]


@dataclass(frozen=True)
class Entry:
    id: str
    pinned: bool = False


def roles(order: Sequence[str], booted: str | None) -> dict[str, str]:
    """Name each deployment: booted, pending (next boot, not booted), rollback, other."""
    out: dict[str, str] = {}
    if not order:
        return out
    if booted is not None and booted in order:
        b = order.index(booted)
        for i, d in enumerate(order):
            if d == booted:
                out[d] = "booted"
            elif i == 0:
                out[d] = "pending"
            elif i > b and "rollback" not in out.values():
                out[d] = "rollback"
            else:
                out[d] = "other"
    else:
        for i, d in enumerate(order):
            out[d] = "pending" if i == 0 else ("rollback" if i == 1 else "other")
    return out


def after_deploy(entries: Sequence[Entry], booted: str | None, new: str) -> list[Entry]:
    """The loader list after deploying ``new``: new, booted, one rollback, pinned ones.

    A pending deployment that never booted is replaced by the new one (unless pinned).
    """
    ids = [e.id for e in entries]
    out = [Entry(new)]
    if booted is not None and booted in ids:
        b = ids.index(booted)
        out.append(entries[b])
        rollback = next((e for e in entries[b + 1:]), None)
    else:
        rollback = next((e for e in entries if e.id != new), None)
    if rollback is not None and rollback.id not in {e.id for e in out}:
        out.append(rollback)
    for e in entries:
        if e.pinned and e.id not in {x.id for x in out}:
            out.append(e)
    return out


def after_rollback(entries: Sequence[Entry], booted: str | None) -> list[Entry]:
    """The loader list after ``rollback``.

    With a pending deployment, the booted one becomes the next boot again (the
    pending one stays as the rollback). Without one, the rollback deployment
    becomes the next boot.

    Raises:
        ValueError: there is nothing to roll back to.
    """
    ids = [e.id for e in entries]
    if len(entries) < 2:
        raise ValueError("there is no rollback deployment")
    if booted is not None and booted in ids and ids[0] != booted:
        b = ids.index(booted)
        return [entries[b], *entries[:b], *entries[b + 1:]]
    return [entries[1], entries[0], *entries[2:]]


def without_pending(entries: Sequence[Entry], booted: str | None
                    ) -> tuple[list[Entry] | None, str]:
    """The loader list after ``cleanup -p``, and what boots next then, in words.

    The deployments before the booted one (the pending one, and any other that
    was deployed after it) go, so that the booted one boots next again; pinned ones
    stay, behind it. When the
    booted deployment is unknown (a sysroot that never booted) or not in the list
    (``run/atoll/booted`` names something else), which one is pending cannot be
    told: the list stays as it is (None).
    """
    ids = [e.id for e in entries]
    if booted is None:
        return None, ("no booted deployment is known (this sysroot has not booted): the boot "
                      "order is unchanged; `atoll undeploy N` removes one")
    if booted not in ids:
        return None, (f"the booted deployment {booted[:16]} is not in the boot order: the boot "
                      "order is unchanged; `atoll undeploy N` removes one")
    b = ids.index(booted)
    return [*entries[b:], *(e for e in entries[:b] if e.pinned)], \
        "the booted deployment boots next"

"""What operators do with rollouts through the API: create, list, status, halt, resume,
abort. Authorized against the caller's :class:`atoll.control.auth.Principal` (viewer
reads; operator acts) and its customer scope: a rollout over one customer is seen by
its tokens, one over every customer only by every-customer tokens. Every action is an
event (``rollout-created``, ``-halted``, ``-resumed``, ``-aborted``).

The decisions are :mod:`atoll.control.rollouts`'; storage is
:mod:`atoll.control.rollout_store`'s. Functions take the caller's session and
return JSON-able dicts; they raise :class:`atoll.control.errors.ApiError`.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from atoll.control import rollout_store as store
from atoll.control import rollouts as ro
from atoll.control.auth import Principal
from atoll.control.errors import ApiError, conflict, forbidden, not_found
from atoll.control.models import Customer, Host, RolloutHost, RolloutRow
from atoll.control.operations import _customer_id, _require
from atoll.core.errors import InputError

__all__ = ["abort", "create", "halt", "list_rollouts", "resume", "status"]

_COMMIT = re.compile(r"^[0-9a-f]{64}$")


def _invalid(exc: InputError) -> ApiError:
    return ApiError(422, "invalid", exc.brief, details=exc.details,
                    resolution=exc.resolution)


def _iso(t: dt.datetime | None) -> str | None:
    return t.astimezone(dt.UTC).isoformat(timespec="seconds") if t else None


def _row(s: Session, p: Principal, rollout_id: str, *, lock: bool = False) -> RolloutRow:
    q = select(RolloutRow).where(RolloutRow.id == rollout_id)
    if lock:
        q = q.with_for_update()
    row = s.scalars(q).first()
    if row is None or not p.sees(row.customer_id):
        raise not_found(f"rollout {rollout_id!r}")
    return row


def _summary(row: RolloutRow, customers: Mapping[int, str]) -> dict[str, Any]:
    doc = row.doc
    return {"id": row.id, "customer": customers.get(row.customer_id)
            if row.customer_id is not None else None,
            "labels": doc.get("labels") or {}, "channel": row.channel,
            "from_version": doc.get("from_version"), "to_version": doc["to_version"],
            "state": row.state, "wave": doc.get("wave"), "members": len(doc["members"]),
            "halt": doc.get("halt"), "created": doc.get("created"),
            "created_by": doc.get("created_by"), "ended": doc.get("ended"),
            "updated_at": _iso(row.updated_at)}


def _customers(s: Session) -> dict[int, str]:
    return {cid: name for cid, name in s.execute(select(Customer.id, Customer.name))}


# Ids a rollout may not take: they name pages of the console (/console/rollouts/new).
RESERVED_IDS = frozenset({"new"})


def create(s: Session, p: Principal, *, rollout_id: str, customer: str | None,
           labels: Mapping[str, str], channel: str, versions: Sequence[Mapping[str, str]],
           to_version: str, from_version: str | None, floors: Sequence[str],
           dead_ends: Sequence[str], spec: Mapping[str, Any],
           now: dt.datetime) -> dict[str, Any]:
    """A new running rollout over the hosts the group matches now (its members).

    ``versions``: the signed versions it chooses among, oldest first
    (``[{"version", "commit"}]``; every host's version outside them is skipped).

    Raises:
        ApiError: 403 (role; a group over every customer from a scoped token), 404 (a
            customer not in scope), 409 (the id exists), 422 (a bad spec, versions,
            target, floor, or no host in the group).
    """
    _require(p, "operator")
    cid = None
    if customer is not None:
        cid = _customer_id(s, p, customer)
    elif not p.everywhere:
        raise forbidden("a rollout over every customer needs a token whose scope is every "
                        "customer", "give the customer")
    if rollout_id in RESERVED_IDS:
        raise ApiError(422, "invalid", f"id: {rollout_id!r} is reserved (the console's "
                       "/rollouts/new is its create form); choose another")
    if s.get(RolloutRow, rollout_id) is not None:
        raise conflict(f"a rollout {rollout_id!r} exists already (ids stay, even ended)")
    names = [str(v.get("version", "")) for v in versions]
    if not names or len(set(names)) != len(names) or not all(names):
        raise ApiError(422, "invalid", "versions: give each signed version once, oldest "
                       "first, as {version, commit}")
    for v in versions:
        if not _COMMIT.match(str(v.get("commit", ""))):
            raise ApiError(422, "invalid", f"versions: {v.get('version')!r}: commit must be "
                           "64 lowercase hex digits")
    try:
        parsed = ro.RolloutSpec.from_json(spec)
        fleet = store.fleet_facts(s, cid)
        rollout = ro.create_rollout(
            rollout_id, ro.Selector(customer, tuple(sorted(labels.items()))), to_version,
            parsed, [f for _, f in fleet.values()], ro.VersionOrder(tuple(names)), now,
            created_by=p.actor, from_version=from_version, floors=floors,
            dead_ends=dead_ends)
    except InputError as exc:
        raise _invalid(exc) from None
    row = RolloutRow(id=rollout_id, customer_id=cid, state=rollout.state.value,
                     channel=channel, versions=[{"version": str(v["version"]),
                                                 "commit": str(v["commit"])}
                                                for v in versions],
                     doc=rollout.to_json(), created_at=now, updated_at=now)
    s.add(row)
    s.flush()
    plan = ro.plan_waves(rollout)
    order = store.order_of(row)
    for m in rollout.members:
        wave = plan.wave_of(m.host)
        wave = plan.last if wave is None else wave
        progress = ro.HostProgress(m.host)
        phase = ro.phase_of(rollout, plan, progress, fleet[m.host][1], order)
        s.add(RolloutHost(rollout_id=rollout_id, host_id=m.host, wave=wave,
                          member=True, phase=phase.value, progress=progress.to_json(),
                          updated_at=now))
    store.event(s, now, p.actor, "rollout-created",
                {"to_version": to_version, "labels": dict(labels), "channel": channel,
                 "members": len(rollout.members),
                 "waves": [len(w.hosts) for w in plan.waves]}, row=row)
    s.flush()
    return status(s, p, rollout_id, now)


def list_rollouts(s: Session, p: Principal, *, state: str | None = None) -> list[dict[str, Any]]:
    q = select(RolloutRow).order_by(RolloutRow.created_at, RolloutRow.id)
    if state is not None:
        q = q.where(RolloutRow.state == state)
    names = _customers(s)
    return [_summary(r, names) for r in s.scalars(q) if p.sees(r.customer_id)]


def status(s: Session, p: Principal, rollout_id: str, now: dt.datetime, *,
           hosts: bool = False) -> dict[str, Any]:
    """The rollout, its waves (hosts and phases), failing hosts and the driver's next
    step (what ``assess`` says now; it is taken by the driver, not by this read)."""
    row = _row(s, p, rollout_id)
    rollout = store.load(row)
    plan = store.plan_of(row, rollout)
    tally = store.tally_of(s, row, rollout, plan)
    step = ro.assess(rollout, plan, tally, store.order_of(row), now)
    out = _summary(row, _customers(s)) | {
        "spec": rollout.spec.to_json(), "floors": list(rollout.floors),
        "dead_ends": sorted(rollout.dead_ends), "versions": row.versions,
        "excused": sorted(rollout.excused),
        "waves": [{"index": w.index, "percent": w.percent, "canary": w.canary,
                   "hosts": len(w.hosts), "started": w.index <= rollout.wave,
                   "phases": {ph.value: n for ph, n in sorted(tally.waves[w.index].items())
                              if n}}
                  for w in plan.waves],
        "in_flight": tally.counts.in_flight, "failed": tally.counts.failed,
        "sample": tally.counts.sample, "failing": list(tally.failing),
        "next": {"action": step.action, "code": step.code, "reason": step.reason,
                 "wake": _iso(step.wake)}}
    if hosts:
        stored = store.stored_progress(s, row.id)
        found = {h.id: h.name for h in s.scalars(select(Host).where(
            Host.id.in_(list(stored))))}
        out["hosts"] = [{"host": hid, "name": found.get(hid), "wave": rh.wave,
                         "member": rh.member, "phase": rh.phase, "progress": rh.progress}
                        for hid, rh in sorted(stored.items(),
                                              key=lambda kv: (kv[1].wave, kv[0]))]
    return out


def _act(s: Session, p: Principal, rollout_id: str, kind: str, now: dt.datetime,
         change: Any, reason: str | None = None) -> dict[str, Any]:
    _require(p, "operator")
    row = _row(s, p, rollout_id, lock=True)
    before = store.load(row)
    try:
        after = change(before)
    except InputError as exc:
        raise conflict(exc.brief) from None
    changed = after is not before
    if changed:
        store.save(row, after, now)
        h = after.halt
        store.event(s, now, p.actor, kind, {"state": after.state.value,
                                            "reason": h.reason if h else reason,
                                            "excused": sorted(after.excused - before.excused)},
                    row=row)
        s.flush()
    return status(s, p, rollout_id, now) | {"changed": changed}


def halt(s: Session, p: Principal, rollout_id: str, reason: str,
         now: dt.datetime) -> dict[str, Any]:
    """Halt a running rollout (a halted one: unchanged). Raises: ApiError 409 (ended)."""
    def change(r: ro.Rollout) -> ro.Rollout:
        return r if r.state is ro.RolloutState.HALTED else ro.halt(r, p.actor, reason, now)
    return _act(s, p, rollout_id, "rollout-halted", now, change)


def resume(s: Session, p: Principal, rollout_id: str, excuse: bool,
           now: dt.datetime, reason: str | None = None) -> dict[str, Any]:
    """Resume a halted rollout; ``excuse``: the halt's failing hosts (and every host
    failed so far) no longer count against the budget (they stay where they are);
    ``reason``: why, recorded in the ``rollout-resumed`` event. A running one:
    unchanged. Raises: ApiError 409 (ended)."""
    def change(r: ro.Rollout) -> ro.Rollout:
        if r.state is ro.RolloutState.RUNNING:
            return r
        failed: list[str] = []
        if excuse:
            failed = list(s.scalars(select(RolloutHost.host_id).where(
                RolloutHost.rollout_id == r.id,
                RolloutHost.phase == ro.Phase.FAILED.value)))
            failed += list(r.halt.hosts if r.halt else ())
        return ro.resume(r, p.actor, now, excuse=failed)
    return _act(s, p, rollout_id, "rollout-resumed", now, change, reason or None)


def abort(s: Session, p: Principal, rollout_id: str, reason: str,
          now: dt.datetime) -> dict[str, Any]:
    """End a running or halted rollout; hosts stay where they are (an aborted one:
    unchanged). Raises: ApiError 409 (finished)."""
    def change(r: ro.Rollout) -> ro.Rollout:
        return r if r.state is ro.RolloutState.ABORTED else ro.abort(r, p.actor, reason, now)
    return _act(s, p, rollout_id, "rollout-aborted", now, change)

"""Rollouts on the database: stored rollouts, their hosts' progress, the check-in's
decision and the driver's tick. The decisions themselves are the pure ones of
:mod:`atoll.control.rollouts`; this module only loads, calls and stores.

    rollouts       (RolloutRow)   the Rollout document, its state, signed versions
    rollout_hosts  (RolloutHost)  per host: wave, phase, HostProgress

On a check-in (:func:`decide`, inside the check-in's transaction): the oldest
active rollout that includes the host (a member, or a host its group matches now)
is locked (``SELECT ... FOR UPDATE`` on PostgreSQL; SQLite writes one at a time),
the check-in is folded into the host's progress (``observe``), the rollout halts at
once when the failure budget is exceeded, and ``decide_host`` gives the target and
the steps allowed. A host the rollout holds (its wave has not started, halted,
failed, at the target) gets the rollout's target with no step allowed: atolld then
takes nothing (``atoll.agent.control.gate``).

The driver (:func:`drive`) runs ``assess`` over every running rollout: it folds
silence into in-flight hosts' progress (timeouts), advances a wave whose quorum
finished and soaked, finishes, or halts. The server runs it every ``drive_s``
seconds in a thread (``atoll fleet serve --rollout-tick``); a budget halt does not
wait for it (the check-in that exceeds the budget halts the rollout).

What a check-in's report means to a rollout (:func:`facts_of`): ``version`` the
booted version; ``committed`` the last boot has a result (good, rolled back or
failed); a rollback from the version of the deployment the last boot names
(else the rollback deployment's); failing required checks of the last boot; apps
whose health is not healthy/running/starting; ``apply_due`` when the host reports a
pending deployment, or a prepared one under policy mode ``apply``.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, object_session

from atoll.control import rollouts as ro
from atoll.control.db import Database, unavailable
from atoll.control.models import (
    Customer,
    Event,
    Host,
    HostLabel,
    RolloutHost,
    RolloutRow,
    doc_digest,
)
from atoll.core.text import printable

__all__ = ["ACTIVE", "HOST_EVENT_BUDGET", "Held", "commit_of", "decide", "drive", "drive_one",
           "event", "facts_of", "fleet_facts", "load", "order_of", "plan_of", "save",
           "stored_progress", "tally_of"]

log = logging.getLogger("atoll.control")

ACTIVE = (ro.RolloutState.RUNNING.value, ro.RolloutState.HALTED.value)
_UNHEALTHY_OK = ("healthy", "running", "starting")
# codes after which the rollout does not answer the host: it follows its own policy.
# ``ahead``: newer than the target (never sent back; done for the quorum);
# ``unknown-version``, ``other-channel``: not on the rollout's path (skipped, with a
# ``rollout-host-skipped`` event the first time). ``at-target`` is *not* released: it is
# kept at the target, as a host that succeeded, while the rollout is active.
_NOT_GOVERNING = ("not-in-group", "rollout-finished", "rollout-aborted", "ahead",
                  "unknown-version", "other-channel")


# Session.info key: a check-in's ``kind -> bool``, whether an event about its host is
# within the host's event budget (atoll.control.service sets it)
HOST_EVENT_BUDGET = "atoll.host_event_budget"

_LOADED: dict[str, ro.Rollout] = {}
_LOADED_MAX = 64


def load(row: RolloutRow) -> ro.Rollout:
    """The rollout ``row`` stores. Parsed once per document (by ``doc_sha256``, a content
    address: right whatever database or instance wrote it), so a check-in neither loads
    nor parses the document, which lists every member (0.8 MB for 10,000)."""
    digest = row.doc_sha256
    rollout = _LOADED.get(digest) if digest else None
    if rollout is None:
        doc = row.doc
        if digest and doc_digest(doc) != digest:  # loaded before a newer doc_sha256 was
            session = object_session(row)
            if session is not None:
                session.refresh(row, ["doc"])
            doc = row.doc
        rollout = ro.Rollout.from_json(doc)
        if digest and doc_digest(doc) == digest:
            if len(_LOADED) >= _LOADED_MAX:
                _LOADED.clear()
            _LOADED[digest] = rollout
    return rollout


def save(row: RolloutRow, rollout: ro.Rollout, now: dt.datetime) -> None:
    row.doc, row.state, row.updated_at = rollout.to_json(), rollout.state.value, now


_PLANS: dict[tuple[str, ro.RolloutSpec, int], tuple[tuple[ro.Member, ...], ro.WavePlan]] = {}
_PLANS_MAX = 64


def plan_of(row: RolloutRow, rollout: ro.Rollout) -> ro.WavePlan:
    """The rollout's wave plan. It depends only on what is fixed at creation (id,
    spec, members), so it is kept by those instead of derived again (seeds hashed and
    sorted) at every check-in; at most ``_PLANS_MAX`` plans are kept. The members are
    matched by identity (the cache holds the tuple, so its id is not reused): a loaded
    rollout is cached with its members (:func:`load`), and a check-in never hashes or
    compares 10,000 of them."""
    key = (row.id, rollout.spec, id(rollout.members))
    hit = _PLANS.get(key)
    if hit is not None and hit[0] is rollout.members:
        return hit[1]
    plan = ro.plan_waves(rollout)
    if len(_PLANS) >= _PLANS_MAX:
        _PLANS.clear()
    _PLANS[key] = (rollout.members, plan)
    return plan


#: the (version, commit) pairs each channel signs now (``ReleaseSource.releases``)
Signed = Mapping[str, frozenset[tuple[str, str]]]


def order_of(row: RolloutRow, signed: Signed | None = None) -> ro.VersionOrder:
    """The rollout's versions, oldest first; with ``signed``, only those its channel
    still signs with the same commit (a pruned target or floor then halts it)."""
    keep = None if signed is None else signed.get(row.channel, frozenset())
    return ro.VersionOrder(tuple(str(v["version"]) for v in row.versions
                                 if keep is None or (str(v["version"]), str(v["commit"])) in keep),
                           row.channel)


def commit_of(row: RolloutRow, version: str) -> str | None:
    return next((str(v["commit"]) for v in row.versions if v["version"] == version), None)


def event(s: Session, now: dt.datetime, actor: str, kind: str, data: dict[str, Any], *,
          row: RolloutRow, host: Host | None = None) -> None:
    """Append one event about a rollout (its customer's; a host's when given)."""
    s.add(Event(time=now, actor=actor, kind=kind, data={"rollout": row.id, **data},
                host_id=host.id if host else None, host_name=host.name if host else None,
                customer_id=host.customer_id if host else row.customer_id))


# -- facts -------------------------------------------------------------------


def _get(d: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(d, dict):
            return None
        d = d.get(key)
    return d


def _when(value: Any) -> dt.datetime | None:
    if not isinstance(value, str):
        return None
    try:
        t = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=dt.UTC)


def facts_of(host: Host, customer: str | None, labels: Mapping[str, str]) -> ro.HostFacts:
    """What a rollout knows of ``host`` from its last check-in (module docstring)."""
    report = host.report or {}
    status = report.get("status") or {}
    boot = status.get("last_boot") or {}
    result = boot.get("result")
    rolled_from = None
    if result == "rolled-back":
        dep = next((d for d in status.get("deployments") or []
                    if isinstance(d, dict) and d.get("id") == boot.get("deployment")), None)
        if dep is None or dep.get("id") == _get(status, "booted", "id"):
            dep = status.get("rollback")
        rolled_from = _get(dep, "version")
    checks = [c for c in boot.get("checks") or [] if isinstance(c, dict)]
    failed = tuple(sorted(str(c.get("name")) for c in checks
                          if c.get("required") and c.get("ok") is False))
    unhealthy = []
    for app in report.get("apps") or []:
        container = app.get("container") if isinstance(app, dict) else None
        word = (container.get("health") or container.get("state")) if isinstance(
            container, dict) else "missing"
        if word not in _UNHEALTHY_OK:
            unhealthy.append(str(app.get("name")))
    state = _get(status, "update", "state")
    mode = _get(report, "policy", "mode")
    channel = _get(status, "update", "channel")
    return ro.HostFacts(
        host=host.id, customer=customer, labels=dict(labels),
        version=host.booted_version, pending=host.pending_version,
        # the last boot must be this deployment's: right after a reboot, before
        # boot-complete, the report still carries the previous boot's result
        committed=result == "rolled-back" or (
            result in ("good", "failed")
            and boot.get("deployment") in (None, _get(status, "booted", "id"))),
        rolled_back_from=rolled_from if isinstance(rolled_from, str) else None,
        rollback_reason=str(boot.get("reason") or ""),
        rolled_back_at=_when(boot.get("time")) if rolled_from else None,
        failed_checks=failed, unhealthy_apps=tuple(sorted(unhealthy)),
        apply_due=state == "pending" or (state == "prepared" and mode == "apply"),
        seen=host.last_seen, lost=host.lost,
        channel=channel if isinstance(channel, str) and channel else None)


def _labels_of(s: Session, host_ids: list[str]) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {h: {} for h in host_ids}
    for i in range(0, len(host_ids), 500):
        for hid, key, value in s.execute(select(HostLabel.host_id, HostLabel.key,
                                                HostLabel.value)
                                         .where(HostLabel.host_id.in_(host_ids[i:i + 500]))):
            out[hid][key] = value
    return out


def fleet_facts(s: Session, customer_id: int | None) -> dict[str, tuple[Host, ro.HostFacts]]:
    """Every host (of ``customer_id``, or all) and its facts, by host id."""
    q = select(Host)
    if customer_id is not None:
        q = q.where(Host.customer_id == customer_id)
    hosts = s.scalars(q).all()
    names = {cid: name for cid, name in s.execute(select(Customer.id, Customer.name))}
    labels = _labels_of(s, [h.id for h in hosts])
    return {h.id: (h, facts_of(h, names.get(h.customer_id), labels[h.id])) for h in hosts}


# -- progress and counts -----------------------------------------------------


def stored_progress(s: Session, rollout_id: str) -> dict[str, RolloutHost]:
    return {r.host_id: r for r in s.scalars(
        select(RolloutHost).where(RolloutHost.rollout_id == rollout_id))}


def _counts(s: Session, rollout: ro.Rollout) -> tuple[ro.Counts, tuple[str, ...]]:
    """In flight, counted failures and sample, from the stored phases; the failing hosts.

    Counted by the database (one indexed ``GROUP BY`` over the rollout's phases); only
    the failed hosts' ids are read (a rollout halts on few).
    """
    by_phase = {phase: int(n) for phase, n in s.execute(
        select(RolloutHost.phase, func.count()).where(RolloutHost.rollout_id == rollout.id)
        .group_by(RolloutHost.phase))}
    failed = s.scalars(select(RolloutHost.host_id).where(
        RolloutHost.rollout_id == rollout.id,
        RolloutHost.phase == ro.Phase.FAILED.value)).all()
    failing = tuple(sorted(h for h in failed if h not in rollout.excused))
    succeeded = int(by_phase.get(ro.Phase.SUCCEEDED.value, 0))
    if rollout.excused:  # few: the failures an operator accepted on resume
        succeeded -= len(s.scalars(select(RolloutHost.host_id).where(
            RolloutHost.rollout_id == rollout.id,
            RolloutHost.phase == ro.Phase.SUCCEEDED.value,
            RolloutHost.host_id.in_(sorted(rollout.excused)))).all())
    in_flight = int(by_phase.get(ro.Phase.IN_FLIGHT.value, 0))
    return ro.Counts(in_flight, len(failing), len(failing) + succeeded), failing


def _store(s: Session, rollout: ro.Rollout, plan: ro.WavePlan, order: ro.VersionOrder,
           rh: RolloutHost, progress: ro.HostProgress, facts: ro.HostFacts,
           now: dt.datetime, host: Host | None, row: RolloutRow) -> None:
    """Store a host's progress and phase; an outcome reached now is an event, and so is
    a host found off the rollout's path (skipped: its reason recorded once)."""
    before = ro.HostProgress.from_json(rh.progress) if rh.progress else None
    rh.progress = progress.to_json()
    rh.phase = ro.phase_of(rollout, plan, progress, facts, order).value
    rh.updated_at = now
    code, why = None, ""
    if rh.phase == ro.Phase.SKIPPED.value:
        _, code, why = ro.next_step(rollout, facts.version, order, facts.channel)
    skipped = None if code is None else f"{code}: {why}"[:300]
    if host is not None and skipped != rh.skipped:
        rh.skipped = skipped
        admit = s.info.get(HOST_EVENT_BUDGET)  # set by a check-in (atoll.control.limits)
        if skipped is not None and (admit is None or admit("rollout-host-skipped")):
            event(s, now, "server", "rollout-host-skipped",
                  {"code": code, "reason": why, "version": facts.version,
                   "channel": facts.channel}, row=row, host=host)
    if host is not None and progress.outcome is not None and (
            before is None or before.outcome != progress.outcome):
        event(s, now, "server", f"rollout-host-{progress.outcome.value}",
              {"version": progress.step, "failure": progress.failure and progress.failure.value,
               "detail": progress.detail}, row=row, host=host)


def tally_of(s: Session, row: RolloutRow, rollout: ro.Rollout, plan: ro.WavePlan,
             now: dt.datetime | None = None) -> ro.Tally:
    """The rollout's tally from every member's stored progress and current facts (and
    hosts its group matches now); with ``now``, silence is folded into in-flight hosts'
    progress first (timeouts), and stored."""
    order = order_of(row)
    stored = stored_progress(s, row.id)
    fleet = fleet_facts(s, row.customer_id)
    ids = {m.host for m in rollout.members} | set(stored) | {
        h for h, (_, f) in fleet.items() if rollout.selector.matches(f.customer, f.labels)}
    pairs = []
    for hid in sorted(ids):
        host, facts = fleet.get(hid, (None, ro.HostFacts(hid, lost=True)))
        rh = stored.get(hid)
        progress = ro.HostProgress.from_json(rh.progress) if rh else ro.HostProgress(hid)
        if now is not None and rh is not None and progress.granted is not None:
            seen = ro.observe(rollout, progress, facts, now)
            if seen != progress:
                _store(s, rollout, plan, order, rh, seen, facts, now, host, row)
                progress = seen
        pairs.append((progress, facts))
    return ro.tally(rollout, plan, pairs, order)


# -- the check-in ------------------------------------------------------------


@dataclass(frozen=True)
class Held:
    """A rollout's answer for a host: ``version``/``commit`` to move to (or be held at),
    the steps allowed (empty: held), the reason."""

    channel: str
    version: str
    commit: str
    allow: tuple[str, ...]
    reason: str


def decide(s: Session, host: Host, now: dt.datetime) -> Held | None:
    """The answer of the oldest active rollout that includes ``host`` (None: none does).

    Called inside the check-in's transaction (the host row is already updated).
    """
    candidates = s.scalars(select(RolloutRow).where(
        RolloutRow.state.in_(ACTIVE),
        (RolloutRow.customer_id.is_(None)) | (RolloutRow.customer_id == host.customer_id))
        .order_by(RolloutRow.created_at, RolloutRow.id)).all()
    if not candidates:  # the common case: no rollout for this customer now
        return None
    customer = s.get(Customer, host.customer_id)
    labels = _labels_of(s, [host.id])[host.id]
    facts = facts_of(host, customer.name if customer else None, labels)
    for candidate in candidates:
        rh = s.get(RolloutHost, (candidate.id, host.id))
        if rh is None and not load(candidate).selector.matches(facts.customer, facts.labels):
            continue
        row = s.scalars(select(RolloutRow).where(RolloutRow.id == candidate.id)
                        .with_for_update().execution_options(populate_existing=True)).one()
        if row.state not in ACTIVE:
            continue
        # read again under the lock: the driver may have changed it meanwhile
        rh = s.scalars(select(RolloutHost).where(RolloutHost.rollout_id == row.id,
                                                 RolloutHost.host_id == host.id)
                       .execution_options(populate_existing=True)).first()
        held = _decide_in(s, row, host, facts, rh, now)
        if held is not None:
            return held
    return None


def _decide_in(s: Session, row: RolloutRow, host: Host, facts: ro.HostFacts,
               rh: RolloutHost | None, now: dt.datetime) -> Held | None:
    rollout, order = load(row), order_of(row)
    plan = plan_of(row, rollout)
    if rh is None:
        wave = plan.wave_of(host.id)
        rh = RolloutHost(rollout_id=row.id, host_id=host.id,
                         wave=plan.last if wave is None else wave, member=wave is not None,
                         phase=ro.Phase.QUEUED.value, progress={}, updated_at=now)
        s.add(rh)
    progress = ro.HostProgress.from_json(rh.progress) if rh.progress else \
        ro.HostProgress(host.id)
    progress = ro.observe(rollout, progress, facts, now)
    _store(s, rollout, plan, order, rh, progress, facts, now, host, row)
    s.flush()
    counts, failing = _counts(s, rollout)
    over = rollout.spec.budget.exceeded(counts.failed, counts.sample)
    if rollout.state is ro.RolloutState.RUNNING and over is not None:
        rollout = ro.advance(rollout, ro.Step("halt", "failure-budget", over, hosts=failing),
                             now)
        save(row, rollout, now)
        event(s, now, "server", "rollout-halted", {"code": "failure-budget", "reason": over,
                                                   "hosts": list(failing)}, row=row)
    decision = ro.decide_host(rollout, plan, counts, progress, facts, order, now)
    if decision.progress != progress:
        _store(s, rollout, plan, order, rh, decision.progress, facts, now, host, row)
    if decision.granted:
        event(s, now, "server", "rollout-apply-granted",
              {"version": decision.target, "wave": decision.wave}, row=row, host=host)
    if decision.code in _NOT_GOVERNING:
        return None
    version = decision.target or rollout.to_version
    commit = commit_of(row, version)
    if commit is None:  # cannot happen: a step is always among the rollout's versions
        return None
    allow = tuple(step for step, ok in (("download", decision.download),
                                        ("prepare", decision.prepare),
                                        ("apply", decision.apply)) if ok)
    if decision.target is None:
        allow = ()
    return Held(row.channel, version, commit, allow,
                f"rollout {row.id}: {decision.reason}")


# -- the driver --------------------------------------------------------------


def drive_one(s: Session, row: RolloutRow, now: dt.datetime,
              signed: Signed | None = None) -> ro.Step:
    """One driver step for a locked, running rollout; returns the step taken.
    ``signed``: what the repository signs now (None: not read; the stored versions)."""
    rollout = load(row)
    plan = plan_of(row, rollout)
    tally = tally_of(s, row, rollout, plan, now)
    step = ro.assess(rollout, plan, tally, order_of(row, signed), now)
    if step.action != "none":
        save(row, ro.advance(rollout, step, now), now)
        kind = {"advance": "rollout-advanced", "halt": "rollout-halted",
                "finish": "rollout-finished"}[step.action]
        event(s, now, "server", kind, {"code": step.code, "reason": step.reason,
                                       "wave": step.wave, "hosts": list(step.hosts)}, row=row)
    return step


def drive(db: Database, now: dt.datetime, signed: Signed | None = None,
          ) -> list[dict[str, Any]]:
    """Run the driver over every running rollout, each in its own transaction.
    ``signed``: the (version, commit) pairs each channel signs now, when the server
    reads the repository: a rollout whose target or a floor is no longer signed (a
    publish pruned it) halts with code ``unsigned``.

    Returns what was done (``[{"rollout", "action", "code", "reason"}]``, steps other
    than ``none``). Safe with several server instances (the rollout's row is locked).
    """
    with db.read() as s:
        ids = list(s.scalars(select(RolloutRow.id).where(
            RolloutRow.state == ro.RolloutState.RUNNING.value).order_by(RolloutRow.id)))
    done = []
    for rid in ids:
        try:
            with db.write() as s:
                row = s.scalars(select(RolloutRow).where(RolloutRow.id == rid)
                                .with_for_update()).first()
                if row is None or row.state != ro.RolloutState.RUNNING.value:
                    continue
                step = drive_one(s, row, now, signed)
        except Exception as exc:  # one rollout's fault never stops the others'
            if unavailable(exc):
                raise  # the database is away: the whole tick waits for the next
            log.exception("rollout %s: the driver step failed; the other rollouts go on",
                          printable(rid))
            continue
        if step.action != "none":
            done.append({"rollout": rid, "action": step.action, "code": step.code,
                         "reason": step.reason})
    return done

"""Rollouts served: simulated hosts (signed check-ins over HTTP on 127.0.0.1) against
the control plane on SQLite and PostgreSQL: waves granted only to their members, a
rollback halts the rollout, nothing is granted after the halt, resume continues, a
restart keeps wave membership, the driver advances after the soak, abort ends it."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import pytest

from atoll.control import rollout_store
from atoll.control.db import Database
from tests.integration.control_fixtures import (
    Control,
    SimHost,
    commit_of,
    control_db_fixture,  # noqa: F401 (a fixture)
    control_fixture,  # noqa: F401 (a fixture)
    host_status,
    pg_fixture,  # noqa: F401 (a fixture)
    start_control,
)

VERSIONS = [{"version": v, "commit": commit_of(v)} for v in ("1", "2")]
ALL = ["download", "prepare", "apply"]


def _enrol(c: Control, name: str, **labels: str) -> SimHost:
    h = SimHost(c.server.url, name)
    status, doc = h.enrol(c.enrol_token("acme", labels=labels))
    assert status == 200, doc
    return h


def _prepared(h: SimHost, **kw: Any) -> dict[str, Any]:
    """A check-in of a host on v1 with v2 prepared, its policy applying by itself."""
    status, doc = h.checkin(status=kw.pop("status", None) or host_status("1",
                                                                          update="prepared"),
                            policy={"mode": "apply"}, **kw)
    assert status == 200, doc
    return dict(doc)


def _rolled_back(boot_time: str) -> dict[str, Any]:
    """v1 booted again after v2 failed its boot: a boot-count rollback from v2."""
    st = host_status("1", result="rolled-back", reason="boot counting: 3 failed boots",
                     boot_time=boot_time, rollbacks=1)
    v2 = dict(st["booted"], id=f"{commit_of('2')}.1", commit=commit_of("2"), version="2",
              role="rollback", index=1)
    st["deployments"].append(v2)
    st["rollback"] = v2
    st["last_boot"]["deployment"] = v2["id"]
    return st


def _status(c: Control) -> dict[str, Any]:
    status, doc = c.api.call("GET", "/v1/rollouts/r1", query={"hosts": "true"})
    assert status == 200, doc
    return dict(doc)


def _waves(doc: dict[str, Any]) -> dict[str, int]:
    return {h["host"]: h["wave"] for h in doc["hosts"]}


def test_rollout_waves_halt_resume_restart(control_db: Database) -> None:
    c = start_control(control_db)
    try:
        c.customer("acme")
        hosts = [_enrol(c, f"db{i:02}", role="db") for i in range(10)]
        other = _enrol(c, "web01", role="web")
        for h in [*hosts, other]:
            _prepared(h)
        # bad input changes nothing
        bad = {"id": "r1", "customer": "acme", "labels": {"role": "db"}, "channel": "site/db",
               "versions": VERSIONS, "to_version": "3"}
        status, doc = c.api.call("POST", "/v1/rollouts", bad)
        assert status == 422 and "not signed" in doc["brief"], doc
        status, doc = c.api.call("POST", "/v1/rollouts", dict(bad, to_version="2",
                                                               spec={"waves": [50, 10]}))
        assert status == 422, doc
        # a version no host would take (atolld refuses answers naming it): refused here
        for nasty in ("2\n", "2\x00", "\u2028"):
            status, doc = c.api.call("POST", "/v1/rollouts", dict(bad, to_version=nasty))
            assert status == 422 and doc["kind"] == "invalid", doc
        # "new" names the console's create form (/console/rollouts/new)
        status, doc = c.api.call("POST", "/v1/rollouts", dict(bad, id="new", to_version="2"))
        assert status == 422 and "reserved" in doc["brief"], doc
        assert c.api.call("GET", "/v1/rollouts")[1] == []

        status, doc = c.api.call("POST", "/v1/rollouts", dict(
            bad, to_version="2", spec={"waves": [20, 100], "canary_wave": False,
                                       "soak_s": 600, "budget": {"max_failures": 0}}))
        assert status == 201, doc
        assert doc["state"] == "running" and doc["members"] == 10
        assert [w["hosts"] for w in doc["waves"]] == [2, 8]
        assert c.api.call("POST", "/v1/rollouts", dict(bad, to_version="2"))[0] == 409
        waves = _waves(_status(c))
        first = {hid for hid, w in waves.items() if w == 0}
        assert len(first) == 2

        # wave 0 only: the target and every step; the rest held at v2 with no step
        answers = {h.host_id: _prepared(h) for h in hosts}
        for hid, d in answers.items():
            assert d["target"] == {"channel": "site/db", "version": "2",
                                   "commit": commit_of("2")}, d
            assert d["allow"] == (ALL if hid in first else []), (hid in first, d)
        web = _prepared(other)
        assert web["target"] is None and web["allow"] == ALL  # not in the group
        assert _status(c)["in_flight"] == 2

        # one of wave 0 rolls back: the budget (0) is exceeded, the rollout halts itself
        bad_host = next(h for h in hosts if h.host_id in first)
        good_host = next(h for h in hosts if h.host_id in first and h is not bad_host)
        c.clock.now += dt.timedelta(minutes=20)
        _prepared(bad_host, status=_rolled_back("2026-12-01T12:10:00Z"))
        doc = _status(c)
        assert doc["state"] == "halted", doc
        assert doc["halt"]["code"] == "failure-budget"
        assert doc["halt"]["hosts"] == [bad_host.host_id]
        assert doc["failing"] == [bad_host.host_id]
        # nothing is granted after the halt, to anyone
        for h in hosts:
            d = _prepared(h)
            assert d["allow"] == [], d
            assert h is bad_host or "halted" in d["reason"], d
        kinds = [e["kind"] for e in c.api.call("GET", "/v1/events",
                                               query={"limit": 1000})[1]]
        assert "rollout-host-failed" in kinds and "rollout-halted" in kinds

        # a restart keeps the rollout, its state and its wave membership
        c.server.stop()
        c = start_control(control_db, clock=c.clock)
        for h in [*hosts, other]:
            h.api.url = c.server.url
        assert _waves(_status(c)) == waves
        assert _status(c)["state"] == "halted"

        # resume (excusing the failure): wave 0's other host may apply again
        status, doc = c.api.call("POST", "/v1/rollouts/r1/resume", {"excuse": True,
                                                                    "reason": "disk replaced"})
        assert status == 200 and doc["state"] == "running" and doc["changed"], doc
        assert doc["excused"] == [bad_host.host_id]
        assert _prepared(good_host)["allow"] == ALL
        assert _prepared(bad_host)["allow"] == []  # a failed host stays where it is
        # the second wave waits for the first to finish and soak
        wave1 = next(h for h in hosts if h.host_id not in first)
        assert _prepared(wave1)["allow"] == []
        _prepared(good_host, status=host_status("2", boot_time="2026-12-01T12:30:00Z"))
        assert c.server.drive() == []  # done, soaking
        c.clock.now += dt.timedelta(seconds=601)
        steps = c.server.drive()
        assert [s["action"] for s in steps] == ["advance"], steps
        doc = _status(c)
        assert doc["wave"] == 1 and all(w["started"] for w in doc["waves"])
        assert _prepared(wave1)["allow"] == ALL

        # halt and abort by an operator: recorded; after abort no rollout governs
        assert c.api.call("POST", "/v1/rollouts/r1/halt", {"reason": "db team asked"})[1][
            "state"] == "halted"
        assert _prepared(wave1)["allow"] == []
        status, doc = c.api.call("POST", "/v1/rollouts/r1/abort", {"reason": "replaced"})
        assert status == 200 and doc["state"] == "aborted"
        assert c.api.call("POST", "/v1/rollouts/r1/resume")[0] == 409
        d = _prepared(wave1)
        assert d["target"] is None and d["allow"] == ALL
        events = c.api.call("GET", "/v1/events", query={"limit": 1000})[1]
        mine = [(e["kind"], e["actor"].split(":")[0]) for e in events
                if e["kind"].startswith("rollout-") and e["host"] is None]
        assert mine == [("rollout-created", "operator"), ("rollout-halted", "server"),
                        ("rollout-resumed", "operator"), ("rollout-advanced", "server"),
                        ("rollout-halted", "operator"), ("rollout-aborted", "operator")]
        assert [e["data"]["reason"] for e in events if e["kind"] == "rollout-resumed"] == [
            "disk replaced"]
    finally:
        c.server.stop()


def test_rollout_scope(control: Control) -> None:
    """A customer's token sees and acts on its customer's rollouts only; a rollout over
    every customer needs an every-customer token."""
    c = control
    c.customer("acme")
    c.customer("beta")
    for cust in ("acme", "beta"):
        h = SimHost(c.server.url, f"db-{cust}")
        assert h.enrol(c.enrol_token(cust))[0] == 200
        assert h.checkin()[0] == 200
    body = {"channel": "site/db", "versions": VERSIONS, "to_version": "2"}
    assert c.api.call("POST", "/v1/rollouts", {"id": "b1", "customer": "beta", **body})[0] \
        == 201
    acme = c.token("acme-op", "operator", ["acme"])
    assert c.api.call("POST", "/v1/rollouts", {"id": "all", **body}, token=acme)[0] == 403
    assert c.api.call("POST", "/v1/rollouts", {"id": "b2", "customer": "beta", **body},
                      token=acme)[0] == 404
    assert c.api.call("GET", "/v1/rollouts", token=acme)[1] == []
    assert c.api.call("GET", "/v1/rollouts/b1", token=acme)[0] == 404
    assert c.api.call("POST", "/v1/rollouts/b1/halt", token=acme)[0] == 404
    assert c.api.call("POST", "/v1/rollouts", {"id": "a1", "customer": "acme", **body},
                      token=acme)[0] == 201
    assert [r["id"] for r in c.api.call("GET", "/v1/rollouts", token=acme)[1]] == ["a1"]


def test_max_in_flight_and_a_silent_host_timed_out_by_the_driver(
        control_db: Database) -> None:
    """``max_in_flight`` bounds apply grants; the server's own driver thread finds a
    host that went silent while applying, counts it as a failure, and frees its slot."""
    c = start_control(control_db, drive_s=0.1)
    try:
        c.customer("acme")
        hosts = [_enrol(c, f"db{i:02}", role="db") for i in range(4)]
        for h in hosts:
            _prepared(h)
        status, doc = c.api.call("POST", "/v1/rollouts", {
            "id": "r1", "customer": "acme", "labels": {"role": "db"}, "channel": "site/db",
            "versions": VERSIONS, "to_version": "2",
            "spec": {"waves": [100], "max_in_flight": 1, "update_timeout_s": 600,
                     "budget": {"max_failures": 3}}})
        assert status == 201, doc
        answers = {h.host_id: _prepared(h)["allow"] for h in hosts}
        applying = [hid for hid, allow in answers.items() if allow == ALL]
        assert len(applying) == 1, answers
        assert all(allow == ["download", "prepare"] for hid, allow in answers.items()
                   if hid not in applying)
        c.clock.now += dt.timedelta(seconds=601)  # the granted host says nothing more
        deadline = time.monotonic() + 30
        while _status(c)["failed"] != 1:
            assert time.monotonic() < deadline, _status(c)
            time.sleep(0.1)
        doc = _status(c)
        assert doc["state"] == "running" and doc["failing"] == applying
        silent = next(h for h in doc["hosts"] if h["host"] == applying[0])
        assert silent["progress"]["failure"] == "timed-out"
        again = [h.host_id for h in hosts if h.host_id not in applying
                 and _prepared(h)["allow"] == ALL]
        assert len(again) == 1
    finally:
        c.server.stop()


def test_one_rollout_failing_never_stops_the_driver_for_the_others(
        control_db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    """A driver step that fails for one rollout (a bug, data it cannot read) is logged,
    and the other rollouts are still driven in the same tick."""
    c = start_control(control_db)
    try:
        c.customer("acme")
        _enrol(c, "db01", role="db")
        for rid in ("bad", "good"):
            status, doc = c.api.call("POST", "/v1/rollouts", {
                "id": rid, "customer": "acme", "labels": {"role": "db"},
                "channel": "site/db", "versions": VERSIONS, "to_version": "2",
                "spec": {"waves": [100]}})
            assert status == 201, doc
        real, driven = rollout_store.drive_one, []

        def drive_one(s: Any, row: Any, now: dt.datetime, signed: Any = None) -> Any:
            if row.id == "bad":
                raise ValueError("cannot read this rollout")
            driven.append(row.id)
            return real(s, row, now, signed)

        monkeypatch.setattr(rollout_store, "drive_one", drive_one)
        rollout_store.drive(control_db, c.clock())
        assert driven == ["good"]
    finally:
        c.server.stop()


def test_a_move_the_customer_makes_is_judged_before_the_rollout_finishes(
        control_db: Database) -> None:
    """Policy "prepare" (the quickstart's): the rollout releases db01 to download and
    prepare; the customer applies between two check-ins. The first check-in on v2 is
    before boot-complete (its last boot record is still v1's): in flight, the rollout
    does not finish; once v2 is marked good the move succeeds and the rollout
    finishes."""
    c = start_control(control_db)
    try:
        c.customer("acme")
        db01 = _enrol(c, "db01", role="db")
        assert db01.checkin(status=host_status("1", update="prepared"))[0] == 200
        status, doc = c.api.call("POST", "/v1/rollouts", {
            "id": "r1", "customer": "acme", "labels": {"role": "db"}, "channel": "site/db",
            "versions": VERSIONS, "to_version": "2", "spec": {
                "waves": [100], "canary_wave": False, "soak_s": 0,
                "budget": {"max_failures": 0}}})
        assert status == 201, doc
        status, answer = db01.checkin(status=host_status("1", update="prepared"))
        assert status == 200 and answer["target"]["version"] == "2", answer
        assert "apply" not in answer["allow"], answer  # its own policy applies
        # rebooted into v2 by the customer; boot-complete has not marked it yet
        early = host_status("2")
        early["last_boot"]["deployment"] = f"{commit_of('1')}.0"
        assert db01.checkin(status=early)[0] == 200
        c.server.drive()
        doc = _status(c)
        assert doc["state"] == "running", doc
        assert [h["phase"] for h in doc["hosts"]] == ["in-flight"], doc
        assert db01.checkin(status=host_status("2"))[0] == 200  # marked good
        c.server.drive()
        doc = _status(c)
        assert [h["phase"] for h in doc["hosts"]] == ["succeeded"], doc
        assert doc["state"] == "finished", doc
    finally:
        c.server.stop()


def test_a_rollout_whose_target_a_publish_pruned_halts(control_db: Database) -> None:
    """The server reading the repository: a target no longer signed (``publish --keep``
    pruned it) halts the rollout with code ``unsigned`` instead of holding every host."""
    c = start_control(control_db)
    try:
        c.customer("acme")
        _enrol(c, "db01", role="db")
        status, doc = c.api.call("POST", "/v1/rollouts", {
            "id": "r1", "customer": "acme", "labels": {"role": "db"}, "channel": "site/db",
            "versions": VERSIONS, "to_version": "2", "spec": {"waves": [100]}})
        assert status == 201, doc
        both = {"site/db": frozenset((v["version"], v["commit"]) for v in VERSIONS)}
        assert rollout_store.drive(control_db, c.clock(), both) == []
        assert rollout_store.drive(control_db, c.clock(), None) == []  # not read: stored
        # version 2 re-signed with another commit is not the rollout's version 2 either
        other = {"site/db": frozenset({("1", commit_of("1")), ("2", "ab" * 32)})}
        steps = rollout_store.drive(control_db, c.clock(), other)
        assert [(x["rollout"], x["action"], x["code"]) for x in steps] == [
            ("r1", "halt", "unsigned")]
        assert _status(c)["state"] == "halted"
    finally:
        c.server.stop()


def test_hosts_off_the_rollouts_path_are_released_with_a_recorded_reason(
        control: Control) -> None:
    """A host ahead of the target, on a version the rollout does not know, or on
    another channel is not held by the rollout: no target, every step its own
    policy's; the skipped ones get one ``rollout-host-skipped`` event with the reason."""
    c = control
    c.customer("acme")
    member = _enrol(c, "db01", role="db")
    unknown = _enrol(c, "db02", role="db")
    ahead = _enrol(c, "db03", role="db")
    other = _enrol(c, "db04", role="db")
    web = host_status("1", update="prepared")
    web["update"]["channel"] = "site/web"
    reports = {member: host_status("1", update="prepared"),
               unknown: host_status("7", update="prepared"),
               ahead: host_status("3"), other: web}
    for h, st in reports.items():
        _prepared(h, status=st)
    versions = [{"version": v, "commit": commit_of(v)} for v in ("1", "2", "3")]
    status, doc = c.api.call("POST", "/v1/rollouts", {
        "id": "r1", "customer": "acme", "labels": {"role": "db"}, "channel": "site/db",
        "versions": versions, "to_version": "2", "spec": {"waves": [100],
                                                          "canary_wave": False}})
    assert status == 201, doc
    for _ in range(2):  # the reason is recorded once, not at every check-in
        answers = {h: _prepared(h, status=st) for h, st in reports.items()}
    assert answers[member]["target"]["version"] == "2" and answers[member]["allow"] == ALL
    for h in (unknown, ahead, other):
        assert answers[h]["target"] is None and answers[h]["allow"] == ALL, answers[h]
    phases = {h["host"]: h["phase"] for h in _status(c)["hosts"]}
    assert phases == {member.host_id: "in-flight", unknown.host_id: "skipped",
                      ahead.host_id: "at-target", other.host_id: "skipped"}
    skipped = [e for e in c.api.call("GET", "/v1/events",
                                     query={"kind": "rollout-host-skipped"})[1]]
    assert sorted((e["host_name"], e["data"]["code"]) for e in skipped) == [
        ("db02", "unknown-version"), ("db04", "other-channel")]


def test_a_host_flipping_off_the_rollouts_path_is_held_to_its_event_budget(
        control_db: Database) -> None:
    """A host owns its machine: one held by a rollout and reporting another channel at
    every other check-in would make a ``rollout-host-skipped`` event each time, around
    the host's event budget. Those events come from the same budget (counted in
    ``events-dropped``)."""
    from atoll.control.app import Settings
    from atoll.control.limits import Bucket

    c = start_control(control_db, settings=Settings(event_limit=Bucket(3, 3600.0)))
    try:
        c.customer("acme")
        h = _enrol(c, "db01", role="db")
        db = host_status("1", update="prepared")
        web = host_status("1", update="prepared")
        web["update"]["channel"] = "site/web"
        _prepared(h, status=db)  # first-checkin: one event of the budget
        status, doc = c.api.call("POST", "/v1/rollouts", {
            "id": "r1", "customer": "acme", "labels": {"role": "db"}, "channel": "site/db",
            "versions": VERSIONS, "to_version": "2", "spec": {"waves": [100],
                                                              "canary_wave": False}})
        assert status == 201, doc
        # held (not granted): each flip would be a new skip, each an event
        assert c.api.call("POST", "/v1/rollouts/r1/halt", {"reason": "hold"})[0] == 200
        for _ in range(10):
            _prepared(h, status=web)
            _prepared(h, status=db)
        skipped = c.api.call("GET", "/v1/events", query={"kind": "rollout-host-skipped"})[1]
        assert 1 <= len(skipped) <= 2, skipped  # the budget's 3 less first-checkin
    finally:
        c.server.stop()

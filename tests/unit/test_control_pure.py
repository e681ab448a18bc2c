"""The control plane's pure parts: inventory diffs, scopes and tokens, signatures,
the check-in schema documents, and the agent's gate."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from atoll.agent.control import gate
from atoll.agent.policy import AgentState, ApplyRequest, Decision
from atoll.control import inventory
from atoll.control.auth import ENROL_PREFIX, OPERATOR_PREFIX, Principal, bearer, new_token
from atoll.control.protocol import (
    CheckIn,
    Package,
    json_schemas,
    manifest_digest,
    parse_signature,
    sign,
    verify,
)

DOCS = Path(__file__).resolve().parents[2] / "docs"
NOW = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)


def report(version: str, boot: str = "t1", result: str = "good",
           apps: list[dict[str, Any]] | None = None, update: str = "up-to-date") -> dict[str, Any]:
    return {"status": {"booted": {"id": f"{version}.0", "version": version, "commit": version},
                       "last_boot": {"result": result, "time": boot, "reason": "r",
                                     "deployment": f"{version}.0"},
                       "update": {"state": update}, "rollback_events": 0},
            "apps": apps or []}


def test_first_checkin_then_only_changes() -> None:
    first = inventory.summarize(report("1"))
    assert first is not None
    assert [k for k, _ in inventory.changes(None, first)] == ["first-checkin"]
    assert inventory.changes(first, first) == []
    rolled = inventory.summarize(report("1", "t2", "rolled-back"))
    assert rolled is not None
    assert [k for k, _ in inventory.changes(first, rolled)] == ["boot", "rollback"]
    up = inventory.summarize(report("2", "t3", update="up-to-date"))
    assert up is not None
    assert [k for k, _ in inventory.changes(rolled, up)] == ["boot", "version"]


def test_app_health_and_db_role_changes() -> None:
    def apps(health: str | None, role: str) -> list[dict[str, Any]]:
        return [{"name": "mariadb", "container": {"state": "running", "health": health},
                 "database": {"role": role}}]

    a = inventory.summarize(report("1", apps=apps("healthy", "replica")))
    b = inventory.summarize(report("1", apps=apps("unhealthy", "primary")))
    assert a is not None and b is not None
    assert inventory.changes(a, b) == [
        ("app-health", {"app": "mariadb", "from": "healthy", "to": "unhealthy"}),
        ("db-role", {"app": "mariadb", "from": "replica", "to": "primary"})]
    gone = inventory.summarize(report("1"))
    assert gone is not None
    assert inventory.changes(a, gone) == [("app-health", {"app": "mariadb", "from": "healthy",
                                                          "to": None})]
    assert inventory.app_health({"name": "x", "error": "docker down"}) == "error"


@given(st.sampled_from(["1", "2"]), st.sampled_from(["t1", "t2"]),
       st.sampled_from(["good", "rolled-back"]),
       st.sampled_from(["up-to-date", "available", "pending"]))
def test_no_change_no_event(version: str, boot: str, result: str, update: str) -> None:
    s = inventory.summarize(report(version, boot, result, update=update))
    assert s is not None and inventory.changes(s, s) == []


def test_scopes_and_roles() -> None:
    viewer = Principal("v", "viewer", frozenset({1}))
    admin = Principal("a", "admin", None)
    assert viewer.may("viewer") and not viewer.may("operator")
    assert admin.may("operator") and admin.everywhere and admin.sees(None)
    assert viewer.sees(1) and not viewer.sees(2) and not viewer.sees(None)


def test_tokens_by_kind() -> None:
    token, digest = new_token(OPERATOR_PREFIX)
    assert token.startswith(OPERATOR_PREFIX) and len(digest) == 64 and len(token) > 40
    assert bearer(f"Bearer {token}", OPERATOR_PREFIX) == token
    assert bearer(f"bearer  {token} ", OPERATOR_PREFIX) == token
    assert bearer(f"Bearer {token}", ENROL_PREFIX) is None
    assert bearer(token, OPERATOR_PREFIX) is None and bearer(None, OPERATOR_PREFIX) is None
    assert new_token(OPERATOR_PREFIX)[0] != token


def test_signatures() -> None:
    key = Ed25519PrivateKey.generate()
    from cryptography.hazmat.primitives import serialization

    public = __import__("base64").b64encode(key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw)).decode()
    host = "0" * 8 + "-0000-4000-8000-" + "0" * 12
    header = sign(key, host, b'{"a":1}')
    parsed = parse_signature(header)
    assert parsed is not None and parsed[0] == host
    assert verify(public, b'{"a":1}', parsed[1])
    assert not verify(public, b'{"a":2}', parsed[1])
    assert not verify(public, b'{"a":1}', b"\0" * 64)
    for bad in (None, "", "ed25519=abc", header.replace("host=", "hast="), header + "x"):
        assert parse_signature(bad) is None


def test_manifest_digest_ignores_absent_fields() -> None:
    a = [Package(name="x", version="1")]
    b = [Package.model_validate({"name": "x", "version": "1", "source": None})]
    assert manifest_digest(a) == manifest_digest(b)
    assert manifest_digest(a) != manifest_digest([Package(name="x", version="2")])


def test_schema_documents_match_the_models() -> None:
    for name, schema in json_schemas().items():
        assert json.loads((DOCS / name).read_text()) == schema, (
            f"docs/{name} is stale: python -m atoll.control.protocol docs")
    assert CheckIn.model_json_schema()["additionalProperties"] is False


def directive(commit: str, allow: list[str], expires: dt.datetime = NOW + dt.timedelta(days=1),
              ) -> dict[str, Any]:
    return {"target": {"channel": "site/db", "version": "2", "commit": commit},
            "allow": allow, "reason": "wave 1", "expires": expires.isoformat()}


def test_gate() -> None:
    st_ = AgentState(booted="v1", available="v2", downloaded="v2", prepared="v2")
    dl = Decision("download", "update available")
    assert gate(dl, st_, None, NOW) is dl  # no control plane
    assert gate(dl, st_, {"target": None, "expires": "2027-01-01T00:00:00+00:00"}, NOW) is dl
    assert gate(dl, st_, directive("v2", ["download"]), NOW) is dl
    held = gate(Decision("prepare", "x"), st_, directive("v2", ["download"]), NOW)
    assert held.action == "none" and "not allowed now (wave 1)" in held.reason
    other = gate(dl, st_, directive("v9", ["download", "prepare", "apply"]), NOW)
    assert other.action == "none" and "is not what this host's TUF client verified" in \
        other.reason
    hold = gate(dl, st_, directive("v1", []), NOW)
    assert hold.action == "none" and "hold at 2 (booted)" in hold.reason
    expired = directive("v9", [], NOW - dt.timedelta(seconds=1))
    assert gate(dl, st_, expired, NOW) is dl
    asked = AgentState(booted="v1", prepared="v2", request=ApplyRequest("now", NOW))
    apply = Decision("apply", "requested now")
    assert gate(apply, asked, directive("v9", []), NOW) is apply  # the customer's trigger
    check = Decision("check", "time")
    assert gate(check, st_, directive("v9", []), NOW) is check


@pytest.mark.parametrize("field,value", [("counter", 0), ("host_id", "h1"),
                                         ("surprise", True)])
def test_checkin_is_strict(field: str, value: Any) -> None:
    from pydantic import ValidationError

    doc: dict[str, Any] = {
        "host_id": "0" * 8 + "-0000-4000-8000-" + "0" * 12, "counter": 1, "sent": "now",
        "agent_version": "0", "status": {
            "apiVersion": "atoll/v1", "kind": "HostStatus", "deployments": [], "booted": None,
            "pending": None, "rollback": None, "last_boot": None, "rollback_events": 0,
            "update": None, "new_v1_field": {"kept": True}}}
    assert CheckIn.model_validate(doc).status.model_extra == {"new_v1_field": {"kept": True}}
    with pytest.raises(ValidationError):
        CheckIn.model_validate(doc | {field: value})


def test_a_directive_holds_the_agent_a_week_at_most() -> None:
    """Whatever expiry the server sends, the agent keeps at most MAX_HOLD from when
    the answer arrived; an expiry that does not parse is none."""
    from atoll.agent.control import MAX_HOLD, held_until

    now = dt.datetime(2026, 11, 29, 12, tzinfo=dt.UTC)
    assert held_until("2026-11-30T12:00:00Z", now) == "2026-11-30T12:00:00+00:00"
    assert held_until("9999-01-01T00:00:00Z", now) == (now + MAX_HOLD).isoformat()
    assert held_until("soon", now) is None and held_until(None, now) is None


def test_a_hosts_hotfix_packages_are_strings_and_bounded() -> None:
    # the ``hotfix`` object is an open field of the check-in: any JSON a host wrote
    from atoll.control.inventory import MAX_HOTFIX_TEXT, MAX_HOTFIXES, hotfix_packages

    hf = {"packages": [{"name": {"x": 1}, "version": "v" * 100_000, "kind": "pin",
                        "expires": 7},
                       "not an object", *({"name": f"p{i}"} for i in range(50))]}
    pkgs = hotfix_packages(hf)
    assert len(pkgs) == MAX_HOTFIXES
    assert pkgs[0] == {"name": None, "version": "v" * MAX_HOTFIX_TEXT, "kind": "pin",
                       "expires": None}
    assert pkgs[1] == {"name": "p0", "version": None, "kind": None, "expires": None}
    assert hotfix_packages(None) == [] and hotfix_packages({"packages": "x"}) == []

"""FleetLock protocol parsing and the service's answers (in-memory backend, no HTTP)."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from atoll.core.errors import InputError, RuntimeBackendError
from atoll.fleet.backends.memory import MemoryBackend
from atoll.fleet.config import FleetConfig
from atoll.fleet.protocol import ClientParams, ProtocolError, parse_client_params
from atoll.fleet.semaphore import Semaphore
from atoll.fleet.service import FleetLockService
from tests.conftest import ROOT

DATA = ROOT / "tests/data/airlock"
H = {"fleet-lock-protocol": "true"}
T0 = dt.datetime(2026, 11, 26, 12, 0, tzinfo=dt.UTC)


def body(id: object = "node-a", group: object = "default") -> bytes:
    return json.dumps({"client_params": {"id": id, "group": group}}).encode()


def test_zincati_request_parses() -> None:
    assert parse_client_params(H, (DATA / "request-body.json").read_bytes()) == \
        ClientParams("c988d2509fdf5cdcbed39037c56406fb", "default")  # airlock's example
    assert parse_client_params(H, body("\0 \u00e9" + "x" * 1020, "db_primary nodes")) == \
        ClientParams("\0 \u00e9" + "x" * 1020, "db_primary nodes")  # valid text: accepted
    assert parse_client_params({"Fleet-Lock-Protocol": "true"}, body("c988", "workers")) == \
        ClientParams("c988", "workers")
    assert ClientParams("c988", "workers").to_body() == \
        b'{"client_params": {"id": "c988", "group": "workers"}}'


@pytest.mark.parametrize(("headers", "raw", "why"), [
    ({}, body(), "wrong 'fleet-lock-protocol' header"),
    ({"fleet-lock-protocol": "1"}, body(), "wrong 'fleet-lock-protocol' header"),
    # the body is decoded as airlock's Go decoder decodes it (atoll.fleet._gojson)
    (H, b"not json", "invalid character 'n' in literal"),
    (H, b"", "EOF"),
    (H, b" \r\n", "EOF"),
    (H, b"[1]", "json: cannot unmarshal array into Go value of type server.HTTPParams"),
    (H, b'{"client_params": "x"}', "json: cannot unmarshal string into Go struct field"),
    (H, b'{"client_params": {}}', "empty client group"),
    (H, b"null", "empty client group"),  # Go: null leaves the struct as it is
    (H, b'{"client_paramz": {"id": "a", "group": "g"}}', "empty client group"),
    (H, body(id=""), "empty client ID"),
    (H, body(id=None), "empty client ID"),
    (H, body(group=""), "empty client group"),
    (H, body(id=7), "json: cannot unmarshal number into Go struct field "
     "Params.client_params.id of type string"),
    (H, body(group=["x"]), "json: cannot unmarshal array into Go struct field "
     "Params.client_params.group"),
    (H, body(group=None), "empty client group"),
    # a lone surrogate is not Unicode text (it was a 500 "internal error")
    (H, b'{"client_params": {"id": "\\ud800", "group": "default"}}',
     "client ID is not valid Unicode"),
    (H, b'{"client_params": {"id": "a", "group": "x\\udfff"}}',
     "client group is not valid Unicode"),
    (H, b'{"client_params": {"id": "\xff", "group": "default"}}',
     "client ID is not valid Unicode"),  # invalid UTF-8 (Go: U+FFFD)
    (H, b"\xff{}", "invalid character '\\\\xff' looking for beginning of value"),
    (H, b"\xef\xbb\xbf" + body(), "invalid character '\\\\xef'"),  # a BOM, as Go
    (H, body().decode().encode("utf-16"), "invalid character"),
    # what Python's json accepts and Go's refuses
    (H, b'{"client_params": {"id": "x", "group": "default"}, "n": NaN}',
     "invalid character 'N' looking for beginning of value"),
    (H, b'{"client_params": {"id": "x", "group": "default"}, "n": -Infinity}',
     "invalid character 'I'"),
    (H, b'{"client_params": {"id": "x", "group": "default",}}', "invalid character '}'"),
    (H, b'{"client_params": {"id": "x", "group": "default"}', "unexpected EOF"),
    (H, b'{"client_params": {"id": "x\ty", "group": "default"}}', "invalid character"),
    (H, b"[" * 60000, "exceeded max depth"),
    (H, b'{"x": ' + b"[" * 10000 + b"]" * 10000 + b"}", "exceeded max depth"),
    (H, body(id="x" * 1025), "client ID longer than 1024 characters"),
])
def test_bad_requests_are_invalid_client_identity(headers: dict[str, str], raw: bytes,
                                                 why: str) -> None:
    with pytest.raises(ProtocolError) as err:
        parse_client_params(headers, raw)
    assert (err.value.status, err.value.kind) == (400, "invalid_client_identity")
    assert err.value.value.startswith("failed to validate client identity: " + why)


@pytest.mark.parametrize(("raw", "params"), [
    # trailing data after the first JSON value is ignored (Go's Decoder.Decode)
    (body("a", "g") + b"xyz", ("a", "g")),
    (body("a", "g") + body("b", "g"), ("a", "g")),
    (body("a", "g") + b" \x00\xff{", ("a", "g")),
    (b" \t\r\n" + body("a", "g"), ("a", "g")),
    # keys match case-insensitively, as Go's bytes.EqualFold (Kelvin sign, long s too)
    (b'{"Client_Params": {"ID": "a", "Group": "g"}}', ("a", "g")),
    (b'{"CLIENT_PARAMS": {"iD": "a", "GROUP": "g"}}', ("a", "g")),
    ('{"client_param\u017f": {"id": "a", "group": "g"}}'.encode(), ("a", "g")),
    (b'{"client_\\u0070arams": {"id": "a", "group": "g"}}', ("a", "g")),  # escaped key
    # repeated keys merge into the struct; null leaves a field as it was
    (b'{"client_params": {"id": "a", "group": "g"}, "Client_Params": {"id": "b"}}',
     ("b", "g")),
    (b'{"client_params": {"id": "a", "group": "g"}, "client_params": null}', ("a", "g")),
    (b'{"client_params": {"id": "a", "id": null, "group": "g"}}', ("a", "g")),
    # unknown members: any valid JSON, numbers of any length, nesting up to Go's 10000
    (b'{"n": ' + b"9" * 5000 + b', "client_params": {"id": "a", "group": "g"}}', ("a", "g")),
    (b'{"x": ' + b"[" * 9998 + b"]" * 9998 + b', "client_params": {"id": "a", "group": "g"}}',
     ("a", "g")),
    (b'{"x": "\xff\xfe", "client_params": {"id": "a", "group": "g", "e": 1e999}}',
     ("a", "g")),
])
def test_bodies_are_decoded_as_airlocks_go_decoder_decodes_them(
        raw: bytes, params: tuple[str, str]) -> None:
    assert parse_client_params(H, raw) == ClientParams(*params)


def service(groups: dict[str, int] | None = None) -> FleetLockService:
    return FleetLockService(MemoryBackend(), FleetConfig(groups or {"default": 1, "db": 2}),
                            clock=lambda: T0)


def answer(svc: FleetLockService, path: str, raw: bytes, *, method: str = "POST",
           headers: dict[str, str] | None = None) -> tuple[int, dict[str, str] | None]:
    status, out = svc.handle(method, path, H if headers is None else headers, raw)
    return status, (json.loads(out) if out else None)


def test_lock_unlock_answers() -> None:
    svc = service()
    assert answer(svc, "/v1/pre-reboot", body("a")) == (200, None)
    assert answer(svc, "/v1/pre-reboot", body("a")) == (200, None)  # idempotent
    status, err = answer(svc, "/v1/pre-reboot", body("b"))
    assert status == 500 and err is not None and err["kind"] == "failed_lock_semaphore_full"
    assert "semaphore currently full" in err["value"]
    assert answer(svc, "/v1/steady-state", body("b")) == (200, None)  # not held: fine
    assert answer(svc, "/v1/steady-state", body("a")) == (200, None)
    assert answer(svc, "/v1/steady-state", body("a")) == (200, None)  # twice: fine
    assert answer(svc, "/v1/pre-reboot", body("b")) == (200, None)


@pytest.mark.parametrize("path", ["/v1/pre-reboot", "/v1/steady-state"])
def test_protocol_errors(path: str) -> None:
    svc = service()
    assert answer(svc, path, body(), headers={}) == (400, {
        "kind": "invalid_client_identity",
        "value": "failed to validate client identity: wrong 'fleet-lock-protocol' header"})
    assert answer(svc, path, body(id="")) == (400, {
        "kind": "invalid_client_identity",
        "value": "failed to validate client identity: empty client ID"})
    assert answer(svc, path, body(group="nope")) == (400, {
        "kind": "unknown_group", "value": "unknown group 'nope'"})
    assert answer(svc, path, body(), method="GET") == (405, {
        "kind": "method_not_allowed", "value": f"GET {path}: use POST"})
    with pytest.raises(ProtocolError) as err:
        svc.route("PUT", path)
    assert err.value.headers == {"Allow": "POST"}
    assert answer(svc, path, b"x" * (64 * 1024 + 1))[1] == {
        "kind": "request_too_large", "value": "body over 65536 bytes"}
    assert answer(svc, "/v2" + path[3:], body())[1] == {
        "kind": "not_found", "value": f"no such endpoint: /v2{path[3:]}"}


def test_groups_are_separate() -> None:
    svc = service()
    assert answer(svc, "/v1/pre-reboot", body("a", "default"))[0] == 200
    assert answer(svc, "/v1/pre-reboot", body("b", "db"))[0] == 200
    assert answer(svc, "/v1/pre-reboot", body("c", "db"))[0] == 200
    assert answer(svc, "/v1/pre-reboot", body("d", "db"))[0] == 500


class _Broken(MemoryBackend):
    def load(self, group: str) -> tuple[Semaphore | None, int]:
        raise RuntimeBackendError("etcd at http://127.0.0.1:1 failed: ConnectionFailedError")


def test_backend_failure_is_failed_lock() -> None:
    svc = FleetLockService(_Broken(), FleetConfig())
    status, err = answer(svc, "/v1/pre-reboot", body())
    assert status == 500 and err is not None and err["kind"] == "failed_lock"
    assert "ConnectionFailedError" in err["value"]
    assert answer(svc, "/v1/steady-state", body())[1] == {
        "kind": "failed_lock", "value": "failed to release any semaphore lock: etcd at "
        "http://127.0.0.1:1 failed: ConnectionFailedError"}
    assert answer(svc, "/atoll/v1/status", b"", method="GET")[0] == 500


def test_status_and_release() -> None:
    svc = service({"default": 1, "db": 2})
    svc.pre_reboot(ClientParams("dead-host", "db"))
    later = FleetLockService(svc.backend, FleetConfig({"default": 1}),
                             clock=lambda: T0 + dt.timedelta(hours=2))
    groups = {g.group: g for g in later.status()}
    assert set(groups) == {"default", "db"}
    assert not groups["db"].configured and groups["db"].total_slots == 2  # no longer configured
    assert groups["db"].to_dict(T0 + dt.timedelta(hours=2))["holders"] == [
        {"id": "dead-host", "since": "2026-11-26T12:00:00Z", "held_seconds": 7200}]
    holder = later.release("db", "dead-host")
    assert holder.since == T0
    assert later.status()[1].holders == ()
    with pytest.raises(InputError, match="'dead-host' holds no slot in group 'db'"):
        later.release("db", "dead-host")
    with pytest.raises(InputError, match="holds no slot in group 'nope'"):
        later.release("nope", "x")


def test_status_endpoint() -> None:
    svc = service()
    svc.pre_reboot(ClientParams("a", "default"))
    status, out = svc.handle("GET", "/atoll/v1/status", {}, b"")
    assert status == 200
    assert json.loads(out)["groups"][1] == {
        "group": "default", "total_slots": 1, "configured": True,
        "holders": [{"id": "a", "since": "2026-11-26T12:00:00Z", "held_seconds": 0}]}
    assert svc.handle("POST", "/atoll/v1/status", {}, b"")[0] == 405


def test_a_bug_is_a_json_500_internal_error(monkeypatch: pytest.MonkeyPatch,
                                            caplog: pytest.LogCaptureFixture) -> None:
    svc = service()

    def broken(params: ClientParams) -> None:
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(svc, "pre_reboot", broken)
    assert answer(svc, "/v1/pre-reboot", body()) == (500, {
        "kind": "internal_error", "value": "internal error; see the FleetLock server's log"})
    assert "ZeroDivisionError: a bug" in caplog.text  # the traceback is in the log


def test_status_of_holders_airlock_wrote() -> None:
    svc = service()
    svc.backend.store("db", Semaphore.from_json(b'{"total_slots":2,"holders":["x"]}',
                                                where="k"), 0)
    _, out = svc.handle("GET", "/atoll/v1/status", {}, b"")
    assert json.loads(out)["groups"][0]["holders"] == [
        {"id": "x", "since": None, "held_seconds": None}]

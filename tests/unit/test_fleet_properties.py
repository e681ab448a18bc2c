"""Property tests for FleetLock request bodies, ids and groups (pure; in-memory backend).

Whatever a client sends, the parser raises nothing but ``ProtocolError`` and
the service answers one of the documented (status, kind) pairs with a JSON
body, never a 500 for client input. Whatever text ids and groups are, the
stored semaphore reads back the same, parses as airlock's Go struct would, and
the group's etcd key is airlock's (``url.QueryEscape``).
"""

from __future__ import annotations

import json
import urllib.parse
from typing import Any

from hypothesis import event, given
from hypothesis import strategies as st

from atoll.fleet.backends.etcd import KEY_TEMPLATE, semaphore_key
from atoll.fleet.backends.memory import MemoryBackend
from atoll.fleet.config import FleetConfig
from atoll.fleet.protocol import (
    ERRORS,
    MAX_ID,
    PRE_REBOOT,
    STEADY_STATE,
    ClientParams,
    ProtocolError,
    parse_client_params,
)
from atoll.fleet.semaphore import Semaphore, recursive_lock, unlock_if_held, utcnow
from atoll.fleet.service import STATUS_PATH, FleetLockService
from tests.conftest import ROOT

# every code point, lone surrogates included (the default alphabet leaves them out)
ANY_CHAR = st.characters(exclude_categories=())
any_text = st.one_of(
    st.text(ANY_CHAR, max_size=40),
    st.text(st.sampled_from("\0\ud800\udfff\n\"\\/ +%\u00e9_-.~"), max_size=10),
    st.integers(MAX_ID - 2, 3 * MAX_ID).map(lambda n: "x" * n),  # at and over the id cap
)
# valid Unicode text (what a config's group names and a well-formed client's ids are)
valid_text = st.text(st.characters(codec="utf-8"), min_size=1, max_size=40)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | any_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(any_text, inner, max_size=4),
    max_leaves=12,
)
WEIRD_GROUPS = ["default", "db_primary", "rack 7/\u03b1", "a+b%2F", "\0", "x" * 300]


def _dumps(value: Any) -> bytes:
    return json.dumps(value).encode()  # ASCII: lone surrogates become \udxxx escapes


params_bodies = st.builds(
    lambda cid, grp, extra: _dumps({"client_params": {"id": cid, "group": grp}, **extra}),
    st.one_of(st.sampled_from(["node-a", "node-b", "node-c"]), any_text, json_values),
    st.one_of(st.sampled_from(WEIRD_GROUPS), any_text, json_values),
    st.one_of(st.just({}), st.dictionaries(any_text, json_values, max_size=2)),
)
bodies = st.one_of(
    params_bodies,
    params_bodies,  # twice: well-formed requests are the interesting half
    st.binary(max_size=300),
    json_values.map(_dumps),
    params_bodies.map(lambda b: b[:-1]),  # cut short
    st.tuples(params_bodies, st.binary(max_size=3)).map(lambda t: t[0] + t[1]),
)
GOOD = {"fleet-lock-protocol": "true"}
headers = st.one_of(
    st.just(GOOD),
    st.just(GOOD),
    st.just({"Fleet-Lock-Protocol": "true", "content-type": "application/json"}),
    st.dictionaries(st.sampled_from(["fleet-lock-protocol", "x"]), st.text(max_size=8)),
)
methods = st.sampled_from(["POST"] * 8 + ["GET", "PUT", "HEAD", "DELETE"])
PROTOCOL_PATHS = [PRE_REBOOT] * 4 + [STEADY_STATE] * 3 + [STATUS_PATH]
OTHER_PATHS = ["/", "/v1/pre-reboot/", "/v2/pre-reboot", "*", "/v1/pre-reboot?x=1"]
paths = st.one_of(st.sampled_from(PROTOCOL_PATHS), st.sampled_from(PROTOCOL_PATHS),
                  st.sampled_from(PROTOCOL_PATHS), st.sampled_from(OTHER_PATHS),
                  st.text(ANY_CHAR, max_size=20))


@given(headers, bodies)
def test_parser_raises_only_protocol_errors(hdrs: dict[str, str], body: bytes) -> None:
    try:
        params = parse_client_params(hdrs, body)
    except ProtocolError as exc:
        event(exc.value.split(": ")[1])
        assert (exc.status, exc.kind) == (400, "invalid_client_identity")
        assert exc.value.startswith("failed to validate client identity: ")
        json.loads(exc.body())  # the answer is JSON
        return
    assert params.group and params.id and len(params.id) <= MAX_ID
    params.id.encode("utf-8")  # valid Unicode, both
    params.group.encode("utf-8")


def _service() -> FleetLockService:
    return FleetLockService(MemoryBackend(), FleetConfig({g: 1 for g in WEIRD_GROUPS}))


SERVICE = _service()  # shared: state builds up across examples, as on a real server


@given(methods, paths, headers, bodies)
def test_every_answer_is_documented_json(method: str, path: str, hdrs: dict[str, str],
                                         body: bytes) -> None:
    status, out = SERVICE.handle(method, path, hdrs, body)
    event(f"{status} {json.loads(out)['kind'] if status != 200 else 'ok'}")
    if status == 200:
        assert out == b"" or path.split("?")[0] == STATUS_PATH
        return
    error = json.loads(out)
    assert set(error) == {"kind", "value"} and isinstance(error["value"], str)
    assert (status, error["kind"]) in ERRORS, (status, error)
    # client input is never a 500, except the one the protocol means: no slot free
    assert status != 500 or error["kind"] == "failed_lock_semaphore_full", error


@given(st.lists(st.tuples(st.sampled_from([PRE_REBOOT, STEADY_STATE]),
                          st.sampled_from(["node-a", "node-b", "node-c", "\0", "é" * 3]),
                          st.sampled_from([*WEIRD_GROUPS, "unknown"])), max_size=40))
def test_well_formed_requests_follow_the_model(requests: list[tuple[str, str, str]]) -> None:
    slots = {g: 1 + i % 2 for i, g in enumerate(WEIRD_GROUPS)}
    svc = FleetLockService(MemoryBackend(), FleetConfig(dict(slots)))
    model: dict[str, set[str]] = {g: set() for g in WEIRD_GROUPS}
    for path, cid, group in requests:
        status, out = svc.handle("POST", path, GOOD, ClientParams(cid, group).to_body())
        if group not in model:
            want: tuple[int, str | None] = (400, "unknown_group")
        elif path == STEADY_STATE:
            model[group].discard(cid)
            want = (200, None)
        elif cid in model[group] or len(model[group]) < slots[group]:
            model[group].add(cid)
            want = (200, None)
        else:
            want = (500, "failed_lock_semaphore_full")
        event(f"{want[0]} {want[1]}")
        assert (status, json.loads(out)["kind"] if out else None) == want
    for group, held in model.items():
        sem, _ = svc.backend.load(group)
        assert {h.id for h in sem.holders} == held if sem else not held


def go_query_escape(text: str) -> str:
    """Go's ``url.QueryEscape`` (net/url ``shouldEscape`` for a query component), byte by byte."""
    out = []
    for byte in text.encode("utf-8"):
        char = chr(byte)
        if char.isascii() and (char.isalnum() or char in "-_.~"):
            out.append(char)
        elif char == " ":
            out.append("+")
        else:
            out.append(f"%{byte:02X}")
    return "".join(out)


def go_unmarshal_semaphore(data: bytes) -> tuple[int, list[str]]:
    """What airlock's ``json.Unmarshal(data, &Semaphore{})`` accepts, or an AssertionError."""
    value = json.loads(data.decode("utf-8"))
    assert isinstance(value, dict)
    slots, holders = value.get("total_slots", 0), value.get("holders")
    assert isinstance(slots, int) and not isinstance(slots, bool) and 0 <= slots < 2**64
    holders = [] if holders is None else holders
    assert isinstance(holders, list) and all(isinstance(h, str) for h in holders)
    keys = [h.encode("utf-8") for h in holders]
    assert keys == sorted(set(keys)), "sort.SearchStrings needs sorted, unique holders"
    return slots, holders


@given(valid_text, st.lists(valid_text, max_size=8), st.integers(0, 6))
def test_ids_and_groups_round_trip_as_airlock_reads_them(group: str, ids: list[str],
                                                         slots: int) -> None:
    key = semaphore_key(group)
    escaped = key.removeprefix("com.coreos.airlock/groups/").removesuffix("/v1/semaphore")
    assert key == KEY_TEMPLATE.format(go_query_escape(group))
    assert "/" not in escaped and urllib.parse.unquote_plus(escaped) == group
    sem = Semaphore(slots)
    now = utcnow()
    for i, cid in enumerate(ids):
        sem, _ = recursive_lock(sem, cid, now) if i % 3 else unlock_if_held(sem, cid)
    raw = sem.to_json()
    assert Semaphore.from_json(raw, where="k") == sem
    total, holders = go_unmarshal_semaphore(raw)
    assert total == slots and holders == [h.id for h in sem.holders]
    assert len(holders) <= slots


@given(st.sampled_from(WEIRD_GROUPS), st.lists(valid_text.filter(lambda t: len(t) <= MAX_ID),
                                               min_size=1, max_size=6))
def test_any_valid_id_locks_and_unlocks(group: str, ids: list[str]) -> None:
    svc = _service()
    first = ClientParams(ids[0], group)
    assert svc.handle("POST", PRE_REBOOT, GOOD, first.to_body()) == (200, b"")
    for cid in ids[1:]:
        status, _ = svc.handle("POST", PRE_REBOOT, GOOD, ClientParams(cid, group).to_body())
        assert status == (200 if cid == ids[0] else 500)
    sem, _ = svc.backend.load(group)
    assert sem is not None and [h.id for h in sem.holders] == [ids[0]]
    assert svc.handle("POST", STEADY_STATE, GOOD, first.to_body()) == (200, b"")


def test_airlock_fixture_key_template() -> None:
    template = (ROOT / "tests/data/airlock/semaphore-key.txt").read_text().strip()
    assert template.replace("%s", "{}") == KEY_TEMPLATE
    assert semaphore_key("db_primary nodes/\u03b1") == \
        "com.coreos.airlock/groups/db_primary+nodes%2F%CE%B1/v1/semaphore"


# -- the body as airlock's Go decoder reads it (review of issue 13) ------------------------

class _GoRefused(Exception):
    pass


def _no_constants(name: str) -> Any:
    raise _GoRefused(name)  # NaN, Infinity: Go's decoder refuses them


def _go_fold(key: str, name: str) -> bool:
    return len(key) == len(name) and all(
        a == b or (a.isascii() and a.lower() == b) or (b, a) in {("k", "\u212a"),
                                                                 ("s", "\u017f")}
        for a, b in zip(key, name, strict=True))


def go_reference(body: bytes) -> tuple[str | None, str | None] | None:
    """An independent model: Python's strict parser for the syntax of the first value
    (raw_decode ignores what follows), then Go's rules for the struct (case-insensitive
    keys, repeated keys merge, null changes nothing, other types refused).
    None: refused."""
    text = body.decode("utf-8", "surrogateescape").lstrip(" \t\r\n")
    try:
        pairs, _ = json.JSONDecoder(object_pairs_hook=lambda p: ("obj", p),
                                    parse_constant=_no_constants).raw_decode(text)
    except (ValueError, RecursionError, _GoRefused):
        return None
    group = cid = None
    if pairs is None:
        return group, cid
    if not (isinstance(pairs, tuple) and pairs[0] == "obj"):
        return None
    for key, value in pairs[1]:
        if not _go_fold(key, "client_params") or value is None:
            continue
        if not (isinstance(value, tuple) and value[0] == "obj"):
            return None
        for k, v in value[1]:
            field = "group" if _go_fold(k, "group") else "id" if _go_fold(k, "id") else None
            if field is None or v is None:
                continue
            if not isinstance(v, str):
                return None
            if field == "group":
                group = v
            else:
                cid = v
    return group, cid


cased = st.sampled_from(["client_params", "Client_Params", "CLIENT_PARAMS", "client_paramS",
                         "client_param\u017f", "clientparams", "params"])
field_names = st.sampled_from(["id", "ID", "Id", "group", "Group", "GROUP", "gr0up", "x"])
param_objects = st.lists(st.tuples(field_names, st.one_of(st.none(), valid_text, json_values)),
                         max_size=4)
go_bodies = st.lists(st.tuples(cased, st.one_of(st.none(), param_objects, json_values)),
                     max_size=3).map(lambda members: (
    "{" + ", ".join(json.dumps(k) + ": " + (
        "{" + ", ".join(json.dumps(f) + ": " + json.dumps(v) for f, v in val) + "}"
        if isinstance(val, list) and all(isinstance(m, tuple) for m in val)
        else json.dumps(val)) for k, val in members) + "}").encode())


@given(st.one_of(go_bodies, go_bodies, bodies), st.binary(max_size=6))
def test_the_body_is_decoded_as_airlocks_go_decoder_decodes_it(body: bytes,
                                                               tail: bytes) -> None:
    from atoll.fleet._gojson import GoDecodeError, decode_params

    want = go_reference(body)
    try:
        got = decode_params(body)
    except GoDecodeError:
        event("refused")
        assert want is None, (body, want)
        return
    event("decoded")
    assert want == (got.group, got.id), body
    # whatever follows the first value is ignored, as by Go's Decoder.Decode
    after = decode_params(body + tail)
    assert (after.group, after.id) == (got.group, got.id)

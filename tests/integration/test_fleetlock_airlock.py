"""atoll and airlock on one etcd: the same keys, the same semaphore, no slot granted twice.

airlock (Go) is not built here. Its side is taken from its source
(``internal/lock/lock.go``, ``internal/lock/semaphore.go`` at the commit named in
``tests/data/airlock/README.md``): the key template and a value byte-exact to its
``json.Marshal`` are fixtures, and ``AirlockManager`` below re-implements its
``RecursiveLock`` / ``UnlockIfHeld``: read the key and its ``version``, decode
as Go's ``json.Unmarshal`` would, change, write back with
``If(version == seen)``. Both directions run against a real etcd.
"""

from __future__ import annotations

import base64
import bisect
import contextlib
import datetime as dt
import json
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import etcd3gw
import pytest

from atoll.fleet.backends import Backend, open_backend
from atoll.fleet.backends.etcd import KEY_PREFIX, LEGACY_PREFIX
from atoll.fleet.client import FleetLockClient, FleetLockError
from atoll.fleet.config import FleetConfig
from atoll.fleet.server import FleetLockServer
from atoll.fleet.service import FleetLockService
from tests.conftest import ROOT
from tests.integration import fleet_fixtures
from tests.services import free_port

fleet_etcd = fleet_fixtures.fleet_etcd

DATA = ROOT / "tests/data/airlock"
KEY_FORMAT = (DATA / "semaphore-key.txt").read_text().strip()  # Go's fmt template, %s
T0 = dt.datetime(2026, 11, 26, 12, 0, tzinfo=dt.UTC)


def b64(raw: str | bytes) -> str:
    return base64.b64encode(raw.encode() if isinstance(raw, str) else raw).decode()


def go_query_escape(text: str) -> str:
    """Go's ``url.QueryEscape``."""
    return "".join(
        chr(b) if chr(b).isascii() and (chr(b).isalnum() or chr(b) in "-_.~")
        else "+" if b == 0x20 else f"%{b:02X}" for b in text.encode("utf-8"))


def airlock_key(group: str) -> str:
    return KEY_FORMAT % go_query_escape(group)


def go_marshal(sem: dict[str, Any]) -> bytes:
    """``json.Marshal(&Semaphore{...})``: struct order, compact, HTML-safe escapes."""
    text = json.dumps({"total_slots": sem["total_slots"], "holders": sem["holders"]},
                      separators=(",", ":"), ensure_ascii=False)
    for char, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
                          ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(char, escaped)
    return text.encode()


def go_unmarshal(data: bytes) -> dict[str, Any]:
    """``json.Unmarshal(data, &Semaphore{})`` with airlock's struct, or an AssertionError.

    Go matches field names exactly or else case-insensitively, ignores unknown
    fields, leaves null fields at their zero value, and refuses a number that is
    not a non-negative integer for ``uint64`` or a non-string holder.
    """
    value = json.loads(data.decode("utf-8"))
    assert isinstance(value, dict), f"not a JSON object: {value!r}"

    def field(name: str) -> Any:
        if name in value:
            return value[name]
        return next((v for k, v in value.items() if k.lower() == name), None)

    slots, holders = field("total_slots"), field("holders")
    slots = 0 if slots is None else slots
    assert isinstance(slots, int) and not isinstance(slots, bool) and 0 <= slots < 2**64, slots
    holders = [] if holders is None else holders
    assert isinstance(holders, list) and all(isinstance(h, str) for h in holders), holders
    return {"total_slots": slots, "holders": holders}


class AirlockFull(Exception):
    """``all %d semaphore slots currently locked`` (airlock answers 500 failed_lock)."""


class AirlockConflict(Exception):
    """``conflict on semaphore detected, aborting`` (airlock answers 500 failed_lock)."""


class AirlockManager:
    """airlock's ``lock.Manager`` + ``Semaphore``, in Python, over etcd's gateway."""

    def __init__(self, client: etcd3gw.Etcd3Client, group: str, slots: int) -> None:
        self.client = client
        self.key = airlock_key(group)
        # ensureInit: If(Version(key) == 0) Then(Put(key, NewSemaphore(slots)))
        self._txn([{"key": b64(self.key), "result": "EQUAL", "target": "VERSION",
                    "version": "0"}], go_marshal({"total_slots": slots, "holders": []}))

    def _txn(self, compare: list[dict[str, str]], value: bytes) -> bool:
        resp = self.client.post(self.client.get_url("/kv/txn"), json={
            "compare": compare,
            "success": [{"request_put": {"key": b64(self.key), "value": b64(value)}}]})
        return bool(resp.get("succeeded", False))

    def get(self) -> tuple[dict[str, Any], int]:
        resp = self.client.post(self.client.get_url("/kv/range"), json={"key": b64(self.key)})
        kvs = resp.get("kvs") or []
        assert len(kvs) == 1, "unexpected number of results"
        version = int(kvs[0]["version"])
        data = base64.b64decode(kvs[0].get("value", ""))
        assert version != 0 and data, "key at version 0 / empty semaphore value"
        return go_unmarshal(data), version

    def _set(self, sem: dict[str, Any], version: int) -> None:
        if not self._txn([{"key": b64(self.key), "result": "EQUAL", "target": "VERSION",
                           "version": str(version)}], go_marshal(sem)):
            raise AirlockConflict("conflict on semaphore detected, aborting")

    def recursive_lock(self, client_id: str) -> bool:
        """Whether the id held a slot already; raises AirlockFull / AirlockConflict."""
        sem, version = self.get()
        keys = [h.encode() for h in sem["holders"]]  # sort.SearchStrings: Go compares bytes
        loc = bisect.bisect_left(keys, client_id.encode())
        if loc < len(keys) and keys[loc] == client_id.encode():
            return True
        if len(sem["holders"]) >= sem["total_slots"]:
            raise AirlockFull(f"all {sem['total_slots']} semaphore slots currently locked")
        sem["holders"].insert(loc, client_id)
        self._set(sem, version)
        return False

    def unlock_if_held(self, client_id: str) -> None:
        sem, version = self.get()
        if client_id in sem["holders"]:
            sem["holders"].remove(client_id)
        self._set(sem, version)  # airlock writes even when nothing changed


@pytest.fixture
def etcd(fleet_etcd: str) -> etcd3gw.Etcd3Client:
    """The test's own hands on etcd (both FleetLock prefixes emptied)."""
    client = fleet_fixtures.etcd_client(fleet_etcd)
    client.delete_prefix(KEY_PREFIX)
    client.delete_prefix(LEGACY_PREFIX)
    return client


def read(client: etcd3gw.Etcd3Client, key: str) -> tuple[bytes, int] | None:
    """(value, mod_revision) of a key, or None."""
    resp = client.post(client.get_url("/kv/range"), json={"key": b64(key)})
    kvs = resp.get("kvs") or []
    if not kvs:
        return None
    return base64.b64decode(kvs[0].get("value", "")), int(kvs[0]["mod_revision"])


def put(client: etcd3gw.Etcd3Client, key: str, value: bytes) -> None:
    client.post(client.get_url("/kv/put"), json={"key": b64(key), "value": b64(value)})


@pytest.fixture
def serve_atoll(fleet_etcd: str, etcd: etcd3gw.Etcd3Client
                ) -> Iterator[Callable[[dict[str, int]], FleetLockServer]]:
    """Start an atoll server on the etcd backend with the given groups (stopped at the end)."""
    with contextlib.ExitStack() as stack:
        def serve(groups: dict[str, int]) -> FleetLockServer:
            backend = stack.enter_context(open_backend("etcd", fleet_etcd))
            service = FleetLockService(backend, FleetConfig(dict(groups)))
            return stack.enter_context(FleetLockServer(service, "127.0.0.1", 0).start())

        yield serve


def holders_of(server: FleetLockServer, group: str) -> dict[str, str | None]:
    status = next(g for g in server.service.status() if g.group == group)
    return {h.id: h.to_dict()["since"] for h in status.holders}


def test_a_semaphore_airlock_wrote_is_honoured(
        serve_atoll: Callable[[dict[str, int]], FleetLockServer],
        etcd: etcd3gw.Etcd3Client) -> None:
    atoll_server = serve_atoll({"default": 2})
    airlock_value = (DATA / "semaphore.json").read_bytes()  # {"total_slots":2,"holders":["a","b"]}
    key = airlock_key("default")
    put(etcd, key, airlock_value)
    _, revision = read(etcd, key) or (b"", 0)
    client = FleetLockClient(atoll_server.url)
    with pytest.raises(FleetLockError) as err:  # a full group refuses a new host
        client.pre_reboot("c")
    assert (err.value.status, err.value.kind) == (500, "failed_lock_semaphore_full")
    client.pre_reboot("a")  # a holder's re-lock is idempotent: nothing written
    assert read(etcd, key) == (airlock_value, revision)
    assert holders_of(atoll_server, "default") == {"a": None, "b": None}  # since: unknown
    client.steady_state("a")  # steady-state removes it, in airlock's exact bytes
    assert read(etcd, key) == (b'{"total_slots":2,"holders":["b"]}', revision + 1)
    client.pre_reboot("c")
    value, _ = read(etcd, key) or (b"", 0)
    assert go_unmarshal(value) == {"total_slots": 2, "holders": ["b", "c"]}
    assert json.loads(value)["atoll_since"].keys() == {"c"}  # only what atoll knows
    assert holders_of(atoll_server, "default")["c"] is not None


def test_what_atoll_writes_airlock_reads_and_changes(
        serve_atoll: Callable[[dict[str, int]], FleetLockServer],
        etcd: etcd3gw.Etcd3Client) -> None:
    group = "db_primary nodes/\u03b1"
    atoll_server = serve_atoll({group: 2})
    client = FleetLockClient(atoll_server.url)
    client.pre_reboot("x", group)
    assert read(etcd, "com.coreos.airlock/groups/db_primary+nodes%2F%CE%B1/v1/semaphore")
    airlock = AirlockManager(etcd, group, 2)  # its ensureInit leaves the key alone
    sem, _ = airlock.get()
    assert sem == {"total_slots": 2, "holders": ["x"]}
    assert airlock.recursive_lock("y") is False and airlock.recursive_lock("y") is True
    with pytest.raises(AirlockFull):
        airlock.recursive_lock("z")
    with pytest.raises(FleetLockError, match="semaphore currently full"):
        client.pre_reboot("z", group)
    client.pre_reboot("y", group)  # airlock's holder, re-locking through atoll: fine
    # airlock rewrote the value without atoll_since: x's since is now unknown
    assert holders_of(atoll_server, group) == {"x": None, "y": None}
    airlock.unlock_if_held("x")
    client.pre_reboot("z", group)
    sem, _ = airlock.get()
    assert sem["holders"] == ["y", "z"]
    client.steady_state("y", group)
    airlock.unlock_if_held("z")
    assert airlock.get()[0] == {"total_slots": 2, "holders": []}
    assert holders_of(atoll_server, group) == {}


def test_airlock_and_atoll_never_grant_more_than_the_slots(
        serve_atoll: Callable[[dict[str, int]], FleetLockServer],
        etcd: etcd3gw.Etcd3Client) -> None:
    atoll_server = serve_atoll({"race": 2})
    client = FleetLockClient(atoll_server.url)
    client.pre_reboot("holder", "race")  # 1 of 2 slots taken; the two servers race for the last
    airlock = AirlockManager(etcd, "race", 2)
    for round_ in range(10):
        barrier = threading.Barrier(2)
        won: dict[str, bool] = {}

        def via_airlock(cid: str = f"air-{round_}", barrier: threading.Barrier = barrier,
                        won: dict[str, bool] = won) -> None:
            barrier.wait(timeout=10)
            try:
                airlock.recursive_lock(cid)
                won[cid] = True
            except (AirlockFull, AirlockConflict):  # both are airlock's 500 failed_lock
                won[cid] = False

        def via_atoll(cid: str = f"atoll-{round_}", barrier: threading.Barrier = barrier,
                      won: dict[str, bool] = won) -> None:
            with FleetLockClient(atoll_server.url) as own:
                barrier.wait(timeout=10)
                try:
                    own.pre_reboot(cid, "race")
                    won[cid] = True
                except FleetLockError:
                    won[cid] = False

        threads = [threading.Thread(target=via_airlock), threading.Thread(target=via_atoll)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        winners = [cid for cid, ok in won.items() if ok]
        assert len(winners) == 1, won  # the last slot went to exactly one host
        sem, _ = airlock.get()
        assert sem["holders"] == sorted(["holder", *winners])
        client.steady_state(winners[0], "race")


def test_old_atoll_keys_migrate_on_first_write(
        serve_atoll: Callable[[dict[str, int]], FleetLockServer],
        etcd: etcd3gw.Etcd3Client) -> None:
    atoll_server = serve_atoll({"db": 2})
    # what an atoll server before this change stored for a host that holds its slot
    legacy = f"{LEGACY_PREFIX}db/semaphore"
    put(etcd, legacy, b'{"holders":[{"id":"old-1","since":"2026-11-26T12:00:00Z"}],'
                      b'"total_slots":2}')
    assert holders_of(atoll_server, "db") == {"old-1": "2026-11-26T12:00:00Z"}
    client = FleetLockClient(atoll_server.url)
    client.pre_reboot("old-1", "db")  # still its slot; nothing to write
    assert read(etcd, legacy) is not None and read(etcd, airlock_key("db")) is None
    client.pre_reboot("new-1", "db")  # the first write moves the group, in one transaction
    assert read(etcd, legacy) is None
    value, _ = read(etcd, airlock_key("db")) or (b"", 0)
    assert go_unmarshal(value) == {"total_slots": 2, "holders": ["new-1", "old-1"]}
    assert json.loads(value)["atoll_since"]["old-1"] == "2026-11-26T12:00:00Z"
    with pytest.raises(FleetLockError, match="semaphore currently full"):
        client.pre_reboot("new-2", "db")  # the old holder still counts


def test_old_and_airlock_keys_are_merged(
        serve_atoll: Callable[[dict[str, int]], FleetLockServer],
        etcd: etcd3gw.Etcd3Client) -> None:
    atoll_server = serve_atoll({"db": 2})
    # a fleet that ran both before: each granted its own slot, under its own key
    put(etcd, f"{LEGACY_PREFIX}db/semaphore",
        b'{"holders":[{"id":"old-1","since":"2026-11-26T12:00:00Z"}],"total_slots":2}')
    put(etcd, airlock_key("db"), b'{"total_slots":2,"holders":["air-1"]}')
    client = FleetLockClient(atoll_server.url)
    with pytest.raises(FleetLockError, match="semaphore currently full"):
        client.pre_reboot("x", "db")  # both holders count
    client.steady_state("air-1", "db")
    assert read(etcd, f"{LEGACY_PREFIX}db/semaphore") is None
    value, _ = read(etcd, airlock_key("db")) or (b"", 0)
    assert value == (b'{"total_slots":2,"holders":["old-1"],'
                     b'"atoll_since":{"old-1":"2026-11-26T12:00:00Z"}}')
    assert [g for g in atoll_server.service.backend.groups() if g == "db"] == ["db"]


def test_legacy_only_groups_are_listed(fleet_etcd: str, etcd: etcd3gw.Etcd3Client) -> None:
    put(etcd, f"{LEGACY_PREFIX}gone/semaphore", b'{"holders":[],"total_slots":1}')
    put(etcd, airlock_key("a b/c"), b'{"total_slots":1,"holders":[]}')
    with open_backend("etcd", fleet_etcd) as backend:
        assert backend.groups() == ["a b/c", "gone"]


def test_embedded_rows_of_older_atoll_are_read_and_rewritten(tmp_path: Path) -> None:
    path = tmp_path / "locks.db"
    with open_backend("embedded", str(path)):
        pass  # creates the table
    db = sqlite3.connect(path)
    with db:
        db.execute("INSERT INTO semaphore VALUES ('db', ?, 3)",
                   ('{"holders":[{"id":"old-1","since":"2026-11-26T12:00:00Z"}],"total_slots":1}',))
    with open_backend("embedded", str(path)) as backend:
        service = FleetLockService(backend, FleetConfig({"db": 1}))
        with FleetLockServer(service, "127.0.0.1", 0).start() as srv:
            client = FleetLockClient(srv.url)
            with pytest.raises(FleetLockError, match="semaphore currently full"):
                client.pre_reboot("new", "db")
            client.steady_state("old-1", "db")
            client.pre_reboot("new", "db")
    value = db.execute("SELECT value FROM semaphore WHERE grp = 'db'").fetchone()[0]
    assert go_unmarshal(value.encode()) == {"total_slots": 1, "holders": ["new"]}
    db.close()


def test_several_etcd_endpoints_as_in_airlocks_config(fleet_etcd: str,
                                                      etcd: etcd3gw.Etcd3Client) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    backend: Backend
    with open_backend("etcd", f"{dead},{fleet_etcd}", timeout=2) as backend:
        assert backend.describe() == f"etcd at {dead}, {fleet_etcd}"
        service = FleetLockService(backend, FleetConfig({"default": 1}))
        with FleetLockServer(service, "127.0.0.1", 0).start() as srv:
            FleetLockClient(srv.url).pre_reboot("n1")
        assert [h.id for h in service.status()[0].holders] == ["n1"]

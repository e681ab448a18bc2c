"""The FleetLock server's HTTP layer on 127.0.0.1: framing, keep-alive, limits, timeouts, errors.

Each fault found in the stdlib server has its reproduction here: a chunked
body (answered 400, its unread bytes then parsed as the next request), error
answers that were HTML or empty, a lone surrogate in the id (500). Requests go
over raw sockets where the bytes matter, and over ``http.client`` otherwise.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import threading
import time
import urllib.parse
from collections.abc import AsyncIterator, Iterator
from typing import IO, Any

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atoll.fleet.backends import Backend
from atoll.fleet.backends.memory import MemoryBackend
from atoll.fleet.config import FleetConfig
from atoll.fleet.protocol import ERRORS, MAX_BODY, ClientParams
from atoll.fleet.server import FleetLockServer, read_body
from atoll.fleet.service import FleetLockService
from tests.integration import fleet_fixtures

fleet_etcd = fleet_fixtures.fleet_etcd
fleet_backend = fleet_fixtures.fleet_backend
fleet_server = fleet_fixtures.fleet_server

GOOD = b"fleet-lock-protocol: true\r\n"


def lock_body(cid: str = "n1", group: str = "default") -> bytes:
    return ClientParams(cid, group).to_body()


def address(server: FleetLockServer) -> tuple[str, int]:
    url = urllib.parse.urlsplit(server.url)
    return url.hostname or "", url.port or 0


def chunked(body: bytes, size: int = 7) -> bytes:
    out = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + size]), body[i:i + size])
                   for i in range(0, len(body), size))
    return out + b"0\r\n\r\n"


def request(path: str, body: bytes, *, mode: str = "length", method: str = "POST",
            headers: bytes = GOOD) -> bytes:
    """One HTTP/1.1 request's bytes, its body sent with Content-Length or chunked."""
    head = f"{method} {path} HTTP/1.1\r\nHost: lock\r\n".encode() + headers
    if mode == "chunked":
        return head + b"Transfer-Encoding: chunked\r\n\r\n" + chunked(body)
    return head + b"Content-Length: %d\r\n\r\n" % len(body) + body


def read_response(f: IO[bytes]) -> tuple[int, dict[str, str], bytes]:
    """One response from a buffered socket file (the server always sends Content-Length)."""
    status_line = f.readline()
    assert status_line.startswith(b"HTTP/1.1 "), status_line
    headers: dict[str, str] = {}
    while (line := f.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    body = f.read(int(headers["content-length"]))
    return int(status_line.split()[1]), headers, body


@pytest.fixture
def server() -> Iterator[FleetLockServer]:
    """A server on the memory backend (the HTTP layer is what these tests look at)."""
    service = FleetLockService(MemoryBackend(), FleetConfig({"default": 1, "db": 2}))
    with FleetLockServer(service, "127.0.0.1", 0).start() as srv:
        yield srv


def is_json_error(status: int, headers: dict[str, str], body: bytes) -> dict[str, Any]:
    assert headers.get("content-type") == "application/json", headers
    error: dict[str, Any] = json.loads(body)
    assert set(error) == {"kind", "value"} and (status, error["kind"]) in ERRORS
    return error


BODIES = [
    lock_body("n1"),  # 200
    lock_body("n2"),  # 500 full (n1 holds the one slot)
    b'{"client_params": {"id": "\\ud800", "group": "default"}}',  # 400, was a 500
    b'{"client_params": {"id": "", "group": "default"}}',  # 400 empty id
    b"not json at all",  # 400
    lock_body("n3", "nope"),  # 400 unknown group
]


def test_chunked_is_answered_like_content_length_on_one_keep_alive_connection(
        fleet_server: FleetLockServer, fleet_backend: Backend) -> None:
    # the reproduction: a chunked request was 400, then its body parsed as a request
    with socket.create_connection(address(fleet_server), timeout=10) as sock:
        f = sock.makefile("rb")
        for body in BODIES:
            answers = []
            for mode in ("chunked", "length", "chunked"):
                sock.sendall(request("/v1/pre-reboot", body, mode=mode))
                status, _, out = read_response(f)
                answers.append((status, out))
            assert answers[0] == answers[1] == answers[2], (body, answers)
        # and what follows on the same connection is answered as itself
        sock.sendall(request("/v1/steady-state", lock_body("n1"), mode="chunked")
                     + request("/atoll/v1/status", b"", method="GET", headers=b""))
        assert read_response(f)[0] == 200
        status, _, out = read_response(f)
        assert status == 200 and {g["group"]: g["holders"] for g in json.loads(out)["groups"]}[
            "default"] == []
    sem, _ = fleet_backend.load("default")
    assert sem is not None and sem.holders == ()


def test_chunked_with_http_client_then_next_request(server: FleetLockServer) -> None:
    conn = http.client.HTTPConnection(*address(server), timeout=10)
    body = lock_body("n1")
    conn.request("POST", "/v1/pre-reboot", body=iter([body[:5], body[5:]]),
                 headers={"fleet-lock-protocol": "true"}, encode_chunked=True)
    resp = conn.getresponse()
    assert (resp.status, resp.read()) == (200, b"")
    conn.request("POST", "/v1/pre-reboot", body=lock_body("n2"),
                 headers={"fleet-lock-protocol": "true"})
    resp = conn.getresponse()
    assert resp.status == 500 and json.loads(resp.read())["kind"] == "failed_lock_semaphore_full"
    conn.close()


@pytest.mark.parametrize("mode", ["length", "chunked"])
def test_a_body_over_64k_is_413_and_the_connection_closes(server: FleetLockServer,
                                                          mode: str) -> None:
    with socket.create_connection(address(server), timeout=10) as sock:
        sock.sendall(request("/v1/pre-reboot", b" " * (MAX_BODY + 1), mode=mode))
        f = sock.makefile("rb")
        status, headers, out = read_response(f)
        assert (status, json.loads(out)) == (413, {"kind": "request_too_large",
                                                   "value": "body over 65536 bytes"})
        assert headers["connection"] == "close"
        assert f.read() == b""  # closed: the rest of the body is never read as a request
    # exactly at the limit is fine (and then only the JSON decides)
    with socket.create_connection(address(server), timeout=10) as sock:
        sock.sendall(request("/v1/pre-reboot", lock_body("n1").ljust(MAX_BODY), mode=mode))
        assert read_response(sock.makefile("rb"))[0] == 200


def test_a_client_still_sending_gets_the_413_not_a_reset(server: FleetLockServer) -> None:
    # the server refuses before reading the body; it must not reset the connection
    # under a client that is still sending (the answer would be lost)
    body = b"x" * (8 * MAX_BODY)
    with socket.create_connection(address(server), timeout=10) as sock:
        sender = threading.Thread(target=_send_quietly,
                                  args=(sock, request("/v1/pre-reboot", body)))
        sender.start()
        time.sleep(0.5)  # the answer is sent (and a reset would be too) before it is read
        f = sock.makefile("rb")
        status, headers, out = read_response(f)
        assert f.read() == b""  # a clean end (FIN), not "connection reset by peer"
        sender.join(timeout=15)
    assert (status, json.loads(out)["kind"]) == (413, "request_too_large")
    assert headers["connection"] == "close"


def _send_quietly(sock: socket.socket, data: bytes) -> None:
    with contextlib.suppress(OSError):
        sock.sendall(data)


def test_a_declared_huge_body_is_refused_before_it_is_sent(server: FleetLockServer) -> None:
    with socket.create_connection(address(server), timeout=10) as sock:
        sock.sendall(b"POST /v1/pre-reboot HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000\r\n"
                     + GOOD + b"\r\n" + b"x" * 100)
        status, _, out = read_response(sock.makefile("rb"))
        assert status == 413 and json.loads(out)["kind"] == "request_too_large"


class _Endless:
    """A request whose body never ends: counts what the server pulled from it."""

    def __init__(self) -> None:
        self.pulled = 0
        self.headers: dict[str, str] = {}

    async def stream(self) -> AsyncIterator[bytes]:
        while True:
            self.pulled += 1
            yield b"x" * 1024


def test_the_body_is_read_as_a_stream_and_never_beyond_the_limit() -> None:
    endless = _Endless()

    async def main() -> None:
        with pytest.raises(Exception) as err:
            await read_body(endless, 10)  # type: ignore[arg-type]
        assert getattr(err.value, "kind", None) == "request_too_large"

    anyio.run(main)
    assert endless.pulled == MAX_BODY // 1024 + 1  # one chunk past the limit, not one more


def test_every_error_is_json(server: FleetLockServer) -> None:
    with socket.create_connection(address(server), timeout=10) as sock:
        f = sock.makefile("rb")
        cases = [
            (request("/v2/pre-reboot", lock_body()), 404, "not_found"),
            (request("/", b"", method="GET"), 404, "not_found"),
            (b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n", 404, "not_found"),
            (request("/v1/pre-reboot", b"", method="GET"), 405, "method_not_allowed"),
            (request("/v1/steady-state", b"x", method="DELETE"), 405, "method_not_allowed"),
            (request("/atoll/v1/status", b"", method="POST"), 405, "method_not_allowed"),
            (request("/v1/pre-reboot", lock_body(), headers=b""), 400,
             "invalid_client_identity"),
            (request("/v1/pre-reboot", lock_body("n1", "zz")), 400, "unknown_group"),
        ]
        for raw, status, kind in cases:
            sock.sendall(raw)
            got, headers, out = read_response(f)
            assert (got, is_json_error(got, headers, out)["kind"]) == (status, kind), raw
            if status == 405:
                assert headers["allow"] in ("POST", "GET")
        # not HTTP at all: JSON too, and the connection is closed
        sock.sendall(b"\x16\x03\x01 hello TLS?\r\n\r\n")
        got, headers, out = read_response(f)
        assert (got, is_json_error(got, headers, out)["kind"]) == (400, "bad_request")
        assert f.read() == b""


def test_a_bug_is_a_json_500(server: FleetLockServer, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object) -> tuple[int, bytes]:
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(server.service, "answer", broken)
    conn = http.client.HTTPConnection(*address(server), timeout=10)
    conn.request("POST", "/v1/pre-reboot", body=lock_body(),
                 headers={"fleet-lock-protocol": "true"})
    resp = conn.getresponse()
    assert resp.status == 500 and json.loads(resp.read()) == {
        "kind": "internal_error", "value": "internal error; see the FleetLock server's log"}
    conn.close()


def test_idle_connections_and_slow_bodies_time_out() -> None:
    service = FleetLockService(MemoryBackend(), FleetConfig())
    with FleetLockServer(service, "127.0.0.1", 0, idle_timeout=1).start() as srv:
        with socket.create_connection(address(srv), timeout=15) as idle:
            t0 = time.monotonic()
            assert idle.recv(100) == b""  # closed without a word: it never asked anything
            assert 0.5 < time.monotonic() - t0 < 10
        with socket.create_connection(address(srv), timeout=15) as slow:
            slow.sendall(b"POST /v1/pre-reboot HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n"
                         + GOOD + b"\r\n{")
            status, headers, out = read_response(slow.makefile("rb"))
            assert (status, json.loads(out)["kind"]) == (408, "request_timeout")
            assert headers["connection"] == "close"
        with socket.create_connection(address(srv), timeout=15) as half:
            half.sendall(b"POST /v1/pre-re")  # a request head that never ends
            assert half.recv(100) == b""


def test_server_api_port_0_threads_and_shutdown() -> None:
    service = FleetLockService(MemoryBackend(), FleetConfig())
    srv = FleetLockServer(service, "127.0.0.1", 0)
    host, port = address(srv)
    assert port > 0 and srv.url == f"http://127.0.0.1:{port}"
    thread = threading.Thread(target=srv.serve_forever)
    thread.start()
    conn = http.client.HTTPConnection(host, port, timeout=10)
    conn.request("GET", "/atoll/v1/status")
    assert conn.getresponse().status == 200
    conn.close()
    srv.shutdown()
    thread.join(timeout=15)
    assert not thread.is_alive()
    srv.stop()
    with pytest.raises(OSError):
        socket.create_connection((host, port), timeout=2)
    # never started: stop() just closes the socket
    FleetLockServer(service, "127.0.0.1", 0).stop()


def test_ipv6_listen_address() -> None:
    try:
        socket.create_server(("::1", 0), family=socket.AF_INET6).close()
    except OSError:
        pytest.fail("no IPv6 loopback on this machine")  # the test machines have one
    service = FleetLockService(MemoryBackend(), FleetConfig())
    with FleetLockServer(service, "::1", 0).start() as srv:
        assert srv.url.startswith("http://[::1]:")
        conn = http.client.HTTPConnection("::1", address(srv)[1], timeout=10)
        conn.request("GET", "/atoll/v1/status")
        assert conn.getresponse().status == 200
        conn.close()


# Property: over one kept-alive connection, whatever the body and however it is framed,
# the answer is a documented (status, kind) with a JSON body, never a 500 for client input.
_http_bodies = st.one_of(
    st.binary(max_size=400),
    st.builds(lambda cid, grp: json.dumps({"client_params": {"id": cid, "group": grp}}).encode(),
              st.one_of(st.text(st.characters(exclude_categories=()), max_size=30),
                        st.sampled_from(["a", "b", "c"])),
              st.sampled_from(["default", "db", "nope", "", "\ud800"])),
)


@pytest.fixture(scope="module")
def prop_server() -> Iterator[tuple[FleetLockServer, list[http.client.HTTPConnection]]]:
    service = FleetLockService(MemoryBackend(), FleetConfig({"default": 1, "db": 2}))
    with FleetLockServer(service, "127.0.0.1", 0).start() as srv:
        conns = [http.client.HTTPConnection(*address(srv), timeout=10)]
        yield srv, conns
        conns[0].close()


@settings(max_examples=150)
@given(body=_http_bodies, path=st.sampled_from(["/v1/pre-reboot", "/v1/steady-state"]),
       framing=st.sampled_from(["length", "chunked"]))
def test_any_body_over_http_gets_a_documented_json_answer(
        prop_server: tuple[FleetLockServer, list[http.client.HTTPConnection]],
        body: bytes, path: str, framing: str) -> None:
    _, conns = prop_server
    conn = conns[0]
    sent: Any = iter([body[:3], body[3:]]) if framing == "chunked" else body
    conn.request("POST", path, body=sent, headers={"fleet-lock-protocol": "true"},
                 encode_chunked=framing == "chunked")
    resp = conn.getresponse()
    out = resp.read()
    assert not resp.will_close  # the connection stays usable for the next example
    if resp.status == 200:
        assert out == b""
        return
    error = is_json_error(resp.status, {"content-type": resp.getheader("content-type") or ""},
                          out)
    assert resp.status != 500 or error["kind"] == "failed_lock_semaphore_full", error


@pytest.mark.parametrize(("body", "status"), [
    # review of issue 13: atoll answered 400 where airlock's Go decoder accepts the body
    (b'{"Client_Params": {"ID": "n1", "Group": "default"}}', 200),
    (lock_body("n1") + b"xyz", 200),
    (lock_body("n1") + lock_body("n2"), 200),  # the first value only: n1, not n2
    # and 200 where airlock refuses it: NaN is not JSON to Go
    (b'{"client_params": {"id": "n1", "group": "default"}, "n": NaN}', 400),
])
def test_bodies_are_read_as_airlock_reads_them_in_both_framings(
        server: FleetLockServer, body: bytes, status: int) -> None:
    with socket.create_connection(address(server), timeout=10) as sock:
        f = sock.makefile("rb")
        for mode in ("length", "chunked"):
            sock.sendall(request("/v1/pre-reboot", body, mode=mode))
            got, headers, out = read_response(f)
            assert got == status, (mode, out)
            if status != 200:
                assert is_json_error(got, headers, out)["kind"] == "invalid_client_identity"
        # the whole body was read: the next request on the connection is answered as itself
        sock.sendall(request("/v1/steady-state", lock_body("n1")))
        assert read_response(f)[0] == 200
    holders = {g.group: [h.id for h in g.holders] for g in server.service.status()}
    assert holders.get("default", []) == []  # n1 locked, then released; n2 never

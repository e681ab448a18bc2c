"""only-from: parsing and matching (addresses, CIDR, IPv6, mapped IPv4)."""

from __future__ import annotations

import pytest

from atoll.core.errors import InputError
from atoll.monitor.access import parse_only_from


def test_empty_allows_all() -> None:
    for value in (None, "", []):
        acl = parse_only_from(value)
        assert acl.allow_all and acl.allows("203.0.113.9") and acl.render() == ""


def test_addresses_and_networks() -> None:
    acl = parse_only_from("10.0.0.5,127.0.0.1 192.168.10.0/24")
    assert acl.allows("10.0.0.5") and acl.allows("127.0.0.1")
    assert acl.allows("192.168.10.200")
    assert not acl.allows("10.0.0.6") and not acl.allows("127.0.0.2")
    assert not acl.allows("192.168.11.1")
    assert acl.render() == "10.0.0.5 127.0.0.1 192.168.10.0/24"


def test_ipv6_and_mapped() -> None:
    acl = parse_only_from(["::1", "2001:db8::/32", "10.0.0.0/8"])
    assert acl.allows("::1") and acl.allows("2001:db8:1::7")
    assert not acl.allows("2001:db9::1") and not acl.allows("fe80::1")
    assert acl.allows("::ffff:10.1.2.3")  # IPv4 client on a dual-stack socket
    assert not acl.allows("::ffff:11.1.2.3")
    assert acl.allows("fe80::1%eth0") is False
    assert parse_only_from("fe80::/10").allows("fe80::1%eth0")


def test_garbage_peer_is_refused() -> None:
    assert not parse_only_from("10.0.0.5").allows("not-an-address")


def test_host_bits_are_tolerated() -> None:
    assert parse_only_from("10.0.0.5/24").allows("10.0.0.99")


@pytest.mark.parametrize("bad", ["10.0.0.300", "example.com", "10.0.0.0/33", "::1/200"])
def test_invalid_entries(bad: str) -> None:
    with pytest.raises(InputError, match="only-from"):
        parse_only_from(f"127.0.0.1,{bad}")

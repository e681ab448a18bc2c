"""FleetLock config: airlock's config.toml, read as airlock reads it (pure, plus one file read)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from atoll.core.errors import InputError, SpecError
from atoll.fleet.config import EtcdSettings, FleetConfig, load_config, parse_config
from tests.conftest import ROOT

AIRLOCK_EXAMPLE = ROOT / "tests/data/airlock/config.toml"
SLOTS_MAX = 2**63 - 1
WHY = (" (airlock compares slots as a signed 64-bit integer: above that it refuses every "
       "lock of the group)")


def test_airlocks_own_example_is_accepted_unchanged() -> None:
    cfg = load_config(AIRLOCK_EXAMPLE)
    assert cfg.groups == {"default": 2, "workers": 2, "controllers": 1}
    assert cfg.listen == ("127.0.0.1", 3333)  # [service]: where to listen, unless --listen
    assert cfg.etcd == EtcdSettings(("http://127.0.0.1:2379",))  # unless --etcd/--embedded
    # [status] enabled: airlock's metrics service is not in atoll: said, not refused
    assert len(cfg.warnings) == 1 and "status: airlock's metrics service" in cfg.warnings[0]
    assert cfg.warnings[0].startswith(f"{AIRLOCK_EXAMPLE}: ")


def test_default_without_file() -> None:
    assert load_config(None) == FleetConfig({"default": 1})
    assert parse_config({}, "f.toml") == FleetConfig({"default": 1})
    assert parse_config({"lock": {}}, "f.toml").groups == {"default": 1}


def test_merge_lock_as_airlock() -> None:
    # airlock's mergeLock: entries in order (a later one wins), then the default group on top
    cfg = parse_config({"lock": {"default_group_name": "default", "default_slots": 3, "groups": [
        {"name": "default", "slots": 1},  # overridden by default_slots
        {"name": "db_primary"}, {"name": "rack 7/\u03b1", "slots": 0}, {"name": "a.b-c_d~"},
        {"name": "db_primary", "slots": 9}]}}, "f.toml")
    assert cfg.groups == {"default": 3, "db_primary": 9, "rack 7/\u03b1": 0, "a.b-c_d~": 3}
    assert cfg.warnings == (
        "f.toml: lock.groups[0]: named like the default group 'default': lock.default_slots "
        "(3) applies, not 1 (as in airlock)",
        "f.toml: lock.groups[4].name: group 'db_primary' also at lock.groups[1]; this later "
        "entry wins (as in airlock)",
    )
    # the same slots as the default: nothing to warn about
    assert parse_config({"lock": {"groups": [{"name": "default"}]}}, "f").warnings == ()


def test_default_group_name_and_slots() -> None:
    cfg = parse_config({"lock": {"default_group_name": "workers_eu", "default_slots": 0,
                                 "groups": [{"name": "db", "slots": 2}]}}, "f.toml")
    assert cfg.groups == {"db": 2, "workers_eu": 0}  # 0 slots: the group is frozen


def test_empty_group_name_is_accepted_but_said() -> None:
    cfg = parse_config({"lock": {"groups": [{"slots": 2}, {"name": ""}]}}, "f.toml")
    assert cfg.groups == {"": 1, "default": 1}
    assert any("a group with an empty name: no client can ask for it" in w
               for w in cfg.warnings)


def test_unknown_keys_and_tables_are_ignored_with_a_warning() -> None:
    cfg = parse_config({"lock": {"default_slot": 2, "groups": [{"name": "db", "slot": 1}]},
                        "metrics": {"x": 1}, "service": {"adress": "::"}}, "f.toml")
    assert cfg.groups == {"db": 1, "default": 1}
    assert set(cfg.warnings) == {
        "f.toml: metrics: unknown table, ignored (as airlock ignores it)",
        "f.toml: lock.default_slot: unknown setting, ignored (as airlock ignores it)",
        "f.toml: lock.groups[0].slot: unknown setting, ignored (as airlock ignores it)",
        "f.toml: service.adress: unknown setting, ignored (as airlock ignores it)",
    }


@pytest.mark.parametrize(("service", "listen"), [
    ({"address": "10.0.0.1", "port": 3333, "tls": False}, ("10.0.0.1", 3333)),
    ({"port": 3333}, ("0.0.0.0", 3333)),  # airlock's defaults for what it leaves out
    ({"tls": False}, ("0.0.0.0", 9090)),
    ({"address": "::1"}, ("::1", 9090)),
])
def test_service_table_gives_the_listen_address(service: dict[str, Any],
                                                listen: tuple[str, int]) -> None:
    assert parse_config({"service": service}, "f.toml").listen == listen


def test_etcd3_table() -> None:
    cfg = parse_config({"etcd3": {"endpoints": ["https://e1:2379", "https://e2:2379"],
                                  "transaction_timeout_ms": 1500,
                                  "client_cert_pub_path": "/etc/airlock/c.pem",
                                  "client_cert_key_path": "/etc/airlock/k.pem"}}, "f.toml")
    assert cfg.etcd == EtcdSettings(("https://e1:2379", "https://e2:2379"), 1.5,
                                    "/etc/airlock/c.pem", "/etc/airlock/k.pem")
    assert cfg.warnings == ()
    assert parse_config({"status": {"enabled": False, "port": 2222}}, "f").warnings == ()


def test_type_errors_are_refused_as_airlock_refuses_them() -> None:
    with pytest.raises(SpecError) as err:
        parse_config({
            "lock": {"default_slots": -1, "default_group_name": 7,
                     "groups": [{"name": 7}, {"name": "x", "slots": "two"}, "y",
                                {"name": "z", "slots": True}]},
            "service": {"port": 70000, "tls": True, "address": 1},
            "status": {"enabled": "yes"},
            "etcd3": {"endpoints": "http://e:2379", "transaction_timeout_ms": 0,
                      "client_cert_pub_path": "/c.pem"},
        }, "f.toml")
    assert set(err.value.problems) == {
        f"f.toml: lock.default_slots: must be an integer from 0 to {SLOTS_MAX}{WHY}, got -1",
        "f.toml: lock.default_group_name: must be a string, got 7",
        "f.toml: lock.groups[0].name: must be a string, got 7",
        f"f.toml: lock.groups[1].slots: must be an integer from 0 to {SLOTS_MAX}{WHY}, "
        "got 'two'",
        "f.toml: lock.groups[2]: must be a table",
        f"f.toml: lock.groups[3].slots: must be an integer from 0 to {SLOTS_MAX}{WHY}, "
        "got True",
        "f.toml: service.port: must be an integer from 0 to 65535, got 70000",
        "f.toml: service.address: must be a string, got 1",
        "f.toml: service.tls: atoll serves plain HTTP (as airlock does: it refuses tls = true "
        "too); put a TLS proxy in front and set tls = false",
        "f.toml: status.enabled: must be true or false, got 'yes'",
        "f.toml: etcd3.endpoints: must be a list of URLs, got 'http://e:2379'",
        "f.toml: etcd3.transaction_timeout_ms: must be an integer from 1 to "
        "9223372036854 (airlock's largest Go duration), got 0",
        "f.toml: etcd3: client_cert_pub_path and client_cert_key_path go together",
    }
    with pytest.raises(SpecError, match=r"lock\.groups: must be an array of tables"):
        parse_config({"lock": {"groups": {"name": "x"}}}, "f.toml")
    with pytest.raises(SpecError, match="lock: must be a table"):
        parse_config({"lock": 1}, "f.toml")


def test_config_file(tmp_path: Path) -> None:
    path = tmp_path / "fleetlock.toml"
    path.write_text('[lock]\ndefault_group_name = "db"\n[[lock.groups]]\nname = "web"\nslots = 5\n')
    assert load_config(path) == FleetConfig({"web": 5, "db": 1})
    path.write_text("[lock\n")
    with pytest.raises(InputError, match="not valid TOML"):
        load_config(path)
    with pytest.raises(InputError, match="cannot read"):
        load_config(path.with_name("missing.toml"))


def test_slots_above_what_airlock_can_compare_are_refused() -> None:
    """airlock stores slots as uint64 but compares them as a Go int: 2^64-1 becomes -1
    and airlock refuses every lock of the group, while atoll granted them (review of
    issue 13, odd.toml). The largest value both read the same is 2^63-1."""
    assert parse_config({"lock": {"default_slots": SLOTS_MAX, "groups": [
        {"name": "big", "slots": SLOTS_MAX}]}}, "f.toml").groups == {
        "big": SLOTS_MAX, "default": SLOTS_MAX}
    for table in ({"default_slots": 2**64 - 1}, {"groups": [{"name": "big", "slots": 2**63}]}):
        with pytest.raises(SpecError, match="signed 64-bit integer"):
            parse_config({"lock": table}, "f.toml")
    with pytest.raises(SpecError, match="transaction_timeout_ms"):
        parse_config({"etcd3": {"transaction_timeout_ms": 2**64 - 1}}, "f.toml")


def test_the_config_is_read_only_from_a_regular_file_of_bounded_size(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo.toml"
    os.mkfifo(fifo)
    with pytest.raises(InputError, match="is a FIFO"):
        load_config(fifo)  # would block forever reading
    with pytest.raises(InputError, match="is a device"):
        load_config(Path("/dev/zero"))  # would never end
    big = tmp_path / "big.toml"
    big.write_bytes(b"#" * (1024 * 1024 + 1))
    with pytest.raises(InputError, match="larger than 1 MiB"):
        load_config(big)

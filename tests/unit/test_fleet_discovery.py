"""Service discovery, the pure parts: keys, entries, sync plans, watch changes, the
Prometheus HTTP SD document, the agent's fleet.toml, the SD server's token file."""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import given
from hypothesis import strategies as st

from atoll.agent.discovery import (
    MAX_BACKOFF_S,
    Discovery,
    DiscoveryConfig,
    host_name,
    metrics_listen,
    parse_discovery,
)
from atoll.core.errors import InputError, RuntimeBackendError, SpecError
from atoll.fleet.discovery import (
    PREFIX,
    AppEntry,
    Endpoint,
    HostEntry,
    Services,
    advertised,
    app_key,
    app_specific_id,
    changes,
    check_name,
    collect,
    encode,
    host_key,
    label_name,
    metrics_target,
    parse_entry,
    plan_sync,
    sd_document,
    with_since,
)
from atoll.fleet.sd_http import bearer_token, load_token

ROOT = Path(__file__).resolve().parents[2]

# Prometheus' HTTP SD format (https://prometheus.io/docs/prometheus/latest/http_sd/): a
# list of target groups; label names as the data model allows them
# (https://prometheus.io/docs/concepts/data_model/), values any UTF-8 string; a target is
# HOST:PORT (Prometheus adds the scheme and metrics path from the scrape config).
PROMETHEUS_HTTP_SD = {
    "type": "array",
    "items": {
        "type": "object",
        "required": ["targets"],
        "additionalProperties": False,
        "properties": {
            "targets": {"type": "array", "items": {
                "type": "string", "pattern": r"^(\[[0-9a-fA-F:.]+\]|[^:/\s\[\]]+):[0-9]{1,5}$"}},
            "labels": {"type": "object",
                       "propertyNames": {"pattern": r"^[a-zA-Z_][a-zA-Z0-9_]*$"},
                       "additionalProperties": {"type": "string"}},
        },
    },
}


def host(customer: str = "acme", name: str = "db01", *, metrics: str | None = "10.0.0.7:9101",
         labels: dict[str, str] | None = None) -> HostEntry:
    return HostEntry(customer=customer, host=name, machine_id="0123abcd" * 4, address="10.0.0.7",
                     metrics=metrics, metrics_listen="0.0.0.0:9101", labels=labels or {},
                     agent_version="0.1.0", registered="2026-11-29T12:00:00Z")


def app(name: str = "mariadb", *, customer: str = "acme", host_: str = "db01",
        state: str = "running", health: str = "healthy", repl: str | None = "primary"
        ) -> AppEntry:
    return AppEntry(customer=customer, host=host_, app=name, address="10.0.0.7",
                    endpoints=(Endpoint("10.0.0.7", 3306, "tcp", 3306),), role="database",
                    replication_role=repl, image="atoll/mariadb:bookworm", state=state,
                    health=health, since="2026-11-29T12:00:00Z")


def stored(*entries: HostEntry | AppEntry) -> list[tuple[str, bytes]]:
    out = []
    for e in entries:
        key = host_key(e.customer, e.host) if isinstance(e, HostEntry) else \
            app_key(e.customer, e.host, e.app)
        out.append((key, encode(e)))
    return out


# -- keys and names ------------------------------------------------------------------------

def test_key_layout() -> None:
    assert host_key("acme", "db01") == "/atoll/services/acme/db01/host"
    assert app_key("acme", "db01", "mariadb") == "/atoll/services/acme/db01/apps/mariadb"
    assert host_key("a", "b").startswith(PREFIX)


@pytest.mark.parametrize("bad", ["", "-x", "x-", "Acme", "a/b", "a.b", "a b", "x" * 64, None, 7])
def test_names_are_dns_labels(bad: Any) -> None:
    with pytest.raises(InputError):
        check_name(bad, "customer")


def test_good_names() -> None:
    for good in ("a", "db01", "acme-eu", "x" * 63):
        assert check_name(good, "host") == good


# -- the host's id -----------------------------------------------------------------------

def test_the_registered_id_is_systemds_app_specific_machine_id() -> None:
    # `systemd-id128 machine-id --app-specific=c129a412c43f447592c74b756ceae6da` on a
    # machine whose /etc/machine-id is 3d1219c7c4c5404aaa1f6d2a48adfda4 (systemd 252)
    machine_id = "3d1219c7c4c5404aaa1f6d2a48adfda4"
    assert app_specific_id(machine_id + "\n") == "b439ff6b8a5946d689c761dda5b6d60f"
    assert app_specific_id(machine_id.upper()) == "b439ff6b8a5946d689c761dda5b6d60f"
    assert app_specific_id(machine_id, bytes(16)) != app_specific_id(machine_id)
    # without a machine id the agent falls back to the host name: hashed the same way
    derived = app_specific_id("db01")
    assert re.fullmatch(r"[0-9a-f]{12}4[0-9a-f]{3}[89ab][0-9a-f]{15}", derived)
    assert "db01" not in derived


# -- addresses ---------------------------------------------------------------------------

def test_wildcard_binds_are_reached_at_the_advertised_address() -> None:
    assert advertised("0.0.0.0", "10.0.0.7") == "10.0.0.7"
    assert advertised("::", "10.0.0.7") == "10.0.0.7"
    assert advertised("", "10.0.0.7") == "10.0.0.7"
    assert advertised("192.168.1.5", "10.0.0.7") == "192.168.1.5"
    assert advertised("127.0.0.1", "10.0.0.7") == "127.0.0.1"


def test_metrics_target() -> None:
    assert metrics_target(("0.0.0.0", 9101), "10.0.0.7") == "10.0.0.7:9101"
    assert metrics_target(("10.0.0.7", 9101), "10.0.0.7") == "10.0.0.7:9101"
    assert metrics_target(("::", 9101), "fd00::7") == "[fd00::7]:9101"
    assert metrics_target(None, "10.0.0.7") is None
    # loopback only: others cannot scrape it; Prometheus would scrape its own machine
    assert metrics_target(("127.0.0.1", 9101), "10.0.0.7") is None
    assert metrics_target(("::1", 9101), "10.0.0.7") is None
    # ... unless the host is advertised on loopback too (one machine, tests)
    assert metrics_target(("127.0.0.1", 9101), "127.0.0.1") == "127.0.0.1:9101"


# -- entries -----------------------------------------------------------------------------

def test_entries_round_trip_through_etcd_values() -> None:
    for entry in (host(labels={"site": "fra1"}), app(), app(repl=None, health="none")):
        key = stored(entry)[0][0]
        value = encode(entry)
        assert parse_entry(key, value) == entry
        doc = json.loads(value)
        assert doc["apiVersion"] == "atoll/v1" and doc["kind"] == entry.kind
        assert value == json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def test_entries_match_the_documented_schema() -> None:
    schema = json.loads((ROOT / "docs/services.schema.json").read_text())
    for entry in (host(), host(metrics=None), app(), app(state="missing", health="none",
                                                          repl=None)):
        jsonschema.validate(entry.to_json(), schema)
    listing = collect([*stored(host(), app(), app("orphan", host_="gone")),
                       ("/atoll/services/x/y/host", b"{}")])
    jsonschema.validate(listing.to_json(), schema)


def test_ready_means_running_and_healthy_or_unchecked() -> None:
    assert app().ready
    assert app(health="none").ready
    assert not app(health="starting").ready
    assert not app(health="unhealthy").ready
    assert not app(state="exited", health="none").ready
    assert app().to_json()["ready"] is True


@pytest.mark.parametrize("key,value", [
    ("/elsewhere/acme/db01/host", encode(host())),
    ("/atoll/services/acme/db02/host", encode(host())),          # names another host
    ("/atoll/services/other/db01/host", encode(host())),         # another customer
    ("/atoll/services/acme/db01/apps/web", encode(app())),       # another app
    ("/atoll/services/acme/db01/apps/mariadb", encode(host())),  # a host under an app key
    ("/atoll/services/acme/db01/host", encode(app())),
    ("/atoll/services/acme/db01/host", b"not json"),
    ("/atoll/services/acme/db01/host", b"\xff\xfe"),
    ("/atoll/services/acme/db01/host", b"[]"),
    ("/atoll/services/acme/db01/host", json.dumps(host().to_json() | {"apiVersion": "v9"})
     .encode()),
    ("/atoll/services/acme/db01/apps/mariadb",
     json.dumps(app().to_json() | {"state": "sleeping"}).encode()),
    ("/atoll/services/acme/db01/apps/mariadb",
     json.dumps(app().to_json() | {"endpoints": [{"address": "x", "port": 0,
                                                  "protocol": "tcp",
                                                  "container_port": 1}]}).encode()),
    ("/atoll/services/acme/db01/extra/x", encode(host())),
])
def test_invalid_entries_are_refused(key: str, value: bytes) -> None:
    with pytest.raises(ValueError):
        parse_entry(key, value)
    found = collect([(key, value)])
    assert not found.hosts and not found.apps and key in found.invalid


def test_plan_sync() -> None:
    a, b, c = "/k/a", "/k/b", "/k/c"
    assert plan_sync({}, {a: b"1"}) == ({a: b"1"}, [])
    assert plan_sync({a: b"1", b: b"2"}, {a: b"1", b: b"3", c: b"4"}) == ({b: b"3", c: b"4"}, [])
    assert plan_sync({a: b"1", b: b"2"}, {a: b"1"}) == ({}, [b])
    assert plan_sync({a: b"1"}, {a: b"1"}) == ({}, [])


def test_since_changes_only_with_the_content() -> None:
    old = app()
    fresh = app()
    fresh = AppEntry(**{**fresh.__dict__, "since": ""})
    assert with_since(fresh, old, "2030-01-01T00:00:00Z").since == old.since
    sick = AppEntry(**{**fresh.__dict__, "health": "unhealthy"})
    assert with_since(sick, old, "2030-01-01T00:00:00Z").since == "2030-01-01T00:00:00Z"
    assert with_since(fresh, None, "2030-01-01T00:00:00Z").since == "2030-01-01T00:00:00Z"


def test_collect_select_and_listing() -> None:
    h1, h2 = host("acme", "db01"), host("beta", "db02")
    a1, a2 = app("mariadb"), app("web", customer="beta", host_="db02")
    orphan = app("cache", host_="gone")
    found = collect([*stored(h1, h2, a1, a2, orphan), ("/atoll/services/x/y/host", b"{}")])
    assert len(found.hosts) == 2 and len(found.apps) == 3 and len(found.invalid) == 1
    only = found.select(customers=["acme"])
    assert list(only.hosts.values()) == [h1] and set(only.apps.values()) == {a1, orphan}
    assert not only.invalid  # another customer's broken key is not shown
    by_app = found.select(app="web")
    assert list(by_app.hosts.values()) == [h2] and list(by_app.apps.values()) == [a2]
    doc = found.to_json()
    assert [h["host"] for h in doc["hosts"]] == ["db01", "db02"]
    assert [a["app"] for a in doc["hosts"][0]["apps"]] == ["mariadb"]
    assert [a["app"] for a in doc["apps_without_host"]] == ["cache"]
    assert doc["invalid"][0]["key"] == "/atoll/services/x/y/host"


def test_changes_as_a_watch_reports_them() -> None:
    before = dict(collect(stored(host(), app())).entries())
    sick = app(health="unhealthy")
    after = dict(collect(stored(host("acme", "db02"), sick)).entries())
    got = [(c.type, c.key) for c in changes(before, after)]
    assert got == [("MODIFIED", "/atoll/services/acme/db01/apps/mariadb"),
                   ("DELETED", "/atoll/services/acme/db01/host"),
                   ("ADDED", "/atoll/services/acme/db02/host")]
    assert changes(after, after) == []
    event = changes({}, after)[0].to_json()
    assert set(event) == {"type", "key", "object"} and event["type"] == "ADDED"


# -- Prometheus HTTP SD --------------------------------------------------------------------

def test_sd_document_lists_every_host_with_metrics() -> None:
    found = collect(stored(host("acme", "db01", labels={"site": "fra1", "rack/row": "7"}),
                           host("acme", "db02", metrics=None),
                           host("beta", "web1", metrics="[fd00::1]:9101"),
                           app("mariadb"), app("web", state="exited", health="none", repl=None)))
    doc = sd_document(found)
    jsonschema.validate(doc, PROMETHEUS_HTTP_SD)
    assert [g["targets"] for g in doc] == [["10.0.0.7:9101"], ["[fd00::1]:9101"]]
    labels = doc[0]["labels"]
    assert labels["customer"] == "acme" and labels["host"] == "db01"
    assert labels["__meta_atoll_label_site"] == "fra1"
    assert labels["__meta_atoll_label_rack_row"] == "7"
    assert labels["__meta_atoll_apps"] == ",mariadb,web,"
    assert labels["__meta_atoll_app_mariadb_replication_role"] == "primary"
    assert labels["__meta_atoll_app_mariadb_ready"] == "true"
    assert labels["__meta_atoll_app_web_ready"] == "false"
    assert "__meta_atoll_app_web_replication_role" not in labels
    assert doc[1]["labels"]["__meta_atoll_apps"] == ","
    assert sd_document(Services()) == []
    json.dumps(doc)


names = st.from_regex(r"\A[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?\Z")
apps = st.from_regex(r"\A[a-z][a-z0-9-]{0,8}[a-z0-9]\Z")
label_keys = st.from_regex(r"\A[a-z0-9]([a-z0-9._/-]{0,8}[a-z0-9])?\Z")


@given(st.lists(st.tuples(names, names, st.booleans(),
                          st.dictionaries(label_keys, st.text(max_size=20), max_size=3),
                          st.lists(apps, max_size=3, unique=True)), max_size=8))
def test_sd_document_is_always_valid_for_prometheus(
        hosts: list[tuple[str, str, bool, dict[str, str], list[str]]]) -> None:
    entries: list[HostEntry | AppEntry] = []
    for customer, name, scrapeable, labels, app_names in hosts:
        entries.append(host(customer, name, metrics="10.0.0.7:9101" if scrapeable else None,
                            labels=labels))
        entries += [app(a, customer=customer, host_=name) for a in app_names]
    found = collect(stored(*entries))
    assert not found.invalid
    doc = sd_document(found)
    jsonschema.validate(doc, PROMETHEUS_HTTP_SD)
    expected = {(h.customer, h.host) for h in found.hosts.values() if h.metrics}
    assert sorted((g["labels"]["customer"], g["labels"]["host"]) for g in doc) == \
        sorted(expected)
    assert json.loads(json.dumps(doc)) == doc


@given(st.text(max_size=30))
def test_label_names_are_sanitized(text: str) -> None:
    assert re.fullmatch(r"[a-zA-Z0-9_]*", label_name(text))


# -- the agent's fleet.toml ----------------------------------------------------------------

def test_config_defaults_and_values() -> None:
    cfg = parse_discovery({"etcd3": {"endpoints": ["http://10.0.0.2:2379"],
                                     "transaction_timeout_ms": 2000}}, "fleet.toml")
    assert isinstance(cfg, DiscoveryConfig)
    assert cfg.etcd.endpoints == ("http://10.0.0.2:2379",) and cfg.etcd.timeout_seconds == 2
    assert (cfg.customer, cfg.host, cfg.ttl_s, cfg.interval_s, cfg.metrics) == \
        ("default", None, 60, 10.0, "auto")
    cfg = parse_discovery({"etcd3": {"endpoints": ["http://e:2379"]},
                           "discovery": {"customer": "acme", "host": "db01", "ttl_s": 5,
                                         "interval_s": 0.5, "metrics": "0.0.0.0:9101",
                                         "address": "10.0.0.7", "labels": {"site": "fra1"}}},
                          "f")
    assert cfg is not None and (cfg.customer, cfg.host, cfg.ttl_s, cfg.interval_s) == \
        ("acme", "db01", 5, 0.5)
    assert dict(cfg.labels) == {"site": "fra1"} and cfg.address == "10.0.0.7"


def test_no_etcd_means_no_discovery() -> None:
    assert parse_discovery({}, "f") is None
    assert parse_discovery({"discovery": {"customer": "acme"}}, "f") is None
    assert parse_discovery({"etcd3": {"endpoints": []}}, "f") is None
    assert parse_discovery({"etcd3": {"endpoints": ["http://e:2379"]},
                            "discovery": {"enabled": False}}, "f") is None


class _DownEtcd:
    """An etcd client whose every call fails as an unreachable etcd does (or with ``exc``)."""

    def __init__(self, exc: Exception | None = None) -> None:
        self.exc = exc or RuntimeBackendError("etcd at http://10.0.0.2:2379 failed: "
                                              "ConnectionRefusedError")
        self.calls = 0

    def lease_grant(self, ttl: int) -> tuple[int, int]:
        self.calls += 1
        raise self.exc

    def close(self) -> None:
        pass


def _host_with_fleet_toml(tmp_path: Path) -> Path:
    (tmp_path / "etc/atoll").mkdir(parents=True)
    (tmp_path / "etc/hostname").write_text("db01\n")
    (tmp_path / "etc/machine-id").write_text("3d1219c7c4c5404aaa1f6d2a48adfda4\n")
    (tmp_path / "etc/atoll/fleet.toml").write_text(
        '[etcd3]\nendpoints = ["http://10.0.0.2:2379"]\n[discovery]\naddress = "10.0.0.7"\n'
        'metrics = "off"\n')
    return tmp_path


@pytest.mark.parametrize("bug", [False, True])
def test_etcd_down_backs_off_says_it_once_and_never_raises(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, bug: bool) -> None:
    etcd = _DownEtcd(ValueError("a bug") if bug else None)
    d = Discovery(_host_with_fleet_toml(tmp_path), connect=lambda settings: etcd)  # type: ignore[arg-type,return-value]
    caplog.set_level(logging.INFO, "atoll.agent.discovery")
    now, delays = 1000.0, []
    for _ in range(10):
        delay = d.step(now)  # never raises
        delays.append(delay)
        assert d.step(now + delay / 2) == pytest.approx(delay / 2)  # nothing before it is due
        now += delay
    assert etcd.calls == 10
    for i, delay in enumerate(delays):  # 1 s doubling to 30 s, +-20 % jitter
        assert 0.8 * min(MAX_BACKOFF_S, 2.0 ** i) <= delay <= 1.2 * min(MAX_BACKOFF_S, 2.0 ** i)
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "retrying with backoff" in warnings[0].getMessage()
    assert ("internal error: ValueError: a bug" if bug else "ConnectionRefusedError") in \
        warnings[0].getMessage()
    assert not any(r.exc_info for r in caplog.records if r.levelno > logging.DEBUG)
    assert "Traceback" not in caplog.text


def test_config_errors_are_located() -> None:
    with pytest.raises(SpecError) as err:
        parse_discovery({"etcd3": {"endpoints": ["http://e:2379"]},
                         "discovery": {"customer": "ACME", "ttl_s": 1, "interval_s": "fast",
                                       "metrics": "nowhere", "labels": {"Bad Key": "x"},
                                       "enabled": "yes"}}, "fleet.toml")
    text = "\n".join(err.value.problems)
    for field in ("customer", "ttl_s", "interval_s", "metrics", "labels", "enabled"):
        assert f"fleet.toml: discovery.{field}:" in text, text
    with pytest.raises(SpecError) as err:
        parse_discovery({"etcd3": {"endpoints": "http://e:2379"}}, "fleet.toml")
    assert "etcd3.endpoints" in str(err.value.problems)


def test_metrics_listen_auto_follows_the_metrics_unit(tmp_path: Path) -> None:
    assert metrics_listen(tmp_path, "auto") is None  # atoll-metrics.service not enabled
    wants = tmp_path / "etc/systemd/system/multi-user.target.wants"
    wants.mkdir(parents=True)
    (wants / "atoll-metrics.service").symlink_to("/usr/lib/systemd/system/atoll-metrics.service")
    assert metrics_listen(tmp_path, "auto") == ("127.0.0.1", 9101)  # the unit's default
    (tmp_path / "etc/atoll").mkdir()
    (tmp_path / "etc/atoll/metrics.env").write_text(
        "# comment\nATOLL_METRICS_LISTEN='0.0.0.0:9200'\n")
    assert metrics_listen(tmp_path, "auto") == ("0.0.0.0", 9200)
    assert metrics_listen(tmp_path, "off") is None
    assert metrics_listen(tmp_path, "10.0.0.7:9300") == ("10.0.0.7", 9300)


def test_host_name_is_the_first_label(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/hostname").write_text("DB01.example.com\n")
    assert host_name(tmp_path) == "db01"


# -- the SD server's token ---------------------------------------------------------------

def test_token_file_rules(tmp_path: Path) -> None:
    good = tmp_path / "token"
    good.write_text("s3cr3t-token-0123456789\n")
    os.chmod(good, 0o600)
    assert load_token(good) == "s3cr3t-token-0123456789"
    os.chmod(good, 0o644)
    with pytest.raises(InputError, match="readable by others"):
        load_token(good)
    short = tmp_path / "short"
    short.write_text("abc")
    os.chmod(short, 0o600)
    with pytest.raises(InputError, match="at least 16"):
        load_token(short)
    with pytest.raises(InputError, match="cannot read"):
        load_token(tmp_path / "missing")
    with pytest.raises(InputError, match="not a regular file"):
        os.chmod(tmp_path, 0o700)
        load_token(tmp_path)


class _Req:
    def __init__(self, header: str | None) -> None:
        self.headers = {} if header is None else {"authorization": header}


@pytest.mark.parametrize("header,ok", [
    ("Bearer s3cr3t-token-0123456789", True),
    ("bearer s3cr3t-token-0123456789", True),
    ("Bearer s3cr3t-token-012345678", False),
    ("Basic s3cr3t-token-0123456789", False),
    ("Bearer ", False),
    (None, False),
])
def test_bearer_token(header: str | None, ok: bool) -> None:
    from atoll.fleet.sd_http import NotAuthorized

    authorize = bearer_token("s3cr3t-token-0123456789")
    if ok:
        assert authorize(_Req(header)) is None  # type: ignore[arg-type]
    else:
        with pytest.raises(NotAuthorized) as err:
            authorize(_Req(header))  # type: ignore[arg-type]
        assert err.value.status == 401

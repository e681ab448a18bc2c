"""The audit chain's pure parts (atoll.control.auditchain): canonical encoding, links,
the first break, signed checkpoints, and CSV cells escaped against formula injection."""

from __future__ import annotations

import datetime as dt
import os
import threading
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from atoll.control.auditchain import (
    GENESIS,
    Break,
    Checkpoint,
    Link,
    audited,
    canonical,
    csv_cell,
    first_break,
    link_hash,
)

T0 = dt.datetime(2026, 11, 29, 12, 0, 0, 123456, tzinfo=dt.UTC)


def _body(seq: int, kind: str = "labels", data: object = None) -> bytes:
    return canonical(seq, 100 + seq, T0 + dt.timedelta(seconds=seq), "operator:alice", kind,
                     7, "h-1", "db01", data if data is not None else {"set": {"site": "ams"}})


def _chain(n: int) -> list[Link]:
    links, prev = [], GENESIS
    for seq in range(1, n + 1):
        body = _body(seq)
        digest = link_hash(prev, body)
        links.append(Link(seq, 100 + seq, prev, digest, body))
        prev = digest
    return links


def test_an_intact_chain_ends_at_its_head() -> None:
    links = _chain(5)
    assert first_break(links) == (5, links[-1].hash)
    assert first_break([]) == (0, GENESIS)


def test_a_changed_event_breaks_its_own_entry() -> None:
    links = _chain(5)
    links[2] = Link(3, 103, links[2].prev_hash, links[2].hash, _body(3, kind="request"))
    broken = first_break(links)
    assert isinstance(broken, Break)
    assert (broken.seq, broken.event_id) == (3, 103)
    assert "changed" in str(broken) and str(broken).startswith("entry 3 (event 103)")


def test_a_removed_entry_and_a_deleted_event_are_named() -> None:
    links = _chain(5)
    gap = first_break(links[:2] + links[3:])
    assert isinstance(gap, Break) and gap.seq == 3 and "missing" in gap.reason
    gone = [*links[:3], Link(4, 104, links[3].prev_hash, links[3].hash, None), links[4]]
    broken = first_break(gone)
    assert isinstance(broken, Break) and broken.seq == 4 and "deleted" in broken.reason


def test_a_rewritten_entry_with_a_fresh_hash_breaks_the_next_link() -> None:
    links = _chain(4)
    body = _body(2, kind="prune")
    links[1] = Link(2, 102, links[1].prev_hash, link_hash(links[1].prev_hash, body), body)
    broken = first_break(links)
    assert isinstance(broken, Break) and broken.seq == 3
    assert "previous hash" in broken.reason


def test_canonical_covers_every_field_and_refuses_naive_times() -> None:
    base = dict(seq=1, event_id=2, time=T0, actor="operator:a", kind="k", customer_id=3,
                host_id="h", host_name="n", data={"before": 1, "after": 2})
    seen = {canonical(**base)}  # type: ignore[arg-type]
    for field, other in [("seq", 9), ("event_id", 9), ("time", T0 + dt.timedelta(microseconds=1)),
                         ("actor", "operator:b"), ("kind", "j"), ("customer_id", 4),
                         ("host_id", "g"), ("host_name", "m"), ("data", {"before": 1})]:
        seen.add(canonical(**(base | {field: other})))  # type: ignore[arg-type]
    assert len(seen) == 10
    with pytest.raises(ValueError, match="naive"):
        canonical(**(base | {"time": T0.replace(tzinfo=None)}))  # type: ignore[arg-type]
    # what the database gives back (JSON: keys are strings; other zones are UTC)
    assert canonical(**(base | {"data": {1: 2, 10: 3}})) == \
        canonical(**(base | {"data": {"1": 2, "10": 3}}))  # type: ignore[arg-type]
    cet = dt.timezone(dt.timedelta(hours=1))
    assert canonical(**(base | {"time": T0.astimezone(cet)})) == canonical(**base)  # type: ignore[arg-type]


def test_operators_actions_are_audited_hosts_and_the_server_are_not() -> None:
    assert audited("operator:alice") and audited("console:ann") and audited("server:cli")
    assert not audited("host:0b5c") and not audited("server")


def test_checkpoints_are_signed_and_checked() -> None:
    key = Ed25519PrivateKey.generate()
    cp = Checkpoint(42, "ab" * 32, T0).signed(key)
    assert cp.valid(key.public_key())
    assert not cp.valid(Ed25519PrivateKey.generate().public_key())
    again = Checkpoint.from_json(cp.to_json())
    assert again == cp and again.valid(key.public_key())
    for forged in (Checkpoint(41, cp.hash, cp.time, cp.key, cp.signature),
                   Checkpoint(42, "cd" * 32, cp.time, cp.key, cp.signature),
                   Checkpoint(42, cp.hash, cp.time, cp.key, "not base64!")):
        assert not forged.valid(key.public_key())
    for bad in ({}, {"format": "x"}, cp.to_json() | {"seq": -1},
                cp.to_json() | {"time": "2026-11-29T12:00:00"}):
        with pytest.raises(ValueError):
            Checkpoint.from_json(bad)


_DANGEROUS = ("=", "+", "-", "@", "\t", "\r")


@given(st.text())
def test_no_csv_cell_starts_a_formula(text: str) -> None:
    cell = csv_cell(text)
    assert not cell.startswith(_DANGEROUS)
    if text.startswith(_DANGEROUS):
        assert cell == "'" + text
    else:
        assert cell == text


@given(st.sampled_from(_DANGEROUS), st.text())
def test_formula_like_cells_keep_their_text_behind_a_quote(start: str, rest: str) -> None:
    assert csv_cell(start + rest) == "'" + start + rest


def test_csv_cells_of_other_values() -> None:
    assert csv_cell(None) == "" and csv_cell(-3) == "'-3" and csv_cell(7) == "7"
    assert csv_cell('=HYPERLINK("http://evil")') == '\'=HYPERLINK("http://evil")'


def test_the_signing_key_is_private_and_one_under_a_race(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization

    from atoll.control.audit import load_public_key, signing_key
    from atoll.core.errors import InputError

    where = tmp_path / "audit"
    barrier = threading.Barrier(4)
    keys: list[bytes] = []

    def start() -> None:
        barrier.wait()
        keys.append(signing_key(where).public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw))

    threads = [threading.Thread(target=start) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(keys) == 4 and len(set(keys)) == 1
    assert sorted(p.name for p in where.iterdir()) == ["audit-key.pem", "audit-key.pub"]
    assert (where / "audit-key.pem").stat().st_mode & 0o777 == 0o600
    assert where.stat().st_mode & 0o777 == 0o700
    pub = load_public_key(where / "audit-key.pub").public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert pub == keys[0]
    os.chmod(where / "audit-key.pem", 0o640)
    with pytest.raises(InputError, match="readable by others"):
        signing_key(where)
    os.chmod(where / "audit-key.pem", 0o600)
    (where / "audit-key.pem").write_text("not a key\n")
    with pytest.raises(InputError, match="not a PEM private key"):
        signing_key(where)

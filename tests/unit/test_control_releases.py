"""The control plane's side of signed versions (pure parts): which versions a rollout
may choose among, and which version a directive makes the agent ask for."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from atoll.agent.control import check_answer, target_version
from atoll.control.releases import ReleaseSource, SignedVersion, check_rollout_versions
from atoll.core.errors import AtollError, InputError

NOW = dt.datetime(2026, 12, 2, 12, tzinfo=dt.UTC)


def _sv(version: str, seq: int, commit: str | None = None) -> SignedVersion:
    return SignedVersion("site/db", version, commit or f"{seq:064x}", seq, 0, False)


SIGNED = {"site/db": [_sv("4", 4), _sv("3", 3), _sv("2", 2)]}


def test_every_signed_version_oldest_first_by_default() -> None:
    assert check_rollout_versions(SIGNED, "site/db", [], ["4", "3"]) == [
        {"version": v, "commit": f"{int(v):064x}"} for v in ("2", "3", "4")]


def test_given_versions_must_be_signed_with_their_commits() -> None:
    ok = [{"version": "3", "commit": f"{3:064x}"}, {"version": "4", "commit": f"{4:064x}"}]
    assert check_rollout_versions(SIGNED, "site/db", ok, ["4"]) == ok
    with pytest.raises(InputError, match=r"'1' .* is not a signed version") as exc:
        check_rollout_versions(SIGNED, "site/db", [{"version": "1", "commit": "a" * 64}], [])
    assert exc.value.details == ("signed versions: 2 (000000000000), 3 (000000000000), "
                                 "4 (000000000000)")
    with pytest.raises(InputError, match="not a signed version"):  # another commit
        check_rollout_versions(SIGNED, "site/db", [{"version": "4", "commit": "b" * 64}], [])
    with pytest.raises(InputError, match="'2' is not a signed version"):  # target outside
        check_rollout_versions(SIGNED, "site/db", ok, ["2"])
    with pytest.raises(InputError, match="channel 'site/x' is not signed"):
        check_rollout_versions(SIGNED, "site/x", [], [])


def test_given_versions_are_ordered_by_the_signed_sequence() -> None:
    # an operator listing them newest first (or in any order) must not turn the
    # rollout's notion of older and newer around: hosts would be sent "forward" to a
    # version they refuse as a downgrade, and hosts behind released as "ahead"
    given = [{"version": v, "commit": f"{int(v):064x}"} for v in ("4", "2", "3")]
    assert [v["version"] for v in check_rollout_versions(SIGNED, "site/db", given, ["4"])
            ] == ["2", "3", "4"]


def test_a_version_published_twice_is_its_newest_publication() -> None:
    signed = {"c": [_sv("2", 5, "c" * 64), _sv("3", 4), _sv("2", 2)]}
    assert check_rollout_versions(signed, "c", [], []) == [
        {"version": "3", "commit": f"{4:064x}"}, {"version": "2", "commit": "c" * 64}]


def test_the_version_a_directive_names_while_it_holds() -> None:
    later = (NOW + dt.timedelta(hours=1)).isoformat()
    d = {"target": {"channel": "c", "version": "3", "commit": "a" * 64}, "expires": later}
    assert target_version(d, NOW) == "3"
    assert target_version(d | {"expires": NOW.isoformat()}, NOW) is None  # lapsed
    assert target_version(d | {"target": None}, NOW) is None
    assert target_version(d | {"target": {"version": 3}}, NOW) is None
    assert target_version(None, NOW) is None
    # never an argument that would make every `atoll update check` fail (NUL, size)
    assert target_version(d | {"target": {"version": "3\x00"}}, NOW) is None
    assert target_version(d | {"target": {"version": "3" * 200_000}}, NOW) is None


GOOD = {"apiVersion": "atoll/v1", "kind": "Directive", "host_id": "h", "counter": 1,
        "target": {"channel": "c", "version": "3", "commit": "a" * 64},
        "allow": ["download"], "reason": "wave 1", "expires": NOW.isoformat(),
        "requests": [{"id": 7, "kind": "pin", "args": {"deployment": "booted"}}],
        "manifest_wanted": False, "a-newer-field": 1}


def test_the_agent_keeps_only_what_it_can_act_on_from_an_answer() -> None:
    out = check_answer(GOOD)
    assert out == {k: GOOD[k] for k in ("target", "allow", "reason", "expires",
                                       "requests", "manifest_wanted")}
    assert check_answer(GOOD | {"target": None, "allow": None})["target"] is None


@pytest.mark.parametrize("bad", [
    {"target": {"channel": "c", "version": "3\x00", "commit": "a" * 64}},
    {"target": {"channel": "c", "version": "3" * 201, "commit": "a" * 64}},
    {"target": {"channel": "c", "version": "3", "commit": "--allow-downgrade"}},
    {"target": {"channel": "c", "version": 3, "commit": "a" * 64}},
    {"target": "3"},
    {"allow": 5}, {"allow": ["reboot"]},
    {"requests": [{"id": [1], "kind": "pin"}]}, {"requests": [{"id": 1, "kind": "pin",
                                                              "args": [1]}]},
    {"requests": "pin"},
])
def test_a_hostile_answer_is_refused_not_acted_on(bad: dict[str, object]) -> None:
    # a compromised control plane must not be able to stop the agent: such an answer
    # would have made every tick fail (TypeError, ValueError: embedded null byte) for
    # as long as the directive held (up to 7 days)
    with pytest.raises(AtollError, match="not a valid directive"):
        check_answer(GOOD | bad)
    with pytest.raises(AtollError):
        check_answer([GOOD])


def test_a_repository_directory_read_as_hosts_verify_it(tmp_path: Path) -> None:
    from atoll.core.errors import RepositoryError
    from atoll.repo.keys import KeyDir
    from atoll.repo.publish import init_repository, publish
    from atoll.repo.storage import DirStorage
    from atoll.store.repo import Repo
    from tests.unit.test_tuf_simulator import _tree

    repo, keys, www = Repo.create(tmp_path / "pub"), KeyDir(tmp_path / "keys"), tmp_path / "www"
    init_repository(DirStorage(www), keys)
    root = tmp_path / "root.json"
    root.write_bytes((www / "metadata/root.json").read_bytes())
    source = ReleaseSource(str(www), root)
    try:
        assert source.releases() == {}  # nothing published yet
        for v in (1, 2, 3):
            repo.commit_dir(_tree(tmp_path / f"t{v}", v), ref="site/db", version=f"1.{v}",
                            timestamp=1700000000 + v)
            publish(repo, "site/db", DirStorage(www), keys, deltas=1, keep=2, level=3)
        got = source.releases(fresh=True)["site/db"]
        assert [(v.version, v.sequence, v.head) for v in got] == [("1.3", 3, True),
                                                                 ("1.2", 2, False)]
        # tampered metadata: refused as hosts refuse it, nothing listed
        ts = www / "metadata/timestamp.json"
        doc = json.loads(ts.read_bytes())
        doc["signed"]["version"] += 1
        ts.write_text(json.dumps(doc))
        with pytest.raises(RepositoryError, match="refused untrusted metadata"):
            source.releases(fresh=True)
    finally:
        source.close()
    with pytest.raises(InputError, match="no metadata/ directory"):
        ReleaseSource(str(tmp_path / "nowhere"), root)

"""Per-version signed targets: what a channel keeps, a host taking a version that is not
the head, and the host refusing to go back (docs/delivery.md, "Signed versions")."""

from __future__ import annotations

from pathlib import Path

import pytest

from atoll.core.errors import InputError, RepositoryError
from atoll.deploy.sysroot import Sysroot
from atoll.repo.plan import ChannelInfo, DowngradeError, Release, is_older, pick_release
from atoll.repo.publish import publish, ref_target, release_target
from atoll.repo.tufrepo import TufRepository, target_url_path
from atoll.store.repo import Repo
from tests.unit.test_tuf_simulator import Sim


@pytest.fixture
def sim(tmp_path: Path) -> Sim:
    return Sim(tmp_path)


def _publish(sim: Sim, keep: int = 3, commit: str | None = None) -> None:
    publish(sim.repo, "site/base", sim.storage, sim.keys, deltas=2, keep=keep, commit=commit)


def _targets(sim: Sim) -> dict[str, object]:
    return dict(TufRepository(sim.storage).targets().signed.targets)


def _head(sim: Sim) -> ChannelInfo:
    tf = TufRepository(sim.storage).targets().signed.targets[ref_target("site/base")]
    return ChannelInfo.from_custom(tf.unrecognized_fields["custom"], "site/base")


def _run(sim: Sim, commit: str) -> None:
    """The host boots ``commit`` (downloaded before)."""
    sr = Sysroot(sim.sysroot)
    if not (sim.sysroot / "boot").exists():
        sr.init()
    dep = sr.deploy(commit)
    (sim.sysroot / "run/atoll").mkdir(parents=True, exist_ok=True)
    (sim.sysroot / "run/atoll/booted").write_text(dep.id + "\n")


def test_a_channel_keeps_its_last_n_versions_signed_and_prunes_older_ones(sim: Sim) -> None:
    commits = []
    for v in range(1, 6):
        commits.append(sim.commit(v))
        _publish(sim, keep=3)
    head = _head(sim)
    assert head.sequence == 5 and head.commit == commits[-1]
    assert [(r.version, r.sequence) for r in head.releases] == [("5", 5), ("4", 4), ("3", 3)]
    targets = _targets(sim)
    for c in commits[2:]:
        assert {release_target("site/base", c), f"packs/{c}.pack", f"packs/{c}.index",
                f"manifests/{c}.json", f"sbom/{c}.cdx.json"} <= set(targets)
    # v5's deltas from v4 and v3; v4's from v3 (its from v2 stays: v4 is kept)
    assert f"deltas/{commits[3]}-{commits[4]}.delta" in targets
    assert f"deltas/{commits[1]}-{commits[3]}.delta" in targets
    for c in commits[:2]:  # pruned from the metadata and from the directory
        assert not any(c in p.split("/")[-1].split("-")[-1] for p in targets
                       if not p.startswith("deltas/")), c
        assert release_target("site/base", c) not in targets
        assert not any(f.startswith("targets/") and f.endswith(f"{c}.pack")
                       for f in sim.storage.files), c
    kept = {p: t for p, t in targets.items() if p.startswith("packs/")}
    for p, t in kept.items():  # what is signed is on disk
        assert sim.storage.exists("targets/" + target_url_path(p, t.hashes["sha256"]))  # type: ignore[attr-defined]


def test_keep_is_range_checked(sim: Sim) -> None:
    sim.commit(1)
    with pytest.raises(InputError, match="--keep 0"):
        _publish(sim, keep=0)
    assert TufRepository(sim.storage).targets().signed.targets == {}


def test_a_host_takes_a_signed_version_and_refuses_to_go_back(sim: Sim) -> None:
    commits = []
    for v in range(1, 5):
        commits.append(sim.commit(v))
        _publish(sim)
    c = sim.client()
    c.version = "3"
    out = c.download()
    assert out["target"]["commit"] == commits[2] and out["target"]["sequence"] == 3
    assert out["head_version"] == "4"
    host = Repo.open(sim.sysroot / "atoll/repo")
    assert host.refs("remotes") == {"origin/site/base": commits[2]}
    _run(sim, commits[2])
    # version 2 is signed and kept, but older than what runs: refused, nothing changes
    c = sim.client()
    c.version = "2"
    with pytest.raises(DowngradeError, match="older than what this host runs"):
        c.download()
    assert host.refs("remotes") == {"origin/site/base": commits[2]}
    # a version never published, or pruned: not signed, refused
    c = sim.client()
    c.version = "9"
    with pytest.raises(RepositoryError, match="not a signed version"):
        c.check()
    # an operator at the host may go back on purpose
    c = sim.client()
    c.version, c.allow_downgrade = "2", True
    out = c.download()
    assert out["downgrade"] is True and host.refs("remotes")["origin/site/base"] == commits[1]
    # the newest is never a downgrade
    c = sim.client()
    c.version = "4"
    assert c.check()["downgrade"] is False


def test_the_host_remembers_what_it_runs_once_the_repository_pruned_it(sim: Sim) -> None:
    commits = [sim.commit(1)]
    _publish(sim, keep=2)
    sim.client().download()
    _run(sim, commits[0])
    for v in range(2, 5):
        commits.append(sim.commit(v))
        _publish(sim, keep=2)
    c = sim.client()
    c.version = "4"
    view = c.check()
    assert view["current_sequence"] == 1 and view["downgrade"] is False
    c.download()
    _run(sim, commits[3])
    c = sim.client()
    c.version = "3"
    with pytest.raises(DowngradeError):
        c.check()


def test_publishing_an_old_commit_again_makes_it_the_newest(sim: Sim) -> None:
    a, b = sim.commit(1), sim.commit(2)
    _publish(sim, commit=a)
    _publish(sim, commit=b)
    sim.client().download()
    _run(sim, b)
    _publish(sim, commit=a)  # the publisher rolls the channel back, with its keys
    head = _head(sim)
    assert (head.commit, head.sequence) == (a, 3)
    assert [(r.commit, r.sequence) for r in head.releases] == [(a, 3), (b, 2)]
    c = sim.client()
    c.version = "1"
    assert c.check()["downgrade"] is False


def _rel(seq: int, ts: int = 0) -> Release:
    return Release(str(seq), f"{seq:064x}", seq, ts, f"releases/c/{seq:064x}.json")


def test_is_older_and_pick_release() -> None:
    assert is_older(_rel(2), 3, None) and not is_older(_rel(3), 3, None)
    assert not is_older(_rel(4, ts=10), 3, 99)  # the sequence decides when both know it
    assert is_older(_rel(4, ts=10), None, 11)  # else the commits' timestamps
    assert not is_older(_rel(4, ts=10), None, None)
    info = ChannelInfo("c", "0" * 64, "5", 0, {}, "p", "i", "m", "s", 0, 5,
                       (_rel(5), _rel(3), Release("3", "1" * 64, 4, 0, "x")))
    assert pick_release(info, "3").sequence == 4  # a version published twice: the newest
    assert pick_release(info, "0" * 60 + "0005").sequence == 5  # or by commit
    with pytest.raises(RepositoryError, match="not a signed version"):
        pick_release(info, "1")

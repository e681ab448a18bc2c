"""Which deployment boots next, which is kept: pure decisions."""

from __future__ import annotations

import pytest

from atoll.deploy.plan import Entry, after_deploy, after_rollback, roles


def ids(entries: list[Entry]) -> list[str]:
    return [e.id for e in entries]


def test_first_deploy() -> None:
    assert ids(after_deploy([], None, "a")) == ["a"]


def test_deploy_keeps_booted_pending_and_one_rollback() -> None:
    # booted b, rollback c, older d: deploying n drops d
    out = after_deploy([Entry("b"), Entry("c"), Entry("d")], "b", "n")
    assert ids(out) == ["n", "b", "c"]


def test_newer_deploy_replaces_unbooted_pending() -> None:
    out = after_deploy([Entry("p"), Entry("b"), Entry("r")], "b", "n")
    assert ids(out) == ["n", "b", "r"]


def test_pinned_survive() -> None:
    out = after_deploy([Entry("p", pinned=True), Entry("b"), Entry("r"), Entry("o", True)],
                       "b", "n")
    assert ids(out) == ["n", "b", "r", "p", "o"]


def test_booted_is_never_dropped_even_when_last() -> None:
    # host booted the rollback entry after a failed update
    out = after_deploy([Entry("x"), Entry("y"), Entry("b")], "b", "n")
    assert "b" in ids(out)


def test_rollback_without_pending_swaps_first_two() -> None:
    assert ids(after_rollback([Entry("b"), Entry("r")], "b")) == ["r", "b"]


def test_rollback_with_pending_returns_to_booted() -> None:
    assert ids(after_rollback([Entry("p"), Entry("b"), Entry("r")], "b")) == ["b", "p", "r"]


def test_rollback_needs_two() -> None:
    with pytest.raises(ValueError):
        after_rollback([Entry("b")], "b")


def test_roles() -> None:
    assert roles(["p", "b", "r", "o"], "b") == {
        "p": "pending", "b": "booted", "r": "rollback", "o": "other"}
    assert roles(["b", "r"], "b") == {"b": "booted", "r": "rollback"}
    assert roles(["x", "y"], None) == {"x": "pending", "y": "rollback"}


def test_cleanup_pending_keeps_the_boot_order_when_the_booted_one_is_unknown() -> None:
    """`cleanup -p` with run/atoll/booted naming something unlisted (or nothing) removed
    one deployment per run until none was left (review of issue 14)."""
    from atoll.deploy.plan import without_pending

    order = [Entry("p"), Entry("b"), Entry("r")]
    keep, why = without_pending(order, "gone")
    assert keep is None and "not in the boot order" in why
    keep, why = without_pending(order, None)
    assert keep is None and "has not booted" in why
    keep, why = without_pending(order, "b")
    assert keep is not None and ids(keep) == ["b", "r"] and why.endswith("boots next")
    assert ids(without_pending(order, "p")[0] or []) == ["p", "b", "r"]  # nothing pending
    keep, _ = without_pending([Entry("p", pinned=True), Entry("q"), Entry("b")], "b")
    assert keep is not None and ids(keep) == ["b", "p"]  # pinned stays, behind the booted


def test_deployment_records_are_checked() -> None:
    from atoll.deploy.sysroot import Deployment

    good = {"id": "a" * 64 + ".0", "commit": "a" * 64, "serial": 0, "version": "1"}
    assert Deployment.from_json(good).serial == 0
    for bad, why in (({"id": 5}, "COMMIT.SERIAL"), (good | {"commit": "b" * 64}, "commit"),
                     (good | {"serial": "x"}, "serial"), (good | {"pinned": "yes"}, "pinned"),
                     (good | {"origin": ["x"]}, "origin"), ([1, 2], "not an object")):
        with pytest.raises(ValueError, match=why):
            Deployment.from_json(bad)

"""The console's rollout form and package changes (pure parts of
atoll.control.console.rollout_views)."""

from __future__ import annotations

import pytest

from atoll.control.console.rollout_views import (
    host_packages,
    parse_rollout_form,
    release_changes,
)
from atoll.control.errors import ApiError
from atoll.control.releases import SignedVersion

V1 = [{"name": "bash", "version": "5.2.15-2+b2"}, {"name": "curl", "version": "7.88.1-10"}]
V2 = [{"name": "bash", "version": "5.2.15-2+b7"}, {"name": "jq", "version": "1.6-2.1"}]
MANIFESTS = {"c1": V1, "c2": V2}


def test_the_form_gives_what_the_operations_take() -> None:
    f = parse_rollout_form({"id": "r-1", "customer": "acme", "labels": "role=db, site=ams",
                            "target": "site/db 2.0 rc", "waves": "1, 10 100",
                            "max_failures": "2", "soak_min": "5"})
    assert (f.rollout_id, f.customer, f.channel, f.to_version) == ("r-1", "acme", "site/db",
                                                                   "2.0 rc")
    assert f.labels == {"role": "db", "site": "ams"}
    assert f.spec == {"waves": [1.0, 10.0, 100.0], "budget": {"max_failures": 2},
                      "soak_s": 300}
    empty = parse_rollout_form({"id": "r", "customer": "", "target": "c 1"})
    assert empty.customer is None and empty.labels == {} and empty.spec == {}


@pytest.mark.parametrize(("field", "value", "message"), [
    ("id", "-x", "id:"), ("id", "a" * 65, "id:"), ("labels", "role", "not KEY=VALUE"),
    ("labels", "Role=db", "not KEY=VALUE"), ("target", "", "target:"),
    ("target", "c 1\x00", "target:"), ("waves", "1, ten", "waves:"),
    ("max_failures", "-1", "max_failures:"), ("soak_min", "1.5", "soak_min:"),
    ("max_failures", "\u00b2", "max_failures:"),  # a digit to str.isdigit, not to int()
    ("soak_min", "\u0661", "soak_min:")])  # an Arabic-Indic one: ASCII digits only
def test_a_bad_field_is_named(field: str, value: str, message: str) -> None:
    form = {"id": "r1", "target": "c 1"} | {field: value}
    with pytest.raises(ApiError) as exc:
        parse_rollout_form(form)
    assert exc.value.status == 422 and message in exc.value.brief, exc.value.brief


def _sv(version: str, commit: str, seq: int) -> SignedVersion:
    return SignedVersion("site/db", version, commit, seq, 0, False)


def test_each_release_against_the_previous_one() -> None:
    out = release_changes([_sv("3", "c3", 3), _sv("2", "c2", 2), _sv("1", "c1", 1)],
                          MANIFESTS.get)
    assert [(e["previous"], e["packages"]) for e in out] == [("2", None), ("1", 2),
                                                             (None, 2)]
    assert out[0]["changes"] is None  # no manifest for c3
    assert out[1]["changes"] == {
        "added": [{"name": "jq", "version": "1.6-2.1"}],
        "removed": [{"name": "curl", "version": "7.88.1-10"}],
        "upgraded": [{"name": "bash", "old": "5.2.15-2+b2", "new": "5.2.15-2+b7"}],
        "downgraded": []}
    assert out[2]["changes"] is None  # the oldest: nothing to compare with


def test_host_changes_from_the_booted_deployment() -> None:
    deps = [{"role": "booted", "commit": "c2", "version": "2"},
            {"role": "rollback", "commit": "c1", "version": "1"},
            {"role": "pending", "commit": "c9", "version": "9"}]
    out = host_packages(deps, None, MANIFESTS.get)  # booted: the signed manifest
    assert [d["role"] for d in out] == ["rollback", "pending"]
    assert out[0]["changes"]["downgraded"] == [{"name": "bash", "old": "5.2.15-2+b7",
                                                "new": "5.2.15-2+b2"}]
    assert out[1]["changes"] is None and "not a signed version" in out[1]["missing"]
    # what the host reported wins over the signed manifest of its commit
    reported = [*V2, {"name": "local-tool", "version": "1"}]
    out = host_packages(deps[:2], reported, MANIFESTS.get)
    assert {"name": "local-tool", "version": "1"} in out[0]["changes"]["removed"]
    assert host_packages(deps[1:], None, MANIFESTS.get) == []  # nothing booted reported
    out = host_packages([{"role": "booted", "commit": "c7"}, deps[1]], None, MANIFESTS.get)
    assert out[0]["missing"] == "the booted deployment's manifest is not known"

"""The Fleet page's bulk form (atoll.control.console.fleet_actions), checked before any
request is made."""

from __future__ import annotations

import uuid

import pytest

from atoll.control.console.fleet_actions import ACTIONS, MAX_SELECTED, parse_bulk_form
from atoll.control.errors import ApiError

ID = str(uuid.UUID(int=1))


def test_a_good_form_keeps_the_order_and_drops_repeats() -> None:
    other = str(uuid.UUID(int=2))
    form = parse_bulk_form("apply", [ID, " ", other, ID])
    assert (form.action, form.hosts) == ("apply", (ID, other))
    assert set(ACTIONS) == {"apply", "cancel", "ack-rollback", "pin"}


@pytest.mark.parametrize(("action", "hosts", "brief"), [
    ("reboot-now", [ID], "action: one of"),
    ("cancel", [], "at least one host"),
    ("cancel", ["", "  "], "at least one host"),
    ("cancel", [str(uuid.UUID(int=i)) for i in range(MAX_SELECTED + 1)], "at most 500"),
    ("cancel", ["../../v1/tokens"], "malformed"),
    ("cancel", ["x" * 65], "malformed"),
])
def test_bad_forms_are_refused(action: str, hosts: list[str], brief: str) -> None:
    with pytest.raises(ApiError) as err:
        parse_bulk_form(action, hosts)
    assert err.value.status == 422 and brief in err.value.brief

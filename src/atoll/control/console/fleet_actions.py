"""Bulk actions from the Fleet page: one request per selected host, carried to the hosts
by the control plane's check-in answers (docs/console.md, "Bulk actions").

Each selected host's request goes through :func:`atoll.control.operations.create_request`,
the code behind ``POST /v1/hosts/{ref}/requests`` and ``atoll fleet request``: the same
role check (operator), the same customer scope (a host outside it is "not found"),
the same refusals (``apply`` on a host whose policy leaves the apply to the customer:
"waiting for the customer"). Each host is its own transaction, so one refusal does
not undo the others; the answer page lists every host's outcome.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from atoll.control import operations as ops
from atoll.control.console.rollout_views import Kit
from atoll.control.errors import ApiError

__all__ = ["ACTIONS", "MAX_SELECTED", "BulkForm", "parse_bulk_form", "routes"]

MAX_SELECTED = 500  # hosts in one bulk action (the Fleet page shows 50 at a time)
# what the form offers: (request kind, its args, the words shown)
ACTIONS: dict[str, tuple[str, dict[str, Any], str]] = {
    "apply": ("apply", {}, "apply the prepared update at the next maintenance window"),
    "cancel": ("cancel", {}, "cancel the downloaded or prepared update"),
    "ack-rollback": ("ack-rollback", {}, "acknowledge the automatic rollback"),
    "pin": ("pin", {"deployment": "booted", "pinned": True},
            "pin the booted deployment (kept by cleanups)"),
}


@dataclass(frozen=True)
class BulkForm:
    """The bulk form, checked: an action of :data:`ACTIONS` and the selected host ids."""

    action: str
    hosts: tuple[str, ...]


def parse_bulk_form(action: str, hosts: list[str]) -> BulkForm:
    """Raises: ApiError 422: an unknown action, no host, too many, or a malformed id."""
    if action not in ACTIONS:
        raise ApiError(422, "invalid", f"action: one of {', '.join(ACTIONS)}")
    chosen = tuple(dict.fromkeys(h.strip() for h in hosts if h.strip()))
    if not chosen:
        raise ApiError(422, "invalid", "select at least one host")
    if len(chosen) > MAX_SELECTED:
        raise ApiError(422, "invalid", f"select at most {MAX_SELECTED} hosts at once")
    if any(len(h) > 64 or not h.replace("-", "").isalnum() for h in chosen):
        raise ApiError(422, "invalid", "a selected host id is malformed")
    return BulkForm(action, chosen)


def _outcome(exc: ApiError) -> str:
    if exc.status == 409 and "customer's own trigger" in exc.brief:
        return "waiting for the customer: its policy leaves the apply to them"
    return exc.brief


def routes(kit: Kit) -> list[Route]:
    """The Fleet page's bulk action route, to add to the console's route table."""

    async def bulk(request: Request) -> Response:
        user = await run_in_threadpool(kit.current, request)
        if user is None:
            return kit.to_login(request)
        form = await kit.form_with_csrf(request, request.cookies.get(kit.session_cookie),
                                        "form")
        if form is None:
            return kit.error(request, 403, "The form is stale or did not come from this "
                             "console (no CSRF token): reload the page.", user)
        # the parsed form is kept by the request (Starlette: at most 1,000 fields)
        hosts = [v for v in (await request.form()).getlist("host") if isinstance(v, str)]
        try:
            ops._require(user.principal, "operator")
            chosen = parse_bulk_form(form.get("action", ""), hosts)
        except ApiError as exc:
            return kit.error(request, exc.status, exc.brief, user)
        kind, args, words = ACTIONS[chosen.action]

        def run() -> list[Mapping[str, Any]]:
            out: list[Mapping[str, Any]] = []
            for hid in chosen.hosts:
                name = None  # shown only for a host in the user's scope
                try:
                    with kit.db.read() as s:
                        name = ops.get_host(s, user.principal, hid, None).name
                    with kit.db.write() as s:
                        r = ops.create_request(s, user.principal, hid, None, kind,
                                               dict(args), kit.clock())
                    out.append({"host": hid, "name": name, "ok": True,
                                "outcome": f"request {r['id']} queued: the host gets it at "
                                           "its next check-in"})
                except ApiError as exc:
                    out.append({"host": hid, "name": name, "ok": False,
                                "outcome": _outcome(exc)})
            return out

        results = await run_in_threadpool(run)
        return kit.page(request, "fleet_actions.html", {
            "user": user, "csrf": kit.csrf(request), "words": words, "results": results,
            "done": sum(1 for r in results if r["ok"])})

    return [Route("/fleet/requests", bulk, methods=["POST"])]

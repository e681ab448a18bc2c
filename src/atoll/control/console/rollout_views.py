"""The console's Rollouts and Releases pages, and the Host page's package changes.

Rollouts go through :mod:`atoll.control.rollout_ops` and
:func:`atoll.control.releases.rollout_versions`, the same calls as ``POST
/v1/rollouts`` and ``atoll fleet rollout``: role (operator or admin) and customer scope
are checked there, on the server, for every action. A rollout's customer scope is its
``customer`` (chosen in the form among the user's customers; the group's labels select
hosts of that customer only); a rollout over every customer is created, seen and acted
on only by users of every customer.

Package changes come from the signed versions' manifests the control plane reads
from the update repository (:meth:`atoll.control.releases.ReleaseSource.manifest`),
and for a host's booted deployment from the manifest the host itself reported; hosts
report no manifest for their other deployments, so those are the signed manifests of
their commits (docs/console.md).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from atoll.control import operations as ops
from atoll.control import rollout_ops
from atoll.control.auth import Principal
from atoll.control.console import plots, users
from atoll.control.db import Database
from atoll.control.errors import ApiError
from atoll.control.models import Customer
from atoll.control.releases import ReleaseSource, SignedVersion, rollout_versions
from atoll.core.errors import DownloadError, RepositoryError
from atoll.store.packages import package_view

__all__ = ["Kit", "host_packages", "parse_rollout_form", "release_changes", "routes"]

REFRESH_S = 10  # a running or halted rollout's page reloads itself this often (its
# actions are forms on pages of their own, which do not reload under the typing)
MAX_LISTED = 100  # rollouts on the list page, newest first
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_LABEL = re.compile(r"^([a-z0-9][a-z0-9._/-]{0,62})=(.{1,200})$")
ENDED = ("finished", "aborted")


@dataclass(frozen=True)
class Kit:
    """What the console's routes share (made by :func:`.web.build_console`)."""

    db: Database
    clock: Callable[[], dt.datetime]
    releases: ReleaseSource | None
    page: Callable[..., Response]
    error: Callable[..., Response]
    current: Callable[[Request], users.User | None]
    to_login: Callable[[Request], Response]
    form_with_csrf: Callable[[Request, str | None, str], Awaitable[dict[str, str] | None]]
    csrf: Callable[[Request], str]
    session_cookie: str


# -- pure: the forms and the changes --------------------------------------------------


@dataclass(frozen=True)
class RolloutForm:
    """The create form, checked: what :func:`rollout_ops.create` takes."""

    rollout_id: str
    customer: str | None
    labels: dict[str, str]
    channel: str
    to_version: str
    spec: dict[str, Any]


def parse_rollout_form(form: Mapping[str, str]) -> RolloutForm:
    """The create form's fields: ``id``, ``customer`` (empty: every customer),
    ``labels`` (``KEY=VALUE`` separated by commas or new lines), ``target``
    (``CHANNEL VERSION`` as the select gives it), ``waves`` (cumulative percentages,
    e.g. ``1, 10, 100``), ``max_failures`` (a whole number, empty: the default 0),
    ``soak_min`` (minutes, empty: the default). Pure.

    Raises:
        ApiError: 422, the first field that is not of its form.
    """
    def bad(brief: str) -> ApiError:
        return ApiError(422, "invalid", brief)

    rid = form.get("id", "").strip()
    if not _ID.match(rid):
        raise bad("id: letters, digits, '.', '_', '-' (up to 64, starting with a letter "
                  "or digit)")
    labels: dict[str, str] = {}
    for part in re.split(r"[,\n]", form.get("labels", "")):
        if not part.strip():
            continue
        m = _LABEL.match(part.strip())
        if m is None:
            raise bad(f"labels: {part.strip()[:60]!r} is not KEY=VALUE")
        labels[m.group(1)] = m.group(2).strip()
    channel, _, version = form.get("target", "").strip().partition(" ")
    if not channel or not version or not (channel + version).isprintable():
        raise bad("target: choose a signed version")
    spec: dict[str, Any] = {}
    if waves := form.get("waves", "").strip():
        try:
            spec["waves"] = [float(w) for w in re.split(r"[,\s]+", waves) if w]
        except ValueError:
            raise bad("waves: cumulative percentages separated by commas, e.g. 1, 10, "
                      "100") from None
    for name, key, scale in (("max_failures", "max_failures", 1), ("soak_min", "soak_s", 60)):
        raw = form.get(name, "").strip()
        if not raw:
            continue
        if not (raw.isascii() and raw.isdigit()) or len(raw) > 9:  # (not "²": int() fails)
            raise bad(f"{name}: a whole number from 0")
        if key == "max_failures":
            spec["budget"] = {"max_failures": int(raw)}
        else:
            spec[key] = int(raw) * scale
    customer = form.get("customer", "").strip() or None
    return RolloutForm(rid, customer, labels, channel, version, spec)


def release_changes(versions: list[SignedVersion],
                    manifest: Callable[[str], list[dict[str, str]] | None],
                    ) -> list[dict[str, Any]]:
    """A channel's signed versions (newest first, as given) with each one's package
    changes against the previous signed version (``changes`` None: a manifest is
    missing; the oldest kept version: against nothing, ``previous`` None). Pure."""
    out = []
    for i, v in enumerate(versions):
        prev = versions[i + 1] if i + 1 < len(versions) else None
        new = manifest(v.commit)
        old = manifest(prev.commit) if prev is not None else None
        changes = None
        if new is not None and (prev is None or old is not None):
            changes = package_view(old, new) if prev is not None else None
        out.append({"version": v, "previous": prev.version if prev else None,
                    "changes": changes, "packages": len(new) if new is not None else None})
    return out


def host_packages(deployments: list[dict[str, Any]], reported: list[dict[str, str]] | None,
                  manifest: Callable[[str], list[dict[str, str]] | None],
                  ) -> list[dict[str, Any]]:
    """For each reported deployment other than the booted one: the package changes
    from the booted deployment to it (``changes`` None, with ``missing`` saying why,
    when a manifest is not known). The booted manifest is the host's own report
    (``reported``), else the signed one of its commit; the others are the signed
    manifests of their commits. Pure."""
    booted = next((d for d in deployments if d.get("role") == "booted"), None)
    if booted is None:
        return []
    base = reported if reported is not None else manifest(str(booted.get("commit")))
    out = []
    for d in deployments:
        if d is booted:
            continue
        other = manifest(str(d.get("commit")))
        changes, missing = None, None
        if base is None:
            missing = "the booted deployment's manifest is not known"
        elif other is None:
            missing = "not a signed version the control plane has read"
        else:
            changes = package_view(base, other)
        out.append({"role": d.get("role"), "version": d.get("version"),
                    "changes": changes, "missing": missing})
    return out


# -- reads -------------------------------------------------------------------------


def _customer_names(s: Session, p: Principal) -> list[str]:
    q = select(Customer.name).order_by(Customer.name)
    if p.customer_ids is not None:
        q = q.where(Customer.id.in_(sorted(p.customer_ids)))
    return list(s.scalars(q))


def _budget(doc: dict[str, Any]) -> str:
    b = doc["spec"]["budget"]
    parts = []
    if b.get("max_failures") is not None:
        parts.append(f"at most {b['max_failures']} failed")
    if b.get("max_failure_percent") is not None:
        parts.append(f"at most {b['max_failure_percent']:g} % of {b['min_sample']}+ outcomes")
    return "; ".join(parts) or "no limit"


def _progress(doc: dict[str, Any]) -> str:
    started = sum(1 for w in doc["waves"] if w["started"])
    return f"{started} of {len(doc['waves'])} waves started"


def _no_repo() -> ApiError:
    return ApiError(404, "not_found", "this control plane reads no update repository: "
                    "start it with `atoll fleet serve --repo URL --repo-root root.json`")


def _signed(kit: Kit) -> dict[str, list[SignedVersion]]:
    if kit.releases is None:
        raise _no_repo()
    try:
        return kit.releases.releases()
    except (RepositoryError, DownloadError) as exc:
        raise ApiError(503, "repository_unavailable",
                       f"the update repository cannot be read: {exc.brief}") from None


# -- routes ------------------------------------------------------------------------


def routes(kit: Kit) -> list[Route]:
    """The Rollouts and Releases routes, to add to the console's route table."""

    def who(request: Request) -> users.User | Response:
        """The logged-in user, else the redirect to the login page."""
        user = kit.current(request)
        return kit.to_login(request) if user is None else user

    def shown(request: Request, user: users.User, exc: ApiError) -> Response:
        return kit.error(request, exc.status, exc.brief, user)

    def listing(request: Request) -> Response:
        user = who(request)
        if isinstance(user, Response):
            return user
        now = kit.clock()
        with kit.db.read() as s:
            rows = rollout_ops.list_rollouts(s, user.principal)[-MAX_LISTED:][::-1]
            docs = [rollout_ops.status(s, user.principal, r["id"], now) for r in rows]
        for d in docs:
            d["budget_text"], d["progress_text"] = _budget(d), _progress(d)
        return kit.page(request, "rollouts.html", {
            "user": user, "csrf": kit.csrf(request), "rollouts": docs,
            "may_act": user.principal.may("operator")})

    def detail(request: Request) -> Response:
        user = who(request)
        if isinstance(user, Response):
            return user
        try:
            with kit.db.read() as s:
                doc = rollout_ops.status(s, user.principal, request.path_params["rid"],
                                         kit.clock(), hosts=True)
        except ApiError as exc:
            return shown(request, user, exc)
        names = {h["host"]: h["name"] for h in doc["hosts"]}
        doc["budget_text"], doc["progress_text"] = _budget(doc), _progress(doc)
        doc["plot"] = plots.waves_plot(doc["waves"])
        return kit.page(request, "rollout.html", {
            "user": user, "csrf": kit.csrf(request), "r": doc, "names": names,
            "in_flight": [h for h in doc["hosts"] if h["phase"] == "in-flight"],
            "failed": [h for h in doc["hosts"] if h["phase"] == "failed"],
            "refresh": REFRESH_S if doc["state"] not in ENDED else None,
            "may_act": user.principal.may("operator")})

    def new_form(request: Request, user: users.User, form: Mapping[str, str],
                 message: str | None, status: int = 200) -> Response:
        try:
            signed = _signed(kit)
        except ApiError as exc:
            return shown(request, user, exc)
        with kit.db.read() as s:
            customers = _customer_names(s, user.principal)
        return kit.page(request, "rollout_new.html", {
            "user": user, "csrf": kit.csrf(request), "signed": signed,
            "customers": customers, "every": user.principal.everywhere, "form": form,
            "message": message}, status)

    def create_form(request: Request) -> Response:
        user = who(request)
        if isinstance(user, Response):
            return user
        if not user.principal.may("operator"):
            return kit.error(request, 403, "Creating a rollout needs the operator role.",
                             user)
        return new_form(request, user, {"waves": "1, 10, 100", "max_failures": "0"}, None)

    async def create(request: Request) -> Response:
        user = await run_in_threadpool(who, request)
        if isinstance(user, Response):
            return user
        form = await kit.form_with_csrf(request, request.cookies.get(kit.session_cookie),
                                        "form")
        if form is None:
            return kit.error(request, 403, "The form is stale or did not come from this "
                             "console (no CSRF token): reload the page.", user)

        def run() -> dict[str, Any]:
            # as POST /v1/rollouts: the role first, then the signed versions, then create
            ops._require(user.principal, "operator")
            f = parse_rollout_form(form)
            if kit.releases is None:  # nothing signed to choose from
                raise _no_repo()
            versions = rollout_versions(kit.releases, f.channel, [], [f.to_version])
            with kit.db.write() as s:
                return rollout_ops.create(
                    s, user.principal, rollout_id=f.rollout_id, customer=f.customer,
                    labels=f.labels, channel=f.channel, versions=versions,
                    to_version=f.to_version, from_version=None, floors=[], dead_ends=[],
                    spec=f.spec, now=kit.clock())

        try:
            doc = await run_in_threadpool(run)
        except ApiError as exc:
            if exc.status == 403:
                return shown(request, user, exc)
            return await run_in_threadpool(new_form, request, user, form, exc.brief,
                                           exc.status)
        return RedirectResponse(f"{request.scope.get('root_path', '')}/rollouts/"
                                f"{doc['id']}", 303)

    def action_form(kind: str) -> Callable[[Request], Response]:
        def form(request: Request) -> Response:
            user = who(request)
            if isinstance(user, Response):
                return user
            try:
                ops._require(user.principal, "operator")
                with kit.db.read() as s:
                    doc = rollout_ops.status(s, user.principal, request.path_params["rid"],
                                             kit.clock())
            except ApiError as exc:
                return shown(request, user, exc)
            return kit.page(request, "rollout_act.html", {
                "user": user, "csrf": kit.csrf(request), "r": doc, "kind": kind})
        return form

    def action(kind: str) -> Callable[[Request], Awaitable[Response]]:
        async def act(request: Request) -> Response:
            user = await run_in_threadpool(who, request)
            if isinstance(user, Response):
                return user
            form = await kit.form_with_csrf(
                request, request.cookies.get(kit.session_cookie), "form")
            if form is None:
                return kit.error(request, 403, "The form is stale or did not come from "
                                 "this console (no CSRF token): reload the page.", user)
            reason = form.get("reason", "").strip()[:1000]
            rid = request.path_params["rid"]

            def run() -> None:
                ops._require(user.principal, "operator")
                if not reason:
                    raise ApiError(422, "invalid", f"{kind}: give a reason")
                with kit.db.write() as s:
                    p, now = user.principal, kit.clock()
                    if kind == "halt":
                        rollout_ops.halt(s, p, rid, reason, now)
                    elif kind == "resume":
                        rollout_ops.resume(s, p, rid, form.get("excuse") == "yes", now,
                                           reason)
                    else:
                        rollout_ops.abort(s, p, rid, reason, now)

            try:
                await run_in_threadpool(run)
            except ApiError as exc:
                return shown(request, user, exc)
            return RedirectResponse(f"{request.scope.get('root_path', '')}/rollouts/{rid}",
                                    303)
        return act

    def releases_page(request: Request) -> Response:
        user = who(request)
        if isinstance(user, Response):
            return user
        try:
            signed = _signed(kit)
        except ApiError as exc:
            return shown(request, user, exc)
        assert kit.releases is not None
        channels = {ch: release_changes(vs, kit.releases.manifest)
                    for ch, vs in sorted(signed.items())}
        return kit.page(request, "releases.html", {
            "user": user, "csrf": kit.csrf(request), "channels": channels,
            "repository": kit.releases.base})

    return [
        Route("/rollouts", listing, methods=["GET"]),
        Route("/rollouts", create, methods=["POST"]),
        Route("/rollouts/new", create_form, methods=["GET"]),
        Route("/rollouts/{rid}", detail, methods=["GET"]),
        *(Route(f"/rollouts/{{rid}}/{kind}", action(kind), methods=["POST"])
          for kind in ("halt", "resume", "abort")),
        *(Route(f"/rollouts/{{rid}}/{kind}", action_form(kind), methods=["GET"])
          for kind in ("halt", "resume", "abort")),
        Route("/releases", releases_page, methods=["GET"]),
    ]


def host_package_changes(kit: Kit, p: Principal, host_id: str,
                         deployments: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
    """The Host page's package changes (:func:`host_packages`); None when the control
    plane reads no update repository (only the booted manifest is known then). The
    repository is read (at most every ``REFRESH_S`` of :mod:`atoll.control.releases`)
    outside any database transaction; unreachable, what was read before is used.

    Raises:
        ApiError: 404, the host is not (or no longer) in ``p``'s scope.
    """
    if kit.releases is None:
        return None
    with contextlib.suppress(RepositoryError, DownloadError):
        kit.releases.releases()
    with kit.db.read() as s:
        reported = ops.host_detail(s, p, host_id, packages=True).get("packages")
    return host_packages(deployments, reported, kit.releases.manifest)

"""The sysroot: deployments, the boot pointer, deploy / rollback / undeploy / pin.

A deploy is crash-safe at every point: the checkout and /etc merge happen in
``atoll/deploy/.staging-*``, the finished tree is renamed to its id, the new
boot configuration is written to the *inactive* ``boot/loader.N`` directory,
and only then does the ``boot/loader`` symlink swap (one rename). A process
killed before the swap leaves the old configuration in force; the next
deploy removes the leftovers (staging dirs, deployment dirs no loader lists).

One writer at a time: every change to deployments and the boot pointer holds
the sysroot lock ``atoll/lock`` (exclusive; see :mod:`atoll.core.lock`), and
the host store's lock (shared) while it imports and checks out, so that
``store gc`` cannot remove objects a deployment is about to reference.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import functools
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from atoll.core import canonjson
from atoll.core.errors import CorruptObjectError, DamagedStateError, HostStateError, InputError
from atoll.core.faults import crash_point
from atoll.core.fsutil import (
    append_json_line,
    atomic_symlink,
    atomic_write_json,
    damaged,
    disk_full,
    fsync_dir,
    read_state_json,
    syncfs,
)
from atoll.core.lock import FileLock
from atoll.core.text import printable
from atoll.deploy import plan
from atoll.deploy.bootloader import get_writer
from atoll.deploy.etcmerge import Digests, apply_plan, plan_merge, scan
from atoll.store.checkout import checkout
from atoll.store.repo import Repo
from atoll.store.tree import etc_layout_problem, path_kind

__all__ = ["Deployment", "Sysroot"]

log = logging.getLogger("atoll.deploy")

_DEP_ID = re.compile(r"[0-9a-f]{64}\.[0-9]{1,9}")


@dataclass(frozen=True)
class Deployment:
    id: str
    commit: str
    serial: int
    ref: str | None = None
    version: str = ""
    pinned: bool = False
    created: str = ""
    kernel: str | None = None
    etc_conflicts: tuple[str, ...] = ()
    origin: str | None = None
    changed: bool = field(default=True, compare=False)  # False: an existing one, as it was

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "commit": self.commit, "serial": self.serial, "ref": self.ref,
            "version": self.version, "pinned": self.pinned, "created": self.created,
            "kernel": self.kernel, "etc_conflicts": list(self.etc_conflicts),
            "origin": self.origin,
        }

    @classmethod
    def from_json(cls, d: Any) -> Deployment:
        """Raises: ValueError: not a deployment record (what is wrong, by field)."""
        if not isinstance(d, dict):
            raise ValueError("a deployment is not an object")
        dep_id, commit, serial = d.get("id"), d.get("commit"), d.get("serial")
        if not isinstance(dep_id, str) or not _DEP_ID.fullmatch(dep_id):
            raise ValueError(f"id: {str(dep_id)[:80]!r} is not COMMIT.SERIAL")
        if commit is None:  # the id holds it
            commit = dep_id.partition(".")[0]
        if not isinstance(commit, str) or not dep_id.startswith(commit + "."):
            raise ValueError(f"{dep_id[:16]}: commit does not match the id")
        if serial is None:
            serial = int(dep_id.rpartition(".")[2])
        if not isinstance(serial, int) or isinstance(serial, bool) or serial < 0:
            raise ValueError(f"{dep_id[:16]}: serial is not a number")
        for key in ("ref", "kernel", "origin"):
            if d.get(key) is not None and not isinstance(d.get(key), str):
                raise ValueError(f"{dep_id[:16]}: {key} is not a string")
        for key, typ in (("version", str), ("created", str), ("pinned", bool),
                         ("etc_conflicts", list)):
            if d.get(key) is not None and not isinstance(d[key], typ):
                raise ValueError(f"{dep_id[:16]}: {key} has the wrong type")
        return cls(
            id=dep_id, commit=commit, serial=serial, ref=d.get("ref"),
            version=d.get("version") or "", pinned=bool(d.get("pinned")),
            created=d.get("created") or "", kernel=d.get("kernel"),
            etc_conflicts=tuple(str(p) for p in d.get("etc_conflicts") or ()),
            origin=d.get("origin"),
        )

    def with_(self, **changes: Any) -> Deployment:
        changed = bool(changes.pop("changed", self.changed))
        return dataclasses.replace(Deployment.from_json(self.to_json() | changes),
                                   changed=changed)


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


P = ParamSpec("P")
R = TypeVar("R")


def _locked(fn: Callable[P, R]) -> Callable[P, R]:
    """Run a Sysroot method on an initialised sysroot, holding its lock (exclusive,
    reentrant).

    Raises:
        HostStateError: not a sysroot (nothing is created). BusyError: locked.
    """

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        self = args[0]
        assert isinstance(self, Sysroot)
        self.check()
        with self.lock.exclusive():
            try:
                return fn(*args, **kwargs)
            except OSError as exc:
                full = disk_full(exc, self.root, fn.__name__, unchanged="the deployments and "
                                 "the boot pointer are as they were")
                if full is None:
                    raise
                raise full from exc

    return wrapper


class Sysroot:
    """A host root directory managed by atoll."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.atoll = self.root / "atoll"
        self.deploy_dir = self.atoll / "deploy"
        self.state = self.atoll / "state"
        self.boot = self.root / "boot"
        self.loader_link = self.boot / "loader"
        self.var = self.root / "var"
        self.lock = FileLock(self.atoll / "lock", f"the sysroot {self.root}")

    # -- setup ---------------------------------------------------------

    def init(self, *, bootloader: str | None = None) -> None:
        """Create an empty sysroot (idempotent)."""
        self.atoll.mkdir(parents=True, exist_ok=True)
        with self.lock.exclusive():
            self._init(bootloader)

    def _init(self, bootloader: str | None) -> None:
        for d in (self.deploy_dir, self.state, self.boot, self.var, self.root / "run"):
            d.mkdir(parents=True, exist_ok=True)
        Repo.create(self.atoll / "repo")
        if not os.path.lexists(self.loader_link):
            loader0 = self.boot / "loader.0"
            loader0.mkdir(exist_ok=True)
            atomic_write_json(loader0 / "deployments.json", {"version": 1, "deployments": []})
            atomic_symlink("loader.0", self.loader_link)
        if bootloader:
            (self.state / "bootloader").write_text(bootloader + "\n")

    def check(self) -> None:
        """Raises: HostStateError: not an initialised sysroot (nothing is created)."""
        if self.root.exists() and not self.root.is_dir():
            raise HostStateError(f"{self.root}: not a directory",
                                 resolution="--sysroot names the host's root directory "
                                 "(default /)")
        if not os.path.islink(self.loader_link) or not (self.atoll / "repo").is_dir():
            raise HostStateError(
                f"{self.root}: not an atoll sysroot",
                resolution=f"create one with `atoll --sysroot {self.root} init`",
            )

    @property
    def repo(self) -> Repo:
        return Repo.open(self.atoll / "repo")

    # -- reading state ---------------------------------------------------

    def loader_dir(self) -> Path:
        return self.boot / os.readlink(self.loader_link)

    def deployments(self) -> list[Deployment]:
        """The boot order: [0] boots next.

        Raises:
            HostStateError: not a sysroot, or ``deployments.json`` is damaged.
        """
        self.check()
        path = self.loader_dir() / "deployments.json"
        other = "loader.1" if os.readlink(self.loader_link) == "loader.0" else "loader.0"
        fix = (f"{self.boot / other}/deployments.json holds the boot order before the last "
               f"change: check it, point the boot pointer at it (ln -sfn {other} "
               f"{self.loader_link}), then deploy again")
        data = read_state_json(path, dict, {"deployments": []}, resolution=fix)
        entries = data.get("deployments")
        if not isinstance(entries, list):
            raise damaged(path, "'deployments' is not a list", fix)
        try:
            return [Deployment.from_json(d) for d in entries]
        except ValueError as exc:
            raise damaged(path, str(exc), fix) from None

    def booted_id(self) -> str | None:
        """The running deployment (``run/atoll/booted``, written at boot), or None.

        Raises:
            HostStateError: the file is damaged (what deploy and cleanup must never
                remove is then unknown, so they stop).
        """
        p = self.root / "run/atoll/booted"
        try:
            raw = p.read_bytes()
        except FileNotFoundError:
            return None
        try:
            value = raw.decode().strip()
        except UnicodeDecodeError:
            value = "\0"
        if value and not _DEP_ID.fullmatch(value):
            raise damaged(p, "not a deployment id", "it is written at every boot from the "
                          "kernel command line (atoll.deployment=ID, see /proc/cmdline): write "
                          "that id into it, or reboot")
        return value or None

    def deployment_path(self, dep: Deployment | str) -> Path:
        return self.deploy_dir / (dep if isinstance(dep, str) else dep.id)

    def bootloader(self) -> str | None:
        with contextlib.suppress(FileNotFoundError):
            return (self.state / "bootloader").read_text().strip() or None
        return None

    def record_event(self, event: str, **fields: Any) -> None:
        """Append one JSON line to atoll/state/events.jsonl (fsynced)."""
        append_json_line(self.state / "events.jsonl", {"time": _now(), "event": event, **fields})

    def events(self) -> list[dict[str, Any]]:
        """The journal of events, oldest first (unreadable lines skipped)."""
        return self.event_log()[0]

    def event_log(self) -> tuple[list[dict[str, Any]], list[int]]:
        """The journal of events and the numbers of the lines that could not be read
        (not UTF-8, not JSON, not an object: a torn write, a disk error, a hand edit)."""
        out: list[dict[str, Any]] = []
        bad: list[int] = []
        with contextlib.suppress(FileNotFoundError):
            for n, line in enumerate((self.state / "events.jsonl").read_bytes().splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    value = canonjson.loads(line)
                except ValueError:
                    value = None
                if isinstance(value, dict):
                    out.append(value)
                else:
                    bad.append(n)
        return out, bad

    # -- the boot pointer ------------------------------------------------

    def write_loader(self, deployments: list[Deployment]) -> None:
        """Write the inactive loader dir, render the bootloader config, swap the pointer."""
        current = os.readlink(self.loader_link)
        nxt = "loader.1" if current == "loader.0" else "loader.0"
        new_dir = self.boot / nxt
        if new_dir.exists():
            shutil.rmtree(new_dir)
        new_dir.mkdir()
        entries = [d.to_json() for d in deployments]
        atomic_write_json(new_dir / "deployments.json", {"version": 1, "deployments": entries})
        name = self.bootloader()
        if name:
            get_writer(name)(self.root, new_dir, entries)
        syncfs(self.boot)
        fsync_dir(new_dir)
        crash_point("deploy:loader")
        atomic_symlink(nxt, self.loader_link)

    # -- operations ------------------------------------------------------

    @_locked
    def remove_pending(self) -> tuple[list[Deployment], str]:
        """Drop the prepared deployment and the pending one (``cleanup -p``): the booted
        one boots next again. Returns what was removed and what boots next, in words.

        The boot order changes only when the booted deployment is known and listed
        (:func:`atoll.deploy.plan.without_pending`); otherwise only the prepared one goes.
        """
        gone = []
        try:
            prepared = self.prepared()
        except DamagedStateError:  # a damaged prepared.json: what cleanup -p is for
            prepared = None
            self._clear_prepared()
        if prepared is not None:
            self._clear_prepared()
            gone.append(prepared)
        current = self.deployments()
        booted = self.booted_id()
        entries = [plan.Entry(d.id, d.pinned) for d in current]
        keep, why = plan.without_pending(entries, booted)
        if keep is not None and len(keep) < len(current):
            kept = {e.id for e in keep}
            dropped = [d for d in current if d.id not in kept]
            self.write_loader([d for d in current if d.id in kept])
            for d in dropped:
                self.record_event("undeploy", deployment=d.id, reason="cleanup pending")
            gone += dropped
        self.cleanup()
        return gone, why

    @_locked
    def remove_rollback(self) -> list[Deployment]:
        """Drop the rollback deployment (``cleanup -r``), unless it is pinned."""
        current = self.deployments()
        roles = plan.roles([d.id for d in current], self.booted_id())
        gone = [d for d in current if roles.get(d.id) == "rollback" and not d.pinned]
        if gone:
            self.write_loader([d for d in current if d not in gone])
            for d in gone:
                self.record_event("undeploy", deployment=d.id, reason="cleanup rollback")
        self.cleanup()
        return gone

    @_locked
    def acknowledge_rollback(self) -> dict[str, Any] | None:
        """Acknowledge the last boot's automatic rollback (Checkmk returns to OK); returns
        the boot event acknowledged, or None when there is nothing to acknowledge."""
        events = self.events()
        acked = {e.get("boot_time") for e in events if e.get("event") == "ack"}
        last = next((e for e in reversed(events) if e.get("event") == "boot"), None)
        if last is None or last.get("result") != "rolled-back" or last.get("time") in acked:
            return None
        self.record_event("ack", boot_time=last.get("time"), deployment=last.get("deployment"),
                          reason=last.get("reason"))
        return dict(last)

    @_locked
    def cleanup(self) -> list[str]:
        """Remove what a killed deploy left behind; returns what was removed."""
        self.check()
        keep = {d.id for d in self.deployments()}
        booted = self.booted_id()
        if booted:
            keep.add(booted)
        prepared = self._prepared_record()
        if prepared:
            keep.add(prepared["deployment"]["id"])
        removed = []
        for entry in os.scandir(self.deploy_dir):
            if entry.name not in keep:
                shutil.rmtree(entry.path, ignore_errors=True)
                removed.append(entry.name)
        repo = self.repo
        for name in repo.refs("deploy"):
            if name not in keep:
                repo.set_ref(name, None, namespace="deploy")
        return removed

    def _next_serial(self, commit: str) -> int:
        taken = {e.name for e in os.scandir(self.deploy_dir)}
        serial = 0
        while f"{commit}.{serial}" in taken:
            serial += 1
        return serial

    def _merge_base(self, current: list[Deployment]) -> Deployment | None:
        booted = self.booted_id()
        for d in current:
            if d.id == booted:
                return d
        return current[0] if current else None

    def _prepared_path(self) -> Path:
        return self.state / "prepared.json"

    def _prepared_record(self) -> dict[str, Any] | None:
        fix = ("remove it (`atoll cleanup -p`), then prepare again (`atoll update apply` "
               "or atolld)")
        path = self._prepared_path()
        if not path.exists():  # written by atoll before the state words were settled
            path = self.state / "staged.json"
        data: dict[str, Any] | None = read_state_json(path, dict, resolution=fix)
        if data is None:
            return None
        try:
            Deployment.from_json(data.get("deployment"))
        except ValueError as exc:
            raise damaged(path, str(exc), fix) from None
        return data

    def prepared(self) -> Deployment | None:
        """The deployment :meth:`prepare` checked out, not yet in the boot order (the
        update state "prepared": it waits for `update apply`)."""
        data = self._prepared_record()
        if not data:
            return None
        dep = Deployment.from_json(data["deployment"])
        return dep if self.deployment_path(dep).is_dir() else None

    def _resolve(self, rev: str, repo: Repo | None, origin: str | None) -> tuple[str, str | None]:
        """``rev`` -> (commit, origin), resolved once, in the store it is read from
        (``repo`` when given: a deploy --repo; else the host's). ``origin``, when given,
        is what the deployment follows instead (a commit id downloaded from
        REMOTE:CHANNEL follows that)."""
        commit, found = (repo or self.repo).resolve_ref(rev)
        return commit, origin or found

    def _prepare(self, commit: str, origin: str | None, repo: Repo | None,
                 branch: str | None = None) -> Deployment:
        """Import (if needed), verify and check out ``commit`` as ``deploy/<id>`` (no /etc
        yet). ``branch``: a branch of ``repo`` to copy into the host's store (a deploy of
        a branch by name from another repository), so it can be named again here."""
        own = self.repo
        with own.lock.shared():
            if repo is not None and repo.path.resolve() != own.path.resolve():
                log.info("deploy: importing commit %s from %s", commit[:12], repo.path)
                own.pull_local(repo, commit)
                if branch is not None:
                    own.set_ref(branch, commit)
            c = own.read_commit(commit)
            serial = self._next_serial(commit)
            dep_id = f"{commit}.{serial}"
            staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=self.deploy_dir))
            tree = staging / "tree"
            try:
                log.info("deploy %s: checking out commit %s", dep_id[:16], commit[:12])
                try:
                    checkout(own, commit, tree, verify=True)
                except CorruptObjectError as exc:
                    if repo is None or repo.path.resolve() == own.path.resolve():
                        raise
                    raise _from_source(exc, repo) from exc
                crash_point("deploy:checkout")
                _etc_layout(tree)
                kdirs = sorted(p.parent.name for p in (tree / "usr/lib/modules").glob("*/vmlinuz"))
                syncfs(self.deploy_dir)
                os.rename(tree, self.deploy_dir / dep_id)
                fsync_dir(self.deploy_dir)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
            own.set_ref(dep_id, commit, namespace="deploy")
        return Deployment(
            id=dep_id, commit=commit, serial=serial, ref=origin, version=c.version,
            created=_now(), kernel=kdirs[-1] if kdirs else None, origin=origin,
        )

    def _merge_etc(self, dep: Deployment, base: Deployment | None) -> Deployment:
        """(Re)write ``dep``'s /etc as the 3-way merge against ``base``; idempotent."""
        root = self.deployment_path(dep)
        etc = root / "etc"
        shutil.rmtree(etc, ignore_errors=True)
        etc.mkdir(mode=0o700)  # root's alone until the merge is in (apply_plan)
        if base is not None and base.id != dep.id:
            base_root = self.deployment_path(base)
            old_defaults, cur = base_root / "usr/etc", base_root / "etc"
        else:
            old_defaults = cur = root / "usr/etc"
        digests: Digests = {}  # the two usr/etc share most inodes; the live /etc none
        merge = plan_merge(scan(old_defaults, digests), scan(cur),
                           scan(root / "usr/etc", digests))
        apply_plan(merge, cur, root / "usr/etc", etc)
        if merge.conflicts:
            log.warning("deploy: /etc conflicts kept as the host had them: %s",
                        ", ".join(printable(p) for p in merge.conflicts))
        syncfs(self.deploy_dir)
        return dep.with_(etc_conflicts=list(merge.conflicts))

    def _activate(self, dep: Deployment, current: list[Deployment]) -> Deployment:
        """/etc merge, then make ``dep`` the next boot (the atomic swap)."""
        dep = self._merge_etc(dep, self._merge_base(current))
        entries = [plan.Entry(d.id, d.pinned) for d in current]
        order = plan.after_deploy(entries, self.booted_id(), dep.id)
        by_id = {d.id: d for d in current} | {dep.id: dep}
        self.write_loader([by_id[e.id] for e in order])
        self.record_event("deploy", deployment=dep.id, version=dep.version,
                          etc_conflicts=list(dep.etc_conflicts))
        return dep

    @_locked
    def deploy(self, rev: str, *, repo: Repo | None = None, redeploy: bool = False,
               origin: str | None = None) -> Deployment:
        """Deploy ``rev`` (a revision: ref, REMOTE:CHANNEL, commit, REV~N) as the next boot.

        ``rev`` is resolved once, in ``repo`` when given (then imported from it), else in
        the host's store. The deployment follows the branch or REMOTE:CHANNEL that
        ``rev`` names (``origin`` overrides it). When the deployment that boots next
        already is of that commit, no new one is made (``Deployment.changed`` False;
        a different origin is recorded on it, as ``ostree admin set-origin`` does),
        unless ``redeploy`` asks for a fresh one (a new serial: a new checkout and
        /etc merge).

        Raises:
            InputError: unknown ref or commit.
            CorruptObjectError: an object of the commit is corrupt; nothing changes.
            HostStateError: the sysroot is not initialised, or its state files are damaged.
        """
        self.check()
        self.cleanup()
        current = self.deployments()
        commit, origin = self._resolve(rev, repo, origin)
        if current and not redeploy and current[0].commit == commit:
            head = current[0]
            if origin is None or head.origin == origin:
                return head.with_(changed=False)
            moved = head.with_(origin=origin, ref=origin, changed=False)
            self.write_loader([moved, *current[1:]])
            self.record_event("origin", deployment=head.id, origin=origin,
                              previous=head.origin)
            return moved
        dep = self._prepare(commit, origin, repo, _branch_of(rev, repo))
        dep = self._activate(dep, current)
        self._clear_prepared()
        self.cleanup()
        return dep

    @_locked
    def prepare(self, rev: str, *, repo: Repo | None = None,
                origin: str | None = None) -> Deployment:
        """Prepare ``rev`` (verify, check out) without making it the next boot.

        ``origin``: what the deployment follows (REMOTE:CHANNEL), when ``rev`` is a
        commit id downloaded from there. A newer prepare replaces a prepared
        deployment that was not applied; the same commit again returns it (its
        origin recorded when it had none).
        """
        self.check()
        old = self.prepared()
        self.cleanup()
        commit, origin = self._resolve(rev, repo, origin)
        if old is not None and old.commit == commit:
            if origin is None or old.origin == origin:
                return old
            old = old.with_(origin=origin, ref=origin)
            record = self._prepared_record() or {}
            atomic_write_json(self._prepared_path(), record | {"deployment": old.to_json()})
            return old
        dep = self._prepare(commit, origin, repo, _branch_of(rev, repo))
        atomic_write_json(self._prepared_path(), {"deployment": dep.to_json(), "since": _now()})
        self.record_event("prepare", deployment=dep.id, version=dep.version)
        self.cleanup()
        return dep

    @_locked
    def finalize(self) -> Deployment:
        """Make the prepared deployment the next boot (/etc merged now, as late as possible).

        Raises:
            HostStateError: nothing is prepared.
        """
        self.check()
        dep = self.prepared()
        if dep is None:
            raise HostStateError(
                "no prepared update to apply",
                resolution="download one first (`atoll update download`); `atoll update "
                "apply` prepares it",
            )
        current = self.deployments()
        applied = next((d for d in current if d.id == dep.id), None)
        if applied is not None:
            # applied already: killed between the loader swap and clearing the record (a
            # rollback may have come since). Its /etc was merged then, and may be the
            # live one of a host that booted it: make it the next boot again, never merge.
            log.info("deploy %s: applied already; making it the next boot, /etc as it is",
                     dep.id[:16])
            if current[0].id != applied.id:
                self.write_loader([applied, *(d for d in current if d.id != applied.id)])
            self.record_event("deploy", deployment=applied.id, version=applied.version,
                              etc_conflicts=list(applied.etc_conflicts))
            self._clear_prepared()
            self.cleanup()
            return applied
        dep = self._activate(dep, current)
        self._clear_prepared()
        self.cleanup()
        return dep

    def _clear_prepared(self) -> None:
        for name in ("prepared.json", "staged.json"):
            with contextlib.suppress(FileNotFoundError):
                (self.state / name).unlink()
            fsync_dir(self.state)

    @_locked
    def rollback(self) -> list[Deployment]:
        """Make the previous deployment the next boot; returns the new order."""
        current = self.deployments()
        entries = [plan.Entry(d.id, d.pinned) for d in current]
        try:
            order = plan.after_rollback(entries, self.booted_id())
        except ValueError:
            raise HostStateError("there is no rollback deployment",
                                 resolution="deploy another commit first") from None
        by_id = {d.id: d for d in current}
        new = [by_id[e.id] for e in order]
        self.write_loader(new)
        self.record_event("rollback", deployment=new[0].id)
        return new

    def _index(self, index: int, action: str) -> list[Deployment]:
        current = self.deployments()
        if not 0 <= index < len(current):
            if index == -1 and self.prepared() is not None:
                raise InputError(
                    f"index -1 is the prepared deployment, which is not in the boot order: "
                    f"it cannot be {action}",
                    resolution="remove it with `atoll cleanup -p`; `atoll update apply` makes "
                    "it the next boot")
            raise InputError(f"no deployment with index {index} (there are {len(current)}: "
                             f"0 to {len(current) - 1})" if current else
                             f"no deployment with index {index}: nothing is deployed",
                             resolution="`atoll status` shows each deployment's index")
        return current

    @_locked
    def undeploy(self, index: int) -> Deployment:
        current = self._index(index, "undeployed")
        dep = current[index]
        if dep.id == self.booted_id():
            raise HostStateError("refusing to remove the booted deployment")
        self.write_loader([d for i, d in enumerate(current) if i != index])
        self.record_event("undeploy", deployment=dep.id)
        self.cleanup()
        return dep

    @_locked
    def pin(self, index: int, pinned: bool = True) -> Deployment:
        current = self._index(index, "pinned" if pinned else "unpinned")
        current[index] = current[index].with_(pinned=pinned)
        self.write_loader(current)
        return current[index]


def _branch_of(rev: str, repo: Repo | None) -> str | None:
    """The branch of ``repo`` that ``rev`` names exactly (``site/db``, ``heads/site/db``):
    a deploy of it from another repository copies it into the host's store. Not for
    REV~N (the branch stays where it is), remote refs or commit ids."""
    if repo is None:
        return None
    name = rev.removeprefix("heads/")
    return name if name in repo.refs("heads") else None


def _etc_layout(tree: Path) -> None:
    """Give a fresh checkout the deploy layout: the image's /etc in ``usr/etc`` (a lone
    ``/etc``, from a commit made elsewhere, is moved there) and an empty ``etc/`` for the
    merge. No /etc at all gives an empty one.

    Raises:
        InputError: /etc is a symlink or not a directory, or /etc and /usr/etc both hold files.
    """
    etc, usr_etc = tree / "etc", tree / "usr/etc"
    kind, usr_kind = path_kind(etc), path_kind(tree / "usr")
    usr_etc_kind = path_kind(usr_etc) if usr_kind == "dir" else None
    has_usr_etc = usr_etc_kind == "dir"
    problem = etc_layout_problem(kind, kind == "dir" and not any(etc.iterdir()), usr_etc_kind,
                                 usr_kind)
    if problem:
        raise InputError(f"cannot deploy this commit: {problem}",
                         resolution="commit the tree again with atoll (it moves a lone /etc "
                         "to /usr/etc)")
    if kind == "dir" and not has_usr_etc:
        usr_etc.parent.mkdir(exist_ok=True)
        os.rename(etc, usr_etc)
    elif kind == "dir":
        etc.rmdir()
    etc.mkdir(mode=0o755)


def _from_source(exc: CorruptObjectError, source: Repo) -> CorruptObjectError:
    """A damaged object imported from ``source`` (deploy --repo): it is damaged there too
    (imports hardlink), so quarantine it there and say which repository to repair."""
    for line in (exc.details or "").splitlines():
        kind, _, oid = line.partition(" ")
        if kind == "file" and source.has(oid, "file") and not source.verify_file(oid):
            source.quarantine(oid, "file", "content does not match its id")
    return CorruptObjectError(
        exc.brief, details=exc.details,
        resolution=f"the commit came from {source.path}, which holds damaged objects: run "
        f"`atoll store fsck --repo {source.path}`, then commit or compose the tree again there")

"""What the agent does to a host: check, download, prepare, apply, reboot, release the slot.

Everything goes through the layers that own it: the delivery client (verified
pulls), the sysroot (prepare, finalize), the apps layer (backups before an
apply), the FleetLock client (reboot slots). A reboot is ``systemctl reboot``
on a real host (sysroot ``/``); under any other sysroot it is recorded only.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import atoll
from atoll.agent.policy import AgentState, Policy
from atoll.agent.replication import gate_host
from atoll.agent.state import AgentFiles, iso
from atoll.core.errors import NOTHING_NEW, DamagedStateError, HostStateError, error_class
from atoll.core.fsutil import damaged, read_state_json
from atoll.core.run import run
from atoll.deploy.sysroot import Deployment, Sysroot
from atoll.fleet.gating import GateDecision

__all__ = ["Host", "node_id"]

log = logging.getLogger("atoll.agent")

Rebooter = Callable[[Path], None]


def _time(text: str) -> dt.datetime:
    """An ISO 8601 time as update.json and agent.json hold it ('Z' allowed).

    Raises: ValueError: not one.
    """
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def _maybe_time(value: Any) -> dt.datetime | None:
    try:
        return _time(value) if isinstance(value, str) and value else None
    except ValueError:
        return None


def default_reboot(sysroot: Path) -> None:
    if Path(sysroot).resolve() == Path("/"):
        # without blocking: a blocking systemctl is killed with atolld when the
        # reboot stops the service, and a successful apply would be recorded as failed
        from atoll.boot.complete import systemctl_reboot

        systemctl_reboot()
    else:
        log.info("reboot requested (sysroot %s is not /: not rebooting this machine)", sysroot)


def node_id(sysroot: Path) -> str:
    """The host's id for FleetLock: /etc/machine-id (as Zincati uses), else the hostname."""
    for p in (Path(sysroot) / "etc/machine-id",):
        try:
            value = p.read_text().strip()
        except OSError:
            continue
        if value and value != "uninitialized":
            return value
    import socket

    return socket.gethostname()


class Host:
    def __init__(self, sysroot: Path, *, reboot: Rebooter = default_reboot,
                 backups: Callable[[Path], list[dict[str, Any]]] | None = None,
                 gate: Callable[[Path, float], list[tuple[str, GateDecision]]] = gate_host):
        self.sysroot = Path(sysroot)
        self._gate = gate
        self.sr = Sysroot(self.sysroot)
        self.files = AgentFiles(self.sysroot)
        self._reboot = reboot
        self._backups = backups

    # -- facts ---------------------------------------------------------

    def update_record(self, *, strict: bool = True) -> dict[str, Any]:
        """update.json, as ``update check`` wrote it ({} when never checked).

        Raises:
            DamagedStateError: it does not read (``strict``; else it reads as {}, so the
                agent checks again, which rewrites it).
        """
        path = self.sr.state / "update.json"
        fix = "run `atoll update check`: it rewrites it"
        try:
            raw = read_state_json(path, dict, {}, resolution=fix)
            for key in ("state", "commit", "checked", "remote", "channel"):
                if raw.get(key) is not None and not isinstance(raw[key], str):
                    raise damaged(path, f"{key} is not a string", fix)
            if raw.get("checked"):
                _time(raw["checked"])
        except (DamagedStateError, ValueError) as exc:
            if strict:
                raise exc if isinstance(exc, DamagedStateError) else \
                    damaged(path, "checked is not a time", fix) from None
            log.warning("%s: read as never checked; the next check rewrites it", path)
            return {}
        return dict(raw)

    def state(self, *, strict: bool = True) -> AgentState:
        """What the agent knows, read from the host's files (``strict``: a damaged
        update.json raises; atolld reads it as never checked, and checks)."""
        agent = self.files.load()
        update = self.update_record(strict=strict)
        deps = self.sr.deployments()
        by_id = {d.id: d for d in deps}
        booted_id = self.sr.booted_id()
        # a hotfix deployment counts as its base commit: updates apply to the base
        booted = self._base(by_id[booted_id].commit) if booted_id in by_id else None
        pending = self._base(deps[0].commit) if deps and deps[0].id != booted_id else None
        prepared = self.sr.prepared()
        last_check = agent.get("last_check")
        checked = update.get("checked")
        last_apply = agent.get("last_apply_s")
        fixes, note = self._security_fixes(booted, update.get("commit"))
        return AgentState(
            last_check=_maybe_time(last_check),
            checked=_time(checked) if checked else None,
            available=update.get("commit") if update.get("state") in (
                "available", "downloaded") else None,
            downloaded=update.get("commit") if update.get("state") == "downloaded" else None,
            prepared=self._base(prepared.commit) if prepared else None,
            booted=booted,
            pending=pending,
            request=self.files.request(),
            last_apply_s=float(last_apply) if isinstance(last_apply, int | float) else None,
            security_fixes=fixes, security_note=note,
        )

    def _base(self, commit: str) -> str:
        """The base commit of a hotfix deployment's commit (else ``commit``, also when the
        commit object is missing or damaged: the update path must not depend on it)."""
        from atoll.core.errors import AtollError
        from atoll.deploy.hotfixplan import base_of

        try:
            repo = self.sr.repo
            return base_of(repo, commit)[0] if repo.has(commit, "commit") else commit
        except (AtollError, OSError) as exc:
            log.warning("commit %s: its base is not known (%s); counted as itself",
                        commit[:12], exc)
            return commit

    def _security_fixes(self, booted: str | None,
                        commit: str | None) -> tuple[tuple[str, ...] | None, str]:
        """What the update fixes at or above the policy's threshold (``security-only``),
        and what limits its CVE data (atoll.security.host.update_data_note)."""
        try:
            policy = self.files.policy()
        except DamagedStateError:
            return None, ""  # atolld reports the damaged policy itself
        if policy.updates != "security-only":
            return None, ""
        from atoll.security.host import update_data_note, update_fixes

        return (update_fixes(self.sr.root, booted, commit, policy.security_threshold,
                             unassigned=policy.unassigned_as),
                update_data_note(self.sr.root, commit, dt.datetime.now(dt.UTC),
                                 unassigned=policy.unassigned_as))

    # -- actions -------------------------------------------------------

    def check(self, policy: Policy, now: dt.datetime, *,
              version: str | None = None) -> dict[str, Any]:
        data = self.files.load()
        data["last_check"] = iso(now)
        self.files.save(data)  # a failing check is retried at the next interval, not at once
        return self._update("check", policy.remote, version)

    def download(self, policy: Policy, *, version: str | None = None) -> dict[str, Any]:
        return self._update("download", policy.remote, version)

    def _update(self, action: str, remote: str, version: str | None = None) -> dict[str, Any]:
        """Run ``atoll update ACTION [--version V]`` in a child process (never with
        ``--allow-downgrade``: the agent never goes back by itself).

        The TUF client and its crypto stay out of the long-running agent (its
        memory stays small), and a crash in a download cannot take the agent down.
        """
        # the same atoll as this process, wherever it is installed (/usr/lib/atoll/python)
        where = str(Path(atoll.__file__).resolve().parent.parent)
        boot = f"import sys; sys.path.insert(0, {where!r}); from atoll.cli import main; " \
               "sys.exit(main())"
        argv = [sys.executable, "-c", boot, "--json", "--sysroot", str(self.sysroot),
                "update", action, "--remote", remote]
        if version is not None:
            argv.append(f"--version={version}")  # "=": a version may start with "-"
        proc = run(argv, check=False, timeout=6 * 3600)
        try:
            out: dict[str, Any] = json.loads(proc.stdout or b"{}")
        except ValueError:
            out = {}
        if proc.returncode not in (0, NOTHING_NEW):  # 77: `update check` found nothing new
            cls = error_class(str(out.get("error")))
            raise cls(out.get("brief") or f"update {action} failed (exit {proc.returncode})",
                      details=out.get("details") or proc.stderr.decode(errors="replace")[-2000:],
                      resolution=out.get("resolution"))
        return out

    def prepare(self, commit: str) -> dict[str, Any]:
        """Prepare the downloaded ``commit``; the deployment follows the REMOTE:CHANNEL
        it was downloaded from (update.json), as a deploy of that refspec would."""
        update = self.update_record(strict=False)
        origin = (f"{update['remote']}:{update['channel']}"
                  if update.get("commit") == commit and update.get("remote")
                  and update.get("channel") else None)
        from atoll.deploy.hotfix import rebase_hotfixes

        # active hotfixes are re-applied on the new base, dropped, or block it
        # (docs/hotfix.md); base and derivation under one lock, so gc waits
        with self.sr.lock.exclusive(), self.sr.repo.lock.shared():
            target, plan = rebase_hotfixes(self.sr, commit)
            out = self.sr.prepare(target, origin=origin).to_json()
        if plan.keep or plan.drop:
            out["hotfixes"] = {"kept": [h.name for h in plan.keep],
                               "dropped": {h.name: why for h, why in plan.drop}}
        return out

    def apply(self, policy: Policy, *, reboot: bool = True) -> dict[str, Any]:
        """Back up databases, take a fleet slot, make the prepared update the next boot, reboot.

        Raises:
            HostStateError: nothing prepared.
            FleetLockError: no slot (the caller retries later).
        """
        prepared = self.sr.prepared()
        pending = self._pending()
        if prepared is None and (pending is None or not (reboot and policy.reboot)):
            raise HostStateError("no prepared update to apply")
        start = time.monotonic()
        if reboot and policy.reboot:
            denied = [(app, g) for app, g in self._gate(self.sysroot, policy.max_replica_lag_s)
                      if not g.allowed]
            if denied:
                raise HostStateError(
                    "replication gate: " + "; ".join(f"{a}: {g.reason}" for a, g in denied),
                    resolution="the update waits until replication is healthy "
                    "(a fleet never reboots the last healthy copy)",
                )
        backups = self._backups(self.sysroot) if self._backups else _default_backups(self.sysroot)
        data = self.files.load()
        if policy.fleet_lock and reboot:
            from atoll.fleet.client import FleetLockClient

            FleetLockClient(policy.fleet_lock).pre_reboot(node_id(self.sysroot), policy.group)
            data["lock_held"] = {"url": policy.fleet_lock, "group": policy.group,
                                 "since": iso(dt.datetime.now(dt.UTC))}
            self.files.save(data)
        if prepared is not None:
            dep = self.sr.finalize()
        else:  # applied before: what is left is the reboot into it
            assert pending is not None
            dep = pending
        data = self.files.load()
        data["request"] = None
        data["applied"] = {"deployment": dep.id, "time": iso(dt.datetime.now(dt.UTC)),
                           "backups": [b.get("id") for b in backups]}
        data["last_apply_s"] = round(time.monotonic() - start, 1) + data.get("reboot_s", 60)
        self.files.save(data)
        if reboot and policy.reboot:
            self.sr.record_event("reboot", deployment=dep.id, reason="update applied")
            self._reboot(self.sysroot)
        return {"deployment": dep.to_json(), "backups": backups}

    def _pending(self) -> Deployment | None:
        """The deployment that boots next, when it is not the booted one (applied)."""
        deps = self.sr.deployments()
        return deps[0] if deps and deps[0].id != self.sr.booted_id() else None

    def release_slot_if_good(self) -> bool:
        """After the new deployment is marked good: give the fleet slot back."""
        data = self.files.load()
        held = data.get("lock_held")
        if not held:
            return False
        booted = self.sr.booted_id()
        try:
            good = read_state_json(self.sr.state / "boot.json", dict, {},
                                   resolution="").get("good", [])
        except DamagedStateError:
            return False  # boot-complete rewrites it; keep the slot until it reads
        if not isinstance(good, list):
            return False
        if booted is None or booted not in good:
            return False
        from atoll.fleet.client import FleetLockClient

        FleetLockClient(held["url"]).steady_state(node_id(self.sysroot), held["group"])
        data["lock_held"] = None
        self.files.save(data)
        log.info("fleet slot released: %s is marked good", booted)
        return True


def _default_backups(sysroot: Path) -> list[dict[str, Any]]:
    from atoll.apps.paths import installed_names

    if not installed_names(sysroot):  # no app: the app model (pydantic) is not loaded
        return []
    from atoll.apps.backups import backup_all_before_update

    return backup_all_before_update(sysroot)

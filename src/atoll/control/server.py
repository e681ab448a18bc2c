"""``atoll fleet serve``: the control plane's API on uvicorn, plus the lost-host sweep.

The HTTP rules are the FleetLock server's (:class:`atoll.fleet.server.AsgiServer`:
h11, idle timeouts, JSON 400s for malformed HTTP, lingering close after a refused
body). A FleetLock application may be mounted at ``/fleetlock`` (one process for a
one-site setup; hosts then use ``fleet_lock: http://SERVER/fleetlock``).

The sweep marks hosts lost (:func:`atoll.control.service.mark_lost`) every
``sweep_s`` seconds in a thread; it is safe with several instances (each host is
marked, and its event written, once). The rollout driver
(:func:`atoll.control.rollout_store.drive`: advance waves after their soak, finish,
halt on timeouts) runs every ``drive_s`` seconds in another; also safe with several
instances (each rollout's row is locked while it is driven). Events past the
retention are deleted every hour (:func:`atoll.control.retention.prune_events`),
and the version samples past it with them. The hour's version sample
(:func:`atoll.control.history.record_versions`) is taken at start, then looked for
every ``SAMPLE_S``. With an :class:`~atoll.control.leader.Election` (``--etcd``) only
the leader runs the driver, the samples and the retention; a third thread campaigns.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from pathlib import Path
from typing import Any

from atoll.control import audit
from atoll.control.app import Clock, Settings, build_app, utcnow
from atoll.control.db import Database, unavailable
from atoll.control.history import SAMPLE_S, record_versions
from atoll.control.leader import Election
from atoll.control.retention import prune_events, prune_samples
from atoll.control.rollout_store import drive
from atoll.control.service import mark_lost
from atoll.core.errors import AtollError, DownloadError, RepositoryError, RuntimeBackendError
from atoll.fleet.server import IDLE_TIMEOUT, AsgiServer

__all__ = ["DRIVE_S", "ControlServer"]

log = logging.getLogger("atoll.control")
DRIVE_S = 30.0  # the rollout driver's tick (atoll fleet serve --rollout-tick)
RETENTION_S = 3600.0  # how often events past the retention are deleted


class ControlServer(AsgiServer):
    """The control plane bound to ``host:port``; ``start()``/``serve_forever()``, ``stop()``."""

    def __init__(self, db: Database, host: str = "127.0.0.1", port: int = 0, *,
                 settings: Settings | None = None, clock: Clock = utcnow,
                 fleetlock: Any = None, sweep_s: float | None = None,
                 drive_s: float = DRIVE_S, idle_timeout: float = IDLE_TIMEOUT,
                 election: Election | None = None, audit_dir: Path | None = None) -> None:
        """Bind now (``url`` is known); the database must be at this atoll's schema.

        Args:
            fleetlock: a FleetLock ASGI application to mount at ``/fleetlock``.
            sweep_s: seconds between lost-host sweeps (default: a tenth of
                ``settings.lost_after``, between 5 s and 5 min).
            drive_s: seconds between the rollout driver's ticks.
            election: drive rollouts (and the event retention) only while this
                instance leads (:mod:`atoll.control.leader`); None: every instance
                drives, each rollout's row locked while it is driven.
            audit_dir: write signed checkpoints of the audit chain here (None: none).

        Raises:
            InputError: the address cannot be bound.
        """
        self.db = db
        self.settings = settings or Settings()
        self.clock = clock
        lost = self.settings.lost_after.total_seconds()
        self.sweep_s = sweep_s if sweep_s is not None else min(300.0, max(5.0, lost / 10))
        self.drive_s = drive_s
        self.election = election
        self.audit_dir = audit_dir
        if audit_dir is not None:
            audit.signing_key(audit_dir)  # a bad key refuses to start, not to checkpoint
        self.driver_ticks = 0  # ticks this instance drove (health: who drives)
        super().__init__(build_app(db, self.settings, clock=clock, fleetlock=fleetlock,
                                   driver=self.driver_status),
                         host, port, idle_timeout=idle_timeout, name="atoll-control")
        self._halt = threading.Event()
        self._threads: list[threading.Thread] = []

    def sweep(self) -> list[str]:
        """One lost-host sweep now; returns the hosts marked lost."""
        return mark_lost(self.db, self.clock(), self.settings.lost_after)

    def drives(self) -> bool:
        """Whether this instance drives rollouts now (no election: always)."""
        return self.election is None or self.election.leading()

    def driver_status(self) -> dict[str, Any]:
        """``{"election": "etcd"|"none", "role": "leader"|"standby"|"every-instance",
        "ticks"}`` (``GET /v1/health``)."""
        if self.election is None:
            return {"election": "none", "role": "every-instance", "ticks": self.driver_ticks}
        return {"election": "etcd", "role": "leader" if self.election.leading()
                else "standby", "ticks": self.driver_ticks}

    def drive(self) -> list[dict[str, Any]]:
        """One rollout driver tick now, if this instance drives; the steps taken."""
        if not self.drives():
            return []
        self.driver_ticks += 1
        return drive(self.db, self.clock(), self._signed())

    def _signed(self) -> dict[str, frozenset[tuple[str, str]]] | None:
        """What the repository signs now (verified at most ``refresh_s`` ago), or None
        when the server reads no repository or cannot read it now (a repository
        outage must not halt rollouts: they keep their stored versions)."""
        source = self.settings.releases
        if source is None:
            return None
        try:
            channels = source.releases()
        except (RepositoryError, DownloadError) as exc:
            log.warning("rollout driver: the update repository cannot be read now (%s); "
                        "rollouts keep their stored versions", exc)
            return None
        return {ch: frozenset((v.version, v.commit) for v in vs)
                for ch, vs in channels.items()}

    def prune_events(self) -> int:
        """Delete the events past ``settings.event_retention`` now, if this instance
        drives; returns how many."""
        retention = self.settings.event_retention
        if retention is None or not self.drives():
            return 0
        now = self.clock()
        pruned = prune_events(self.db, now, retention)
        prune_samples(self.db, now, retention)
        return pruned

    def sample_versions(self) -> int:
        """Store this hour's version sample if it has none and this instance drives;
        returns the rows written (:func:`atoll.control.history.record_versions`)."""
        if not self.drives():
            return 0
        return record_versions(self.db, self.clock())

    def checkpoint(self) -> None:
        """Sign the audit chain's head into ``audit_dir`` now, if it grew (a chain that
        no longer holds the latest checkpoint is logged, not signed over)."""
        if self.audit_dir is None:
            return
        try:
            audit.checkpoint(self.db, self.audit_dir, self.clock())
        except AtollError as exc:
            log.error("audit checkpoint: %s", exc)

    def _campaign(self) -> None:
        election = self.election
        assert election is not None
        failing = False
        while True:
            try:
                election.step()
                failing = False
            except RuntimeBackendError as exc:
                if not failing:
                    log.warning("rollout driver election: %s; this instance does not drive "
                                "until etcd answers", exc)
                failing = True
            if self._halt.wait(election.every_s):
                return

    def _loop(self, what: str, every: float, run: Any) -> None:
        while not self._halt.wait(every):
            self._loop_once(what, run)

    @staticmethod
    def _loop_once(what: str, run: Any) -> None:
        try:
            run()
        except Exception as exc:  # the database is away: the next tick tries again
            if not unavailable(exc):
                log.exception("%s failed", what)
            else:
                log.warning("%s: the database cannot be reached", what)

    def _serve(self) -> None:
        self._halt.clear()
        self._threads = [
            threading.Thread(target=self._loop, args=("lost-host sweep", self.sweep_s,
                                                      self.sweep),
                             name="atoll-control-sweep", daemon=True),
            threading.Thread(target=self._loop, args=("rollout driver", self.drive_s,
                                                      self.drive),
                             name="atoll-control-drive", daemon=True)]
        self._loop_once("version sample", self.sample_versions)
        self._threads.append(threading.Thread(
            target=self._loop, args=("version sample", SAMPLE_S, self.sample_versions),
            name="atoll-control-samples", daemon=True))
        if self.election is not None:
            self._threads.append(threading.Thread(target=self._campaign,
                                                  name="atoll-control-election", daemon=True))
        if self.settings.event_retention is not None:
            self._threads.append(threading.Thread(
                target=self._loop, args=("event retention", RETENTION_S, self.prune_events),
                name="atoll-control-retention", daemon=True))
        if self.audit_dir is not None:
            self._loop_once("audit checkpoint", self.checkpoint)
            self._threads.append(threading.Thread(
                target=self._loop, args=("audit checkpoint", audit.CHECKPOINT_S,
                                         self.checkpoint),
                name="atoll-control-audit", daemon=True))
        for t in self._threads:
            t.start()
        try:
            super()._serve()
        finally:
            self._halt.set()

    def stop(self) -> None:
        super().stop()
        self._halt.set()
        for t in self._threads:
            t.join(timeout=10)
        if self.audit_dir is not None:
            self._loop_once("audit checkpoint", self.checkpoint)
        if self.election is not None:
            self.election.resign()


def lost_after(seconds: float) -> dt.timedelta:
    return dt.timedelta(seconds=seconds)

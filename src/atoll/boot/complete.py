"""boot-complete: run the health checks, then mark the boot good or roll back.

Run by ``atoll-boot-complete.service`` after ``multi-user.target``. The
decision is :func:`atoll.boot.counting.complete_step`; this module does the
I/O around it: read state, run checks, write grubenv, boot.json and an event,
and ask for a reboot when the pending deployment failed its checks.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from atoll.boot import health, state
from atoll.boot.counting import MAX, PENDING, TRIES, complete_step
from atoll.core.errors import HostStateError
from atoll.core.run import run

__all__ = ["boot_complete", "boot_status", "systemctl_reboot"]


def systemctl_reboot() -> None:
    """Ask systemd to reboot (returns at once)."""
    run(["systemctl", "reboot", "--no-block"], what="request a reboot")


def _cmdline() -> str:
    try:
        return Path("/proc/cmdline").read_text()
    except OSError:
        return ""


def boot_complete(
    sysroot: Path = Path("/"),
    root: Path = Path("/"),
    cmdline: str | None = None,
    reboot: Callable[[], None] = systemctl_reboot,
    on_event: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Run the health checks and record the outcome of this boot.

    Args:
        sysroot: the physical root (``/`` on a booted host: /boot and /atoll
            are bind-mounted from it).
        root: the running deployment's root (where the check directories are).
        cmdline: the kernel command line (default: /proc/cmdline).
        reboot: called when the pending deployment failed and must roll back.
        on_event: called with the event once it is recorded, before any reboot.

    Raises:
        HostStateError: not booted from an atoll deployment.

    Returns:
        The event written to events.jsonl.
    """
    booted = state.booted(sysroot)
    if not booted:
        raise HostStateError(
            "not booted from an atoll deployment (no run/atoll/booted)",
            resolution="boot through the atoll GRUB entry (atoll.deployment= on the "
            "kernel command line)",
        )
    words = (cmdline if cmdline is not None else _cmdline()).split()
    try:
        fallback_file = (sysroot / "run" / "atoll" / "fallback").read_text().strip()
    except FileNotFoundError:
        fallback_file = ""
    fallback = fallback_file == "1" or "atoll.fallback=1" in words
    results = health.run_checks(root)
    ok, why = health.summary(results)
    env = state.read_env(sysroot)
    pending = env.get(PENDING, "")
    pending_failure = ""
    if pending and pending != booted:
        last = state.last_event(sysroot, pending)
        if last and last.get("result") == "failed":
            pending_failure = str(last.get("reason", ""))
    action = complete_step(env, booted, fallback, ok, why, pending_failure)
    if action.env != env:
        state.write_env(sysroot, action.env)
    if action.mark_good:
        state.add_good(sysroot, booted)
    event: dict[str, Any] = {
        "time": state.utc_now(),
        "event": "boot",
        "deployment": booted,
        "result": action.result,
        "reason": action.reason,
        "checks": [r.to_dict() for r in results],
        "reboot": action.reboot,
    }
    state.append_event(sysroot, event)
    if on_event is not None:
        on_event(event)
    if action.reboot:
        reboot()
    return event


def boot_status(sysroot: Path = Path("/")) -> dict[str, Any]:
    """Booted / next / rollback deployments, boot counting and the last boot event."""
    env = state.read_env(sysroot)
    loader = sysroot / "boot" / "loader"
    deployments = state.read_deployments(loader) if loader.exists() else []
    ids = [str(d.get("id")) for d in deployments]
    booted = state.booted(sysroot)
    events = [e for e in state.read_events(sysroot) if e.get("event") == "boot"]
    return {
        "booted": booted or None,
        "next": ids[0] if ids else None,
        "rollback": ids[1] if len(ids) > 1 else None,
        "pending": env.get(PENDING) or None,
        "tries_left": int(env[TRIES]) if env.get(TRIES, "").isdigit() else None,
        "max_tries": int(env[MAX]) if env.get(MAX, "").isdigit() else None,
        "good": state.read_good(sysroot),
        "last_boot": events[-1] if events else None,
        "bootloader": state.bootloader(sysroot) or None,
    }

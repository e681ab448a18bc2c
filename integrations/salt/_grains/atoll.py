"""Salt grains for atoll hosts: ``atoll`` (version, deployments, the pending update).

Read from ``atoll status --json`` (``atoll/v1 HostStatus``); nothing when atoll is absent or
fails (a grain never stops the minion). ``atoll.executable`` and ``atoll.sysroot`` in the
minion config as for the execution module.
"""

import json
import os
import shutil
import subprocess


def _executable(opts):
    exe = opts.get("atoll.executable") or "atoll"
    if os.sep in exe:
        return exe if os.access(exe, os.X_OK) else None
    return shutil.which(exe) or shutil.which(exe, path="/usr/local/sbin:/usr/sbin:/sbin")


def atoll():
    """The ``atoll`` grain: ``version``, ``booted``, ``pending`` (version or None),
    ``update_state``, ``needs_reboot``, ``rollback_available``, ``deployments`` (ids, the
    boot order)."""
    opts = globals().get("__opts__", {})
    exe = _executable(opts)
    if not exe:
        return {}
    try:
        out = subprocess.run([exe, "--json", "--sysroot", opts.get("atoll.sysroot") or "/",
                              "--no-wait", "status"], capture_output=True, timeout=60,
                             check=False)
        st = json.loads(out.stdout)
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return {}
    if not isinstance(st, dict) or st.get("apiVersion") != "atoll/v1":
        return {}
    booted, pending = st.get("booted") or {}, st.get("pending") or {}
    return {"atoll": {
        "version": booted.get("version"),
        "booted": booted.get("id"),
        "pending": pending.get("version"),
        "update_state": (st.get("update") or {}).get("state"),
        "needs_reboot": bool(pending) and pending.get("id") != booted.get("id"),
        "rollback_available": bool(st.get("rollback")),
        "deployments": [d["id"] for d in st.get("deployments") or []],
    }}

"""Salt beacon for atoll hosts: fires on update and rollback events.

Compares the host's ``atoll status --json`` with what it saw at the previous interval and
fires, under the tag ``salt/beacon/<minion>/atoll/<event>``:

* ``update-pending``: an update was applied (``pending`` names a new deployment);
* ``booted``: the host booted another deployment (``version``, ``previous``);
* ``rollback``: an automatic rollback happened (``rollback_events`` grew: ``reason``).

The first interval only records. Configuration (minion or pillar)::

    beacons:
      atoll:
        - interval: 60
        - sysroot: /          # optional, as `atoll --sysroot`
"""

import json
import os
import shutil
import subprocess

__virtualname__ = "atoll"
_KEY = "atoll.beacon.last"


def __virtual__():
    return __virtualname__


def validate(config):
    if not isinstance(config, list):
        return False, "atoll beacon: configuration must be a list"
    for item in config:
        if not isinstance(item, dict) or not set(item) <= {"interval", "sysroot"}:
            return False, "atoll beacon: only interval and sysroot are known"
    return True, "valid"


def _status(sysroot):
    exe = __opts__.get("atoll.executable") or "atoll"
    if os.sep not in exe:
        exe = shutil.which(exe) or shutil.which(exe, path="/usr/local/sbin:/usr/sbin:/sbin")
    if not exe:
        return None
    try:
        out = subprocess.run([exe, "--json", "--sysroot", sysroot, "--no-wait", "status"],
                             capture_output=True, timeout=60, check=False)
        st = json.loads(out.stdout)
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return None
    return st if isinstance(st, dict) and st.get("apiVersion") == "atoll/v1" else None


def _view(st):
    booted, pending = st.get("booted") or {}, st.get("pending") or {}
    return {"booted": booted.get("id"), "booted_version": booted.get("version"),
            "pending": pending.get("id") if pending.get("id") != booted.get("id") else None,
            "pending_version": pending.get("version"),
            "rollback_events": st.get("rollback_events") or 0,
            "reason": (st.get("last_boot") or {}).get("reason")}


def beacon(config):
    conf = {}
    for item in config:
        conf.update(item)
    sysroot = conf.get("sysroot") or __opts__.get("atoll.sysroot") or "/"
    st = _status(sysroot)
    if st is None:
        return []
    now = _view(st)
    last = __context__.get(_KEY)
    __context__[_KEY] = now
    if last is None:
        return []
    events = []
    if now["pending"] and now["pending"] != last["pending"]:
        events.append({"tag": "update-pending", "deployment": now["pending"],
                       "version": now["pending_version"], "running": now["booted_version"]})
    if now["booted"] != last["booted"]:
        events.append({"tag": "booted", "deployment": now["booted"],
                       "version": now["booted_version"], "previous": last["booted_version"]})
    if now["rollback_events"] > last["rollback_events"]:
        events.append({"tag": "rollback", "version": now["booted_version"],
                       "reason": now["reason"], "count": now["rollback_events"]})
    return events

"""Salt beacon for atoll hosts: fires on update and rollback events.

Compares the host's ``atoll status --json`` with what it saw at the previous interval and
fires, under the tag ``salt/beacon/<minion>/atoll/<event>``:

* ``update-pending``: an update was applied (``pending`` names a new deployment);
* ``booted``: the host booted another deployment (``version``, ``previous``);
* ``rollback``: an automatic rollback happened (``rollback_events`` grew: ``reason``).

What it saw is kept in the minion's cache directory (``atoll-beacon-<sysroot hash>.json``),
so the events of a reboot (``booted``, ``rollback``) fire when the minion starts again
after it; only the very first interval of a minion only records. Configuration (minion or
pillar)::

    beacons:
      atoll:
        - interval: 60
        - sysroot: /          # optional, as `atoll --sysroot`
"""

import hashlib
import json
import os
import shutil
import subprocess
import tempfile

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


def _state_file(sysroot):
    digest = hashlib.sha256(os.path.abspath(sysroot).encode()).hexdigest()[:16]
    return os.path.join(__opts__.get("cachedir") or "/var/cache/salt/minion",
                        "atoll-beacon-{}.json".format(digest))


def _load(path):
    try:
        with open(path, encoding="utf-8") as f:
            view = json.load(f)
    except (OSError, ValueError):
        return None
    return view if isinstance(view, dict) and "booted" in view else None


def _save(path, view):
    """Write ``view`` atomically (a reboot in the middle leaves the old one or the new)."""
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".atoll-beacon-")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(view, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError:
        pass  # the in-memory view still serves until the minion restarts


def beacon(config):
    conf = {}
    for item in config:
        conf.update(item)
    sysroot = conf.get("sysroot") or __opts__.get("atoll.sysroot") or "/"
    st = _status(sysroot)
    if st is None:
        return []
    now = _view(st)
    path = _state_file(sysroot)
    key = _KEY + ":" + path
    last = __context__.get(key) or _load(path)
    __context__[key] = now
    if now != last:
        _save(path, now)
    if last is None:
        return []
    events = []
    if now["pending"] and now["pending"] != last.get("pending"):
        events.append({"tag": "update-pending", "deployment": now["pending"],
                       "version": now["pending_version"], "running": now["booted_version"]})
    if now["booted"] != last.get("booted"):
        events.append({"tag": "booted", "deployment": now["booted"],
                       "version": now["booted_version"], "previous": last.get("booted_version")})
    if now["rollback_events"] > (last.get("rollback_events") or 0):
        events.append({"tag": "rollback", "version": now["booted_version"],
                       "reason": now["reason"], "count": now["rollback_events"]})
    return events

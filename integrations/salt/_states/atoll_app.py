"""Salt states for atoll apps: ``atoll_app.running`` and ``atoll_app.absent``.

``secrets`` reach atoll as 0600 files, never its command line, and never appear in
``changes`` or ``comment``. ``test=True`` says what would change and changes nothing.

.. code-block:: yaml

    mariadb:
      atoll_app.running:
        - spec: /etc/atoll/apps/mariadb.yaml
        - secrets:
            root_password: {{ pillar['mariadb_root'] }}
"""

import functools

from salt.exceptions import CommandExecutionError

__virtualname__ = "atoll_app"

RUNNING = ("running", "restarting")


def _failing_cleanly(state):
    """atoll's failure as the state's ``result: False`` and ``comment`` (atoll's brief, and
    its resolution), not an exception Salt reports with a traceback."""
    @functools.wraps(state)
    def wrapper(name, *args, **kwargs):
        try:
            return state(name, *args, **kwargs)
        except CommandExecutionError as exc:
            info = exc.info if isinstance(getattr(exc, "info", None), dict) else {}
            comment = str(getattr(exc, "error", None) or exc)  # the brief, not the dump
            if info.get("resolution"):
                comment += " ({})".format(info["resolution"])
            return {"name": name, "changes": {}, "result": False, "comment": comment}
    return wrapper


def __virtual__():
    if "atoll.app_list" in __salt__:
        return __virtualname__
    return (False, "atoll_app: the atoll execution module is not available")


def _row(name, sysroot):
    __salt__["atoll.status"](sysroot=sysroot)  # an atoll host (`app list` does not say)
    for row in __salt__["atoll.app_list"](sysroot=sysroot) or []:
        if row.get("app") == name:
            return row
    return None


@_failing_cleanly
def running(name, spec=None, secrets=None, sysroot=None):
    """The app is installed and running."""
    ret = {"name": name, "changes": {}, "result": True, "comment": ""}
    row = _row(name, sysroot)
    if row is not None and row.get("status") in RUNNING:
        ret["comment"] = "atoll: app {} is running already".format(name)
        return ret
    action = "install" if row is None else "start"
    old = None if row is None else row.get("status")
    if __opts__["test"]:
        ret.update(result=None, changes={"status": {"old": old, "new": "running"}},
                   comment="atoll: would {} app {}".format(action, name))
        return ret
    if row is None:
        __salt__["atoll.app_install"](name, spec=spec, secrets=secrets, sysroot=sysroot)
    else:
        __salt__["atoll.app_start"](name, sysroot=sysroot)
    ret["changes"] = {"status": {"old": old, "new": "running"}}
    ret["comment"] = "atoll: {} app {}".format(
        "installed" if action == "install" else "started", name)
    return ret


@_failing_cleanly
def absent(name, keep_data=False, sysroot=None):
    """The app is not installed (``keep_data``: its volumes and secrets stay)."""
    ret = {"name": name, "changes": {}, "result": True, "comment": ""}
    row = _row(name, sysroot)
    if row is None:
        ret["comment"] = "atoll: app {} is absent already".format(name)
        return ret
    if __opts__["test"]:
        ret.update(result=None, changes={"installed": {"old": True, "new": False}},
                   comment="atoll: would remove app {}".format(name))
        return ret
    __salt__["atoll.app_remove"](name, keep_data=keep_data, sysroot=sysroot)
    ret["changes"] = {"installed": {"old": True, "new": False}}
    ret["comment"] = "atoll: removed app {}".format(name)
    return ret

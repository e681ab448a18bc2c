"""Salt states for atoll updates: ``atoll_update.downloaded``, ``.prepared``, ``.pending``.

``pending`` is applied: the update boots at the next reboot (atoll's docs/states.md). With
``test=True`` the remote is asked (``atoll update check``) and the states say exactly what
a real run would do (``result: None`` and the predicted ``changes``: the keys and values the
real run reports), changing nothing else. A step failing after others were done gives
``result: False`` with the ``changes`` of those done. A second run has no ``changes``.

.. code-block:: yaml

    newest atoll:
      atoll_update.pending:
        - reboot: False
"""

import functools

from salt.exceptions import CommandExecutionError

__virtualname__ = "atoll_update"

ORDER = ("downloaded", "prepared", "pending")


def _brief(exc):
    """atoll's brief (and its resolution) from the execution module's error, not the dump."""
    info = exc.info if isinstance(getattr(exc, "info", None), dict) else {}
    comment = str(getattr(exc, "error", None) or exc)
    if info.get("resolution"):
        comment += " ({})".format(info["resolution"])
    return comment


def _failing_cleanly(state):
    """atoll's failure as the state's ``result: False`` and ``comment`` (atoll's brief, and
    its resolution), not an exception Salt reports with a traceback."""
    @functools.wraps(state)
    def wrapper(name, *args, **kwargs):
        try:
            return state(name, *args, **kwargs)
        except CommandExecutionError as exc:
            return {"name": name, "changes": {}, "result": False, "comment": _brief(exc)}
    return wrapper


def __virtual__():
    if "atoll.status" in __salt__:
        return __virtualname__
    return (False, "atoll_update: the atoll execution module is not available")


def _dep(d):
    """A deployment or target as ``changes`` names it: ``VERSION (COMMIT12)``, which
    ``test=True`` can predict (a deployment's id exists only once the real run made it)."""
    return "{} ({})".format(d.get("version"), (d.get("commit") or "")[:12]) if d else None


def _changes(st, after, steps, version, needs):
    """``changes`` of the ``steps`` done, from the status before (``st``) and after
    (``after``: only its ``update`` and ``pending``) and ``needs`` (``needs_reboot`` after)."""
    return {"steps": steps, "version": version,
            "update_state": {"old": (st.get("update") or {}).get("state"),
                             "new": (after.get("update") or {}).get("state")},
            "pending": {"old": _dep(st.get("pending")), "new": _dep(after.get("pending"))},
            "needs_reboot": needs}


def _reach(name, want, remote=None, reboot=False, sysroot=None):
    ret = {"name": name, "changes": {}, "result": True, "comment": ""}
    view = __salt__["atoll.update_check"](remote=remote, sysroot=sysroot)
    st = __salt__["atoll.status"](sysroot=sysroot)
    target = view.get("target") or {}
    current = view.get("up_to_date") or view.get("applied")
    prepared = st.get("prepared") or {}
    steps = []
    level = ORDER.index(want)
    if not view.get("downloaded"):
        steps.append("download")
    if level == 1 and not current and prepared.get("commit") != target.get("commit"):
        steps.append("prepare")
    needs = __salt__["atoll.needs_reboot"](st=st)
    if level == 2 and (not current or (reboot and needs)):
        steps.append("apply")
    version = target.get("version") or target.get("commit", "")[:12]
    if not steps:
        ret["comment"] = "atoll: {} is {} already".format(version, want)
        return ret
    if __opts__["test"]:
        # the keys the real run reports, with the values it would leave
        predicted = {"update": {"state": want}, "pending": st.get("pending")}
        if "apply" in steps:
            # `apply --reboot` does not reboot when the update policy says not to
            reboots = reboot and __salt__["atoll.policy_show"](sysroot=sysroot).get("reboot", True)
            if not current:
                predicted["pending"] = target
            needs = not reboots
        ret["result"] = None
        ret["changes"] = _changes(st, predicted, steps, version, needs)
        ret["comment"] = "atoll: would {} {}".format(", ".join(steps), version)
        return ret
    done = []
    try:
        for step in steps:
            if step == "download":
                __salt__["atoll.download"](remote=remote, sysroot=sysroot)
            elif step == "prepare":
                __salt__["atoll.prepare"](remote=remote, sysroot=sysroot)
            else:
                __salt__["atoll.apply"](reboot=reboot, sysroot=sysroot)
            done.append(step)
    except CommandExecutionError as exc:
        # a step failed: what the earlier ones changed is reported, as Salt states do
        if done:
            after = __salt__["atoll.status"](sysroot=sysroot)
            ret["changes"] = _changes(st, after, done, version,
                                      __salt__["atoll.needs_reboot"](st=after))
        ret["result"] = False
        ret["comment"] = _brief(exc) + (" (done: {})".format(", ".join(done)) if done else "")
        return ret
    after = __salt__["atoll.status"](sysroot=sysroot)
    ret["changes"] = _changes(st, after, steps, version, __salt__["atoll.needs_reboot"](st=after))
    ret["comment"] = "atoll: {} {}".format(", ".join(steps), version)
    return ret


@_failing_cleanly
def downloaded(name, remote=None, sysroot=None):
    """The newest signed version is verified in the host's store."""
    return _reach(name, "downloaded", remote=remote, sysroot=sysroot)


@_failing_cleanly
def prepared(name, remote=None, sysroot=None):
    """... and checked out as the prepared deployment (not yet the next boot)."""
    return _reach(name, "prepared", remote=remote, sysroot=sysroot)


@_failing_cleanly
def pending(name, remote=None, reboot=False, sysroot=None):
    """... and applied: the next boot (``reboot``: rebooted into now)."""
    return _reach(name, "pending", remote=remote, reboot=reboot, sysroot=sysroot)

"""Salt execution module for atoll hosts: ``salt '*' atoll.status``.

Every function runs the ``atoll`` command with ``--json`` and returns its JSON document
(atoll's docs/commands.md and docs/states.md; ``status`` is the versioned ``atoll/v1
HostStatus``). A failure raises ``CommandExecutionError`` with atoll's brief, and its error
document (``error``, ``details``, ``resolution``, ``exit_code``) as ``info``.

Minion configuration (all optional)::

    atoll.executable: /usr/bin/atoll     # default: atoll on PATH
    atoll.sysroot: /                     # as `atoll --sysroot`
    atoll.lock_timeout: 600              # seconds to wait for atolld or another atoll command

Words are atoll's: ``prepare`` (checked out and verified, not the next boot) is what other
tools call staging; ``apply`` makes it the next boot (``pending``).
"""

import json
import os
import shutil
import tempfile

from salt.exceptions import CommandExecutionError, SaltInvocationError

__virtualname__ = "atoll"

EXIT_NOTHING_NEW = 77
API_VERSION = "atoll/v1"


def __virtual__():
    if _executable():
        return __virtualname__
    return (False, "atoll: the atoll command is not found (set atoll.executable)")


def _executable():
    exe = __opts__.get("atoll.executable") or "atoll"
    if os.sep in exe:
        return exe if os.access(exe, os.X_OK) else None
    return shutil.which(exe) or shutil.which(exe, path="/usr/local/sbin:/usr/sbin:/sbin")


def _run(args, ok=(0,), sysroot=None):
    exe = _executable()
    if not exe:
        raise CommandExecutionError("this is not an atoll host: the atoll command is not found")
    root = sysroot or __opts__.get("atoll.sysroot") or "/"
    cmd = [exe, "--json", "--sysroot", root, "--lock-timeout",
           str(__opts__.get("atoll.lock_timeout", 600))] + list(args)
    out = __salt__["cmd.run_all"](cmd, python_shell=False, ignore_retcode=True,
                                  output_loglevel="quiet")
    try:
        doc = json.loads(out["stdout"]) if out["stdout"].strip() else None
    except ValueError:
        doc = None
    if out["retcode"] in ok and doc is not None:
        return doc
    if isinstance(doc, dict) and "error" in doc:
        raise CommandExecutionError("atoll: {}".format(doc.get("brief") or doc["error"]),
                                    info=doc)
    raise CommandExecutionError(
        "atoll exited {} without its JSON answer: {}".format(
            out["retcode"], " ".join(out["stderr"].strip().splitlines()[-3:])))


def status(sysroot=None):
    """The host's status (``atoll status -v --json``).

    CLI Example: ``salt '*' atoll.status``
    """
    st = _run(["status", "-v"], sysroot=sysroot)
    if not isinstance(st, dict) or st.get("apiVersion") != API_VERSION:
        raise CommandExecutionError("atoll status is not an {} HostStatus".format(API_VERSION))
    return st


def needs_reboot(sysroot=None, st=None):
    """True when a deployment other than the booted one boots next (``pending``).

    CLI Example: ``salt '*' atoll.needs_reboot``
    """
    st = st or status(sysroot)
    pending, booted = st.get("pending"), st.get("booted")
    return bool(pending) and (not booted or pending["id"] != booted["id"])


def update_check(remote=None, sysroot=None):
    """Ask the remote what an update would bring; ``up_to_date`` / ``applied`` say whether
    there is nothing new.

    CLI Example: ``salt '*' atoll.update_check``
    """
    return _run(["update", "check"] + (["--remote", remote] if remote else []),
                ok=(0, EXIT_NOTHING_NEW), sysroot=sysroot)


def download(remote=None, sysroot=None):
    """Download and verify the newest version (``changed`` false when it is there).

    CLI Example: ``salt '*' atoll.download``
    """
    return _run(["update", "download"] + (["--remote", remote] if remote else []),
                sysroot=sysroot)


def prepare(remote=None, sysroot=None):
    """Download, then prepare the newest version (not yet the next boot).

    CLI Example: ``salt '*' atoll.prepare``
    """
    dl = download(remote, sysroot)
    out = _run(["update", "prepare"], sysroot=sysroot)
    out["changed"] = bool(out.get("changed") or dl.get("changed"))
    return out


def apply(reboot=False, at=None, window=False, sysroot=None):
    """Make the downloaded update the next boot (``reboot``: reboot into it now), or schedule
    that for ``at`` (a time) or the next maintenance ``window``.

    CLI Example: ``salt '*' atoll.apply``
    """
    if sum(bool(x) for x in (reboot, at, window)) > 1:
        raise SaltInvocationError("give one of reboot, at, window")
    args = ["update", "apply"]
    if reboot:
        args.append("--reboot")
    if at:
        args += ["--at", str(at)]
    if window:
        args.append("--window")
    return _run(args, sysroot=sysroot)


def cancel(sysroot=None):
    """Cancel a scheduled apply.

    CLI Example: ``salt '*' atoll.cancel``
    """
    return _run(["update", "apply", "--cancel"], sysroot=sysroot)


def rollback(sysroot=None):
    """Make the rollback deployment the next boot (as ``rpm-ostree rollback``, a toggle).

    CLI Example: ``salt '*' atoll.rollback``
    """
    return _run(["rollback"], sysroot=sysroot)


def rollback_ack(sysroot=None):
    """Acknowledge the last boot's automatic rollback.

    CLI Example: ``salt '*' atoll.rollback_ack``
    """
    return _run(["rollback", "ack"], sysroot=sysroot)


def policy_show(sysroot=None):
    """The update policy.

    CLI Example: ``salt '*' atoll.policy_show``
    """
    return _run(["policy", "show"], sysroot=sysroot)


def app_list(sysroot=None):
    """Installed apps (``app``, ``image``, ``role``, ``status``).

    CLI Example: ``salt '*' atoll.app_list``
    """
    return _run(["app", "list"], sysroot=sysroot)


def app_status(name, sysroot=None):
    """One app's status (never its secrets).

    CLI Example: ``salt '*' atoll.app_status mariadb``
    """
    return _run(["app", "status", name], sysroot=sysroot)


def app_install(name, spec=None, secrets=None, start=True, sysroot=None):
    """Install an app (the built-in spec of that name, or ``spec``); ``secrets`` (a dict) are
    handed to atoll as 0600 files in a private directory, never on its command line.

    CLI Example: ``salt '*' atoll.app_install mariadb spec=/etc/atoll/apps/mariadb.yaml``
    """
    if secrets is not None and not isinstance(secrets, dict):
        raise SaltInvocationError("secrets: give a mapping of secret names to values")
    args = ["app", "install", name] + (["--spec", spec] if spec else [])
    if not start:
        args.append("--no-start")
    tmp = tempfile.mkdtemp(prefix="atoll-secrets-")
    try:
        for n, (key, value) in enumerate(sorted((secrets or {}).items())):
            path = os.path.join(tmp, "secret-{}".format(n))
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(str(value).encode("utf-8"))
            args += ["--secret", "{}=@{}".format(key, path)]
        return _run(args, sysroot=sysroot)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def app_start(name, sysroot=None):
    """Start an app and wait until it answers.

    CLI Example: ``salt '*' atoll.app_start mariadb``
    """
    return _run(["app", "start", name], sysroot=sysroot)


def app_stop(name, sysroot=None):
    """Stop an app cleanly.

    CLI Example: ``salt '*' atoll.app_stop mariadb``
    """
    return _run(["app", "stop", name], sysroot=sysroot)


def app_remove(name, keep_data=False, sysroot=None):
    """Remove an app (its data and secrets too unless ``keep_data``).

    CLI Example: ``salt '*' atoll.app_remove mariadb keep_data=True``
    """
    return _run(["app", "remove", name] + (["--keep-data"] if keep_data else []),
                sysroot=sysroot)

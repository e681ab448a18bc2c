# -*- coding: utf-8 -*-
# Copyright: atoll developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one way the atoll.os modules talk to a host: ``atoll --json`` and its exit codes.

Never parses human output. The JSON documents and exit codes are atoll's
(docs/commands.md, docs/states.md, docs/status.schema.json); a failure is
atoll's own JSON error (``error``, ``brief``, ``details``, ``resolution``,
``exit_code``), passed to ``fail_json`` as it is.
"""

from __future__ import annotations

import json

# Exit codes of `atoll` (docs/commands.md, "Exit status") the modules act on.
EXIT_OK = 0
EXIT_INPUT = 2
EXIT_HOST_STATE = 7
EXIT_BUSY = 75
EXIT_NOTHING_NEW = 77

STATUS_API = "atoll/v1"

# The argument spec every host module shares (doc fragment atoll.os.atoll).
COMMON_ARGS = dict(
    sysroot=dict(type='path', default='/'),
    executable=dict(type='str', default='atoll'),
    lock_timeout=dict(type='int', default=600),
)


class AtollCli(object):
    """Runs ``atoll --json --sysroot SYSROOT ...`` on the managed host for one module."""

    def __init__(self, module):
        self.module = module
        exe = module.params['executable']
        if '/' in exe:
            self.exe = exe
        else:
            self.exe = module.get_bin_path(exe, required=False,
                                           opt_dirs=['/usr/local/sbin', '/usr/sbin'])
        if not self.exe:
            module.fail_json(msg="this is not an atoll host: the %r command is not found" % exe,
                             resolution="install atoll, or give executable: /path/to/atoll")
        self.sysroot = module.params['sysroot']
        self.commands = []  # what ran, for the task's result

    def run(self, args, ok=(EXIT_OK,), environ_update=None):
        """Run ``atoll ARGS``; return its decoded JSON (``update check`` prints it with 77 too).

        Exit codes outside ``ok`` fail the task with atoll's error document.
        """
        argv = [self.exe, '--json', '--sysroot', self.sysroot,
                '--lock-timeout', str(self.module.params['lock_timeout'])] + list(args)
        self.commands.append(argv[1:])
        rc, out, err = self.module.run_command(argv, environ_update=environ_update or {})
        try:
            doc = json.loads(out) if out.strip() else None
        except ValueError:
            doc = None
        if rc in ok and doc is not None:
            return doc
        self.fail(rc, doc, err)

    def fail(self, rc, doc, err=''):
        if isinstance(doc, dict) and 'error' in doc:
            brief = doc.get('brief') or doc.get('error')
            self.module.fail_json(
                msg="atoll: %s" % brief, error=doc.get('error'), details=doc.get('details'),
                resolution=doc.get('resolution'), problems=doc.get('problems'),
                exit_code=doc.get('exit_code', rc), rc=rc, commands=self.commands)
        tail = (err or '').strip().splitlines()[-5:]
        self.module.fail_json(
            msg="atoll exited %d without its JSON answer%s" % (rc, (": " + " ".join(tail))
                                                               if tail else ""),
            rc=rc, commands=self.commands,
            resolution="is this an atoll host, and does its atoll speak --json?")

    def status(self):
        """``atoll status -v --json`` (the ``atoll/v1 HostStatus`` document)."""
        st = self.run(['status', '-v'])
        if not isinstance(st, dict) or st.get('apiVersion') != STATUS_API:
            self.module.fail_json(
                msg="atoll status answered %r, not an %s HostStatus" % (
                    (st or {}).get('apiVersion') if isinstance(st, dict) else st, STATUS_API),
                resolution="this collection speaks %s: update atoll or the collection"
                % STATUS_API)
        return st


def deployment_summary(dep):
    """The fields of a deployment a task result shows (None stays None)."""
    if not dep:
        return None
    return dict((k, dep.get(k)) for k in ('id', 'version', 'commit', 'origin', 'pinned', 'role',
                                          'index'))


def needs_reboot(st):
    """True when a deployment other than the booted one boots next (``pending``)."""
    pending = st.get('pending')
    booted = st.get('booted')
    return bool(pending) and (not booted or pending.get('id') != booted.get('id'))


def update_state(st):
    upd = st.get('update') or {}
    return upd.get('state')


def host_summary(st):
    """What every update-related module returns about the host (after the task)."""
    return dict(
        booted=deployment_summary(st.get('booted')),
        pending=deployment_summary(st.get('pending')),
        prepared=deployment_summary(st.get('prepared')),
        rollback=deployment_summary(st.get('rollback')),
        update_state=update_state(st),
        needs_reboot=needs_reboot(st),
        rollback_available=bool(st.get('rollback')),
    )


def release(d):
    """A deployment or target as ``--diff`` names it: ``VERSION (COMMIT12)``; None stays
    None. Versions and commits, not deployment ids: check mode can name a deployment the
    real run makes only by what it will hold."""
    if not d:
        return None
    return "%s (%s)" % (d.get('version'), (d.get('commit') or '')[:12])


def diff_view(st, fields=('booted', 'next_boot', 'prepared', 'update_state')):
    """The part of a host's status ``--diff`` compares: what boots now and next, the
    prepared deployment and the update state (as check mode predicts them exactly)."""
    deps = st.get('deployments') or []
    view = dict(booted=release(st.get('booted')), next_boot=release(deps[0] if deps else None),
                prepared=release(st.get('prepared')), update_state=update_state(st))
    return dict((k, view[k]) for k in fields)

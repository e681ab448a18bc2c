#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: atoll developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
---
module: atoll_update
short_description: Check, download, prepare, apply or schedule an atoll OS update
version_added: "0.1.0"
description:
  - Moves an atoll host's update along its life (docs/states.md of atoll) C(available) ->
    C(downloaded) -> C(prepared) -> C(pending) (applied, boots at the next reboot), or
    schedules the apply for a time or the next maintenance window, or cancels that.
  - Idempotent. Each step says C(changed=false) when the host is there already.
  - In check mode the module asks the update remote what is new (C(atoll update check), which
    refreshes the signed metadata and the time of the last check, as C(dnf check-update) does)
    and predicts exactly what the real run does; it downloads, prepares and applies nothing.
options:
  state:
    description:
      - C(checked) only asks the remote (never C(changed)).
      - C(downloaded) the newest signed version is verified in the host's store.
      - C(prepared) ... and checked out as a deployment, outside the boot order.
      - C(pending) ... and applied, that is the next boot (with I(reboot), rebooted into now).
      - C(scheduled) the apply and reboot are left to atolld at I(at) or in the next
        maintenance window (I(window)).
      - C(cancelled) no apply is scheduled.
    type: str
    choices: [checked, downloaded, prepared, pending, scheduled, cancelled]
    default: pending
  remote:
    description:
      - The remote to ask. Default the one the update policy follows.
      - Used by I(state=checked), I(state=downloaded), I(state=prepared), I(state=pending).
    type: str
  reboot:
    description:
      - With I(state=pending), reboot into the update now (C(atoll update apply --reboot)),
        also into one applied before. The connection drops; prefer M(ansible.builtin.reboot)
        after an apply without it when the play goes on.
      - When the update policy says not to reboot (M(atoll.os.atoll_policy) I(reboot=false)),
        atoll applies without rebooting, and an update applied already is no change.
    type: bool
    default: false
  at:
    description:
      - With I(state=scheduled), when to apply and reboot, e.g. C(2026-12-05 02:30) (the host's
        time zone) or ISO 8601 with an offset.
    type: str
  window:
    description:
      - With I(state=scheduled), apply and reboot in the next maintenance window of the
        update policy (M(atoll.os.atoll_policy)).
    type: bool
    default: false
extends_documentation_fragment:
  - atoll.os.atoll
attributes:
  check_mode:
    description: Predicts exactly what the real run does and changes nothing.
    support: full
  diff_mode:
    description: Shows the state before and after (predicted in check mode).
    support: full
author:
  - atoll developers (@atoll)
'''

EXAMPLES = r'''
- name: Download and prepare the newest version; the customer applies it
  atoll.os.atoll_update:
    state: prepared

- name: Apply it (boots at the next reboot), then reboot when the play says so
  atoll.os.atoll_update:
    state: pending
  register: upd

- name: Reboot into it
  ansible.builtin.reboot:
  when: upd.needs_reboot

- name: Leave the apply to atolld in the next maintenance window
  atoll.os.atoll_update:
    state: scheduled
    window: true

- name: Cancel it
  atoll.os.atoll_update:
    state: cancelled
'''

RETURN = r'''
update_state:
  description: The host's update state after the task (C(up-to-date), C(available), C(downloaded), C(prepared), C(pending)).
  returned: always
  type: str
  sample: pending
needs_reboot:
  description: A deployment other than the booted one boots next (C(pending)); in check mode, what the real run would leave.
  returned: always
  type: bool
rollback_available:
  description: The host has a rollback deployment to go back to.
  returned: always
  type: bool
current_version:
  description: The version the host runs (booted).
  returned: always
  type: str
target:
  description: The newest version the remote signs (C(commit), C(version), C(timestamp)).
  returned: when the remote was asked
  type: dict
packages:
  description: Package changes from the booted version to the target (C(added), C(removed), C(upgraded), C(downgraded)).
  returned: when the remote was asked
  type: dict
download_bytes:
  description: Bytes a download of the target fetches (0 when downloaded).
  returned: when the remote was asked
  type: int
booted:
  description: The booted deployment (C(id), C(version), C(commit), C(origin), C(pinned), C(role), C(index)).
  returned: always
  type: dict
pending:
  description:
    - The deployment that boots next when it is not the booted one, else null.
    - In check mode, predicted; one the real run would make has only C(version) and C(commit) (the other fields null).
  returned: always
  type: dict
prepared:
  description:
    - The prepared deployment (outside the boot order), else null.
    - In check mode, predicted as C(pending) is.
  returned: always
  type: dict
rollback:
  description:
    - The rollback deployment, else null.
    - In check mode, the value before the task (not predicted), as are C(booted) and C(rollback_available).
  returned: always
  type: dict
request:
  description: The scheduled apply (C(kind), C(at)), else null.
  returned: when I(state=scheduled) or I(state=cancelled)
  type: dict
commands:
  description: The atoll commands run (argv without the executable).
  returned: always
  type: list
  elements: list
'''

import datetime

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.atoll.os.plugins.module_utils.atoll_cli import (
    COMMON_ARGS, EXIT_NOTHING_NEW, AtollCli, diff_view, host_summary, needs_reboot,
    release,
)

ORDER = ['checked', 'downloaded', 'prepared', 'pending']


def _parse_time(text):
    when = datetime.datetime.fromisoformat(text.strip())
    if when.tzinfo is None:
        when = when.astimezone()
    return when


def _same_request(req, kind, at):
    if not req or req.get('kind') != kind:
        return False
    if kind != 'at':
        return True
    try:
        return _parse_time(req.get('at') or '') == _parse_time(at)
    except ValueError:
        return False


def _refused(module, cli, policy, at):
    """Fail as ``atoll update apply --at/--window`` fails on a request it refuses (its
    check_apply_request), so check mode predicts the real run's failure too."""
    brief = resolution = None
    if at is None and not policy.get('windows'):
        brief = "no maintenance windows are configured"
        resolution = ("add one (atoll.os.atoll_policy windows), or apply at a time (at) "
                      "or now")
    elif at is not None:
        when = _parse_time(at)
        now = datetime.datetime.now(datetime.timezone.utc)
        if when < now - datetime.timedelta(minutes=1):
            brief = "--at %s: that time has passed" % when.isoformat()
            resolution = "give a time to come"
        elif when > now + datetime.timedelta(days=366):
            brief = "--at %s: more than a year ahead" % when.isoformat()
            resolution = "give a time within a year"
    if brief:
        module.fail_json(msg="atoll: " + brief, error='InputError', exit_code=2,
                         resolution=resolution, commands=cli.commands)


def _predicted_view(view, steps, check):
    """``diff_view`` after ``steps`` (check mode): as the real run leaves the host."""
    after = dict(view)
    target = release(check.get('target')) if check else None
    for argv in steps:
        if argv[1] == 'download':
            after['update_state'] = 'downloaded'
        elif argv[1] == 'prepare':
            after.update(prepared=target, update_state='prepared')
        elif argv[1] == 'apply':
            if view['next_boot'] == view['booted']:  # not applied before: the target is
                after['next_boot'] = target
            after.update(prepared=None, update_state='pending')
    return after


def main():
    module = AnsibleModule(
        argument_spec=dict(
            state=dict(type='str', default='pending', choices=ORDER + ['scheduled', 'cancelled']),
            remote=dict(type='str'),
            reboot=dict(type='bool', default=False),
            at=dict(type='str'),
            window=dict(type='bool', default=False),
            **COMMON_ARGS
        ),
        mutually_exclusive=[('at', 'window')],
        required_if=[('state', 'scheduled', ('at', 'window'), True)],
        supports_check_mode=True,
    )
    p = module.params
    state = p['state']
    if p['reboot'] and state != 'pending':
        module.fail_json(msg="reboot applies to state=pending only")
    if (p['at'] or p['window']) and state != 'scheduled':
        module.fail_json(msg="at and window apply to state=scheduled only")
    if p['at']:
        try:
            _parse_time(p['at'])
        except ValueError:
            module.fail_json(msg="at: %r is not a time: give 'YYYY-MM-DD HH:MM' or ISO 8601" % p['at'])
    cli = AtollCli(module)
    before = cli.status()
    result = dict(changed=False)
    remote = ['--remote', p['remote']] if p['remote'] else []
    changed = False
    predicted_pending = needs_reboot(before)
    steps, view, current = [], None, None

    if state in ORDER:
        view = cli.run(['update', 'check'] + remote, ok=(0, EXIT_NOTHING_NEW))
        before = cli.status()  # as of this check
        result.update(target=view.get('target'), packages=view.get('packages'),
                      download_bytes=view.get('download_bytes'), method=view.get('method'))
        current = view.get('up_to_date') or view.get('applied')
        target = (view.get('target') or {}).get('commit')
        want = ORDER.index(state)
        prepared = before.get('prepared') or {}
        if want >= 1 and not view.get('downloaded'):
            steps.append(['update', 'download'] + remote)
        if want == 2 and not current and prepared.get('commit') != target:
            steps.append(['update', 'prepare'])
        # `apply --reboot` does not reboot when the update policy says not to
        reboots = p['reboot'] and want == 3 and cli.run(['policy', 'show']).get('reboot', True)
        if want == 3 and (not current or (reboots and needs_reboot(before))):
            steps.append(['update', 'apply'] + (['--reboot'] if p['reboot'] else []))
            predicted_pending = not reboots
        if module.check_mode:
            changed = bool(steps)
        else:
            for argv in steps:
                out = cli.run(argv)
                changed = changed or bool(out.get('changed'))
    else:
        agent = cli.run(['agent', 'status'])
        req = (agent.get('agent') or {}).get('request')
        if state == 'cancelled':
            changed = req is not None
            if changed and not module.check_mode:
                cli.run(['update', 'apply', '--cancel'])
        else:
            kind = 'at' if p['at'] else 'window'
            if not _same_request(req, kind, p['at']):
                argv = ['update', 'apply'] + (['--at', p['at']] if p['at'] else ['--window'])
                if module.check_mode:
                    # atoll takes a scheduled apply even when up to date (atolld checks again
                    # before it is due); it refuses one only when an applied update waits and
                    # the policy says not to reboot (docs/states.md)
                    policy = cli.run(['policy', 'show'])
                    _refused(module, cli, policy, p['at'])
                    newer = (before.get('update') or {}).get('state') in (
                        'available', 'downloaded', 'prepared')
                    changed = not (needs_reboot(before) and not policy.get('reboot', True)
                                   and not before.get('prepared') and not newer)
                else:
                    out = cli.run(argv)
                    changed = bool(out.get('changed', True))
        agent = cli.run(['agent', 'status'])
        result['request'] = (agent.get('agent') or {}).get('request')

    after = before if module.check_mode else cli.status()
    result.update(host_summary(after))
    booted = after.get('booted') or {}
    result['current_version'] = booted.get('version')
    if module.check_mode:
        result['needs_reboot'] = predicted_pending
        # a deployment the real run makes: known by the target it holds, not yet by its id
        tgt = (view or {}).get('target') or {}
        made = dict(id=None, version=tgt.get('version'), commit=tgt.get('commit'),
                    origin=None, pinned=None, role=None, index=None)
        for argv in steps:
            if argv[1] == 'prepare':
                result['prepared'] = made
            elif argv[1] == 'apply' and not current:
                result.update(pending=made, prepared=None)
        if changed and state in ORDER:
            result['update_state'] = 'pending' if state == 'pending' and not p['reboot'] else (
                state if state != 'checked' else result['update_state'])
    result['changed'] = changed
    result['commands'] = cli.commands
    if module._diff:
        b = diff_view(before)
        a = diff_view(after) if not module.check_mode else _predicted_view(b, steps, view)
        result['diff'] = dict(before=b, after=a)
    module.exit_json(**result)


if __name__ == '__main__':
    main()

#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: atoll developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
---
module: atoll_policy
short_description: Set an atoll host's update policy and maintenance windows
version_added: "0.1.0"
description:
  - What atolld does by itself (mode), when (maintenance windows, check interval), whether it
    reboots, which FleetLock server and group give it a reboot slot, which remote it follows.
  - Options left out keep their value; I(windows) replaces every window (an empty list removes them).
  - Reads C(atoll policy show --json); runs C(atoll policy set) only when something differs.
    When atolld runs, atoll hands the policy to it.
options:
  mode:
    description: What atolld does by itself (docs/states.md of atoll, "Agent modes").
    type: str
    choices: ['off', check, download, prepare, apply]
  windows:
    description: Maintenance windows, each C(DAYS HH:MM-HH:MM ZONE), e.g. C(Sat,Sun 02:00-04:00 Europe/Berlin).
    type: list
    elements: str
  fleet_lock:
    description: The FleetLock server's URL; an empty string removes it.
    type: str
  group:
    description: The FleetLock reboot group.
    type: str
  remote:
    description: The remote to follow (one the host has, C(atoll remote list)).
    type: str
  interval:
    description: Seconds between checks (10 s to 7 days).
    type: int
  updates:
    description:
      - Which updates atolld takes on its own, C(all), or C(security-only) (only those fixing an
        open CVE at or above I(security_threshold); atoll's docs/security.md).
    type: str
    choices: [all, security-only]
  security_threshold:
    description: The Debian security tracker's urgency a fix must have under C(security-only).
    type: str
    choices: [unimportant, low, medium, high]
  unassigned_as:
    description: What the tracker's C(not yet assigned) urgency counts as.
    type: str
    choices: [unimportant, low, medium, high]
  reboot:
    description: Reboot after applying (else the customer reboots).
    type: bool
  operator_apply:
    description: May the control plane's operators schedule the apply in the next maintenance window.
    type: bool
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
- name: Prepare updates by themselves; apply in the Sunday night window, one host of the group at a time
  atoll.os.atoll_policy:
    mode: apply
    windows:
      - "Sun 02:00-04:00 Europe/Berlin"
    fleet_lock: http://fleet.example:8470/fleetlock
    group: db
'''

RETURN = r'''
policy:
  description: The update policy after the task (in check mode, what the real run would write).
  returned: always
  type: dict
  sample: {"mode": "apply", "windows": ["Sun 02:00-04:00 Europe/Berlin"], "reboot": true}
commands:
  description: The atoll commands run.
  returned: always
  type: list
  elements: list
'''

import json
import os
import shutil
import tempfile

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.atoll.os.plugins.module_utils.atoll_cli import COMMON_ARGS, AtollCli

# module option -> (policy key, `atoll policy set` option)
FIELDS = dict(mode=('mode', '--mode'), fleet_lock=('fleet_lock', '--fleet-lock'),
              group=('group', '--group'), remote=('remote', '--remote'),
              interval=('check_interval_s', '--interval'), updates=('updates', '--updates'),
              security_threshold=('security_threshold', '--security-threshold'),
              unassigned_as=('unassigned_as', '--unassigned-as'))
URGENCIES = ['unimportant', 'low', 'medium', 'high']
INTERVAL = (10, 7 * 24 * 3600)  # atoll's bounds for the check interval (seconds)


def _check_windows(module, cli, windows):
    """Fail on a window `atoll policy set` would refuse, saving nothing (check mode).

    atoll has no dry run of `policy set`; `atoll host-config validate` checks a host
    config's update policy with the same window parser, so each window goes through it
    in a config of its own (JSON is YAML) in a private directory removed afterwards.
    """
    tmp = tempfile.mkdtemp(prefix='atoll-windows-')  # mode 0700
    try:
        path = os.path.join(tmp, 'window.yaml')
        for w in windows:
            with open(path, 'w') as f:
                f.write(json.dumps(dict(hostname='check', updates=dict(policy=dict(windows=[w])))))
            doc = cli.run(['host-config', 'validate', path], ok=(0, 2))
            if doc.get('error') and doc.get('problems'):
                module.fail_json(msg="atoll: --window %r: %s" % (w, doc['problems'][0]['problem']),
                                 error='InputError', exit_code=2, commands=cli.commands)
            if doc.get('error'):
                cli.fail(2, doc)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            mode=dict(type='str', choices=['off', 'check', 'download', 'prepare', 'apply']),
            windows=dict(type='list', elements='str'),
            fleet_lock=dict(type='str'),
            group=dict(type='str'),
            remote=dict(type='str'),
            interval=dict(type='int'),
            updates=dict(type='str', choices=['all', 'security-only']),
            security_threshold=dict(type='str', choices=URGENCIES),
            unassigned_as=dict(type='str', choices=URGENCIES),
            reboot=dict(type='bool'),
            operator_apply=dict(type='bool'),
            **COMMON_ARGS
        ),
        supports_check_mode=True,
    )
    p = module.params
    if p['interval'] is not None and not INTERVAL[0] <= p['interval'] <= INTERVAL[1]:
        # as atoll refuses it, also in check mode
        module.fail_json(msg="atoll: policy: check interval: %d s is not between 10 s and 7 days"
                         % p['interval'], error='InputError', exit_code=2)
    cli = AtollCli(module)
    before = cli.run(['policy', 'show'])
    want = dict(before)
    argv = []
    for opt, (key, flag) in FIELDS.items():
        if p[opt] is None:
            continue
        value = (p[opt] or None) if opt == 'fleet_lock' else p[opt]
        want[key] = value
        if before.get(key) != value:
            argv += [flag, str(p[opt])]
    for opt, key in (('reboot', 'reboot'), ('operator_apply', 'operator_apply')):
        if p[opt] is not None:
            want[key] = p[opt]
            if bool(before.get(key)) != p[opt]:
                argv += (['--reboot' if p[opt] else '--no-reboot'] if opt == 'reboot' else
                         ['--operator-apply', 'yes' if p[opt] else 'no'])
    if p['windows'] is not None:
        want['windows'] = list(p['windows'])
        if list(before.get('windows') or []) != want['windows']:
            argv += ['--clear-windows']
            for w in p['windows']:
                argv += ['--window', w]
    if '--remote' in argv:  # as atoll refuses a remote the host lacks, also in check mode
        names = [r.get('name') for r in cli.run(['remote', 'list']) or []]
        if p['remote'] not in names:
            module.fail_json(msg="atoll: no remote %r on %s" % (p['remote'], cli.sysroot),
                             error='InputError', exit_code=2, commands=cli.commands,
                             resolution="list them with `atoll remote list`; add one with "
                             "`atoll remote add NAME URL --root root.json`")
    if module.check_mode and '--clear-windows' in argv:  # as atoll refuses a bad window
        _check_windows(module, cli, p['windows'])
    changed = bool(argv)
    after = want
    if changed and not module.check_mode:
        after = cli.run(['policy', 'set'] + argv)
    result = dict(changed=changed, policy=after, commands=cli.commands)
    if module._diff:
        result['diff'] = dict(before=before, after=after)
    module.exit_json(**result)


if __name__ == '__main__':
    main()

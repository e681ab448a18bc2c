#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: atoll developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
---
module: atoll_host_config
short_description: Validate or apply an atoll host config
version_added: "0.1.0"
description:
  - C(atoll host-config validate) or C(atoll host-config apply) (atoll's docs/provisioning.md) - hostname,
    time, users, network, tuning, update policy, control plane enrolment and apps from one YAML file.
  - Applying is idempotent in atoll itself; C(changed) is what atoll reports it changed.
  - Check mode validates the file and predicts from the record of the last apply
    (C(/var/lib/atoll/provision/applied.json)) - the same file content applied with success, in the
    phases the task runs (I(phase), I(apps)), is no change; so is a task with no phase to run (I(phase=apps) with
    I(apps=false), or with a config without apps). A host edited by hand since is not seen
    in check mode (atoll has no dry run of an apply).
options:
  src:
    description: The host config (YAML) on the managed host. Files it names are relative to it.
    type: path
    required: true
  state:
    description: C(validated) only checks the file; C(applied) applies it.
    type: str
    choices: [validated, applied]
    default: applied
  phase:
    description: Only this phase (C(system) is everything but the apps; C(apps) needs Docker).
    type: str
    choices: [system, apps]
  apps:
    description: Install the config's apps (C(false) is C(--no-apps)).
    type: bool
    default: true
  root:
    description: Apply into this root directory instead of the sysroot (C(--root)).
    type: path
extends_documentation_fragment:
  - atoll.os.atoll
attributes:
  check_mode:
    description: Validates the file; predicts the apply from the record of the last one.
    support: partial
    details: Predicts from the record of the last apply; changes made by hand since are not seen.
  diff_mode:
    description: Shows the state before and after (predicted in check mode).
    support: full
author:
  - atoll developers (@atoll)
'''

EXAMPLES = r'''
- name: Put the site's host config on the host
  ansible.builtin.copy:
    src: site.yaml
    dest: /etc/atoll/site.yaml
    mode: "0600"

- name: Apply it
  atoll.os.atoll_host_config:
    src: /etc/atoll/site.yaml
'''

RETURN = r'''
config:
  description: The validated config as atoll reads it (C(atoll host-config validate --json)).
  returned: always
  type: dict
changes:
  description: What the apply changed, one line each.
  returned: when I(state=applied)
  type: list
  elements: str
record:
  description: The apply's record (C(result), C(phases), C(changes), C(config_sha256)).
  returned: when I(state=applied) and not in check mode
  type: dict
commands:
  description: The atoll commands run.
  returned: always
  type: list
  elements: list
'''

import hashlib
import json
import os

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.atoll.os.plugins.module_utils.atoll_cli import COMMON_ARGS, AtollCli

RECORD = 'var/lib/atoll/provision/applied.json'
PHASES = ('system', 'apps')  # atoll's order


def _last_record(root):
    try:
        with open(os.path.join(root, RECORD), 'rb') as f:
            return json.loads(f.read())
    except (OSError, ValueError):
        return None


def main():
    module = AnsibleModule(
        argument_spec=dict(
            src=dict(type='path', required=True),
            state=dict(type='str', default='applied', choices=['validated', 'applied']),
            phase=dict(type='str', choices=['system', 'apps']),
            apps=dict(type='bool', default=True),
            root=dict(type='path'),
            **COMMON_ARGS
        ),
        supports_check_mode=True,
    )
    p = module.params
    cli = AtollCli(module)
    config = cli.run(['host-config', 'validate', p['src']])
    result = dict(changed=False, config=config)
    if p['state'] == 'applied':
        root = p['root'] or p['sysroot']
        last = _last_record(root)
        if module.check_mode:
            with open(p['src'], 'rb') as f:
                digest = hashlib.sha256(f.read()).hexdigest()
            # the phases the apply runs (as `atoll host-config apply --phase/--no-apps` picks them);
            # the apps phase of a config without apps changes nothing
            phases = [ph for ph in PHASES if p['phase'] in (None, ph)
                      and (ph != 'apps' or (p['apps'] and (config or {}).get('apps')))]
            same = (last is not None and last.get('config_sha256') == digest
                    and last.get('result') == 'applied'
                    and set(phases) <= set(last.get('phases') or PHASES))
            result['changed'] = bool(phases) and not same
            result['changes'] = []
        else:
            argv = ['host-config', 'apply', p['src']]
            if p['phase']:
                argv += ['--phase', p['phase']]
            if not p['apps']:
                argv.append('--no-apps')
            if p['root']:
                argv += ['--root', p['root']]
            record = cli.run(argv)
            result['record'] = record
            result['changes'] = record.get('changes') or []
            result['changed'] = bool(result['changes'])
        if module._diff:
            result['diff'] = dict(before=dict(applied=(last or {}).get('config_sha256')),
                                  after=dict(applied=(result.get('record') or {}).get(
                                      'config_sha256', (last or {}).get('config_sha256'))),
                                  prepared="\n".join(result['changes']))
    result['commands'] = cli.commands
    module.exit_json(**result)


if __name__ == '__main__':
    main()

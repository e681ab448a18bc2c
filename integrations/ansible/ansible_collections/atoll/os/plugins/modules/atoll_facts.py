#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: atoll developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
---
module: atoll_facts
short_description: Gather an atoll host's deployments, versions, update state, health, apps and packages
version_added: "0.1.0"
description:
  - Reads C(atoll status -v --json) (the C(atoll/v1 HostStatus) document), C(atoll app list --json)
    and the booted version's package manifest (C(atoll store show --packages)) into
    C(ansible_facts.atoll).
  - Use it in C(gather_facts) (C(FACTS_MODULES)) or as a task. It changes nothing.
options:
  gather:
    description:
      - What to gather besides the status. C(apps) needs Docker on the host when apps are installed.
    type: list
    elements: str
    choices: [apps, packages]
    default: [apps, packages]
extends_documentation_fragment:
  - atoll.os.atoll
attributes:
  check_mode:
    description: Predicts exactly what the real run does and changes nothing.
    support: full
  diff_mode:
    description: Facts change nothing.
    support: none
  facts:
    description: Sets C(ansible_facts.atoll).
    support: full
author:
  - atoll developers (@atoll)
'''

EXAMPLES = r'''
- name: Gather atoll facts
  atoll.os.atoll_facts:

- name: Show what boots next
  ansible.builtin.debug:
    msg: "{{ ansible_facts.atoll.version }} -> {{ ansible_facts.atoll.pending.version | default('nothing pending') }}"

- name: Use it as the fact module of a play
  hosts: atoll
  vars:
    ansible_facts_modules: [ansible.builtin.setup, atoll.os.atoll_facts]
  tasks: []
'''

RETURN = r'''
ansible_facts:
  description: Facts under C(atoll).
  returned: always
  type: dict
  contains:
    atoll:
      description: The host's atoll facts.
      type: dict
      contains:
        api_version:
          description: The status document's apiVersion (C(atoll/v1)).
          type: str
        version:
          description: The booted version.
          type: str
        booted:
          description: The booted deployment (as in the status document).
          type: dict
        pending:
          description: The deployment that boots next when it is not the booted one.
          type: dict
        prepared:
          description: The prepared deployment.
          type: dict
        rollback:
          description: The rollback deployment.
          type: dict
        deployments:
          description: The boot order, [0] boots next.
          type: list
          elements: dict
        update:
          description: The update state (C(state), C(version), C(remote), C(channel), C(last_check)...).
          type: dict
        needs_reboot:
          description: A deployment other than the booted one boots next.
          type: bool
        rollback_available:
          description: There is a rollback deployment.
          type: bool
        health:
          description:
            - The last boot (C(result) good, rolled-back, failed or unknown, C(reason), C(acknowledged)),
              automatic rollbacks counted, damaged state files.
          type: dict
        apps:
          description: Installed apps (C(app), C(image), C(role), C(status)).
          type: list
          elements: dict
        packages:
          description: The booted version's package manifest (C(name), C(version)).
          type: list
          elements: dict
        status:
          description: The whole status document.
          type: dict
'''

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.atoll.os.plugins.module_utils.atoll_cli import (
    COMMON_ARGS, AtollCli, needs_reboot,
)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            gather=dict(type='list', elements='str', choices=['apps', 'packages'],
                        default=['apps', 'packages']),
            **COMMON_ARGS
        ),
        supports_check_mode=True,
    )
    cli = AtollCli(module)
    st = cli.status()
    booted = st.get('booted') or {}
    facts = dict(
        api_version=st.get('apiVersion'), version=booted.get('version'),
        booted=st.get('booted'), pending=st.get('pending'), prepared=st.get('prepared'),
        rollback=st.get('rollback'), deployments=st.get('deployments'),
        update=st.get('update'), needs_reboot=needs_reboot(st),
        rollback_available=bool(st.get('rollback')),
        health=dict(last_boot=st.get('last_boot'), rollback_events=st.get('rollback_events'),
                    problems=st.get('problems')),
        apps=None, packages=None, status=st,
    )
    if 'apps' in module.params['gather']:
        facts['apps'] = cli.run(['app', 'list'])
    if 'packages' in module.params['gather'] and booted.get('commit'):
        shown = cli.run(['store', 'show', booted['commit'], '--packages'])
        facts['packages'] = (shown or {}).get('manifest', (shown or {}).get('packages'))
    module.exit_json(changed=False, ansible_facts=dict(atoll=facts))


if __name__ == '__main__':
    main()

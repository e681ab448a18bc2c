#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: atoll developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
---
module: atoll_rollout
short_description: Start, halt, resume or abort a rollout on the atoll fleet control plane
version_added: "0.1.0"
description:
  - A rollout moves a group of hosts (a customer and labels) to one signed version in waves, with soak
    times and a failure budget (atoll's docs/control-plane.md, "Rollouts"). This module creates one
    and moves it between C(running), C(halted) and C(aborted) through the control plane's HTTP API
    (it needs no atoll on the machine it runs on; run it with C(delegate_to) C(localhost) or C(run_once)).
  - A rollout that exists is not created again (its id names it). Asked for another
    I(to_version), I(from_version), I(customer), I(channel) or I(labels) than it has, the task
    fails (they are fixed when it is made, so give a new id); its I(spec) is not compared.
    A finished one stays finished.
options:
  id:
    description: The rollout's id (letters, digits, C(.), C(_), C(-)).
    type: str
    required: true
  state:
    description:
      - C(running) created (when absent) and running (a halted one is resumed).
      - C(halted) nothing more is granted to its hosts until it is resumed.
      - C(aborted) ended; its hosts stay where they are and follow their own policy again.
    type: str
    choices: [running, halted, aborted]
    default: running
  customer:
    description: The group's customer (default every customer the token may act for).
    type: str
  labels:
    description: The group's labels (all must match).
    type: dict
  channel:
    description: The channel the versions are signed on. Required to create.
    type: str
  versions:
    description: The signed versions the rollout chooses among, oldest first. Required to create.
    type: list
    elements: dict
    suboptions:
      version:
        description: The version.
        type: str
        required: true
      commit:
        description: The commit TUF signs for it.
        type: str
        required: true
  to_version:
    description: The version the group moves to. Required to create.
    type: str
  from_version:
    description: Only hosts on this version.
    type: str
  floors:
    description: Versions every host below passes through first.
    type: list
    elements: str
  dead_ends:
    description: Versions a host may leave before its wave.
    type: list
    elements: str
  spec:
    description: The rollout spec (C(waves), C(soak_s), C(budget)...), as C(atoll fleet rollout create --spec).
    type: dict
  reason:
    description: Why (recorded in the rollout's events) when halting or aborting.
    type: str
    default: ''
  excuse:
    description: When resuming, stop counting the failures so far against the budget.
    type: bool
    default: true
  server:
    description: The control plane's URL. Default C($ATOLL_FLEET_SERVER), else C(http://127.0.0.1:8470).
    type: str
  token_file:
    description: A file (mode 0600) holding an operator token. Default C($ATOLL_FLEET_TOKEN_FILE).
    type: path
  token:
    description: The operator token itself (prefer I(token_file)). Default C($ATOLL_FLEET_TOKEN).
    type: str
  validate_certs:
    description: Verify the server's TLS certificate.
    type: bool
    default: true
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
- name: Move the database hosts of acme to 2026.12.1 in waves of 1, 10 and 100 percent
  atoll.os.atoll_rollout:
    id: db-2026.12.1
    customer: acme
    labels: {role: db}
    channel: site/db
    versions:
      - {version: 2026.11.2, commit: "{{ commits['2026.11.2'] }}"}
      - {version: 2026.12.1, commit: "{{ commits['2026.12.1'] }}"}
    to_version: 2026.12.1
    spec: {waves: [1, 10, 100], soak_s: 3600, budget: {max_failures: 0}}
    token_file: ~/.config/atoll/fleet-token
  delegate_to: localhost
  run_once: true

- name: Hold it
  atoll.os.atoll_rollout:
    id: db-2026.12.1
    state: halted
    reason: replication lag on the canary
  delegate_to: localhost
  run_once: true
'''

RETURN = r'''
rollout:
  description: The rollout as the control plane reports it (C(state), C(wave), C(waves), C(failing), C(next)...); null in check mode for one not created yet.
  returned: always
  type: dict
'''

from ansible.module_utils.basic import AnsibleModule, env_fallback
from ansible.module_utils.six.moves.urllib.parse import quote
from ansible_collections.atoll.os.plugins.module_utils.atoll_control import (
    ControlClient, ControlError, find_token,
)

ACTION = dict(running='resume', halted='halt', aborted='abort')


def _plan(state, current):
    """The API action that brings a rollout in ``current`` state to ``state`` (None: none)."""
    if current is None:
        return 'create' if state == 'running' else 'missing'
    if current == state or current == 'finished':
        return None
    if current == 'aborted':
        return 'ended'
    return ACTION[state]


def main():
    module = AnsibleModule(
        argument_spec=dict(
            id=dict(type='str', required=True),
            state=dict(type='str', default='running', choices=['running', 'halted', 'aborted']),
            customer=dict(type='str'),
            labels=dict(type='dict'),
            channel=dict(type='str'),
            versions=dict(type='list', elements='dict', options=dict(
                version=dict(type='str', required=True), commit=dict(type='str', required=True))),
            to_version=dict(type='str'),
            from_version=dict(type='str'),
            floors=dict(type='list', elements='str'),
            dead_ends=dict(type='list', elements='str'),
            spec=dict(type='dict'),
            reason=dict(type='str', default=''),
            excuse=dict(type='bool', default=True),
            server=dict(type='str', fallback=(env_fallback, ['ATOLL_FLEET_SERVER'])),
            token_file=dict(type='path', fallback=(env_fallback, ['ATOLL_FLEET_TOKEN_FILE'])),
            token=dict(type='str', no_log=True, fallback=(env_fallback, ['ATOLL_FLEET_TOKEN'])),
            validate_certs=dict(type='bool', default=True),
        ),
        mutually_exclusive=[('token', 'token_file')],
        supports_check_mode=True,
    )
    p = module.params
    try:
        client = ControlClient(p['server'], find_token(p['token'], p['token_file'], env={}),
                               validate_certs=p['validate_certs'])
        before = client.rollout(p['id'])
        current = before.get('state') if before else None
        action = _plan(p['state'], current)
        if action == 'missing':
            module.fail_json(msg="rollout %s does not exist: nothing to %s" % (
                p['id'], ACTION[p['state']]))
        if action == 'ended':
            module.fail_json(msg="rollout %s was aborted; a new rollout needs a new id" % p['id'],
                             rollout=before)
        if before:
            # a rollout's target and group are fixed when it is made: a task asking for
            # others must not report the existing one as "ok"
            differs = ["%s: %r, not %r" % (k, before.get(k), p[k])
                       for k in ('to_version', 'from_version', 'customer', 'channel')
                       if p[k] is not None and k in before and before.get(k) != p[k]]
            if p['labels'] is not None and 'labels' in before \
                    and (before.get('labels') or {}) != p['labels']:
                differs.append("labels: %r, not %r" % (before.get('labels'), p['labels']))
            if differs:
                module.fail_json(msg="rollout %s exists with %s; a rollout's target and hosts "
                                 "are fixed when it is made: give a new id" % (
                                     p['id'], "; ".join(differs)), rollout=before)
        if action == 'create':
            missing = [k for k in ('channel', 'versions', 'to_version') if not p[k]]
            if missing:
                module.fail_json(msg="to create rollout %s, give %s" % (p['id'], ", ".join(missing)))
        after = before
        if action and not module.check_mode:
            if action == 'create':
                after = client.call('POST', '/v1/rollouts', dict(
                    id=p['id'], customer=p['customer'], labels=p['labels'] or {},
                    channel=p['channel'], versions=p['versions'], to_version=p['to_version'],
                    from_version=p['from_version'], floors=p['floors'] or [],
                    dead_ends=p['dead_ends'] or [], spec=p['spec'] or {}))
            elif action == 'resume':
                after = client.call('POST', '/v1/rollouts/%s/resume' % quote(p['id'], safe=''),
                                    dict(excuse=p['excuse']))
            else:
                after = client.call('POST', '/v1/rollouts/%s/%s' % (quote(p['id'], safe=''), action),
                                    dict(reason=p['reason']))
            after = client.rollout(p['id'])
    except ControlError as exc:
        module.fail_json(msg=str(exc), status=exc.status, error=exc.doc.get('error'),
                         details=exc.doc.get('details'), resolution=exc.doc.get('resolution'))
    result = dict(changed=action is not None, rollout=after)
    if module._diff:
        result['diff'] = dict(before=dict(state=current),
                              after=dict(state=p['state'] if action else current))
    module.exit_json(**result)


if __name__ == '__main__':
    main()

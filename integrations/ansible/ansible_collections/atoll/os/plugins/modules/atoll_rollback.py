#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: atoll developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
---
module: atoll_rollback
short_description: Make an atoll host boot its previous deployment next, or acknowledge an automatic rollback
version_added: "0.1.0"
description:
  - C(atoll rollback) is a toggle (as C(rpm-ostree rollback)); this module is idempotent instead. It
    names the deployment that must boot next, and runs C(atoll rollback) only when that is not
    the case already.
  - Without I(deployment) the target is the previous system, chosen from the host's status
    when the task starts - the booted deployment when an update is pending (the rollback
    discards it from the next boot), else the rollback deployment. A second run, which finds
    that deployment booting next, changes nothing.
  - With I(acknowledge), acknowledges the last boot's automatic rollback instead (the Checkmk
    check and C(atoll status) return to OK); nothing else changes.
options:
  deployment:
    description:
      - The deployment (its id C(COMMIT.SERIAL), or its commit) that must boot next; it must be
        where C(atoll rollback) goes (the rollback deployment, or the booted one while an update is pending).
    type: str
  acknowledge:
    description:
      - Acknowledge the last boot's automatic rollback (C(atoll rollback ack)) instead of rolling back.
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
- name: Go back to the previous system at the next boot
  atoll.os.atoll_rollback:
  register: rb

- name: Reboot into it
  ansible.builtin.reboot:
  when: rb.needs_reboot

- name: Acknowledge an automatic rollback once it is understood
  atoll.os.atoll_rollback:
    acknowledge: true
'''

RETURN = r'''
next_boot:
  description: The deployment that boots next after the task (in check mode, what the real run would leave).
  returned: always
  type: dict
needs_reboot:
  description: A deployment other than the booted one boots next.
  returned: always
  type: bool
rollback_available:
  description: The host has a rollback deployment.
  returned: always
  type: bool
acknowledged:
  description: The automatic rollback acknowledged (C(time), C(reason)), else null.
  returned: when I(acknowledge=true)
  type: dict
booted:
  description: The booted deployment.
  returned: always
  type: dict
pending:
  description: The deployment that boots next when it is not the booted one.
  returned: always
  type: dict
rollback:
  description: The rollback deployment.
  returned: always
  type: dict
commands:
  description: The atoll commands run.
  returned: always
  type: list
  elements: list
'''

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.atoll.os.plugins.module_utils.atoll_cli import (
    COMMON_ARGS, AtollCli, deployment_summary, diff_view, host_summary, needs_reboot,
    release,
)


def _older(a, b):
    """Deployment ``a`` was made before ``b`` (``created``, ISO 8601 UTC to the second;
    made in the same second: the older commit, by its ``timestamp``)."""
    b = b or {}
    return ((a.get('created') or '', a.get('timestamp') or '')
            < (b.get('created') or '', b.get('timestamp') or ''))


def _matches(dep, name):
    return bool(dep) and name in (dep.get('id'), dep.get('commit'))


def main():
    module = AnsibleModule(
        argument_spec=dict(
            deployment=dict(type='str'),
            acknowledge=dict(type='bool', default=False),
            **COMMON_ARGS
        ),
        mutually_exclusive=[('deployment', 'acknowledge')],
        supports_check_mode=True,
    )
    p = module.params
    cli = AtollCli(module)
    before = cli.status()
    result = dict(changed=False)
    deps = before.get('deployments') or []
    nxt = deps[0] if deps else None
    if p['acknowledge']:
        lb = before.get('last_boot') or {}
        changed = lb.get('result') == 'rolled-back' and not lb.get('acknowledged')
        if changed and not module.check_mode:
            out = cli.run(['rollback', 'ack'])
            changed = bool(out.get('changed'))
            result['acknowledged'] = out.get('acknowledged')
        after = before if module.check_mode else cli.status()
        expected = nxt
    else:
        booted = before.get('booted')
        # where `atoll rollback` goes: the booted one while an update (a deployment made
        # after the booted one) is pending, else the rollback deployment; a deployment made
        # before the booted one that boots next is a rollback done already
        goes = before.get('rollback')
        if needs_reboot(before):
            goes = nxt if _older(nxt, booted) else booted
        elif goes is not None and booted is not None and _older(booted, goes):
            goes = booted  # the rollback deployment is an update discarded by a rollback
        if p['deployment']:
            if _matches(nxt, p['deployment']):
                goes = nxt
            elif not _matches(goes, p['deployment']):
                module.fail_json(
                    msg="deployment %s is not where a rollback goes (%s)" % (
                        p['deployment'], goes['id'] if goes else "there is no rollback deployment"),
                    resolution="deploy it with `atoll deploy REV`, or name the rollback deployment")
        elif goes is None:
            module.fail_json(msg="there is no deployment to roll back to",
                             booted=deployment_summary(booted))
        expected = goes
        changed = not _matches(nxt, goes['id'])
        if changed and not module.check_mode:
            cli.run(['rollback'])
        after = before if module.check_mode else cli.status()
        now_next = (after.get('deployments') or [None])[0]
        if not module.check_mode and not _matches(now_next, goes['id']):
            module.fail_json(msg="atoll rollback left %s to boot next, not %s" % (
                (now_next or {}).get('id'), goes['id']), commands=cli.commands)
    result.update(host_summary(after))
    result['next_boot'] = deployment_summary(expected)
    if module.check_mode and changed and not p['acknowledge']:
        result['needs_reboot'] = not _matches(before.get('booted'), expected['id'])
    result['changed'] = changed
    result['commands'] = cli.commands
    if module._diff:
        fields = ('booted', 'next_boot')
        b = diff_view(before, fields)
        a = diff_view(after, fields)
        if module.check_mode and changed and not p['acknowledge']:
            a = dict(b, next_boot=release(expected))
        result['diff'] = dict(before=b, after=a)
    module.exit_json(**result)


if __name__ == '__main__':
    main()

# The tests' stdout callback: every task's result per host and the recap, as one JSON
# document (the shape of ansible.posix.json, which is not part of ansible-core).

from __future__ import annotations

DOCUMENTATION = r'''
name: atoll_test_json
type: stdout
short_description: Results as one JSON document (atoll's tests)
description:
  - "Prints one JSON document: plays, their tasks with each host's result, and the recap (stats)."
'''

import json

from ansible.plugins.callback import CallbackBase


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = 'stdout'
    CALLBACK_NAME = 'atoll_test_json'

    def __init__(self, display=None):
        super(CallbackModule, self).__init__(display)
        self.plays = []

    def v2_playbook_on_play_start(self, play):
        self.plays.append({'play': {'name': play.get_name()}, 'tasks': []})

    def v2_playbook_on_task_start(self, task, is_conditional):
        self.plays[-1]['tasks'].append({'task': {'name': task.get_name()}, 'hosts': {}})

    def _record(self, result, **extra):
        res = dict(result._result)
        res.update(extra)
        self.plays[-1]['tasks'][-1]['hosts'][result._host.get_name()] = res

    def v2_runner_on_ok(self, result, **kwargs):
        self._record(result)

    def v2_runner_on_failed(self, result, ignore_errors=False, **kwargs):
        self._record(result, failed=True)

    def v2_runner_on_skipped(self, result, **kwargs):
        self._record(result, skipped=True)

    def v2_runner_on_unreachable(self, result, **kwargs):
        self._record(result, unreachable=True)

    def v2_playbook_on_stats(self, stats):
        hosts = sorted(stats.processed.keys())
        out = {'plays': self.plays, 'stats': {h: stats.summarize(h) for h in hosts}}
        self._display.display(json.dumps(out, default=str, sort_keys=True))

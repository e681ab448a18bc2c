# -*- coding: utf-8 -*-
# Copyright: atoll developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The atoll fleet control plane's HTTP API, for the inventory plugin and atoll_rollout.

Routes, roles and the JSON error document are atoll's docs/control-plane.md
("HTTP"). Server and token are found as ``atoll fleet`` finds them: the
option, else ``ATOLL_FLEET_SERVER`` / ``ATOLL_FLEET_TOKEN_FILE`` /
``ATOLL_FLEET_TOKEN``; a token file readable by group or others is refused
(as ssh does with keys). The token is sent only in the Authorization header.
"""

from __future__ import annotations

import json
import os
import stat

from ansible.module_utils.six.moves.urllib.error import HTTPError, URLError
from ansible.module_utils.six.moves.urllib.parse import quote, urlencode
from ansible.module_utils.urls import open_url

DEFAULT_SERVER = "http://127.0.0.1:8470"


class ControlError(Exception):
    """A failed request: ``status`` (HTTP, 0 when unreachable) and atoll's error document."""

    def __init__(self, message, status=0, doc=None):
        super(ControlError, self).__init__(message)
        self.status = status
        self.doc = doc or {}


def read_token_file(path):
    """The token in ``path`` (its one line); a file others may read is refused."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise ControlError("token file %s: %s" % (path, exc.strerror))
    if stat.S_IMODE(st.st_mode) & 0o077:
        raise ControlError("token file %s is readable by others (mode %04o): chmod 600 %s"
                           % (path, stat.S_IMODE(st.st_mode), path))
    with open(path, 'rb') as f:
        lines = f.read(4096).decode('utf-8', 'replace').strip().splitlines()
    if len(lines) != 1 or not lines[0].strip():
        raise ControlError("token file %s does not hold one token" % path)
    return lines[0].strip()


def find_token(token=None, token_file=None, env=None):
    env = os.environ if env is None else env
    if token:
        return token
    if token_file:
        return read_token_file(token_file)
    if env.get('ATOLL_FLEET_TOKEN_FILE'):
        return read_token_file(env['ATOLL_FLEET_TOKEN_FILE'])
    if env.get('ATOLL_FLEET_TOKEN'):
        return env['ATOLL_FLEET_TOKEN'].strip()
    raise ControlError("no operator token: give token_file (or token, or ATOLL_FLEET_TOKEN_FILE); "
                       "an admin makes one with `atoll fleet tokens create`")


class ControlClient(object):
    """Requests with an operator token; answers decoded from JSON."""

    def __init__(self, server, token, timeout=60, validate_certs=True):
        self.server = (server or os.environ.get('ATOLL_FLEET_SERVER') or DEFAULT_SERVER).rstrip('/')
        if not self.server.startswith(('http://', 'https://')):
            raise ControlError("server %r: give an http(s) URL, e.g. %s" % (self.server, DEFAULT_SERVER))
        self.token = token
        self.timeout = timeout
        self.validate_certs = validate_certs

    def call(self, method, path, body=None, query=None):
        url = self.server + path
        if query:
            pairs = [(k, v) for k, vs in sorted(query.items()) if vs is not None
                     for v in (vs if isinstance(vs, list) else [vs])]
            if pairs:
                url += '?' + urlencode(pairs)
        headers = {'Accept': 'application/json', 'Authorization': 'Bearer %s' % self.token}
        data = None
        if body is not None:
            data = json.dumps(body)
            headers['Content-Type'] = 'application/json'
        try:
            resp = open_url(url, method=method, data=data, headers=headers, timeout=self.timeout,
                            validate_certs=self.validate_certs, follow_redirects='none')
            raw = resp.read()
        except HTTPError as exc:
            try:
                doc = json.loads(exc.read())
            except Exception:
                doc = {}
            brief = doc.get('brief') if isinstance(doc, dict) else None
            raise ControlError("the control plane answered %d: %s" % (exc.code, brief or exc.reason),
                               exc.code, doc if isinstance(doc, dict) else {})
        except (URLError, OSError) as exc:
            raise ControlError("the control plane %s cannot be reached: %s" % (self.server, exc))
        try:
            return json.loads(raw) if raw else None
        except ValueError:
            raise ControlError("the control plane %s did not answer JSON" % self.server)

    def hosts(self, customer=None, labels=None, lost=None):
        query = dict(customer=customer, lost=None if lost is None else str(bool(lost)).lower(),
                     label=['%s=%s' % kv for kv in sorted((labels or {}).items())] or None)
        return self.call('GET', '/v1/hosts', query=query)

    def rollout(self, rollout_id):
        """The rollout, or None when the server knows none of that id (in the token's scope)."""
        try:
            return self.call('GET', '/v1/rollouts/%s' % quote(rollout_id, safe=''))
        except ControlError as exc:
            if exc.status == 404:
                return None
            raise

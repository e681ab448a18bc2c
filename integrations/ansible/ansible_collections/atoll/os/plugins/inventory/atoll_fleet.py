# -*- coding: utf-8 -*-
# Copyright: atoll developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
name: atoll_fleet
short_description: Hosts and labels from the atoll fleet control plane
version_added: "0.1.0"
description:
  - Reads the inventory of the atoll control plane (C(GET /v1/hosts), a viewer token is enough) and
    adds each host by its name, in a group per customer (C(atoll_customer_NAME)) and per label
    (C(atoll_label_KEY_VALUE)), with its facts as the control plane last heard them as host
    variables (C(atoll_*)).
  - The configuration file's name must end in C(atoll_fleet.yml) or C(atoll_fleet.yaml).
  - Hosts the control plane marks lost are left out unless I(include_lost).
extends_documentation_fragment:
  - constructed
options:
  plugin:
    description: The name of this plugin.
    type: str
    required: true
    choices: [atoll.os.atoll_fleet]
  server:
    description: The control plane's URL.
    type: str
    env:
      - name: ATOLL_FLEET_SERVER
    default: http://127.0.0.1:8470
  token_file:
    description: A file (mode 0600) holding an operator token (viewer or more).
    type: path
    env:
      - name: ATOLL_FLEET_TOKEN_FILE
  token:
    description: The token itself (prefer I(token_file); keep it in a vault).
    type: str
    env:
      - name: ATOLL_FLEET_TOKEN
  customer:
    description: Only this customer's hosts.
    type: str
  labels:
    description: Only hosts with all these labels.
    type: dict
  include_lost:
    description: Also hosts the control plane marks lost.
    type: bool
    default: false
  validate_certs:
    description: Verify the server's TLS certificate.
    type: bool
    default: true
'''

EXAMPLES = r'''
# fleet.atoll_fleet.yml
plugin: atoll.os.atoll_fleet
server: https://fleet.example:8470
token_file: ~/.config/atoll/fleet-token
customer: acme
keyed_groups:
  - key: atoll_labels.site
    prefix: site
compose:
  ansible_host: atoll_name ~ '.acme.example'
'''

import re

from ansible.errors import AnsibleParserError
from ansible.plugins.inventory import BaseInventoryPlugin, Constructable
from ansible.utils.unsafe_proxy import wrap_var
from ansible_collections.atoll.os.plugins.module_utils.atoll_control import (
    ControlClient, ControlError, find_token,
)

FIELDS = ('id', 'name', 'customer', 'labels', 'machine_id', 'last_seen', 'lost', 'booted_version',
          'booted_commit', 'pending_version', 'update_state', 'last_boot', 'rollback_events')


def _group_name(*parts):
    return re.sub(r'[^A-Za-z0-9_]', '_', '_'.join(str(p) for p in parts))


class InventoryModule(BaseInventoryPlugin, Constructable):

    NAME = 'atoll.os.atoll_fleet'

    def verify_file(self, path):
        return super(InventoryModule, self).verify_file(path) and path.endswith(
            ('atoll_fleet.yml', 'atoll_fleet.yaml'))

    def parse(self, inventory, loader, path, cache=True):
        super(InventoryModule, self).parse(inventory, loader, path, cache)
        self._read_config_data(path)
        try:
            client = ControlClient(self.get_option('server'),
                                   find_token(self.get_option('token'),
                                              self.get_option('token_file'), env={}),
                                   validate_certs=self.get_option('validate_certs'))
            hosts = client.hosts(customer=self.get_option('customer'),
                                 labels=self.get_option('labels'),
                                 lost=None if self.get_option('include_lost') else False)
        except ControlError as exc:
            raise AnsibleParserError("atoll_fleet: %s" % exc)
        strict = self.get_option('strict')
        for h in hosts or []:
            name = self.inventory.add_host(h['name'])
            for key in FIELDS:
                # what hosts report is data, never a template (ansible-core 2.19 marks an
                # inventory source's values so by itself; 2.17 and 2.18 need wrap_var)
                self.inventory.set_variable(name, 'atoll_%s' % key, wrap_var(h.get(key)))
            groups = [_group_name('atoll_customer', h.get('customer') or 'none')]
            groups += [_group_name('atoll_label', k, v) for k, v in sorted((h.get('labels') or {}).items())]
            for g in groups:
                self.inventory.add_group(g)
                self.inventory.add_child(g, name)
            hostvars = self.inventory.get_host(name).get_vars()
            self._set_composite_vars(self.get_option('compose'), hostvars, name, strict=strict)
            self._add_host_to_composed_groups(self.get_option('groups'), hostvars, name, strict=strict)
            self._add_host_to_keyed_groups(self.get_option('keyed_groups'), hostvars, name, strict=strict)

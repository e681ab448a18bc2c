# -*- coding: utf-8 -*-
# Copyright: atoll developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment(object):

    DOCUMENTATION = r'''
options:
  sysroot:
    description:
      - The host's sysroot, passed as C(atoll --sysroot).
      - C(/) on a host that runs atoll; a directory to drive a sysroot prepared elsewhere.
    type: path
    default: /
  executable:
    description:
      - The C(atoll) command, by name (looked up in C(PATH) and the usual sbin directories) or as a path.
    type: str
    default: atoll
  lock_timeout:
    description:
      - Seconds to wait while another atoll command (or atolld) holds the sysroot or
        repository lock (C(atoll --lock-timeout)); then the task fails with exit code 75.
    type: int
    default: 600
notes:
  - The module runs C(atoll --json) and reads only its JSON output and exit status
    (the C(atoll/v1) documents and the exit codes of atoll's docs/commands.md); when
    atolld runs, atoll goes through its local API, so the module works with or without it.
  - A host where C(atoll) is missing, or where it fails, fails the task with atoll's own
    message (C(msg)), its C(details), C(resolution), C(error) class and C(exit_code).
requirements:
  - atoll on the managed host
'''

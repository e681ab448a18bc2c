"""The host agent (``atolld``): update policy, maintenance windows, fleet reboot slots.

- ``windows``: weekly maintenance windows with time zones (pure)
- ``policy``: policy modes and the agent's decisions (pure)
- ``state``: the agent's persistent state and decision log
- ``host``: the actions, on a real sysroot (check, download, prepare, apply, reboot)
- ``daemon``: the loop and the local API on a root-only Unix socket
"""

from atoll.agent import feature as _feature  # noqa: F401  (registers the "agent" image feature)

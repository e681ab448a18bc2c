"""The host agent (``atolld``): update policy, maintenance windows, fleet reboot slots.

- ``windows``: weekly maintenance windows with time zones (pure)
- ``policy``: policy modes and the agent's decisions (pure)
- ``state``: the agent's persistent state and decision log
- ``host``: the actions, on a real sysroot (check, download, prepare, apply, reboot)
- ``daemon``: the loop and the local API on a root-only Unix socket
- ``feature``: the ``agent`` image feature (compose imports it when a treefile names it)
"""

"""Deploy: sysroot, deployments, /etc 3-way merge, the boot pointer, rollback, pin.

See docs/on-disk.md for the host layout.
"""

from atoll.deploy.sysroot import Deployment, Sysroot

__all__ = ["Deployment", "Sysroot"]

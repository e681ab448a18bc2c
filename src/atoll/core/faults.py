"""Named crash points for crash tests: "SIGKILL at every step", deterministically.

With ``ATOLL_CRASH_AT=NAME`` in the environment, :func:`crash_point` kills the
process (SIGKILL: no cleanup, no flush, as a power cut or the OOM killer) when
it reaches the step named NAME. Unset (always, outside tests) it does nothing.
The points (tests/integration/test_crash.py runs each):

    txn:staged       a transaction's objects are written in tmp/, nothing synced
    txn:synced       ... synced, not yet renamed into objects/
    txn:placed       ... renamed into objects/, the names not yet synced
    commit:ref       a commit is whole, its ref not yet moved
    download:fetched an update is downloaded into the cache, not yet imported
    deploy:checkout  a deployment is checked out, /etc not merged
    deploy:loader    the new boot configuration is written, the pointer not swapped
    seal:verified    an object whose seal was broken is re-hashed, not yet sealed again
                     (tests/integration/test_store_seal.py)
"""

from __future__ import annotations

import os
import signal

__all__ = ["crash_point"]

_AT = os.environ.get("ATOLL_CRASH_AT")


def crash_point(name: str) -> None:
    """Die here (SIGKILL) when ``ATOLL_CRASH_AT`` names this point."""
    if _AT is not None and name == _AT:
        os.kill(os.getpid(), signal.SIGKILL)

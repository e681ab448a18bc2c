"""Store: a content-addressed object store in the OSTree model.

See :mod:`atoll.store.repo` for the on-disk layout.
"""

from atoll.store.objects import Commit, DirEntry, DirMeta, FileMeta
from atoll.store.repo import Repo

__all__ = ["Commit", "DirEntry", "DirMeta", "FileMeta", "Repo"]

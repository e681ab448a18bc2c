"""Deltas and packs: how a commit's objects travel to a host.

* :mod:`atoll.delta.static` -- static deltas between two commits (generate, apply)
* :mod:`atoll.delta.pack` -- per-commit packs of chunked objects with an index
* :mod:`atoll.delta.pairing` -- which old file a new file is diffed against (pure)
"""

from atoll.delta.pack import PackIndex, import_chunk, write_pack
from atoll.delta.pairing import FileInfo, normalise_path, pair_files
from atoll.delta.static import DeltaStats, apply_delta, generate_delta, read_header

__all__ = [
    "DeltaStats",
    "FileInfo",
    "PackIndex",
    "apply_delta",
    "generate_delta",
    "import_chunk",
    "normalise_path",
    "pair_files",
    "read_header",
    "write_pack",
]

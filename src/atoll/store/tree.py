"""Reading a tree to commit: checked whole before anything is written (pure of the store).

What a tree from "any tool" may hold, and what atoll makes of it:

* names: any UTF-8 without ``/`` or NUL (control characters are kept, and
  escaped wherever a name is printed); a name that is not UTF-8 is refused,
  naming the path with its bytes escaped;
* files: regular files, symlinks and directories; device nodes, fifos and
  sockets are refused (devtmpfs makes device nodes at boot);
* ``/etc`` (OSTree's rule): the image's defaults live in ``/usr/etc``; a lone
  ``/etc`` is committed as ``/usr/etc``; a non-empty ``/etc`` beside
  ``/usr/etc`` is refused (one would be dropped), so is an ``/etc`` or
  ``/usr/etc`` that is a symlink or not a directory, and a lone ``/etc`` when
  ``/usr`` is not a directory; an empty ``/etc`` beside ``/usr/etc`` (a mount
  point, as compose leaves it) is kept; no ``/etc`` at all gives an empty one
  at deploy;
* depth: at most :data:`MAX_DEPTH` directory levels.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from atoll.core.errors import InputError
from atoll.core.fsutil import read_xattrs
from atoll.core.text import printable
from atoll.store.objects import DirMeta

__all__ = ["MAX_DEPTH", "Tree", "etc_layout_problem", "path_kind", "scan"]

MAX_PROBLEMS = 20
MAX_DEPTH = 128  # directory levels; Debian's deepest paths are ~20 (checkout refuses deeper)


@dataclass
class Tree:
    """A tree ready to commit: paths as they will be in the commit ("" is the root)."""

    files: list[tuple[str, str, os.stat_result]] = field(default_factory=list)
    """(path in the commit, path in the source, lstat), in walk order."""
    dirs: dict[str, DirMeta] = field(default_factory=dict)


def path_kind(path: str | os.PathLike[str]) -> str | None:
    """None (absent), "dir", "symlink" or "other"."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(st.st_mode):
        return "symlink"
    return "dir" if stat.S_ISDIR(st.st_mode) else "other"


def etc_layout_problem(etc: str | None, etc_empty: bool, usr_etc: str | None,
                       usr: str | None = "dir") -> str | None:
    """Why a tree's /etc layout is refused (None: accepted). Pure.

    Each argument is what the path is: None (absent), "dir", "symlink" or "other".
    """
    for name, kind in (("/etc", etc), ("/usr/etc", usr_etc)):
        if kind == "symlink":
            return f"{name} is a symlink; atoll keeps the image's /etc in /usr/etc " \
                   f"(make {name} a directory, or remove it)"
        if kind == "other":
            return f"{name} is not a directory"
    if etc == "dir" and usr_etc == "dir" and not etc_empty:
        return "the tree has both /etc and /usr/etc; one would be dropped " \
               "(put the image's configuration in one of them)"
    if etc == "dir" and usr_etc is None and usr not in (None, "dir"):
        return "/etc would move to /usr/etc, but /usr is not a directory"
    return None


def _dirmeta(path: str) -> DirMeta:
    st = os.lstat(path)
    return DirMeta(stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, read_xattrs(path))


def scan(src: Path, *, skip: frozenset[str] = frozenset()) -> Tree:
    """Walk ``src`` and check everything a commit needs, before any write.

    Raises:
        InputError: naming every refused path (at most :data:`MAX_PROBLEMS`).
    """
    root = os.fspath(src)
    try:
        top = os.lstat(root)
    except OSError as exc:
        raise InputError(f"{printable(root)}: cannot read: {exc.strerror}") from exc
    if not stat.S_ISDIR(top.st_mode):
        raise InputError(f"{printable(root)}: not a directory")
    problems: list[str] = []
    etc_path = os.path.join(root, "etc")
    etc_kind = path_kind(etc_path)
    etc_empty = etc_kind == "dir" and not os.listdir(etc_path)
    usr_kind = path_kind(os.path.join(root, "usr"))
    usr_etc_kind = path_kind(os.path.join(root, "usr/etc")) if usr_kind == "dir" else None
    problem = etc_layout_problem(etc_kind, etc_empty, usr_etc_kind, usr_kind)
    if problem:
        problems.append(problem)
    move_etc = etc_kind == "dir" and usr_etc_kind is None

    def mapped(rel: str) -> str:
        if move_etc and (rel == "etc" or rel.startswith("etc/")):
            return "usr/" + rel
        return rel

    tree = Tree()
    tree.dirs[""] = _dirmeta(root)
    if move_etc and usr_kind is None:
        tree.dirs["usr"] = DirMeta(0o755, 0, 0)
    stack = [""]
    while stack:
        rel = stack.pop()
        if rel in skip:
            continue
        try:
            entries = sorted(os.scandir(os.path.join(root, rel) if rel else root),
                             key=lambda e: e.name)
        except OSError as exc:
            problems.append(f"{printable(rel or '/')}: cannot read: {exc.strerror}")
            continue
        for entry in entries:
            path = f"{rel}/{entry.name}" if rel else entry.name
            try:
                entry.name.encode("utf-8")
            except UnicodeEncodeError:
                problems.append(f"{printable(path)}: file name is not valid UTF-8")
                continue
            st = entry.stat(follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                if path.count("/") + 1 >= MAX_DEPTH:
                    problems.append(f"{printable(path)}: directories nested deeper than "
                                    f"{MAX_DEPTH} levels")
                    continue
                tree.dirs[mapped(path)] = _dirmeta(entry.path)
                stack.append(path)
            elif stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode):
                tree.files.append((mapped(path), path, st))
            else:
                problems.append(f"{printable(path)}: special file (device node, socket or "
                                "fifo)")
        if len(problems) >= MAX_PROBLEMS:
            break
    if problems:
        shown = problems[:MAX_PROBLEMS]
        raise InputError(
            f"{printable(root)}: cannot commit this tree: {shown[0]}"
            + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""),
            details="\n".join(shown) if len(shown) > 1 else None,
            resolution="atoll images hold UTF-8 names, regular files, symlinks and "
            "directories; nothing was written")
    return tree

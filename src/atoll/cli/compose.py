"""`atoll compose TREEFILE --repo DIR`."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from atoll.cli import emit
from atoll.compose.build import compose
from atoll.compose.debcache import DEFAULT_DIR, DEFAULT_MAX_BYTES, DebCache
from atoll.compose.treefile import load_treefile, security_only
from atoll.core.errors import InputError
from atoll.store.repo import Repo


def _deb_cache(args: argparse.Namespace) -> DebCache | None:
    if args.no_deb_cache:
        if args.deb_cache is not None or args.deb_cache_size is not None:
            raise InputError("--no-deb-cache cannot be combined with --deb-cache or "
                             "--deb-cache-size")
        return None
    from atoll.boot.image import parse_size

    size = DEFAULT_MAX_BYTES if args.deb_cache_size is None else parse_size(args.deb_cache_size)
    return DebCache(args.deb_cache or DEFAULT_DIR, size)


def cmd_compose(args: argparse.Namespace) -> None:
    tf = load_treefile(args.treefile)
    if args.security_only:
        tf = security_only(tf)
    cache = _deb_cache(args)  # checked before anything is created
    repo = Repo.create(args.repo)
    res = compose(tf, args.treefile.parent, repo, ref=args.ref, deb_cache=cache)
    data = {"commit": res.commit, "ref": res.ref, "changed": res.changed,
            "seconds": round(res.seconds, 1), "packages": res.packages, "version": tf.version}
    emit(args, data, f"{res.commit}  {res.ref}  version {tf.version}, {res.packages} packages, "
         f"{res.seconds:.1f}s" + ("" if res.changed else " (unchanged)"))


def cmd_validate(args: argparse.Namespace) -> None:
    tf = load_treefile(args.treefile)
    emit(args, tf.model_dump(mode="json"), f"{args.treefile}: ok ({tf.ref} {tf.version})")


def register(sub: Any, common: Callable[[argparse.ArgumentParser], None]) -> None:
    p = sub.add_parser("compose", help="compose a Debian image from a treefile into a commit")
    p.add_argument("treefile", type=Path, help="the treefile (YAML): suite, packages, features, "
                   "files")
    p.add_argument("--repo", type=Path, required=True,
                   help="repository to commit into (created if missing)")
    p.add_argument("--ref", help="override the treefile's ref")
    p.add_argument("--deb-cache", type=Path, metavar="DIR",
                   help=f"keep downloaded .deb files there and reuse them, verified against "
                   f"the signed archive index (default {DEFAULT_DIR})")
    p.add_argument("--deb-cache-size", metavar="SIZE",
                   help=f"trim the cache to this size after composing, least recently used "
                   f"first (default {DEFAULT_MAX_BYTES >> 30}G; 0: no limit)")
    p.add_argument("--no-deb-cache", action="store_true",
                   help="download every package, keep none")
    p.add_argument("--security-only", action="store_true",
                   help="compose from the point release and <suite>-security only, without "
                   "<suite>-updates, whatever the treefile says (docs/security.md)")
    common(p)
    p.set_defaults(handler=cmd_compose)
    v = sub.add_parser("treefile-validate", help="check a treefile without composing")
    v.add_argument("treefile", type=Path, help="the treefile (YAML) to check")
    common(v)
    v.set_defaults(handler=cmd_validate)

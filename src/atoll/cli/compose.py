"""`atoll compose TREEFILE --repo DIR`."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from atoll.cli import emit
from atoll.compose.build import compose
from atoll.compose.treefile import load_treefile
from atoll.store.repo import Repo


def cmd_compose(args: argparse.Namespace) -> None:
    tf = load_treefile(args.treefile)
    repo = Repo.create(args.repo)
    res = compose(tf, args.treefile.parent, repo, ref=args.ref)
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
    common(p)
    p.set_defaults(handler=cmd_compose)
    v = sub.add_parser("treefile-validate", help="check a treefile without composing")
    v.add_argument("treefile", type=Path, help="the treefile (YAML) to check")
    common(v)
    v.set_defaults(handler=cmd_validate)

"""``atoll keys init|rotate``, ``atoll publish``, ``atoll timestamp``: the publishing side."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from atoll.cli import emit
from atoll.core.errors import InputError

__all__ = ["register"]


def _keys_init(args: argparse.Namespace) -> int:
    from atoll.repo.keys import KeyDir
    from atoll.repo.publish import init_repository
    from atoll.repo.storage import DirStorage

    keys = KeyDir(args.keys)
    policy = init_repository(DirStorage(args.to), keys, threshold=args.threshold,
                             online_threshold=args.online_threshold, expires=args.expires)
    data = {"keys": str(args.keys), "to": str(args.to), "policy": policy.to_json(),
            "root_json": str(Path(args.to) / "metadata" / "root.json")}
    emit(args, data, f"keys in {args.keys} (move {args.keys}/root/ offline); "
                     f"repository metadata in {args.to}/metadata; "
                     f"hosts trust {data['root_json']}")
    return 0


def _keys_rotate(args: argparse.Namespace) -> int:
    from atoll.repo.keys import KeyDir
    from atoll.repo.publish import rotate_keys
    from atoll.repo.storage import DirStorage

    out = rotate_keys(DirStorage(args.to), KeyDir(args.keys), args.role,
                      count=args.count, threshold=args.threshold, expires=args.expires)
    emit(args, out, f"{args.role}: {len(out['new'])} new key(s), root version "
                    f"{out['root_version']}; revoked {', '.join(k[:12] for k in out['revoked'])}")
    return 0


def _publish(args: argparse.Namespace) -> int:
    from atoll.repo.keys import KeyDir
    from atoll.repo.publish import publish
    from atoll.repo.storage import DirStorage
    from atoll.store.repo import Repo

    res = publish(Repo.open(args.repo), args.ref, DirStorage(args.to), KeyDir(args.keys),
                  deltas=args.deltas, expires=args.expires, level=args.level,
                  commit=args.commit, keep=args.keep, security_tracker=args.security_tracker,
                  advisory_lists=_advisory_lists(args))
    emit(args, res.to_json(), lambda: (
        f"published {args.ref} = {res.commit[:12]} (publication {res.sequence}, targets "
        f"v{res.targets_version}, {len(res.deltas)} delta(s); {len(res.releases)} signed "
        f"version(s) kept, {len(res.pruned)} target(s) pruned)" if res.changed else
        f"{args.ref} = {res.commit[:12]} is already published"))
    return 0


def _advisory_lists(args: argparse.Namespace) -> list[Path]:
    return [p for p in (args.dsa_list, args.dla_list) if p is not None]


def _timestamp(args: argparse.Namespace) -> int:
    from atoll.repo.keys import KeyDir
    from atoll.repo.publish import refresh_repository
    from atoll.repo.storage import DirStorage

    cves: dict[str, str] = {}
    lists = _advisory_lists(args)
    if lists and args.security_tracker is None:
        raise InputError("--dsa-list/--dla-list need --security-tracker",
                         resolution="the reports are re-computed from the tracker's JSON; "
                         "the lists attach advisories to its CVEs")
    if args.security_tracker is not None:  # CVE reports first: then everything is re-signed
        from atoll.security.advisories import load_advisories
        from atoll.security.refresh import refresh_reports
        from atoll.security.tracker import load_tracker

        tracker = load_tracker(args.security_tracker)
        advisories = load_advisories(lists) if lists else None  # both read before signing
        cves = refresh_reports(DirStorage(args.to), KeyDir(args.keys), tracker,
                               expires=args.expires, advisories=advisories)
    out = refresh_repository(DirStorage(args.to), KeyDir(args.keys), expires=args.expires)
    if args.security_tracker is not None:
        out["cve_reports"] = cves
    emit(args, out, lambda: "re-signed " + ", ".join(
        f"{role} v{v}" for role, v in sorted(out["resigned"].items()))
        + "; expires " + ", ".join(f"{r} {t}" for r, t in sorted(out["expires"].items()))
        + (f"; {len(cves)} CVE report(s) re-computed" if args.security_tracker else ""))
    return 0


def _lists(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dsa-list", type=Path, metavar="FILE",
                   help="the tracker's DSA list (security-tracker data/DSA/list): each CVE "
                   "of the report names the advisories that fix it (needs --security-tracker)")
    p.add_argument("--dla-list", type=Path, metavar="FILE",
                   help="the tracker's DLA list (data/DLA/list), the same for LTS advisories")


def register(sub: Any, common: Callable[[argparse.ArgumentParser], None]) -> None:
    def expires(p: argparse.ArgumentParser) -> None:
        p.add_argument("--expires", action="append", default=[], metavar="ROLE=DURATION",
                       help="expiry of a role's metadata, e.g. timestamp=1d, targets=90d")

    keys = sub.add_parser("keys", help="signing keys of an update repository")
    ksub = keys.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    p = ksub.add_parser("init", help="create keys and version 1 of the TUF metadata")
    p.add_argument("keys", type=Path, help="key directory (root/ is the offline part)")
    p.add_argument("--to", type=Path, default=Path("www"), help="repository directory (www)")
    p.add_argument("--threshold", type=int, default=1, help="root keys and root threshold")
    p.add_argument("--online-threshold", type=int, default=1,
                   help="keys and threshold of targets, snapshot and timestamp")
    expires(p)
    common(p)
    p.set_defaults(handler=_keys_init)
    p = ksub.add_parser("rotate", help="replace the keys of a role (needs the root keys)")
    p.add_argument("role", choices=["root", "targets", "snapshot", "timestamp"],
                   help="the role whose keys are replaced")
    p.add_argument("--keys", type=Path, required=True,
                   help="key directory, with its offline root/ part mounted")
    p.add_argument("--to", type=Path, required=True, help="repository directory (www)")
    p.add_argument("--count", type=int, help="how many new keys (default: the threshold)")
    p.add_argument("--threshold", type=int, help="new threshold for the role")
    expires(p)
    common(p)
    p.set_defaults(handler=_keys_rotate)

    p = sub.add_parser("publish", help="publish a commit (pack, deltas, manifest, SBOM) via TUF")
    p.add_argument("ref", help="ref (channel) to publish, e.g. site/base")
    p.add_argument("--repo", type=Path, required=True, help="the atoll store holding the ref")
    p.add_argument("--commit", help="publish this commit on the channel (default: the ref's)")
    p.add_argument("--to", type=Path, required=True, help="repository directory (www)")
    p.add_argument("--keys", type=Path, required=True, help="key directory")
    p.add_argument("--deltas", type=int, default=3,
                   help="static deltas from the last N published commits (default 3)")
    p.add_argument("--keep", type=int, default=5, metavar="N",
                   help="signed versions the channel keeps, the head included (default 5); "
                   "older ones are pruned from the metadata and the directory")
    p.add_argument("--level", type=int, choices=range(1, 23), metavar="1-22",
                   help="zstd level of packs and deltas (default: by kind: deltas 19, packs "
                   "18, files of 16 MiB or more 17); content compressed already is stored "
                   "at level 1, and what an earlier publish compressed is reused from "
                   "REPO/cache/publish")
    p.add_argument("--security-tracker", type=Path, metavar="FILE",
                   help="the Debian security tracker's JSON (https://security-tracker.debian."
                   "org/tracker/data/json) for the image's open CVEs in its signed CVE report "
                   "(without it: only the CVEs the changelogs say the update fixes)")
    _lists(p)
    expires(p)
    common(p)
    p.set_defaults(handler=_publish)

    p = sub.add_parser("timestamp", help="keep the repository fresh: re-sign the timestamp, "
                       "and snapshot and targets near expiry (run from cron, e.g. hourly)")
    p.add_argument("--to", type=Path, required=True, help="repository directory (www)")
    p.add_argument("--keys", type=Path, required=True,
                   help="key directory (its online/ part is enough)")
    p.add_argument("--security-tracker", type=Path, metavar="FILE",
                   help="re-compute every published CVE report from this (newer) Debian "
                   "security tracker JSON, with a new expiry (docs/security.md)")
    _lists(p)
    expires(p)
    common(p)
    p.set_defaults(handler=_timestamp)

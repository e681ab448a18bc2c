"""`atoll hotfix add | list | remove`: one package over the base commit (docs/hotfix.md)."""

from __future__ import annotations

import argparse
import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from atoll.cli import emit
from atoll.core.errors import InputError
from atoll.core.text import printable


def _expires(text: str | None) -> dt.datetime | None:
    if text is None:
        return None
    from atoll.deploy.hotfixplan import parse_time

    try:
        return parse_time(text)
    except ValueError:
        raise InputError(f"--expires {printable(text)!r}: not a date or time",
                         resolution="e.g. 2027-01-31 or 2027-01-31T12:00Z (UTC)") from None


def cmd_add(args: argparse.Namespace) -> None:
    from atoll.deploy.hotfix import add
    from atoll.deploy.sysroot import Sysroot

    spec: str = args.package
    from_archive = "=" in spec and not spec.endswith(".deb")
    if from_archive and args.sha256 is not None:
        raise InputError("--sha256 is for a local .deb: a package from the archive is "
                         "verified by apt against the signed Release files")
    if not from_archive and args.sha256 is None:
        raise InputError("a local .deb needs --sha256 HEX (the digest you trust, from where "
                         "you checked the package)")
    if args.expires is not None and not args.pin:
        raise InputError("--expires needs --pin")
    expires = _expires(args.expires)
    sr = Sysroot(args.sysroot)
    kind: Literal["fast-track", "pin"] = "pin" if args.pin else "fast-track"
    if from_archive:
        import tempfile

        from atoll.deploy.hotfix import fetch_from_archive

        name, _, version = spec.partition("=")
        sr.check()
        cache = sr.atoll / "cache"
        cache.mkdir(mode=0o700, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="hotfix-", dir=cache) as tmp:
            deb, sha = fetch_from_archive(sr, name, version, Path(tmp))
            res = add(sr, deb, sha, kind=kind, reason=args.reason or "", expires=expires)
    else:
        res = add(sr, Path(spec), args.sha256, kind=kind, reason=args.reason or "",
                  expires=expires)
    assert res.hotfix is not None
    h = res.hotfix
    out = {"hotfix": h.to_json(), "deployment": res.deployment.to_json(), "base": res.base,
           "carried": [c.name for c in res.carried], "changed": True}
    emit(args, out, f"hotfix {printable(h.name)} {printable(h.version)} ({h.kind}) on base "
         f"{printable(res.deployment.version or res.base[:12])}: {res.deployment.id} boots next"
         + (f"; carries {', '.join(printable(c.name) for c in res.carried)}"
            if len(res.carried) > 1 else "")
         + "\nreboot into it when it suits you; `atoll rollback` goes back")


def cmd_remove(args: argparse.Namespace) -> None:
    from atoll.deploy.hotfix import remove
    from atoll.deploy.sysroot import Sysroot

    res = remove(Sysroot(args.sysroot), args.name)
    assert res.hotfix is not None
    out = {"removed": res.hotfix.to_json(), "deployment": res.deployment.to_json(),
           "base": res.base, "carried": [c.name for c in res.carried], "changed": True}
    left = (f"base + {', '.join(printable(c.name) for c in res.carried)}" if res.carried
            else "the base")
    emit(args, out, f"removed hotfix {printable(args.name)}: {left} "
         f"({res.deployment.id}) boots next")


def cmd_list(args: argparse.Namespace) -> None:
    from atoll.deploy.hotfix import list_view
    from atoll.deploy.sysroot import Sysroot

    rows = list_view(Sysroot(args.sysroot))

    def human() -> str:
        if not rows:
            return "no hotfixes"
        lines = []
        for r in rows:
            where = [w for w, on in (("booted", r["in_booted"]), ("next boot", r["in_next"]))
                     if on]
            lines.append(
                f"{printable(r['name'])} {printable(r['version'])}  {r['kind']}  {r['status']}"
                + (f"  expires {r['expires']}" if r["expires"] else "")
                + f"  added {r['added']}"
                + (f"  in {' and '.join(where)}" if where else "  in no deployment"))
            lines.append(f"    {printable(r['why'])}")
        return "\n".join(lines)

    emit(args, {"hotfixes": rows}, human)


def register(sub: Any, common: Callable[[argparse.ArgumentParser], None]) -> None:
    p = sub.add_parser("hotfix", help="one package over the base image, offline and confined")
    hs = p.add_subparsers(dest="hotfix_command", metavar="ACTION", required=True)
    a = hs.add_parser("add", help="stage the base + this package as the next boot")
    a.add_argument("package", metavar="PKG.deb | PKG=VERSION",
                   help="a local .deb (with --sha256), or PKG=VERSION from the archive the "
                   "host's apt sources name (verified by apt's signed Release files)")
    a.add_argument("--sha256", metavar="HEX", help="the .deb's sha256 (required for a file)")
    a.add_argument("--reason", help="why (shown in `hotfix list`)")
    a.add_argument("--pin", action="store_true",
                   help="keep it on later bases until removed or expired (default: "
                   "fast-track, dropped when the base ships this version or newer)")
    a.add_argument("--expires", metavar="DATE", help="with --pin: drop it at the first "
                   "update after DATE (UTC)")
    common(a)
    a.set_defaults(handler=cmd_add)
    ls = hs.add_parser("list", help="active and inactive hotfixes, and why")
    common(ls)
    ls.set_defaults(handler=cmd_list)
    r = hs.add_parser("remove", help="stage the base + the remaining hotfixes")
    r.add_argument("name", metavar="PKG", help="the package's name")
    common(r)
    r.set_defaults(handler=cmd_remove)

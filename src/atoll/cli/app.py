"""``atoll app ...``: install and run confined database apps (thin over ``atoll.apps``)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from atoll import apps
from atoll.apps import image as appimage
from atoll.apps.secrets import parse_secret_args
from atoll.apps.spec import BackupMethod
from atoll.cli import emit
from atoll.core.errors import InputError, RuntimeBackendError

__all__ = ["register"]

Common = Callable[[argparse.ArgumentParser], None]


def _names(args: argparse.Namespace) -> list[str]:
    if getattr(args, "all", False):
        return [a.name for a in apps.installed_apps(args.sysroot)]
    if not args.app:
        raise InputError("name an app or pass --all")
    return [args.app]


def _install(args: argparse.Namespace) -> int:
    secrets = parse_secret_args(args.secret or [])
    inst = apps.install(
        args.sysroot, args.app, spec_file=args.spec, secrets=secrets, start_app=not args.no_start
    )
    st = apps.status(args.sysroot, inst.name)
    emit(args, st, f"installed {inst.name} ({inst.spec.image})")
    return 0


def _validate(args: argparse.Namespace) -> int:
    """Validate an app spec without installing anything (no Docker needed)."""
    from atoll.apps.spec import load_app_spec

    spec, _ = load_app_spec(args.spec_file)
    data = {"file": str(args.spec_file), "valid": True, "image": spec.image,
            "role": str(spec.role.value if hasattr(spec.role, "value") else spec.role),
            "secrets": list(spec.secrets)}
    emit(args, data, f"{args.spec_file}: valid ({data['role']} app, image {spec.image})")
    return 0


def _list(args: argparse.Namespace) -> int:
    rows = []
    for inst in apps.installed_apps(args.sysroot):
        try:
            st = apps.status(args.sysroot, inst.name)
            state = (st["container"] or {}).get("status", "missing")
        except RuntimeBackendError:
            state = "unknown"
        rows.append(
            {
                "app": inst.name,
                "image": inst.spec.image,
                "role": inst.spec.role.value,
                "status": state,
            }
        )
    emit(
        args,
        rows,
        lambda: (
            "\n".join(f"{r['app']:<20} {r['status']:<10} {r['role']:<9} {r['image']}" for r in rows)
            or "no apps installed"
        ),
    )
    return 0


def _status(args: argparse.Namespace) -> int:
    st = apps.status(args.sysroot, args.app)

    def human() -> str:
        c = st["container"] or {}
        lines = [
            f"app:       {st['app']} ({st['role']})",
            f"image:     {st['image']}",
            f"container: {c.get('status', 'missing')}"
            + (f" ({c['health']})" if c.get("health") else ""),
            f"volumes:   {', '.join(f'{k}={v}' for k, v in st['volumes'].items())}",
            f"secrets:   {', '.join(st['secrets']) or '-'}",
            f"backups:   {st['backups']['count']} (latest {st['backups']['latest']})",
        ]
        return "\n".join(lines)

    emit(args, st, human)
    return 0


def _sql(args: argparse.Namespace) -> int:
    out = apps.exec_sql(args.app, args.sql, sysroot=args.sysroot, as_root=args.root)
    rows = [line.split("\t") for line in out.splitlines()]
    emit(args, {"rows": rows}, out.rstrip("\n"))
    return 0


def _logs(args: argparse.Namespace) -> int:
    data = apps.logs(args.sysroot, args.app, tail=args.tail)
    sys.stdout.buffer.write(data)
    return 0


def _start(args: argparse.Namespace) -> int:
    out = {name: round(apps.start(args.sysroot, name), 3) for name in _names(args)}
    emit(
        args,
        {"started": out},
        "\n".join(f"started {n} (ready in {s:.2f}s)" for n, s in out.items()),
    )
    return 0


def _stop(args: argparse.Namespace) -> int:
    names = _names(args)
    for name in names:
        apps.stop(args.sysroot, name, timeout=args.timeout)
    emit(args, {"stopped": names}, "\n".join(f"stopped {n}" for n in names))
    return 0


def _restart(args: argparse.Namespace) -> int:
    secs = apps.restart(args.sysroot, args.app)
    emit(
        args,
        {"restarted": args.app, "ready_seconds": round(secs, 3)},
        f"restarted {args.app} (ready in {secs:.2f}s)",
    )
    return 0


def _remove(args: argparse.Namespace) -> int:
    apps.remove(args.sysroot, args.app, keep_data=args.keep_data)
    emit(
        args,
        {"removed": args.app, "kept_data": args.keep_data},
        f"removed {args.app}" + (" (data and secrets kept)" if args.keep_data else ""),
    )
    return 0


def _backup(args: argparse.Namespace) -> int:
    method = BackupMethod(args.method) if args.method else None
    m = apps.backup(args.sysroot, args.app, method=method)
    emit(args, m, f"backup {m['id']} of {args.app} ({m['method']}, {m['seconds']}s)")
    return 0


def _restore(args: argparse.Namespace) -> int:
    m = apps.restore(args.sysroot, args.app, args.backup_id)
    emit(args, {"restored": args.app, "backup": m}, f"restored {args.app} from backup {m['id']}")
    return 0


def _check(args: argparse.Namespace) -> int:
    r = apps.check_database(args.sysroot, args.app, timeout=args.timeout)
    emit(
        args,
        {"app": r.app, "ok": r.ok, "seconds": round(r.seconds, 3), "message": r.message},
        f"{'ok' if r.ok else 'FAILED'}: {r.app}: {r.message}",
    )
    return 0 if r.ok else 1


def _image_build(args: argparse.Namespace) -> int:
    info: dict[str, Any] = appimage.build_image(
        args.name, suite=args.suite, out=args.out, tag=args.tag, mirror=args.mirror
    )
    emit(args, info, f"built {info['tag']} into {info['out']} (load: docker load -i {args.out})")
    return 0


def register(sub: Any, common: Common) -> None:
    """Add ``atoll app ...``."""
    app = sub.add_parser("app", help="install and run confined database apps")
    asub = app.add_subparsers(dest="app_command", metavar="SUBCOMMAND")
    asub.required = True

    def cmd(
        name: str, fn: Callable[[argparse.Namespace], int], help: str, app_arg: bool | str = True
    ) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = asub.add_parser(name, help=help)
        common(p)
        if app_arg == "optional":
            p.add_argument("app", nargs="?", help="the app's name")
            p.add_argument("--all", action="store_true", help="every installed app")
        elif app_arg:
            p.add_argument("app", help="the app's name")
        p.set_defaults(handler=fn)
        return p

    p = cmd("install", _install, "install an app (a built-in spec, or --spec FILE) and start it")
    p.add_argument("--spec", type=Path, help="the app spec (YAML); default: the built-in one")
    p.add_argument(
        "--secret",
        action="append",
        metavar="KEY=@FILE",
        help="a secret's value from a file (repeatable); missing ones are generated",
    )
    p.add_argument("--no-start", action="store_true", help="create, but do not start")
    p = cmd("validate", _validate, "check an app spec (file:line: field: problem); installs "
            "nothing", app_arg=False)
    p.add_argument("spec_file", type=Path, metavar="SPEC", help="the app spec (YAML)")
    cmd("list", _list, "installed apps", app_arg=False)
    cmd("status", _status, "an app's state (never its secrets)")
    p = cmd("logs", _logs, "an app's container output")
    p.add_argument("--tail", type=int, default=200, help="last N lines (default 200)")
    cmd("start", _start, "start an app and wait until it answers", app_arg="optional")
    p = cmd("stop", _stop, "stop an app cleanly", app_arg="optional")
    p.add_argument(
        "--timeout",
        type=int,
        default=None,
        help="seconds before SIGKILL (default: the spec's stop_grace_period)",
    )
    cmd("restart", _restart, "stop and start an app")
    p = cmd("remove", _remove, "remove an app (its data too, unless --keep-data)")
    p.add_argument("--keep-data", action="store_true", help="keep volumes and secrets")
    p = cmd("backup", _backup, "take a consistent backup now (retention applies)")
    p.add_argument(
        "--method",
        choices=[m.value for m in BackupMethod],
        help="override the spec's backup method",
    )
    p = cmd("restore", _restore, "restore a backup (default: the newest)")
    p.add_argument("backup_id", nargs="?", help="the backup's id (see `atoll app status`)")
    p = cmd("sql", _sql, "run SQL in a database app (as its monitoring user, or --root)")
    p.add_argument("sql", help="the statement(s); rows are printed tab-separated")
    p.add_argument("--root", action="store_true", help="as the database's root user")
    p = cmd("check", _check, "health check: the database accepts a write and reads it back")
    p.add_argument("--timeout", type=float, default=120, help="seconds to wait for the database")

    img = asub.add_parser("image", help="build app images from Debian packages")
    isub = img.add_subparsers(dest="image_command", metavar="SUBCOMMAND")
    isub.required = True
    b = isub.add_parser("build", help="build a `docker load`-able image tar")
    common(b)
    b.add_argument("name", choices=sorted(appimage.IMAGES), help="the image recipe")
    b.add_argument("--suite", default="bookworm", help="Debian suite (default bookworm)")
    b.add_argument("--out", type=Path, required=True, help="the tar to write")
    b.add_argument("--tag", help="image tag (default atoll/<name>:<suite>)")
    b.add_argument("--mirror", default=appimage.DEFAULT_MIRROR, help="Debian mirror URL")
    b.set_defaults(handler=_image_build)

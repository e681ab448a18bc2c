"""`atoll host-config validate|apply`, `atoll provision --config FILE --seed OUT`."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from atoll.cli import emit
from atoll.core.errors import InputError


def cmd_validate(args: argparse.Namespace) -> None:
    from atoll.provision.config import load_host_config

    cfg = load_host_config(args.config)
    emit(args, cfg.model_dump(mode="json"),
         f"{args.config}: ok (host {cfg.hostname}, {len(cfg.users)} user(s), "
         f"{len(cfg.apps)} app(s))")


def cmd_apply(args: argparse.Namespace) -> None:
    from atoll.provision.apply import PHASES, apply_config
    from atoll.provision.config import load_host_config
    from atoll.provision.firstboot import first_boot

    root = args.root or args.sysroot
    phases = tuple(p for p in PHASES if args.phase in (None, p) and not (args.no_apps and
                                                                         p == "apps"))
    if args.first_boot:
        out = first_boot(root, args.sysroot, phases=phases)
    else:
        if args.config is None:
            raise InputError("give a host config file, or --first-boot")
        cfg = load_host_config(args.config)
        out = apply_config(cfg, args.config, root, args.sysroot, phases=phases)
    changes = out.get("changes", [])
    emit(args, out, lambda: "\n".join(changes) if changes else
         f"nothing to change ({out.get('result', 'applied')})")


def cmd_seed(args: argparse.Namespace) -> None:
    from atoll.provision.seed import build_seed

    files = build_seed(args.config, args.seed)
    emit(args, {"seed": str(args.seed), "files": files},
         f"seed {args.seed} (label CIDATA): " + ", ".join(sorted(files)))


def register(sub: Any, common: Callable[[argparse.ArgumentParser], None]) -> None:
    p = sub.add_parser("host-config", help="validate or apply a host config")
    ps = p.add_subparsers(dest="host_config_command", metavar="ACTION", required=True)
    s = ps.add_parser("validate", help="check a host config (file:line: field: problem)")
    s.add_argument("config", type=Path, help="the host config (YAML)")
    common(s)
    s.set_defaults(handler=cmd_validate)
    s = ps.add_parser("apply", help="apply a host config now (idempotent)")
    s.add_argument("config", type=Path, nargs="?",
                   help="the host config (YAML); none with --first-boot")
    s.add_argument("--root", type=Path, help="apply into this root (default: the sysroot)")
    s.add_argument("--first-boot", action="store_true",
                   help="find the config (seed device, else baked) and apply it once")
    s.add_argument("--no-apps", action="store_true", help="do not install apps")
    s.add_argument("--phase", choices=("system", "apps"), default=None,
                   help="only this phase (first boot runs system before the network, "
                        "apps after Docker)")
    common(s)
    s.set_defaults(handler=cmd_apply)
    s = sub.add_parser("provision", help="write a NoCloud-style seed image carrying a config")
    s.add_argument("--config", type=Path, required=True,
                   help="the host config (YAML) to carry; validated first")
    s.add_argument("--seed", type=Path, required=True, help="output image (vfat, label CIDATA)")
    common(s)
    s.set_defaults(handler=cmd_seed)

"""``atoll cve list``: open CVEs of the booted deployment and what an update fixes (thin;
the data and rules are atoll.security's, docs/security.md)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from atoll.cli import emit
from atoll.core.errors import InputError

__all__ = ["register"]


def _age(seconds: int) -> str:
    if seconds < 3600:
        return f"{max(0, seconds) // 60} min"
    if seconds < 2 * 86400:
        return f"{seconds // 3600} h"
    return f"{seconds // 86400} days"


def _counts(counts: dict[str, int]) -> str:
    parts = [f"{n} {u}" for u, n in reversed(counts.items()) if n]
    return ", ".join(parts) if parts else "none"


def _advisories(c: dict[str, Any]) -> str:
    """" (DSA-5558-1, DLA-3672-1)": the advisories that fix the CVE, when published."""
    ids = c.get("advisories") or []
    return f" ({', '.join(ids)})" if ids else ""


def _section(title: str, s: dict[str, Any] | None, *, fixes: bool) -> list[str]:
    if s is None:
        return [f"{title}: none"]
    head = f"{title} {s['commit'][:12]}"
    if not s["report"]:
        return [f"{head}: no CVE report (run `atoll update check`; a repository published "
                "without CVE reports has none)"]
    stale = f"; STALE since {s['expires']}" if s["stale"] else ""
    opened = (f"{len({c['cve'] for c in s['open']})} open CVEs ({_counts(s['open_counts'])})"
              f"{s['open_note']}"
              if s["open_known"] else "open CVEs unknown (published without tracker data)")
    lines = [f"{head}: {opened}; data {_age(s['age_seconds'])} old "
             f"(generated {s['generated']}){stale}"]
    lines += _derived_lines(s.get("derived"))
    for c in s["open"] or []:
        fix = f"fixed in {c['fixed_version']}" if c.get("fixed_version") else "no fix yet"
        lines.append(f"  {c['cve']:<16} {c.get('urgency') or '?':<17} {c['source']} "
                     f"{c['source_version']}  {fix}{_advisories(c)}")
    if fixes:
        lines.append(f"  {s['summary']}")
        for c in s["fixes"]:
            lines.append(f"  fixes {c['cve']:<16} {c.get('urgency') or '?':<17} {c['source']} "
                         f"{c.get('version') or ''}  [{', '.join(c.get('from', []))}]"
                         f"{_advisories(c)}")
        for m in s.get("fixes_missing", []):
            lines.append(f"  (unknown from changelogs: {m})")
    return lines


def _derived_lines(d: dict[str, Any] | None) -> list[str]:
    """A hotfix deployment: where its CVE facts come from, and what its packages close."""
    if d is None:
        return []
    pkgs = ", ".join(f"{h['name']} {h['version']} ({h['kind']})" for h in d["hotfixes"])
    lines = [f"  hotfixes {pkgs} on base {d['base_version'] or ''} ({d['base'][:12]}): "
             f"CVE facts {d['note']}"]
    for c in d["closed"]:
        now = f"{c['source']} {c['version']}" if c["version"] else f"{c['source']} removed"
        lines.append(f"  closed by hotfix {c['cve']:<16} {c.get('urgency') or '?':<17} {now}"
                     + (f"  (fixed in {c['fixed_version']})" if c.get("fixed_version") else ""))
    return lines


def _policy(sysroot: Any) -> Any | None:
    """The host's update policy (None: policy.json does not read; atolld reports that)."""
    from atoll.agent.state import AgentFiles
    from atoll.core.errors import DamagedStateError

    try:
        return AgentFiles(sysroot).policy()
    except DamagedStateError:
        return None


def _policy_lines(view: dict[str, Any]) -> list[str]:
    pol = view.get("policy")
    if pol is None:
        return []
    head = f"policy security-only ({pol['security_threshold']} or above)"
    if pol["qualifies"] is None:
        return [f"{head}: the update has no CVE report: it waits for the operator"]
    if not pol["qualifies"]:
        return [f"{head}: the update fixes no open CVE that high: it waits for the operator"]
    return [f"{head}: the update is taken (fixes {', '.join(pol['qualifies'])})"]


def cmd_list(args: argparse.Namespace) -> None:
    from atoll.security import host
    from atoll.security.urgency import validate

    policy = _policy(args.sysroot)
    unassigned = (validate(args.unassigned, "--unassigned") if args.unassigned is not None
                  else policy.unassigned_as if policy is not None else "medium")
    now = datetime.now(UTC)
    if args.image:
        from atoll.deploy.sysroot import Sysroot

        commit = Sysroot(args.sysroot).repo.resolve(args.image)
        s = host.section(args.sysroot, commit, now, unassigned=unassigned, fixes=True)
        assert s is not None
        if not s["report"]:
            raise InputError(f"no CVE report kept for {args.image} ({commit[:12]})",
                             resolution="`atoll update check` keeps the report of the update "
                             "it finds and of the booted commit")
        emit(args, {"image": s}, lambda: "\n".join(_section(f"image {args.image}", s,
                                                            fixes=True)))
        return
    view = host.cve_view(args.sysroot, now, unassigned=unassigned)
    upd = view["update"]
    view["policy"] = None
    if policy is not None and policy.updates == "security-only" and upd is not None:
        fixes = host.update_fixes(args.sysroot, host.policy_booted(view["booted"]),
                                  upd["commit"], policy.security_threshold,
                                  unassigned=policy.unassigned_as)
        view["policy"] = {"updates": policy.updates,  # what atolld decides (its own rules)
                          "security_threshold": policy.security_threshold,
                          "unassigned_as": policy.unassigned_as,
                          "qualifies": None if fixes is None else list(fixes)}
    title = f"update ({upd['state']})" if upd else "update"
    emit(args, view, lambda: "\n".join([*_section("booted", view["booted"], fixes=False),
                                        *_section(title, upd, fixes=True),
                                        *_policy_lines(view)]))


def register(sub: Any, common: Callable[[argparse.ArgumentParser], None]) -> None:
    p = sub.add_parser("cve", help="CVEs of the booted deployment and of an update")
    csub = p.add_subparsers(dest="cve_command", metavar="ACTION", required=True)
    p = csub.add_parser("list", help="open CVEs (urgency, fixed version) and what the update "
                        "fixes, from the signed CVE reports the host downloaded",
                        description="Open CVEs of the booted deployment (from the Debian "
                        "security tracker's data, as published and signed with the image) and "
                        "the CVEs the pending, prepared or downloaded update fixes (from Debian "
                        "changelogs and the tracker); each fact says where it came from, and "
                        "the report's age is shown (docs/security.md).")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--host", action="store_true",
                       help="the booted deployment and the update (the default)")
    which.add_argument("--image", metavar="REF",
                       help="one commit or ref of the host's store instead")
    p.add_argument("--unassigned", metavar="URGENCY",
                   help="the urgency 'not yet assigned' counts as (default: the policy's "
                   "unassigned_as, medium unless set)")
    common(p)
    p.set_defaults(handler=cmd_list)

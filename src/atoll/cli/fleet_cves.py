"""``atoll fleet cves``: CVEs across the fleet, from the hosts' last check-ins (thin: the
summary is atoll.control.cves'; docs/control-plane.md, "CVEs")."""

from __future__ import annotations

import argparse
from typing import Any

from atoll.cli import emit
from atoll.cli.fleet import Common, _add, _client, _pairs
from atoll.core.text import printable

__all__ = ["counts_text", "register_fleet"]

_WORDS = ("high", "medium", "low", "unimportant", "not yet assigned")


def counts_text(counts: dict[str, int] | None) -> str:
    """"2 high, 5 low" (highest first; "none"; "unknown" for None)."""
    if counts is None:
        return "unknown"
    parts = [f"{counts.get(u, 0)} {u}" for u in _WORDS if counts.get(u)]
    return ", ".join(parts) if parts else "none"


def _human(doc: dict[str, Any]) -> str:
    lines = [f"{doc['hosts']} host(s), {doc['with_data']} with tracker data"]
    lines.append("hosts exposed: " + ", ".join(f"{doc['exposed'][u]} {u}" for u in _WORDS))
    lines.append("updates that fix: " + ", ".join(f"{doc['update_fixes'][u]} {u}"
                                                   for u in _WORDS))
    if doc["top"]:
        lines.append(f"{'CVE':18} {'URGENCY':17} {'HOSTS':>5} {'FIX KNOWN':>9}")
        for c in doc["top"]:
            lines.append(f"{printable(c['cve']):18} {c['urgency']:17} {c['hosts']:>5} "
                         f"{c['fixed']:>9}")
    for s in doc["stale"]:
        lines.append(f"stale: {printable(s['name'])} ({printable(s['customer'])}): data "
                     f"expired {printable(str(s['expires']))}")
    for s in doc["without_data"]:
        lines.append(f"no tracker data: {printable(s['name'])} ({printable(s['customer'])}): "
                     f"{s['source']}")
    return "\n".join(lines)


def _cves(args: argparse.Namespace) -> int:
    doc = _client(args).call("GET", "/v1/cves", query={
        "customer": args.customer, "top": args.top,
        "label": [f"{k}={v}" for k, v in _pairs(args.label, "--label").items()]})
    emit(args, doc, lambda: _human(doc))
    return 0


def register_fleet(cmds: Any, common: Common) -> None:
    """Add ``atoll fleet cves``."""
    p = _add(cmds, common, "cves", _cves, "CVEs across the fleet: hosts exposed per urgency, "
             "the CVEs on most hosts, hosts whose CVE data is stale")
    p.add_argument("--customer", metavar="NAME", help="only this customer's hosts")
    p.add_argument("--label", action="append", metavar="KEY=VALUE",
                   help="only hosts with this label (repeatable: all must match)")
    p.add_argument("--top", type=int, default=20, metavar="N",
                   help="list the N CVEs on most hosts, 1 to 500 (default 20)")

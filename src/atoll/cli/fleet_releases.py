"""``atoll fleet releases``: the signed versions the control plane chooses among (thin:
the server reads and verifies the update repository; docs/control-plane.md,
"Signed versions")."""

from __future__ import annotations

import argparse
import datetime as dt
from typing import Any

from atoll.cli import emit
from atoll.cli.fleet import Common, _add, _client
from atoll.core.text import printable

__all__ = ["register_fleet"]


def _human(doc: dict[str, Any]) -> str:
    lines = [f"update repository {printable(doc['repository'])}"]
    for channel, versions in sorted(doc["channels"].items()):
        lines.append(f"{printable(channel)}:")
        for v in versions:
            when = dt.datetime.fromtimestamp(int(v["timestamp"]), dt.UTC).strftime(
                "%Y-%m-%d %H:%M")
            lines.append(f"  {printable(v['version']):16} {v['commit'][:12]}  publication "
                         f"{v['sequence']:<4} {when}{'  (head)' if v['head'] else ''}")
    return "\n".join(lines) if doc["channels"] else lines[0] + ": no channel published"


def _releases(args: argparse.Namespace) -> int:
    doc = _client(args).call("GET", "/v1/releases")
    if args.channel is not None:
        doc["channels"] = {k: v for k, v in doc["channels"].items() if k == args.channel}
    emit(args, doc, lambda: _human(doc))
    return 0


def register_fleet(cmds: Any, common: Common) -> None:
    """Add ``atoll fleet releases``."""
    p = _add(cmds, common, "releases", _releases, "the signed versions per channel of the "
             "update repository the control plane reads (fleet serve --repo)")
    p.add_argument("--channel", metavar="CHANNEL", help="only this channel")

"""The shape of one command in a parser (its subcommands and their options), for the
fast-path test of test_cli_docs.py; a module of its own so that a fresh interpreter
can import it without building the whole parser."""

from __future__ import annotations

import argparse

from atoll.cli.docs import commands


def shape(parser: argparse.ArgumentParser, command: str) -> list[list[str]]:
    """``[[*path, *sorted option strings or dests], ...]`` for every command under
    ``command``."""
    return [[*path, *sorted(str(a.option_strings or a.dest) for a in sub._actions)]
            for path, sub, _ in commands(parser) if path[0] == command]

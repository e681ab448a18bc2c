"""`atoll completion bash` and `atoll man`: generated from the argument parser.

Both walk the parser that ``atoll`` itself parses with (every command module's
``register``), so they list exactly the commands, options and choices there
are. Kept by hand: the man page's prose and FILES, and which values complete
from the host or as directories (``DYNAMIC``, ``DIR_DESTS``: a test checks that
they name real options).

Decision: a small generator here rather than shtab or argparse-manpage. atoll
accepts its global options anywhere on the command line (``hoist_globals``),
which shtab's bash script does not model (a parent's options are offered only
before the subcommand); argparse-manpage would need its own include files for
EXIT STATUS (from ``EXIT_CODES``) and FILES; and either would be one more
package installed into every image. One walk over the parser serves both.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from atoll import __version__
from atoll.cli import GLOBAL_FLAGS, GLOBAL_VALUED, PATH_TYPES, build_parser, exit_status_table

__all__ = ["bash_completion", "commands", "is_global", "man_page", "names", "register",
           "subcommands", "value_kind"]

GLOBALS = GLOBAL_FLAGS | GLOBAL_VALUED

# Values completed from the host by `atoll completion names KIND`, by the option's dest
# (anywhere) or by (command path..., dest).
DYNAMIC = {"rev": "refs", "old": "refs", "new": "refs", "ref": "refs", "refs": "refs",
           "from_rev": "refs", "to_rev": "refs", "remote": "remotes", "target": "channels"}
DYNAMIC_AT: dict[tuple[str, ...], str] = {("remote", "show", "name"): "remotes",
                                          ("remote", "remove", "name"): "remotes"}
# Path-typed values that name a directory (other Path values complete any file).
DIR_DESTS = frozenset({"repo", "sysroot", "root", "to", "keys", "tree", "from_sysroot",
                       "textfile"})

# The on-disk locations of docs/on-disk.md, in short (SYSROOT/... when --sysroot is given).
FILES = (
    ("/atoll/repo/", "the host's content-addressed store (`store` commands' default "
     "`--repo`)"),
    ("/atoll/deploy/", "deployments: hardlink checkouts of commits, each with its merged /etc"),
    ("/atoll/lock", "the sysroot lock: one command at a time changes deployments"),
    ("/atoll/cache/downloads/", "downloads in progress (resumable; verified before import)"),
    ("/atoll/state/", "events.jsonl, update.json, policy.json, agent.json, boot.json, and the "
     "trusted metadata of each remote in remotes/NAME/"),
    ("/boot/loader/deployments.json", "the ordered deployments: the first boots next, the "
     "next one not pinned-only is the rollback"),
    ("/run/atoll/booted", "the deployment that is running"),
    ("/usr/lib/atoll/health.d/", "health checks shipped in the image (required.d, wanted.d); "
     "/etc/atoll/health.d/ adds or overrides them"),
    ("/etc/atoll/host-config.yaml", "a host config baked into a disk image, applied at first "
     "boot"),
    ("/var/lib/atoll/provision/", "the first-boot seed and what the last apply did"),
    ("/usr/share/atoll/app-images/", "app images shipped in the OS (`docker load` archives)"),
)

SEE_ALSO = ("bash(1)", "systemctl(1)", "journalctl(1)", "mmdebstrap(1)")


# -- the parser tree ------------------------------------------------------------------


def _subparsers(parser: argparse.ArgumentParser) -> argparse._SubParsersAction[Any] | None:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    return None


def subcommands(parser: argparse.ArgumentParser
                ) -> list[tuple[str, argparse.ArgumentParser, str]]:
    """The visible subcommands of ``parser``: (name, parser, help), in registration order."""
    sub = _subparsers(parser)
    if sub is None:
        return []
    return [(c.dest, sub.choices[c.dest], c.help or "") for c in sub._choices_actions
            if c.help != argparse.SUPPRESS]


def commands(parser: argparse.ArgumentParser
             ) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser, str]]:
    """Every command below ``parser``, depth first: (path, parser, help)."""
    def walk(path: tuple[str, ...], p: argparse.ArgumentParser
             ) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser, str]]:
        for name, child, text in subcommands(p):
            yield (*path, name), child, text
            yield from walk((*path, name), child)

    return walk((), parser)


def is_global(action: argparse.Action) -> bool:
    """A global option (accepted anywhere), or a command's own copy of one (``--json``)."""
    return any(s in GLOBALS for s in action.option_strings)


def _own(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """The options and positionals a command documents itself (not help, not globals)."""
    return [a for a in parser._actions
            if not isinstance(a, argparse._SubParsersAction | argparse._HelpAction)
            and not is_global(a)]


def value_kind(path: tuple[str, ...], action: argparse.Action) -> str:
    """How the completion offers ``action``'s value: words (its choices), ``@file``,
    ``@dir``, ``@refs``, ``@remotes``, ``@channels``, or "" (free text, nothing
    offered)."""
    if action.choices is not None:
        return " ".join(str(c) for c in action.choices)
    dynamic = DYNAMIC_AT.get((*path, action.dest)) or DYNAMIC.get(action.dest)
    if dynamic:
        return "@" + dynamic
    if action.type in PATH_TYPES:
        return "@dir" if action.dest in DIR_DESTS or action.metavar == "DIR" else "@file"
    return ""


# -- bash -----------------------------------------------------------------------------


def _q(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def _array(name: str, items: dict[str, str]) -> str:
    body = "".join(f"    [{_q(k)}]={_q(v)}\n" for k, v in items.items())
    return f"declare -gA {name}=(\n{body})\n"


BASH_FUNCTIONS = r"""
# COMPREPLY from the lines a command prints (no process substitution: /dev/fd may be absent).
_atoll_reply() {
    local line
    COMPREPLY=()
    while IFS= read -r line; do
        [[ -n $line ]] && COMPREPLY+=("$line")
    done <<<"$("$@")"
}

# How a value is offered: its choices, files, directories, or names from the host.
_atoll_values() {
    local kind=$1 cur=$2
    case $kind in
        @file) compopt -o filenames 2>/dev/null; _atoll_reply compgen -f -- "$cur" ;;
        @dir) compopt -o filenames 2>/dev/null; _atoll_reply compgen -d -- "$cur" ;;
        @refs | @remotes | @channels)
            _atoll_reply compgen -W "$(_atoll_names "${kind#@}")" -- "$cur" ;;
        '') COMPREPLY=() ;;
        *) _atoll_reply compgen -W "$kind" -- "$cur" ;;
    esac
}

# Refs or remotes, asked of atoll itself (quietly, and never for long).
_atoll_names() {
    local prog=atoll
    [[ ${COMP_WORDS[0]} == */* && -x ${COMP_WORDS[0]} ]] && prog=${COMP_WORDS[0]}
    local -a argv=("$prog" completion names "$1")
    [[ -n $sysroot ]] && argv+=(--sysroot "$sysroot")
    [[ -n $repo ]] && argv+=(--repo "$repo")
    timeout 3 "${argv[@]}" 2>/dev/null </dev/null
}

# The key of option $2 under command $1 in _atoll_vals (set in $key), if it takes a value.
_atoll_valued() {
    key="$1|$2"
    [[ ${_atoll_vals[$key]+set} ]] && return 0
    [[ " $_atoll_globals " == *" $2 "* ]] || return 1
    key="atoll|$2"
    [[ ${_atoll_vals[$key]+set} ]]
}

_atoll_unquote() {
    local v=$1
    [[ $v == \'*\' || $v == \"*\" ]] && v=${v:1:${#v}-2}
    printf '%s' "${v/#\~/$HOME}"
}

# COMP_WORDS with the words bash split at ':' joined again (REMOTE:CHANNEL is one
# argument), in $words; the index of the word being completed in $cword.
_atoll_words() {
    local i w
    words=() cword=0
    for ((i = 0; i < ${#COMP_WORDS[@]}; i++)); do
        w=${COMP_WORDS[i]}
        if ((i > 0 && ${#words[@]} > 0)) && [[ $w == : || ${words[${#words[@]} - 1]} == *: ]]
        then
            words[${#words[@]} - 1]+=$w
        else
            words+=("$w")
        fi
        ((i == COMP_CWORD)) && cword=$((${#words[@]} - 1))
    done
}

_atoll() {
    local -a words
    local cword
    _atoll_words
    local cur=${words[cword]} path=atoll w i key optkey= multi= dd= npos=0
    local sysroot= repo= kind n
    COMPREPLY=()
    _atoll_complete
    # bash replaces only the part after the last ':' of the word (COMP_WORDBREAKS)
    if [[ $cur == *:* && $COMP_WORDBREAKS == *:* ]]; then
        local colon=${cur%"${cur##*:}"} j
        for j in "${!COMPREPLY[@]}"; do
            COMPREPLY[j]=${COMPREPLY[j]#"$colon"}
        done
    fi
    return 0
}

_atoll_complete() {
    for ((i = 1; i < cword; i++)); do
        w=${words[i]}
        if [[ -n $optkey ]]; then
            [[ $w == = ]] && continue  # --opt=value, split at '=' by bash
            case ${optkey#*|} in
                --sysroot) sysroot=$(_atoll_unquote "$w") ;;
                --repo) repo=$(_atoll_unquote "$w") ;;
            esac
            [[ ${_atoll_multi[$optkey]+set} ]] && multi=$optkey
            optkey=
            continue
        fi
        if [[ -z $dd && $w == -- ]]; then
            dd=1 multi=
            continue
        fi
        if [[ -z $dd && $w == -?* ]]; then
            multi=
            if [[ $w == *=* ]]; then
                case ${w%%=*} in
                    --sysroot) sysroot=$(_atoll_unquote "${w#*=}") ;;
                    --repo) repo=$(_atoll_unquote "${w#*=}") ;;
                esac
            elif _atoll_valued "$path" "$w"; then
                optkey=$key
            fi
            continue
        fi
        [[ -n $multi ]] && continue
        if ((npos == 0)) && [[ " ${_atoll_subs[$path]} " == *" $w "* ]]; then
            path="$path $w"
        else
            ((npos++))
        fi
    done
    if [[ -n $optkey ]]; then
        [[ $cur == = ]] && cur=
        _atoll_values "${_atoll_vals[$optkey]}" "$cur"
        return 0
    fi
    if [[ -z $dd && $cur == --*=* ]] && _atoll_valued "$path" "${cur%%=*}"; then
        _atoll_values "${_atoll_vals[$key]}" "${cur#*=}"
        COMPREPLY=("${COMPREPLY[@]/#/${cur%%=*}=}")
        return 0
    fi
    if [[ -z $dd && $cur == -* ]]; then
        _atoll_reply compgen -W "${_atoll_opts[$path]} $_atoll_globals" -- "$cur"
        return 0
    fi
    if [[ -n $multi ]]; then
        _atoll_values "${_atoll_vals[$multi]}" "$cur"
        return 0
    fi
    if ((npos == 0)) && [[ -n ${_atoll_subs[$path]} ]]; then
        _atoll_reply compgen -W "${_atoll_subs[$path]}" -- "$cur"
        return 0
    fi
    n=${_atoll_pos[$path|n]:-0}
    if ((npos < n)); then
        kind=${_atoll_pos[$path|$npos]}
    elif ((n > 0)) && [[ ${_atoll_pos[$path|rest]+set} ]]; then
        kind=${_atoll_pos[$path|$((n - 1))]}
    else  # nothing positional left: the options
        _atoll_reply compgen -W "${_atoll_opts[$path]} $_atoll_globals" -- "$cur"
        return 0
    fi
    _atoll_values "$kind" "$cur"
    return 0
}

complete -F _atoll atoll
"""


def bash_completion(parser: argparse.ArgumentParser) -> str:
    """A bash completion script for ``parser`` (the ``atoll`` parser).

    Commands are looked up as paths ("atoll store log"); global options are offered
    and understood at every level; option values complete from choices, files,
    directories, or (refs, remotes) ``atoll completion names``.
    """
    subs: dict[str, str] = {}
    opts: dict[str, str] = {}
    vals: dict[str, str] = {}
    multi: dict[str, str] = {}
    pos: dict[str, str] = {}
    glob = [s for a in parser._actions if is_global(a) for s in a.option_strings]
    tree = [((), parser), *((path, p) for path, p, _ in commands(parser))]
    for path, p in tree:
        key = " ".join(("atoll", *path))
        names = [name for name, _, _ in subcommands(p)]
        if names:
            subs[key] = " ".join(names)
        own: list[str] = []
        positionals: list[argparse.Action] = []
        for a in p._actions:
            if isinstance(a, argparse._SubParsersAction):
                continue
            if not a.option_strings:
                positionals.append(a)
                continue
            if is_global(a) and path:
                continue  # the top-level parser's copy describes it
            if not is_global(a):
                own += a.option_strings
            if a.nargs != 0:
                for s in a.option_strings:
                    vals[f"{key}|{s}"] = value_kind(path, a)
                    if a.nargs in ("+", "*"):
                        multi[f"{key}|{s}"] = "1"
        opts[key] = " ".join(own)
        for i, a in enumerate(positionals):
            pos[f"{key}|{i}"] = value_kind(path, a)
        if positionals:
            pos[f"{key}|n"] = str(len(positionals))
            if positionals[-1].nargs in ("+", "*", argparse.REMAINDER):
                pos[f"{key}|rest"] = "1"
    return (
        f"# bash completion for atoll {__version__}: generated by `atoll completion bash` "
        "from atoll's parser; do not edit\n"
        "# shellcheck shell=bash disable=SC2034\n"
        f"_atoll_globals={_q(' '.join(glob))}\n"
        + _array("_atoll_subs", subs) + _array("_atoll_opts", opts)
        + _array("_atoll_vals", vals) + _array("_atoll_multi", multi)
        + _array("_atoll_pos", pos) + BASH_FUNCTIONS
    )


def names(kind: str, sysroot: Path, repo: Path | None = None) -> list[str]:
    """What the completion offers for ``kind``: ``refs`` (branches, then REMOTE:CHANNEL
    of ``repo``, default the sysroot's store), ``remotes`` (the host's remotes) or
    ``channels`` (REMOTE:CHANNEL: what each remote follows and what was downloaded)."""
    if kind in ("remotes", "channels"):
        from atoll.repo.remotes import list_remotes

        remotes = list_remotes(sysroot)
        if kind == "remotes":
            return [r.name for r in remotes]
        found = [f"{r.name}:{r.channel}" for r in remotes if r.channel]
        return list(dict.fromkeys([*found, *(n for n in names("refs", sysroot, repo)
                                             if ":" in n)]))
    from atoll.store.repo import Repo

    path = repo if repo is not None else sysroot / "atoll" / "repo"
    if not (path / "config.json").is_file():
        return []
    store = Repo(path)  # not Repo.open: completing must not create anything
    return [*store.refs("heads"), *(":".join(n.split("/", 1)) for n in store.refs("remotes"))]


# -- roff -----------------------------------------------------------------------------


def _roff(text: str) -> str:
    """``text`` (one paragraph) escaped for roff; `code` in bold."""
    text = " ".join(text.split()).replace("\\", "\\e").replace("-", "\\-")
    text = "".join(c if ord(c) < 128 else f"\\[u{ord(c):04X}]" for c in text)
    text = re.sub(r"`([^`]+)`", r"\\fB\1\\fR", text)
    return "\\&" + text if text.startswith((".", "'")) else text


def _formatter(prog: str) -> argparse.HelpFormatter:
    return argparse.HelpFormatter(prog)


def _args(action: argparse.Action) -> str:
    """The metavar part of an action (REF [REF ...], {raw,qcow2}), roff-escaped, in italics."""
    f = _formatter("atoll")
    default = (f._get_default_metavar_for_optional(action) if action.option_strings
               else f._get_default_metavar_for_positional(action))
    return f"\\fI{_roff(f._format_args(action, default))}\\fR"


def _option_tag(action: argparse.Action, *, short: bool = False) -> str:
    strings = action.option_strings
    if short:  # the synopsis names one spelling, the long one
        strings = [next((s for s in strings if s.startswith("--")), strings[0])]
    tag = ", ".join(f"\\fB{_roff(s)}\\fR" for s in strings)
    return tag + (f" {_args(action)}" if action.nargs != 0 else "")


def _synopsis_part(action: argparse.Action) -> str:
    if not action.option_strings:
        return _args(action)
    tag = _option_tag(action, short=True)
    return tag if action.required else f"[{tag}]"


def _synopsis(path: tuple[str, ...], parser: argparse.ArgumentParser) -> list[str]:
    actions = _own(parser)
    groups = {id(a): g for g in parser._mutually_exclusive_groups for a in g._group_actions}
    parts: list[str] = []
    seen: set[int] = set()
    for a in [a for a in actions if a.option_strings] + [a for a in actions
                                                           if not a.option_strings]:
        g = groups.get(id(a))
        if g is None:
            parts.append(_synopsis_part(a))
        elif id(g) not in seen:
            seen.add(id(g))
            inner = " | ".join(_option_tag(x, short=True) for x in g._group_actions
                               if x in actions)
            parts.append(f"({inner})" if g.required else f"[{inner}]")
    if subcommands(parser):
        sub = _subparsers(parser)
        meta = (sub.metavar if sub is not None and isinstance(sub.metavar, str)
                else "COMMAND")
        required = sub is not None and sub.required
        parts.append(f"\\fI{meta}\\fR" if required else f"[\\fI{meta}\\fR]")
    return [f".B {_roff(' '.join(('atoll', *path)))}", *parts]


def _describe(actions: list[argparse.Action]) -> list[str]:
    out: list[str] = []
    for a in actions:
        tag = _option_tag(a) if a.option_strings else _args(a)
        text = a.help if a.help and a.help != argparse.SUPPRESS else ""
        if a.help and "%(" in a.help:
            text = _formatter("atoll")._expand_help(a)
        if a.required and a.option_strings:
            text += " (required)"
        out += [".TP", tag, _roff(text)]
    return out


def man_page(parser: argparse.ArgumentParser) -> str:
    """atoll(1) in roff, from ``parser``: one subsection per command, every option.

    No date (the page is the same for the same atoll), so images stay reproducible.
    """
    summary = (parser.description or "").rstrip(".")
    out = [
        ".\\\" atoll(1): generated by `atoll man` from atoll's parser; do not edit",
        f'.TH ATOLL 1 "" "atoll {__version__}" "User Commands"',
        ".SH NAME", f"atoll \\- {_roff(summary[:1].lower() + summary[1:])}",
        ".SH SYNOPSIS", ".B atoll",
        "[\\fIGLOBAL OPTIONS\\fR] \\fICOMMAND\\fR [\\fIARGUMENTS\\fR]",
        ".SH DESCRIPTION",
        _roff("atoll composes Debian images into commits of a content-addressed store, "
              "publishes them with signed metadata, and deploys them on hosts as bootable "
              "deployments, with a rollback to the previous one."),
        ".PP",
        _roff("Global options (see GLOBAL OPTIONS) are accepted anywhere on the command "
              "line, before or after the command. Progress and logs go to stderr; with "
              "`--json`, stdout is only JSON, an error too. An error prints `error:` with "
              "what happened, indented details and a `hint:` with what to do; the exit "
              "status says what kind of error it was (see EXIT STATUS)."),
        ".PP",
        _roff("REV, where a command takes one, is a ref, REMOTE:CHANNEL, a commit id or a "
              "unique prefix of at least 8 hex digits, or REV~N for an ancestor. "
              "`atoll COMMAND --help` shows one command's options."),
        ".SH COMMANDS",
    ]
    for path, p, text in commands(parser):
        out += [f'.SS "{_roff(" ".join(("atoll", *path)))}"', *_synopsis(path, p), ".PP",
                _roff(text)]
        if p.description and p.description != text:
            out += [".PP", _roff(p.description)]
        subs = subcommands(p)
        if subs:
            out += [".PP", _roff("Subcommands: " + ", ".join(n for n, _, _ in subs) + ".")]
        out += _describe([a for a in _own(p) if a.option_strings]
                         + [a for a in _own(p) if not a.option_strings])
    out += [".SH GLOBAL OPTIONS",
            _roff("Accepted anywhere on the command line, before or after the command.")]
    out += _describe([a for a in parser._actions
                      if not isinstance(a, argparse._SubParsersAction)])
    out += [".SH EXIT STATUS"]
    for code, meaning, classes in exit_status_table():
        out += [".TP", f".B {code}", _roff(meaning + (f" ({', '.join(classes)})"
                                                     if classes else ""))]
    out += [".SH FILES",
            _roff("Paths of a host; with `--sysroot DIR`, the sysroot's are below DIR.")]
    for path_, what in FILES:
        out += [".TP", f".I {_roff(path_)}", _roff(what)]
    out += [".PP", _roff("The layout in full: docs/on-disk.md in atoll's source."),
            ".SH SEE ALSO",
            ",\n".join(".BR " + re.sub(r"\((\w+)\)$", r" (\1)", s) for s in SEE_ALSO),
            ".PP",
            _roff("docs/commands.md, docs/architecture.md and docs/on-disk.md in atoll's "
                  "source; `atoll completion bash` for bash completion.")]
    return "\n".join(out) + "\n"


# -- commands -------------------------------------------------------------------------


def _man(args: argparse.Namespace) -> int:
    print(man_page(build_parser()), end="")
    return 0


def _bash(args: argparse.Namespace) -> int:
    print(bash_completion(build_parser()), end="")
    return 0


def _names(args: argparse.Namespace) -> int:
    try:
        found = names(args.kind, Path(args.sysroot), args.repo)
    except Exception:  # completing must never print an error
        found = []
    print("\n".join(found), end="\n" if found else "")
    return 0


def register(sub: Any, common: Callable[[argparse.ArgumentParser], None]) -> None:
    """Add ``completion bash``, ``completion names`` and ``man``."""
    p = sub.add_parser("completion", help="shell completion for atoll",
                       description="Shell completion generated from atoll's own parser. "
                       "Images ship it as /usr/share/bash-completion/completions/atoll.")
    csub = p.add_subparsers(dest="completion_command", metavar="ACTION", required=True)
    b = csub.add_parser("bash", help="print the bash completion script (source it, or put it "
                        "in /usr/share/bash-completion/completions/atoll)")
    b.set_defaults(handler=_bash)
    n = csub.add_parser("names", help="print the refs or remotes completion offers, one a "
                        "line (what the bash script calls; never an error)")
    n.add_argument("kind", choices=("refs", "remotes", "channels"),
                   help="refs: branches and REMOTE:CHANNEL of the store; remotes: the host's "
                   "remotes; channels: REMOTE:CHANNEL each remote follows or was downloaded")
    n.add_argument("--repo", type=Path,
                   help="repository directory (default: the sysroot's store)")
    n.set_defaults(handler=_names)
    m = sub.add_parser("man", help="print the atoll(1) manual page (roff): `atoll man | "
                       "man -l -`")
    m.set_defaults(handler=_man)

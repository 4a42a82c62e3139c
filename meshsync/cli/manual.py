"""What the shell and `man` know of meshsync, made from its argument parser so they never
disagree with it: `meshsync completion bash|zsh` and `meshsync man`."""

from __future__ import annotations

import argparse
from datetime import date

from meshsync import __version__


def _commands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _options(parser: argparse.ArgumentParser) -> list[str]:
    return sorted(o for a in parser._actions for o in a.option_strings
                  if o.startswith("--"))


def completion(parser: argparse.ArgumentParser, shell: str) -> str:
    """The completion script for `shell` (bash or zsh, which runs bash's)."""
    commands = _commands(parser)
    cases = []
    for name, sub in sorted(commands.items()):
        subs = _commands(sub)
        words = " ".join(dict.fromkeys(
            [*_options(sub), *(o for s in subs.values() for o in _options(s))]))
        first = f'[ "$COMP_CWORD" -eq 2 ] && words="{" ".join(sorted(subs))}" && files=0; ' \
            if subs else ""
        cases.append(f'        {name}) words="{words}"; {first};;')
    script = f"""# meshsync completion for bash: `source <(meshsync completion bash)`, or put it in
# ~/.local/share/bash-completion/completions/meshsync
_meshsync() {{
    local current=${{COMP_WORDS[COMP_CWORD]}} words files=1
    if [ "$COMP_CWORD" -eq 1 ]; then
        COMPREPLY=($(compgen -W "{' '.join(sorted(commands))} --help --version" -- "$current"))
        return
    fi
    case "${{COMP_WORDS[1]}}" in
{chr(10).join(cases)}
        *) words="" ;;
    esac
    if [[ "$current" == -* ]]; then
        COMPREPLY=($(compgen -W "$words --help" -- "$current"))
    else
        COMPREPLY=($(compgen -W "$(printf '%s\\n' $words | grep -v -- '^-')" -- "$current"))
        [ "$files" = 1 ] && COMPREPLY+=($(compgen -f -- "$current"))
    fi
}}
complete -o filenames -F _meshsync meshsync
"""
    if shell == "zsh":
        return ("# meshsync completion for zsh: `source <(meshsync completion zsh)`\n"
                "autoload -U +X bashcompinit && bashcompinit\n" + script)
    return script


def man_page(parser: argparse.ArgumentParser) -> str:
    """A man page in roff, from the commands and their help."""
    lines = [f'.TH MESHSYNC 1 "{date.today():%Y-%m-%d}" "meshsync {__version__}"',
             ".SH NAME", r"meshsync \- " + _roff(parser.description or ""),
             ".SH SYNOPSIS", r".B meshsync", r"\fICOMMAND\fR [\fIOPTIONS\fR]",
             ".SH DESCRIPTION",
             _roff("Run `meshsync start ~/Sync` on every machine of the LAN: the nodes find "
                   "each other by mDNS, trust each other's SSH keys, and keep the folders "
                   "identical. Every other command asks the running node, over its control "
                   "socket in the state directory."),
             ".SH COMMANDS"]
    for name, sub in _commands(parser).items():
        usage = " ".join(sub.format_usage().split(name, 1)[-1].replace("[-h] ", "").split())
        lines += [".TP", rf"\fB{name}\fR " + _roff(usage), _roff(_help_of(parser, name))]
        for action in sub._actions:
            if (action.option_strings and action.help and action.help != argparse.SUPPRESS
                    and not isinstance(action, argparse._HelpAction)):
                flags = ", ".join(action.option_strings)
                metavar = f" {action.metavar}" if action.metavar else ""
                lines += [".RS", ".TP", rf"\fB{_roff(flags)}\fR{_roff(metavar)}",
                          _roff(action.help.replace("%%", "%")), ".RE"]
    lines += [".SH FILES", ".TP", r"\fI~/.local/state/meshsync\fR",
              _roff("the state directory: the index, trusted_keys, the control socket, the "
                    "web page's token, the folders added ($MESHSYNC_HOME or "
                    "$XDG_STATE_HOME/meshsync if set)"),
              ".TP", r"\fI~/.ssh/authorized_keys\fR",
              _roff("keys trusted for sync, as sshd reads them"),
              ".SH EXIT STATUS", _roff("0 on success; 1 when the command cannot be done; 2 "
                                       "when the command line is wrong. Each error is one "
                                       "line on standard error.")]
    return "\n".join(lines) + "\n"


def _help_of(parser: argparse.ArgumentParser, name: str) -> str:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for choice in action._choices_actions:
                if choice.dest == name:
                    return choice.help or ""
    return ""


def _roff(text: str) -> str:
    """Text safe in roff: backslashes escaped, no line starting with a control character."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\\&" + text if text.startswith((".", "'")) else text

"""The completion script in a real bash, and the man page through groff: both made from the
argument parser, so a command or option added there is known to them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def meshsync(*args: str) -> str:
    return subprocess.run([sys.executable, "-m", "meshsync", *args], capture_output=True,
                          text=True, check=True).stdout


def completions(script: str, *words: str, cwd: Path | None = None) -> list[str]:
    """What bash offers for the last of `words` after `meshsync`."""
    line = " ".join(f"'{w}'" for w in ("meshsync", *words))
    done = subprocess.run(
        ["bash", "-c", f'{script}\nCOMP_WORDS=({line}); COMP_CWORD={len(words)}; _meshsync;'
                       ' printf "%s\\n" "${COMPREPLY[@]}"'],
        capture_output=True, text=True, check=True, cwd=cwd)
    return sorted(done.stdout.split())


def test_bash_completes_commands_their_options_and_paths(tmp_path: Path) -> None:
    script = meshsync("completion", "bash")
    assert {"start", "status", "add", "pause", "service", "completion"} <= set(
        completions(script, ""))
    assert completions(script, "st") == ["start", "status", "stop"]
    assert completions(script, "start", "--ke") == ["--keep-days", "--keep-size", "--key"]
    assert completions(script, "service", "") == ["install", "uninstall"]
    (tmp_path / "Sync").mkdir()
    assert completions(script, "start", "Sy", cwd=tmp_path) == ["Sync"]
    assert "complete -o filenames -F _meshsync meshsync" in meshsync("completion", "zsh")


def test_the_man_page_lists_every_command_and_groff_reads_it_without_a_warning() -> None:
    page = meshsync("man")
    shown = subprocess.run(["groff", "-man", "-Tascii", "-P-c", "-P-b", "-P-o", "-P-u", "-ww"],
                           input=page, capture_output=True, text=True, check=True)
    assert shown.stderr == ""
    text = shown.stdout
    for command in ("start", "status", "add", "remove", "pause", "resume", "trust", "untrust",
                    "log", "open", "service", "completion", "man"):
        assert f"\n       {command} " in text or f"\n       {command}\n" in text, command
    assert "--keep-days DAYS" in text
    assert "EXIT STATUS" in text

"""What stays local: the folder's .meshsyncignore, in gitignore syntax, over built-in defaults."""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import re
import stat
from functools import partial
from pathlib import Path

from pathspec import GitIgnoreSpec

from meshsync.core.paths import MARKER, is_temporary
from meshsync.fs.scan import open_file

log = logging.getLogger(__name__)

IGNORE_FILE = ".meshsyncignore"

# Files editors and desktops leave beside the ones people work on; a user line `!name` re-includes.
DEFAULTS = (
    ".*.swp", ".*.swo", ".*.swx", "4913",  # vim swap files, and its probe that it may write here
    ".#*", r"\#*#",  # emacs lock links and auto-save files (a bare # would start a comment)
    "*~",  # backups of vim, emacs, gedit and others
    ".~lock.*#", "~$*",  # LibreOffice lock files, MS Office owner files
    ".DS_Store", "._*",  # macOS folder settings and AppleDouble resource forks
    "Thumbs.db", "desktop.ini",  # Windows thumbnail caches and folder settings
)


class Ignore:
    """The paths of one folder that are never scanned, announced, or written from peers."""

    def __init__(self, text: str = "") -> None:
        self.text = text  # the ignore file as read; "" if there is none
        good, bad = [], []
        for number, line in enumerate(text.splitlines(), 1):
            try:
                GitIgnoreSpec.from_lines([line])
            except (ValueError, re.error):  # pathspec raises either, depending on the mistake
                bad.append(number)
            else:
                good.append(line)
        if bad:  # one log line however many: the file may come from a peer
            log.warning("%s: skipping bad patterns on lines %s", IGNORE_FILE, bad)
        self._spec = GitIgnoreSpec.from_lines([*DEFAULTS, *good])
        # Most paths match no pattern at all, which one regex of them all tells at once;
        # the spec then decides the few that match one (the last match wins, `!` lines...).
        self._any = re.compile("|".join(
            f"(?:{p.regex.pattern.replace('(?P<ps_d>', '(?:')})"
            for p in self._spec.patterns if p.include is not None and p.regex is not None)
            or "(?!)")

    @classmethod
    def load(cls, root: Path) -> Ignore:
        """DEFAULTS and root's ignore file; a symlinked or unreadable one counts as absent."""
        return cls(_read(root / IGNORE_FILE).decode("utf-8-sig", errors="replace"))

    @property
    def fingerprint(self) -> str:
        """Equal for equal ignore files: whether the rules changed, in a short string."""
        return hashlib.sha256(self.text.encode()).hexdigest()[:16]

    def match(self, path: str, is_dir: bool = False) -> bool:
        """Whether relative `path` (a directory if is_dir) or a directory above it is ignored."""
        parts = path.split("/")
        if parts[0] == MARKER or any(map(is_temporary, parts)):
            return True
        # As in git, nothing below an ignored directory comes back, even by a `!` line.
        above = ("/".join(parts[:depth]) for depth in range(1, len(parts)))
        return any(self.match_entry(d, True) for d in above) or self.match_entry(path, is_dir)

    def match_entry(self, path: str, is_dir: bool) -> bool:
        """Whether `path` itself is ignored, the directories above it known not to be (a walk)."""
        name = path + "/" if is_dir else path
        return (path != IGNORE_FILE and self._any.match(name) is not None
                and self._spec.match_file(name))


def _read(path: Path) -> bytes:
    """The ignore file's bytes; empty if it is absent or not a regular file we may read (warned)."""
    try:
        fd = open_file(path)
        try:
            if stat.S_ISREG(os.fstat(fd).st_mode):
                return b"".join(iter(partial(os.read, fd, 1 << 16), b""))
        finally:
            os.close(fd)
        problem = "not a regular file"
    except FileNotFoundError:
        return b""
    except OSError as e:  # a symlink is not followed: it could lead out of the folder
        problem = "a symlink" if e.errno == errno.ELOOP else str(e)
    log.warning("%s treated as absent: %s", path, problem)
    return b""

"""The folder's .meshsyncignore and the defaults: what stays local, and walks that skip it."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pathspec import GitIgnoreSpec

from meshsync.core.paths import TEMP_PREFIX, RelPath
from meshsync.fs.ignore import DEFAULTS, IGNORE_FILE, Ignore
from meshsync.fs.scan import Seen, walk, walk_under


def folder(tmp_path: Path, rules: str | None = None, files: tuple[str, ...] = ()) -> Path:
    """A folder holding `files` (a trailing / makes a directory) and, if given, the ignore file."""
    root = tmp_path / "folder"
    root.mkdir()
    if rules is not None:
        (root / IGNORE_FILE).write_text(rules)
    for name in files:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if name.endswith("/"):
            path.mkdir(exist_ok=True)
        else:
            path.write_text(name)
    return root


def paths(found: Iterable[Seen]) -> set[str]:
    return {seen.path for seen in found}


@pytest.mark.parametrize(
    "path",
    [
        ".notes.txt.swp", "doc/.notes.txt.swo", ".x.swx", "4913", "a/4913",  # vim
        ".#notes.txt", "#notes.txt#", "deep/down/#x#",  # emacs
        "notes.txt~", "doc/report.odt~",  # backups
        ".~lock.report.odt#",  # LibreOffice
        "~$report.docx", "doc/~$sheet.xlsx",  # MS Office
        ".DS_Store", "photos/.DS_Store", "._photo.jpg",  # macOS
        "Thumbs.db", "photos/Thumbs.db", "desktop.ini",  # Windows
        f"{TEMP_PREFIX}0123456789abcdef", f"a/{TEMP_PREFIX}x/f",  # meshsync's temporary files
        ".meshsync", ".meshsync/versions/a~1",  # meshsync's marker directory
    ],
)
def test_defaults_ignore_editor_desktop_and_meshsync_files(path: str) -> None:
    assert Ignore().match(path)


@pytest.mark.parametrize(
    "path",
    ["notes.txt", "swp", "a.swp", "49130", "#notes", "~notes", "lock.odt#", "doc/.meshsync",
     "DS_Store", IGNORE_FILE],
)
def test_defaults_keep_ordinary_files(path: str) -> None:
    assert not Ignore().match(path)


def test_a_user_line_can_re_include_a_default(tmp_path: Path) -> None:
    ignore = Ignore.load(folder(tmp_path, "!Thumbs.db\n"))
    assert not ignore.match("Thumbs.db")
    assert ignore.match("desktop.ini")


USER_RULES = """\
# logs are per machine
*.log
!keep.log

build/
/top.txt
a/**/z
"""


@pytest.mark.parametrize(
    ("path", "is_dir", "ignored"),
    [
        ("x.log", False, True),
        ("deep/down/x.log", False, True),
        ("keep.log", False, False),
        ("deep/keep.log", False, False),
        ("build", True, True),
        ("build", False, False),  # `build/` is for directories only
        ("src/build", True, True),
        ("build/out.o", False, True),
        ("build/sub/deep/out.o", False, True),
        ("top.txt", False, True),
        ("doc/top.txt", False, False),
        ("a/z", False, True),
        ("a/b/c/z", False, True),
        ("a/b/z/inside", False, True),
        ("b/a/z", False, False),
        ("# logs are per machine", False, False),
        ("notes.txt", False, False),
        (IGNORE_FILE, False, False),
    ],
)
def test_user_patterns_follow_gitignore(
    tmp_path: Path, path: str, is_dir: bool, ignored: bool
) -> None:
    assert Ignore.load(folder(tmp_path, USER_RULES)).match(path, is_dir) is ignored


def test_nothing_below_an_ignored_directory_is_re_included(tmp_path: Path) -> None:
    # pathspec alone would answer no for build/keep.txt; git, and meshsync, never look in build/.
    ignore = Ignore.load(folder(tmp_path, "build/\n!build/keep.txt\ncache/*\n!cache/keep\n"))
    assert ignore.match("build/keep.txt")
    # cache/* ignores what is in cache, not cache itself, so a later line can bring one back.
    assert not ignore.match("cache", is_dir=True)
    assert ignore.match("cache/other")
    assert not ignore.match("cache/keep")


def test_the_ignore_file_itself_is_never_ignored(tmp_path: Path) -> None:
    root = folder(tmp_path, ".*\n*\n", files=("a.txt",))
    assert not Ignore.load(root).match(IGNORE_FILE)
    assert paths(walk(root, Ignore.load(root))) == {IGNORE_FILE}


def test_comments_and_blank_lines_are_not_patterns(tmp_path: Path) -> None:
    ignore = Ignore.load(folder(tmp_path, "\n# *.txt\n   \n\\#kept\n"))
    assert not ignore.match("a.txt")
    assert ignore.match("#kept")


def test_a_bad_line_is_skipped_and_named_the_rest_still_applies(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, "meshsync.fs.ignore"):
        ignore = Ignore.load(folder(tmp_path, "*.log\n!\n[z-a]\ntrailing\\\n*.tmp\n"))
    assert ignore.match("x.log")
    assert ignore.match("x.tmp")
    [record] = caplog.records
    assert "lines [2, 3, 4]" in record.getMessage()


def test_an_ignore_file_that_is_a_symlink_counts_as_absent(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    outside = tmp_path / "rules"
    outside.write_text("*.txt\n")
    root = folder(tmp_path)
    (root / IGNORE_FILE).symlink_to(outside)
    with caplog.at_level(logging.WARNING, "meshsync.fs.ignore"):
        ignore = Ignore.load(root)
    assert not ignore.match("a.txt")
    assert ignore.text == ""
    [record] = caplog.records
    assert "symlink" in record.getMessage()


def test_an_ignore_file_that_is_a_directory_or_fifo_counts_as_absent(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = folder(tmp_path)
    (root / IGNORE_FILE).mkdir()
    with caplog.at_level(logging.WARNING, "meshsync.fs.ignore"):
        assert Ignore.load(root).text == ""
    (root / IGNORE_FILE).rmdir()
    os.mkfifo(root / IGNORE_FILE)  # opened without blocking, then refused
    with caplog.at_level(logging.WARNING, "meshsync.fs.ignore"):
        assert Ignore.load(root).text == ""
    assert len(caplog.records) == 2


def test_no_ignore_file_means_the_defaults_and_no_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, "meshsync.fs.ignore"):
        ignore = Ignore.load(folder(tmp_path))
    assert (ignore.text, caplog.records) == ("", [])
    assert ignore.match(".DS_Store")
    assert ignore.fingerprint == Ignore().fingerprint


def test_the_fingerprint_changes_when_the_ignore_file_does(tmp_path: Path) -> None:
    root = folder(tmp_path, "*.log\n")
    before = Ignore.load(root)
    assert Ignore.load(root).fingerprint == before.fingerprint
    (root / IGNORE_FILE).write_text("*.log\n*.tmp\n")
    after = Ignore.load(root)
    assert after.fingerprint != before.fingerprint
    assert after.text == "*.log\n*.tmp\n"


def test_walk_skips_ignored_entries_and_does_not_enter_ignored_directories(
    tmp_path: Path,
) -> None:
    root = folder(tmp_path, "*.log\nnode_modules/\n!node_modules/keep.js\n/top.txt\n", files=(
        "a.txt", "a.log", "top.txt", "src/top.txt", "src/.a.txt.swp", "src/b.txt",
        "node_modules/keep.js", "node_modules/pkg/index.js", "logs.log/",
    ))
    (root / "logs.log" / "inside").write_text("x")
    found = paths(walk(root, Ignore.load(root)))
    assert found == {IGNORE_FILE, "a.txt", "src", "src/top.txt", "src/b.txt"}


def test_walk_checks_each_ignored_directory_once_not_what_is_in_it(tmp_path: Path) -> None:
    root = folder(tmp_path, "node_modules/\n", files=("node_modules/a/b/c/d.js", "x.txt"))
    ignore = Ignore.load(root)
    asked: list[str] = []
    judge = ignore.match_entry

    def spy(path: str, is_dir: bool) -> bool:
        asked.append(path)
        return judge(path, is_dir)

    ignore.match_entry = spy  # type: ignore[method-assign]
    assert paths(walk(root, ignore)) == {IGNORE_FILE, "x.txt"}
    assert sorted(asked) == sorted([IGNORE_FILE, "node_modules", "x.txt"])


def test_a_directory_only_pattern_does_not_match_a_symlink_to_a_directory(tmp_path: Path) -> None:
    root = folder(tmp_path, "cache/\n", files=("real/f",))
    (root / "cache").symlink_to("real")
    assert "cache" in paths(walk(root, Ignore.load(root)))


def test_walk_under_an_ignored_path_yields_nothing(tmp_path: Path) -> None:
    root = folder(tmp_path, "build/\n*.log\n", files=("build/sub/out.o", "src/x.log", "src/y"))
    ignore = Ignore.load(root)
    assert list(walk_under(root, RelPath("build"), ignore)) == []
    assert list(walk_under(root, RelPath("build/sub"), ignore)) == []
    assert list(walk_under(root, RelPath("build/sub/out.o"), ignore)) == []
    assert list(walk_under(root, RelPath("src/x.log"), ignore)) == []
    assert paths(walk_under(root, RelPath("src"), ignore)) == {"src", "src/y"}
    assert paths(walk_under(root, RelPath("build"))) == {"build", "build/sub", "build/sub/out.o"}


_NAMES = st.sampled_from(["a", "b.o", ".x.swp", "build", "keep.o", "#a#", "x~", "~$d", "Ab"])
_LINES = st.lists(st.one_of(
    _NAMES, st.sampled_from(["*.o", "!keep.o", "build/", "/a", "a/**/b.o", "[ab]*", "**/x~",
                             "!*", "A?", "\\#*", "!/build/", "b.o/"])), max_size=6)


@settings(max_examples=300, deadline=None)
@given(_LINES, st.lists(_NAMES, min_size=1, max_size=4), st.booleans())
def test_the_quick_first_look_decides_as_the_full_rules_do(
        lines: list[str], parts: list[str], is_dir: bool) -> None:
    # Ignore first asks one regex of every pattern whether any could match at all.
    path = "/".join(parts)
    spec = GitIgnoreSpec.from_lines([*DEFAULTS, *lines])
    expected = path != IGNORE_FILE and spec.match_file(path + "/" if is_dir else path)
    assert Ignore("\n".join(lines)).match_entry(path, is_dir) == expected

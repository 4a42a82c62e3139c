"""Path checks: what a peer may name inside a folder, and a WireError for anything else."""

import pytest

from meshsync.core.errors import WireError
from meshsync.core.paths import (
    MARKER,
    MAX_NAME_BYTES,
    MAX_PATH_BYTES,
    TEMP_PREFIX,
    RelPath,
    check_path,
    is_temporary,
    parent,
)

LONGEST_PATH = "/".join(["a" * 200] * 19 + ["b" * 181])


@pytest.mark.parametrize(
    "path",
    [
        "a",
        "a/b/c",
        "docs/2024/report final (v2).odt",
        "ü/☃ snow.txt",
        "日本語/ファイル.txt",
        "emoji 🎉/x",
        ".hidden",
        "a/.meshsync",  # the marker is only meshsync's at the top of the folder
        "a/.meshsync/versions/x",
        ".meshsyncignore",
        ".meshsync2",
        "...",
        "a..b",
        "..a/b..",
        "back\\slash",
        "n" * MAX_NAME_BYTES,
        "é" * 127 + "x",  # 255 bytes
        LONGEST_PATH,
    ],
)
def test_a_relative_path_is_accepted_as_it_is(path: str) -> None:
    assert check_path(path) == path


def test_the_longest_path_used_here_is_exactly_at_the_limit() -> None:
    assert len(LONGEST_PATH.encode()) == MAX_PATH_BYTES


@pytest.mark.parametrize(
    "path",
    [None, 1, b"a", ["a"], ""],
    ids=["null", "int", "bytes", "list", "empty"],
)
def test_a_path_must_be_a_non_empty_string(path: object) -> None:
    with pytest.raises(WireError):
        check_path(path)


@pytest.mark.parametrize("path", ["/", "/a", "/a/b", "//a"])
def test_an_absolute_path_is_refused(path: str) -> None:
    with pytest.raises(WireError):
        check_path(path)


@pytest.mark.parametrize(
    "path",
    ["..", "../a", "a/..", "a/../b", "a/b/../../..", ".", "./a", "a/.", "a/./b"],
)
def test_dot_and_dot_dot_parts_are_refused_anywhere(path: str) -> None:
    with pytest.raises(WireError):
        check_path(path)


@pytest.mark.parametrize("path", ["a//b", "a/", "a/b/", "//", "a///"])
def test_empty_parts_are_refused(path: str) -> None:
    with pytest.raises(WireError):
        check_path(path)


@pytest.mark.parametrize("path", ["\0", "a\0", "a\0b", "a/\0/b", "a/b\0"])
def test_nul_is_refused(path: str) -> None:
    with pytest.raises(WireError):
        check_path(path)


@pytest.mark.parametrize(
    "path",
    [
        "n" * (MAX_NAME_BYTES + 1),
        "a/" + "n" * (MAX_NAME_BYTES + 1),
        "é" * 128,  # 128 characters, 256 bytes
        LONGEST_PATH + "c",
        "a/" * 3000 + "a",
    ],
    ids=["name", "deeper-name", "multibyte-name", "path", "many-parts"],
)
def test_over_long_names_and_paths_are_refused(path: str) -> None:
    with pytest.raises(WireError):
        check_path(path)


@pytest.mark.parametrize("path", ["\ud800", "a/\udcff", "x\udfffy"])
def test_lone_surrogates_are_refused(path: str) -> None:
    with pytest.raises(WireError):
        check_path(path)


@pytest.mark.parametrize(
    "path",
    [MARKER, f"{MARKER}/versions", f"{MARKER}/versions/a/b~20240101-000000"],
)
def test_the_marker_tree_at_the_top_is_refused(path: str) -> None:
    with pytest.raises(WireError):
        check_path(path)


@pytest.mark.parametrize(
    "path",
    [
        f"{TEMP_PREFIX}0123456789abcdef",
        f"a/b/{TEMP_PREFIX}x",
        # The scanner skips a temporary name at any depth, and so must the wire: a peer
        # cannot make a directory here that this node would never see again.
        f"{TEMP_PREFIX}x/file",
        f"a/{TEMP_PREFIX}x/b/c",
    ],
)
def test_meshsync_temporary_names_are_refused_anywhere(path: str) -> None:
    with pytest.raises(WireError):
        check_path(path)


def test_the_error_quotes_only_a_bounded_part_of_a_hostile_path() -> None:
    with pytest.raises(WireError) as caught:
        check_path("/" + "x" * 100_000)
    assert len(str(caught.value)) < 200


@pytest.mark.parametrize(
    ("path", "expected"),
    [("a", None), ("a/b", "a"), ("a/b/c", "a/b"), ("ü/☃", "ü")],
)
def test_parent_is_the_containing_directory_or_none_at_the_top(
    path: str, expected: str | None
) -> None:
    assert parent(RelPath(path)) == expected


@pytest.mark.parametrize(
    ("name", "temporary"),
    [
        (f"{TEMP_PREFIX}0123456789abcdef", True),
        (TEMP_PREFIX, True),
        (MARKER, False),
        ("meshsync-tmp-x", False),
        (f"x{TEMP_PREFIX}", False),
        ("report.tmp", False),
    ],
)
def test_is_temporary_knows_meshsync_temp_names(name: str, temporary: bool) -> None:
    assert is_temporary(name) is temporary

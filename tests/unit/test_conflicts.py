"""Conflict copy names: the same on every node, and readable back."""

from datetime import UTC, datetime

import pytest

from meshsync.core import conflicts
from meshsync.core.paths import RelPath, check_path

ORIGIN = "0123456789abcdef"
SHORT = "ASNFZ4mr"  # the short ID of the node whose vector key is ORIGIN
WHEN = datetime(2026, 11, 25, 10, 15, 30, tzinfo=UTC)
NS = int(WHEN.timestamp()) * 10**9 + 123


@pytest.mark.parametrize(("path", "copy"), [
    ("notes.txt", "notes.sync-conflict-20261125-101530-ASNFZ4mr.txt"),
    ("a/b/report.final.pdf", "a/b/report.final.sync-conflict-20261125-101530-ASNFZ4mr.pdf"),
    ("Makefile", "Makefile.sync-conflict-20261125-101530-ASNFZ4mr"),
    (".bashrc", ".bashrc.sync-conflict-20261125-101530-ASNFZ4mr"),
    ("dir.d/noext", "dir.d/noext.sync-conflict-20261125-101530-ASNFZ4mr"),
])
def test_the_copy_sits_beside_the_file_with_the_losers_time_and_origin(path, copy):
    made = conflicts.copy_path(RelPath(path), NS, ORIGIN)
    assert made == copy
    assert check_path(made) == made


@pytest.mark.parametrize("path", ["notes.txt", "a/b/report.final.pdf", "Makefile", ".bashrc"])
def test_a_copy_reads_back_as_its_original_time_and_origin(path):
    copy = conflicts.parse(conflicts.copy_path(RelPath(path), NS, ORIGIN))
    assert copy is not None
    assert (copy.original, copy.when, copy.origin) == (path, WHEN, SHORT)
    assert conflicts.is_copy(copy.path)


def test_the_short_id_in_a_name_is_file_name_safe_and_copies_named_before_it_still_count():
    made = conflicts.copy_path(RelPath("f.txt"), NS, "fbefbeffffff0000")  # ID "++++////…"
    assert made == "f.sync-conflict-20261125-101530-++++____.txt"
    copy = conflicts.parse(made)
    assert copy is not None
    assert copy.origin == "++++____"
    older = conflicts.parse("a/f.sync-conflict-20261125-101530-0123456-0badcafe.txt")
    assert older is not None
    assert (older.original, older.origin, older.tagged) == ("a/f.txt", "0123456", True)
    assert conflicts.names_for(RelPath("a/f.sync-conflict-20261125-101530-0123456.txt"), NS,
                               ORIGIN, "12345678") == [
        "a/f.sync-conflict-20261125-101530-0123456-12345678.txt"]


@pytest.mark.parametrize("path", [
    "notes.txt", "a.sync-conflict-2026-x.txt", "a.sync-conflict-20261125-101530-XYZ1234.txt",
    "sync-conflict-20261125-101530-0123456", "dir.sync-conflict-20261125-101530-0123456x/f"])
def test_other_names_are_not_copies(path):
    assert not conflicts.is_copy(path)


def test_a_name_at_the_length_limit_loses_the_end_of_its_stem_not_its_marks():
    long = "é" * 120 + ".txt"  # 244 bytes
    made = conflicts.copy_path(RelPath(long), NS, ORIGIN)
    assert len(made.encode()) <= 255
    assert made.endswith(".sync-conflict-20261125-101530-ASNFZ4mr.txt")
    assert check_path(made) == made


def test_an_mtime_no_calendar_holds_still_names_a_copy():
    made = conflicts.copy_path(RelPath("x.txt"), 10**30, ORIGIN)
    assert made == "x.sync-conflict-00000000-000000-ASNFZ4mr.txt"


def test_a_copy_says_whether_it_is_tagged_with_its_content():
    plain = conflicts.parse(conflicts.copy_path(RelPath("a/f.txt"), NS, ORIGIN))
    tagged = conflicts.parse(conflicts.copy_path(RelPath("a/f.txt"), NS, ORIGIN, "0badcafe"))
    assert plain is not None
    assert tagged is not None
    assert (plain.tagged, tagged.tagged) == (False, True)
    assert (tagged.original, tagged.when, tagged.origin) == ("a/f.txt", WHEN, SHORT)


def test_a_loser_of_a_copy_goes_to_the_tagged_name_every_node_picks_alike():
    plain = conflicts.copy_path(RelPath("a/f.txt"), NS, ORIGIN)
    assert conflicts.names_for(RelPath("a/f.txt"), NS, ORIGIN, "0badcafe") == [
        plain, conflicts.copy_path(RelPath("a/f.txt"), NS, ORIGIN, "0badcafe")]
    # Two losers of one node and second met at the plain name, on nodes that saw them in
    # different orders: the one losing there goes where the others would have put it.
    later = NS + 5 * 10**8  # its own mtime is another; the name says which loser it was
    assert conflicts.names_for(plain, later, "fedcba9876543210", "12345678") == [
        conflicts.copy_path(RelPath("a/f.txt"), NS, ORIGIN, "12345678")]
    tagged = conflicts.copy_path(RelPath("a/f.txt"), NS, ORIGIN, "12345678")
    assert conflicts.names_for(tagged, NS, ORIGIN, "87654321") == []

"""A send-only folder's override: the version it announces makes its own content win on every
node, whatever the versions it overrides say."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given
from hypothesis import strategies as st

from meshsync.core import plan
from meshsync.core.paths import RelPath
from meshsync.core.records import FileRecord, Kind
from meshsync.core.vclock import MAX_OWN_COUNTER, Order, Vector

ME, OTHERS = "0000000000000001", ("7777777777777777", "ffffffffffffffff")
PATH = RelPath("notes.txt")
VECTOR = st.dictionaries(st.sampled_from((ME, *OTHERS)), st.integers(1, MAX_OWN_COUNTER + 1),
                         max_size=3).map(Vector.of)
RECORD = st.builds(
    lambda kind, version, origin, deleted, blob: FileRecord(
        PATH, kind, version, origin, deleted, 0 if deleted else len(blob), 0o644, 10**9,
        () if deleted or kind is not Kind.FILE else (blob.ljust(32, b"\0")[:32],)),
    st.sampled_from((Kind.FILE, Kind.DIR)), VECTOR, st.sampled_from(OTHERS), st.booleans(),
    st.binary(min_size=1, max_size=4))


@given(st.none() | RECORD, RECORD, st.integers(0, 2**31))
def test_an_override_descends_from_both_and_carries_what_is_here(
        ours: FileRecord | None, theirs: FileRecord, floor: int) -> None:
    if ours is not None:
        ours = replace(ours, origin=ME)
    record = plan.override(ours, theirs, ME, floor)
    room = (ours.version if ours else Vector()).merge(theirs.version).can_bump(ME)
    if (ours is None and theirs.deleted) or not room:
        assert record is None
        return
    assert record is not None
    assert (record.origin, record.author) == (ME, "")
    assert record.version.compare(theirs.version) is Order.NEWER
    if ours is None:  # not here: gone everywhere
        assert (record.deleted, record.kind) == (True, theirs.kind)
    else:
        assert record.version.compare(ours.version) is Order.NEWER
        assert record.same_metadata(ours)
    # A node holding theirs, or waiting for it, takes ours in its place.
    assert plan.judge(theirs, None, record).queue
    assert plan.judge(None, theirs, record).queue

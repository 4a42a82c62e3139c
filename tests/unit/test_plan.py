"""The verdict on a remote version: take it or keep ours, the same on every node."""

import hashlib
import random
from dataclasses import replace

import pytest

from meshsync.core.paths import RelPath
from meshsync.core.plan import Action, Judgement, Verdict, decide, judge, wins
from meshsync.core.records import FileRecord, Kind
from meshsync.core.vclock import Order, Vector

LOW, MID, HIGH = "0000000000000001", "7777777777777777", "ffffffffffffffff"
ORIGINS = (LOW, MID, HIGH)
OURS = Vector.of({LOW: 1, MID: 2})
THEIRS = Vector.of({LOW: 1, HIGH: 2})  # concurrent with OURS
T = 1_700_000_000_000_000_000

TAKE = Verdict(Action.TAKE)
TAKE_AND_KEEP_OURS = Verdict(Action.TAKE, conflict=True)
IGNORE = Verdict(Action.IGNORE)


def content(text: str) -> tuple[bytes, ...]:
    return (hashlib.sha256(text.encode()).digest(),)


def rec(version: Vector, origin: str, *, mtime: int = T, text: str = "ours",
        deleted: bool = False) -> FileRecord:
    record = FileRecord(RelPath("notes.txt"), Kind.FILE, version, origin, size=len(text),
                        mtime_ns=mtime, blocks=content(text))
    return record.tombstone(version, origin) if deleted else record


def test_concurrent_fixtures_are_concurrent() -> None:
    assert OURS.compare(THEIRS) is Order.CONCURRENT


def test_a_path_we_do_not_have_is_taken() -> None:
    assert decide(None, rec(THEIRS, HIGH)) == TAKE
    assert decide(None, rec(THEIRS, HIGH, deleted=True)) == TAKE


def test_a_newer_remote_version_is_taken_without_conflict() -> None:
    local = rec(OURS, MID, text="ours", mtime=T + 10)
    remote = rec(OURS.bump(HIGH), HIGH, text="theirs", mtime=T)  # older mtime: irrelevant
    assert decide(local, remote) == TAKE


def test_a_newer_remote_delete_is_taken() -> None:
    local = rec(OURS, MID)
    assert decide(local, local.tombstone(OURS.bump(HIGH), HIGH)) == TAKE


@pytest.mark.parametrize(
    "remote_version",
    [OURS, Vector.of({LOW: 1}), Vector.of({MID: 1}), Vector()],
    ids=["equal", "older", "older-other-key", "empty"],
)
def test_an_equal_or_older_remote_version_is_ignored(remote_version: Vector) -> None:
    local = rec(OURS, MID, mtime=T)
    remote = rec(remote_version, LOW, text="theirs", mtime=T + 10)  # newer mtime: irrelevant
    assert decide(local, remote) == IGNORE


def test_a_change_beats_a_concurrent_delete_held_locally() -> None:
    local = rec(OURS, LOW, mtime=T + 10, deleted=True)
    remote = rec(THEIRS, HIGH, mtime=T, text="theirs")
    assert decide(local, remote) == TAKE  # nothing of ours to keep: it was deleted


def test_a_concurrent_remote_delete_loses_to_our_change() -> None:
    local = rec(OURS, HIGH, mtime=T)
    remote = rec(THEIRS, LOW, mtime=T + 10, deleted=True)
    assert decide(local, remote) == IGNORE


def test_the_newer_mtime_wins_a_concurrent_change() -> None:
    local = rec(OURS, LOW, mtime=T)
    assert decide(local, rec(THEIRS, HIGH, mtime=T + 1, text="theirs")) == TAKE_AND_KEEP_OURS
    assert decide(local, rec(THEIRS, HIGH, mtime=T - 1, text="theirs")) == IGNORE


def test_equal_mtimes_go_to_the_lower_origin() -> None:
    assert decide(rec(OURS, HIGH), rec(THEIRS, LOW, text="theirs")) == TAKE_AND_KEEP_OURS
    assert decide(rec(OURS, LOW), rec(THEIRS, HIGH, text="theirs")) == IGNORE


def test_concurrent_deletes_are_settled_without_conflict() -> None:
    local = rec(OURS, HIGH, deleted=True)
    remote = rec(THEIRS, LOW, deleted=True)
    assert decide(local, remote) == TAKE
    assert decide(remote, local) == IGNORE


@pytest.mark.parametrize(
    ("local", "remote"),
    [
        (rec(OURS, HIGH, mtime=T), rec(THEIRS, LOW, mtime=T)),
        (rec(OURS, LOW, mtime=T), rec(THEIRS, HIGH, mtime=T)),
        (rec(OURS, LOW, mtime=T), rec(THEIRS, HIGH, mtime=T + 1)),
        (rec(OURS, HIGH, mtime=T + 1), rec(THEIRS, LOW, mtime=T)),
    ],
    ids=["remote-lower-origin", "remote-higher-origin", "remote-newer", "remote-older"],
)
def test_identical_content_is_never_a_conflict(local: FileRecord, remote: FileRecord) -> None:
    verdict = decide(local, remote)
    assert verdict.conflict is False
    assert verdict.action is (Action.TAKE if wins(remote, local) else Action.IGNORE)


def test_identical_content_with_other_metadata_is_not_a_conflict() -> None:
    local = replace(rec(OURS, HIGH), mode=0o600)
    assert decide(local, rec(THEIRS, LOW, mtime=T + 1)) == TAKE


def test_a_directory_replaced_by_a_file_keeps_the_directory() -> None:
    local = FileRecord(RelPath("notes.txt"), Kind.DIR, OURS, HIGH, mtime_ns=T)
    assert decide(local, rec(THEIRS, LOW, mtime=T)) == TAKE_AND_KEEP_OURS


def test_wins_orders_delete_then_mtime_then_origin() -> None:
    change, delete = rec(OURS, HIGH, mtime=T), rec(THEIRS, LOW, mtime=T + 1, deleted=True)
    assert wins(change, delete)
    assert not wins(delete, change)
    assert wins(rec(OURS, HIGH, mtime=T + 1), rec(THEIRS, LOW, mtime=T))
    assert wins(rec(OURS, LOW), rec(THEIRS, HIGH))
    assert not wins(rec(OURS, HIGH), rec(THEIRS, LOW))


def test_one_nodes_two_concurrent_versions_with_equal_mtime_still_have_one_winner() -> None:
    # A node can make versions that are concurrent with each other: after taking a concurrent
    # winner and editing it, its new version no longer descends from its earlier one.
    earlier = rec(Vector.of({MID: 6, HIGH: 5}), MID, text="earlier")
    later = rec(Vector.of({LOW: 1}).bump(MID), MID, text="later")
    assert earlier.version.compare(later.version) is Order.CONCURRENT
    assert wins(earlier, later) != wins(later, earlier)
    assert {decide(earlier, later).action, decide(later, earlier).action} == {
        Action.TAKE, Action.IGNORE}


def random_record(rng: random.Random) -> FileRecord:
    version = Vector.of({k: rng.randrange(3) for k in ORIGINS})
    return rec(version, rng.choice(ORIGINS), mtime=T + rng.randrange(3),
               text=rng.choice(("x", "y")), deleted=rng.random() < 0.25)


def concurrent_pairs(seed: int, count: int) -> list[tuple[FileRecord, FileRecord]]:
    rng = random.Random(seed)
    pairs: list[tuple[FileRecord, FileRecord]] = []
    while len(pairs) < count:
        a, b = random_record(rng), random_record(rng)
        if a.version.compare(b.version) is Order.CONCURRENT:
            pairs.append((a, b))
    return pairs


def test_two_nodes_holding_concurrent_versions_converge_on_one_winner() -> None:
    for a, b in concurrent_pairs(seed=7, count=4000):
        took_b = decide(a, b).action is Action.TAKE  # the node holding a, shown b
        took_a = decide(b, a).action is Action.TAKE  # the node holding b, shown a
        assert took_a != took_b, (a, b)
        assert (b if took_b else a) == (a if took_a else b)


def test_conflict_is_flagged_exactly_when_our_different_live_content_loses() -> None:
    rng = random.Random(11)
    flagged = 0
    for _ in range(4000):
        local, remote = random_record(rng), random_record(rng)
        verdict = decide(local, remote)
        concurrent = local.version.compare(remote.version) is Order.CONCURRENT
        loses = concurrent and verdict.action is Action.TAKE
        expected = loses and not local.deleted and not local.same_content(remote)
        assert verdict.conflict is expected, (local, remote)
        flagged += verdict.conflict
    assert flagged > 100


# -- judging against what we hold and what we wait for ------------------------------------------
A_VEC = Vector.of({LOW: 1, HIGH: 5})  # concurrent with OURS
R_VEC = OURS.bump(MID)  # descends from OURS


def test_a_version_that_loses_to_the_one_we_wait_for_is_set_aside_not_forgotten() -> None:
    local = rec(OURS, MID, mtime=T)
    pending = rec(A_VEC, HIGH, text="A", mtime=T + 20)
    remote = rec(R_VEC, MID, text="R", mtime=T + 10)  # beats ours, loses to A
    assert judge(local, pending, remote) == Judgement(aside=True)


def test_a_descendant_of_the_waiting_version_that_loses_to_ours_drops_the_wait() -> None:
    local = rec(OURS, MID, mtime=T)
    pending = rec(A_VEC, HIGH, text="A", mtime=T + 20)
    deletion = rec(A_VEC.bump(HIGH), HIGH, deleted=True)  # a change (ours) beats a delete
    assert judge(local, pending, deletion) == Judgement(drop_pending=True, aside=True)


def test_a_concurrent_winner_replaces_the_waiting_version_which_is_set_aside() -> None:
    pending = rec(A_VEC, HIGH, text="A", mtime=T + 20)
    remote = rec(R_VEC, MID, text="R", mtime=T + 30)
    assert judge(rec(OURS, MID), pending, remote) == Judgement(queue=True, pending_aside=True)


def test_history_is_forgotten_and_a_plain_newer_version_queued() -> None:
    local = rec(OURS, MID)
    assert judge(local, None, rec(OURS, MID)) == Judgement()
    assert judge(local, rec(R_VEC, MID), rec(OURS.bump(MID, 0), MID)) == Judgement()
    assert judge(local, None, rec(R_VEC, MID, text="R")) == Judgement(queue=True)
    assert judge(None, None, rec(R_VEC, MID)) == Judgement(queue=True)


def test_once_a_set_aside_version_beats_what_replaced_ours_it_is_queued() -> None:
    """The cycle a change-beats-delete rule allows: A beats R, T descends from A, R beats T."""
    local_a = rec(A_VEC, HIGH, text="A", mtime=T + 20)
    r = rec(R_VEC, MID, text="R", mtime=T + 10)
    assert judge(local_a, None, r) == Judgement(aside=True)
    local_t = rec(A_VEC.bump(HIGH), HIGH, deleted=True)  # our user deleted A
    assert judge(local_t, None, r) == Judgement(queue=True)

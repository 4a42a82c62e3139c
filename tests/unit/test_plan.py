"""The verdict on a remote version: take it, keep ours or resolve, the same on every node."""

import hashlib
import random
from dataclasses import replace

import pytest

from meshsync.core.paths import RelPath
from meshsync.core.plan import (
    Action,
    Judgement,
    Verdict,
    alike,
    compare,
    decide,
    forsaken,
    judge,
    local_change,
    pruned,
    resolution,
    same_version,
    superseded,
    wins,
)
from meshsync.core.records import FileRecord, Kind
from meshsync.core.vclock import Order, Vector

LOW, MID, HIGH = "0000000000000001", "7777777777777777", "ffffffffffffffff"
ORIGINS = (LOW, MID, HIGH)
OURS = Vector.of({LOW: 1, MID: 2})
THEIRS = Vector.of({LOW: 1, HIGH: 2})  # concurrent with OURS
T = 1_700_000_000_000_000_000

TAKE = Verdict(Action.TAKE)
TAKE_AND_RESOLVE = Verdict(Action.TAKE, resolve=True)
TAKE_KEEP_OURS_AND_RESOLVE = Verdict(Action.TAKE, conflict=True, resolve=True)
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
    [Vector.of({LOW: 1}), Vector.of({MID: 1}), Vector()],
    ids=["older", "older-other-key", "empty"],
)
def test_an_older_remote_version_is_ignored(remote_version: Vector) -> None:
    local = rec(OURS, MID, mtime=T)
    remote = rec(remote_version, LOW, text="theirs", mtime=T + 10)  # newer mtime: irrelevant
    assert decide(local, remote) == IGNORE


def test_the_same_version_published_by_another_node_is_ignored() -> None:
    # Two nodes that resolve one conflict publish one vector and content, each signed by itself.
    winner, loser = rec(THEIRS, HIGH, mtime=T + 1, text="theirs"), rec(OURS, MID)
    by_low, by_mid = resolution(winner, loser, LOW), resolution(winner, loser, MID)
    assert by_low != by_mid
    assert decide(by_low, by_mid) == decide(by_mid, by_low) == IGNORE


def test_equal_vectors_holding_other_versions_are_judged_as_concurrent() -> None:
    # Resolutions of different conflicts can share a vector: the rule picks one, and as the
    # vector is already the same, no resolution follows.
    ours, theirs = rec(OURS, MID, mtime=T), rec(OURS, LOW, text="theirs", mtime=T + 10)
    assert compare(theirs, ours) is Order.CONCURRENT
    assert decide(ours, theirs) == Verdict(Action.TAKE, conflict=True)
    assert decide(theirs, ours) == IGNORE


def test_a_change_beats_a_concurrent_delete_held_locally() -> None:
    local = rec(OURS, LOW, mtime=T + 10, deleted=True)
    remote = rec(THEIRS, HIGH, mtime=T, text="theirs")
    assert decide(local, remote) == TAKE_AND_RESOLVE  # nothing of ours to keep: it was deleted


def test_a_concurrent_remote_delete_loses_to_our_change() -> None:
    local = rec(OURS, HIGH, mtime=T)
    remote = rec(THEIRS, LOW, mtime=T + 10, deleted=True)
    assert decide(local, remote) == IGNORE


def test_the_newer_mtime_wins_a_concurrent_change() -> None:
    local = rec(OURS, LOW, mtime=T)
    newer = rec(THEIRS, HIGH, mtime=T + 1, text="theirs")
    assert decide(local, newer) == TAKE_KEEP_OURS_AND_RESOLVE
    assert decide(local, rec(THEIRS, HIGH, mtime=T - 1, text="theirs")) == IGNORE


def test_equal_mtimes_go_to_the_lower_origin() -> None:
    assert decide(rec(OURS, HIGH), rec(THEIRS, LOW, text="theirs")) == TAKE_KEEP_OURS_AND_RESOLVE
    assert decide(rec(OURS, LOW), rec(THEIRS, HIGH, text="theirs")) == IGNORE


def test_concurrent_deletes_are_settled_without_conflict() -> None:
    local = rec(OURS, HIGH, deleted=True)
    remote = rec(THEIRS, LOW, deleted=True)
    assert decide(local, remote) == TAKE_AND_RESOLVE
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
    assert decide(local, rec(THEIRS, LOW, mtime=T + 1)) == TAKE_AND_RESOLVE


def test_a_directory_beats_a_concurrent_file_whatever_their_mtimes() -> None:
    # What a directory holds stays where it is; the file is the loser (a conflict copy).
    directory = FileRecord(RelPath("notes.txt"), Kind.DIR, OURS, HIGH, mtime_ns=T)
    assert decide(directory, rec(THEIRS, LOW, mtime=T + 1)).action is Action.IGNORE
    assert decide(rec(OURS, LOW, mtime=T + 1), replace(directory, version=THEIRS)) == (
        TAKE_KEEP_OURS_AND_RESOLVE)


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
        concurrent = compare(remote, local) is Order.CONCURRENT
        loses = concurrent and verdict.action is Action.TAKE
        expected = loses and not local.deleted and not local.same_content(remote)
        assert verdict.conflict is expected, (local, remote)
        # A resolution follows every concurrent winner (not one of a vector we hold already).
        assert verdict.resolve is (loses and remote.version != local.version), (local, remote)
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


def test_an_alike_loser_is_kept_aside_too() -> None:
    # Its vector still matters: what beat it here may be replaced by a version it beats.
    local = rec(OURS, MID, mtime=T + 1)
    assert judge(local, None, rec(THEIRS, HIGH, mtime=T)) == Judgement(aside=True)
    pending = rec(R_VEC, MID, text="R", mtime=T + 1)
    alike_to_pending = rec(A_VEC, HIGH, text="R", mtime=T + 2)
    assert judge(local, pending, alike_to_pending) == Judgement(queue=True, pending_aside=True)


# -- resolutions -----------------------------------------------------------------------------------
WINNER = rec(THEIRS, HIGH, mtime=T + 5, text="theirs")
LOSER = rec(OURS, MID, mtime=T, text="ours")


def test_a_resolution_is_the_winner_under_the_merged_vector_published_by_us() -> None:
    resolved = resolution(WINNER, LOSER, LOW)
    assert resolved.version == Vector.of({LOW: 1, MID: 2, HIGH: 2})  # merged, not bumped
    assert resolved.version.compare(WINNER.version) is Order.NEWER
    assert resolved.version.compare(LOSER.version) is Order.NEWER
    assert (resolved.origin, resolved.author, resolved.made_by) == (LOW, HIGH, HIGH)
    assert resolved.same_metadata(WINNER)


def test_a_resolution_of_our_own_content_names_no_author() -> None:
    resolved = resolution(WINNER, LOSER, HIGH)
    assert (resolved.origin, resolved.author) == (HIGH, "")
    again = resolution(resolution(WINNER, LOSER, LOW), rec(Vector.of({HIGH: 9}), HIGH), HIGH)
    assert again.author == ""  # the content came back to its author


def test_every_node_resolving_one_conflict_publishes_one_version() -> None:
    by_low, by_mid = resolution(WINNER, LOSER, LOW), resolution(WINNER, LOSER, MID)
    assert by_low.version == by_mid.version
    assert same_version(by_low, by_mid)
    assert judge(by_low, None, by_mid) == Judgement()


def test_a_resolution_taken_over_a_plain_descendant_of_ours_needs_no_conflict() -> None:
    # A node that held the loser takes a resolution as a newer version: the node that
    # published it kept the loser as a copy.
    assert decide(LOSER, resolution(WINNER, LOSER, LOW)) == TAKE


def test_a_resolution_wins_and_loses_as_its_winner_whoever_published_it() -> None:
    rng = random.Random(5)
    checked = 0
    for _ in range(3000):
        winner, loser, other = (random_record(rng) for _ in range(3))
        if winner.deleted or winner.version.compare(loser.version) is not Order.CONCURRENT:
            continue
        for me in ORIGINS:
            resolved = resolution(winner, loser, me)
            if (resolved.version.compare(other.version) is Order.CONCURRENT
                    and winner.version.compare(other.version) is Order.CONCURRENT
                    and not same_version(winner, other)):
                assert wins(resolved, other) == wins(winner, other), (winner, other, me)
                checked += 1
    assert checked > 100


def test_alike_and_same_version() -> None:
    ours = rec(OURS, MID)
    assert alike(ours, replace(ours, mode=0o600, origin=HIGH))
    assert not alike(None, ours)
    assert alike(rec(OURS, MID, deleted=True), FileRecord(ours.path, Kind.DIR, THEIRS, HIGH,
                                                           deleted=True))
    assert not same_version(ours, replace(ours, mode=0o600))
    assert not same_version(ours, replace(ours, origin=HIGH))  # another author
    assert same_version(ours, replace(ours, origin=HIGH, author=MID))  # ours, republished


# -- local changes ---------------------------------------------------------------------------------
def test_a_local_change_descends_from_ours_and_from_kept_losers_alike_to_ours() -> None:
    ours = rec(OURS, MID)
    same_bytes = rec(THEIRS, HIGH, mtime=T + 1)  # a loser alike to ours
    other_bytes = rec(Vector.of({HIGH: 7}), HIGH, text="other")  # a loser of other content
    found = rec(Vector(), "", text="edited")
    change = local_change(ours, found, [same_bytes, other_bytes], LOW, floor=100)
    assert change.version == OURS.merge(THEIRS).bump(LOW, 100)
    assert change.version.compare(other_bytes.version) is Order.CONCURRENT  # its content: unseen
    assert (change.origin, change.author, change.blocks) == (LOW, "", found.blocks)


def test_a_deletion_of_a_resolution_is_made_by_us_alone() -> None:
    ours = resolution(WINNER, LOSER, MID)
    gone = local_change(ours, ours.tombstone(Vector(), LOW), [], LOW)
    assert (gone.deleted, gone.origin, gone.author) == (True, LOW, "")
    assert gone.version == ours.version.bump(LOW)


def test_a_first_local_change_starts_a_vector() -> None:
    change = local_change(None, rec(Vector(), ""), [], LOW)
    assert change.version == Vector.of({LOW: 1})


# -- giving up and pruning -------------------------------------------------------------------------
MEMBERS = (MID, HIGH)
WANTED = rec(R_VEC, MID, text="R")


def test_a_version_is_forsaken_once_every_member_announced_another() -> None:
    ours = rec(OURS, MID)
    assert forsaken(WANTED, {MID: ours, HIGH: None}, MEMBERS)
    assert not forsaken(WANTED, {MID: ours}, MEMBERS)  # HIGH may hold it: not answered yet
    assert not forsaken(WANTED, {MID: ours, HIGH: replace(WANTED, origin=HIGH, author=MID)},
                        MEMBERS)  # HIGH holds it (republished as a resolution, say)
    assert forsaken(WANTED, {MID: ours, HIGH: rec(R_VEC.bump(HIGH), HIGH)}, MEMBERS)
    assert forsaken(WANTED, {}, ())  # alone: nobody to fetch it from


def test_another_version_under_the_same_vector_is_not_the_one_waited_for() -> None:
    assert forsaken(WANTED, {MID: rec(R_VEC, MID, text="other"), HIGH: None}, MEMBERS)


def test_answers_of_strangers_do_not_count() -> None:
    assert not forsaken(WANTED, {LOW: rec(OURS, LOW)}, MEMBERS)


def test_a_loser_is_pruned_once_superseded_by_another_kept_or_held_by_no_member() -> None:
    loser = rec(A_VEC, HIGH, text="A")
    newer = rec(A_VEC.bump(HIGH), HIGH, text="A2")
    held = {MID: rec(OURS, MID), HIGH: loser}
    assert pruned(loser, [loser, newer], held, MEMBERS)
    assert not pruned(loser, [loser, rec(R_VEC, MID)], held, MEMBERS)
    assert pruned(loser, [loser], {MID: rec(OURS, MID), HIGH: newer}, MEMBERS)
    assert not pruned(loser, [loser], {MID: rec(OURS, MID)}, MEMBERS)


def test_a_loser_is_superseded_only_by_a_descendant_of_its_own_path() -> None:
    loser = rec(A_VEC, HIGH, text="A")
    assert superseded(loser, [loser, rec(A_VEC.bump(HIGH), HIGH, text="A2")])
    assert not superseded(loser, [loser, rec(R_VEC, MID)])  # concurrent: both stay
    assert not superseded(loser, [replace(rec(A_VEC.bump(HIGH), HIGH), path=RelPath("elsewhere"))])

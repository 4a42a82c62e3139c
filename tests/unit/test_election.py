"""The election rules, fed events with a fake clock."""

from meshsync.core.election import (
    DOWN_AFTER,
    GRACE,
    TERM_BASE,
    TERM_EPOCH,
    TERMS_PER_SECOND,
    Broadcast,
    Election,
    ElectionForced,
    FollowCoordinator,
    MarkDown,
    MarkUp,
    OpenElection,
    PeerHeard,
    PeerLeft,
    StepDown,
    Ticked,
    term_ceiling,
)
from meshsync.core.ids import NodeId

A, B, C, D = (NodeId(bytes([n]) * 32) for n in (1, 2, 3, 4))


def test_lone_node_waits_out_the_grace_then_elects_itself_for_term_1():
    e = Election(me=B, started=0.0)
    assert e.handle(Ticked(GRACE - 0.1)) == []
    assert e.handle(Ticked(GRACE)) == [
        OpenElection(1),
        Broadcast(),
        FollowCoordinator(B, 1),
        Broadcast(),
    ]
    assert (e.term, e.coordinator) == (1, B)


def test_joining_node_adopts_the_sitting_coordinator_even_with_a_lower_id():
    e = Election(me=A, started=0.0)
    assert e.handle(PeerHeard(C, 5, C, 0.5)) == [MarkUp(C), FollowCoordinator(C, 5), Broadcast()]
    assert e.handle(Ticked(GRACE + 1)) == []
    assert (e.term, e.coordinator) == (5, C)


def test_sitting_coordinator_ignores_a_lower_id_that_joins_later():
    e = Election(me=C, started=0.0)
    e.handle(Ticked(GRACE))
    assert e.coordinator == C
    assert e.handle(PeerHeard(A, 1, C, 3.0)) == [MarkUp(A)]
    assert e.handle(PeerHeard(A, 0, None, 3.1)) == []
    assert (e.term, e.coordinator) == (1, C)


def test_forced_election_opens_next_term_and_lowest_live_wins():
    e = Election(me=C, started=0.0)
    e.handle(PeerHeard(B, 4, C, 0.1))
    e.handle(PeerHeard(A, 4, C, 0.1))
    assert e.coordinator == C
    assert e.handle(ElectionForced(1.0)) == [StepDown(4), OpenElection(5), Broadcast()]
    # A announces itself for the term C opened; C follows.
    assert e.handle(PeerHeard(A, 5, A, 1.01)) == [FollowCoordinator(A, 5), Broadcast()]


def test_lowest_member_announces_itself_when_it_learns_of_an_open_term():
    e = Election(me=A, started=0.0)
    e.handle(PeerHeard(C, 4, C, 0.1))
    assert e.handle(PeerHeard(C, 5, None, 1.0)) == [
        OpenElection(5),
        Broadcast(),
        FollowCoordinator(A, 5),
        Broadcast(),
    ]


def test_silent_coordinator_is_replaced_by_next_lowest_with_a_higher_term():
    e = Election(me=B, started=0.0)
    e.handle(PeerHeard(A, 3, A, 1.0))
    e.handle(PeerHeard(C, 3, A, 1.0))
    assert e.handle(Ticked(1.0 + DOWN_AFTER)) == []
    e.handle(PeerHeard(C, 3, A, 4.0))
    assert e.handle(Ticked(1.1 + DOWN_AFTER)) == [
        MarkDown(A, "silent for 3 s"),
        OpenElection(4),
        Broadcast(),
        FollowCoordinator(B, 4),
        Broadcast(),
    ]


def test_coordinator_that_leaves_is_replaced_at_once():
    e = Election(me=C, started=0.0)
    e.handle(PeerHeard(A, 3, A, 1.0))
    e.handle(PeerHeard(B, 3, A, 1.0))
    assert e.handle(PeerLeft(A, 1.5)) == [MarkDown(A, "left"), OpenElection(4), Broadcast()]
    assert e.electing
    assert e.handle(PeerHeard(B, 4, B, 1.51)) == [FollowCoordinator(B, 4), Broadcast()]


def test_stale_term_messages_are_ignored():
    e = Election(me=C, started=0.0)
    e.handle(PeerHeard(B, 7, B, 0.1))
    assert e.handle(PeerHeard(A, 6, A, 0.2)) == [MarkUp(A)]
    assert (e.term, e.coordinator) == (7, B)


def test_coordinator_steps_down_on_learning_a_higher_term():
    e = Election(me=A, started=0.0)
    e.handle(Ticked(GRACE))
    e.handle(PeerHeard(B, 1, None, 2.1))
    assert e.coordinator == A
    assert e.handle(PeerHeard(B, 9, B, 2.2)) == [StepDown(1), FollowCoordinator(B, 9), Broadcast()]


def test_healed_partition_at_equal_terms_settles_on_the_lower_coordinator():
    e = Election(me=D, started=0.0)
    e.handle(PeerHeard(C, 2, C, 0.1))
    assert e.coordinator == C
    assert e.handle(PeerHeard(B, 2, B, 0.2)) == [MarkUp(B), FollowCoordinator(B, 2), Broadcast()]
    assert e.handle(PeerHeard(C, 2, C, 0.3)) == []


def test_healing_coordinator_follows_the_newer_term_instead_of_claiming_it():
    e = Election(me=A, started=0.0)
    e.handle(PeerHeard(C, 0, None, 0.1))
    e.handle(Ticked(GRACE))
    assert (e.term, e.coordinator) == (1, A)
    e.handle(Ticked(0.2 + DOWN_AFTER))  # the cut: C falls silent
    assert not e.is_up(C)
    # B, from the other side of a healed cut, names C for term 2; C has not reached us yet.
    assert e.handle(PeerHeard(B, 2, C, 5.0)) == [
        MarkUp(B),
        StepDown(1),
        FollowCoordinator(C, 2),
        Broadcast(),
    ]
    assert e.handle(Ticked(5.0 + DOWN_AFTER)) == []
    assert e.handle(PeerHeard(C, 2, C, 5.5)) == [MarkUp(C)]
    assert (e.term, e.coordinator) == (2, C)


def test_a_named_coordinator_never_heard_is_given_up_after_the_down_timeout():
    e = Election(me=B, started=0.0)
    e.handle(PeerHeard(C, 3, A, 0.1))
    assert e.coordinator == A
    assert e.handle(PeerHeard(C, 3, A, 3.0)) == []
    assert e.handle(Ticked(0.1 + DOWN_AFTER)) == []
    assert e.handle(Ticked(0.2 + DOWN_AFTER)) == [
        OpenElection(4),
        Broadcast(),
        FollowCoordinator(B, 4),
        Broadcast(),
    ]


def test_restarted_coordinator_resumes_the_seat_its_members_still_give_it():
    e = Election(me=A, started=10.0)
    assert e.handle(PeerHeard(B, 4, A, 10.1)) == [MarkUp(B), FollowCoordinator(A, 4), Broadcast()]


def test_live_lists_members_lowest_first_and_drops_the_down():
    e = Election(me=B, started=0.0)
    e.handle(PeerHeard(C, 0, None, 0.1))
    e.handle(PeerHeard(A, 0, None, 0.1))
    assert e.live() == [A, B, C]
    e.handle(PeerLeft(A, 0.2))
    assert e.live() == [B, C]
    assert not e.is_up(A)


def test_coordinator_that_leaves_right_after_we_follow_it_is_replaced_at_once():
    e = Election(me=B, started=0.0)
    e.handle(PeerHeard(A, 2, A, 1.0))
    assert e.handle(PeerLeft(A, 1.1)) == [
        MarkDown(A, "left"),
        OpenElection(3),
        Broadcast(),
        FollowCoordinator(B, 3),
        Broadcast(),
    ]


def test_the_term_ceiling_leaves_room_for_every_honest_term_and_for_the_next_one():
    # Honest meshes hold an election every few seconds at most; the ceiling grows 1000 a second.
    assert term_ceiling(0.0) == TERM_BASE  # a clock set to 1970 still accepts 2**32 terms
    assert term_ceiling(TERM_EPOCH + 10.0) == TERM_BASE + 10 * TERMS_PER_SECOND
    year_9999 = 253_402_300_799.0
    assert term_ceiling(year_9999) + 1 < 2**53  # the wire's largest term, far off


def test_a_term_put_at_the_ceiling_has_a_valid_successor_a_moment_later():
    now = TERM_EPOCH + 1_000_000.0
    claimed = term_ceiling(now)
    # One election later the next term is claimed; a millisecond on it is under the ceiling.
    assert claimed + 1 > term_ceiling(now)
    assert claimed + 1 <= term_ceiling(now + 0.002)


def test_a_member_heard_without_a_claim_is_live_and_moves_nothing():
    e = Election(me=B, started=0.0)
    e.handle(PeerHeard(C, 5, C, 0.5))
    assert e.handle(PeerHeard(A, 0, None, 1.0)) == [MarkUp(A)]
    assert (e.term, e.coordinator) == (5, C)
    assert e.is_up(A)

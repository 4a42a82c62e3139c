"""The election rules, fed events with a fake clock."""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Callable, Iterable
from functools import partial

from hypothesis import assume, given
from hypothesis import strategies as st

from meshsync.core.election import (
    DOWN_AFTER,
    GRACE,
    SUSPECT,
    TERM_BASE,
    TERM_EPOCH,
    TERMS_PER_SECOND,
    Broadcast,
    Election,
    ElectionForced,
    Event,
    FollowCoordinator,
    MarkDown,
    MarkUp,
    OpenElection,
    PeerHeard,
    PeerLeft,
    PeersRelayed,
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


# -- a link cut, vouches, and a mesh of machines that hello each other ----------------------------

HEARTBEAT = 1.0
STEP = 0.1


class Mesh:
    """Election machines over the links that are up, heartbeating as nodes do: each HEARTBEAT
    a member beats with its coordinator (answered with the members the coordinator hears
    itself), and says hello (answered in kind) to the members it does not count as up, or to
    all of them when its machine asks (`needs_hellos`); a node that asks to broadcast says
    hello to every neighbour at once. Every machine is ticked each STEP."""

    def __init__(self, nodes: Iterable[NodeId], links: Iterable[tuple[NodeId, NodeId]],
                 phases: dict[NodeId, float] | None = None) -> None:
        self.now = 0.0
        self.machines = {n: Election(me=n, started=0.0) for n in nodes}
        self.links = {frozenset(link) for link in links}
        self.next_hello = {n: (phases or {}).get(n, 0.0) for n in self.machines}
        self.woken: set[NodeId] = set()
        self.history: list[tuple[float, NodeId, int]] = []  # (when, node, term) at every change
        self.hellos = 0  # hellos sent, answers not counted
        self.beats = 0

    def view(self, node: NodeId) -> tuple[int, NodeId | None]:
        machine = self.machines[node]
        return machine.term, machine.coordinator

    def cut(self, a: NodeId, b: NodeId) -> None:
        self.links.discard(frozenset((a, b)))

    def join(self, a: NodeId, b: NodeId) -> None:
        self.links.add(frozenset((a, b)))

    def kill(self, node: NodeId) -> None:
        del self.machines[node]

    def restart(self, node: NodeId) -> None:
        for peer in self._neighbours(node):  # its port closes: each neighbour sees it leave
            self._feed(peer, PeerLeft(node, self.now))
        self.machines[node] = Election(me=node, started=self.now)

    def force(self, node: NodeId) -> None:
        self._feed(node, ElectionForced(self.now))

    def run(self, until: float) -> None:
        while self.now < until - 1e-9:
            self.now = round(self.now + STEP, 6)
            for node in list(self.machines):
                self._feed(node, Ticked(self.now))
            for node in sorted(n for n in self.machines if self.next_hello[n] <= self.now):
                if node in self.machines:
                    self.next_hello[node] = self.now + HEARTBEAT
                    self._heartbeat(node)
            for _ in range(20):  # a storm of broadcasts would stop here and show as churn
                if not self.woken:
                    break
                woken, self.woken = sorted(self.woken), set()
                for node in woken:
                    if node in self.machines:
                        for peer in self._neighbours(node):
                            self._hello(node, peer)

    def _neighbours(self, node: NodeId) -> list[NodeId]:
        return sorted(p for p in self.machines if p != node and frozenset((node, p)) in self.links)

    def _heartbeat(self, node: NodeId) -> None:
        machine = self.machines[node]
        everyone = machine.needs_hellos(self.now)
        for peer in self._neighbours(node):
            if machine.greets(peer, self.now, everyone):
                self._hello(node, peer)
        coordinator = machine.coordinator
        if coordinator is not None and coordinator != node and coordinator in self._neighbours(
                node):
            self._beat(node, coordinator)

    def _hello(self, sender: NodeId, receiver: NodeId) -> None:
        self.hellos += 1
        for a, b in ((sender, receiver), (receiver, sender)):  # the hello, then its answer
            if a in self.machines and b in self.machines:
                said = self.machines[a]
                hears = said.hears_coordinator(a, self.now)
                self._feed(b, PeerHeard(a, said.term, said.coordinator, self.now, hears))

    def _beat(self, member: NodeId, coordinator: NodeId) -> None:
        self.beats += 1
        self._hello(member, coordinator)
        self.hellos -= 1
        if member in self.machines and coordinator in self.machines:
            said = self.machines[coordinator]
            if said.coordinator == coordinator:
                relayed = PeersRelayed(coordinator, said.heard_directly(self.now), self.now)
                self._feed(member, relayed)

    def _feed(self, node: NodeId, event: Event) -> None:
        machine = self.machines[node]
        before = machine.term
        if Broadcast() in machine.handle(event):
            self.woken.add(node)
        if machine.term != before:
            self.history.append((self.now, node, machine.term))

    def terms_since(self, when: float) -> int:
        """How many term changes happened after `when`."""
        return sum(1 for at, _, _ in self.history if at > when)


def test_a_coordinator_heard_only_through_a_member_that_hears_it_stays_live():
    e = Election(me=C, started=0.0)
    assert e.handle(PeerHeard(B, 3, A, 0.5, hears_coordinator=True)) == [
        MarkUp(B), FollowCoordinator(A, 3), Broadcast()]
    for second in range(1, 60):
        assert e.handle(PeerHeard(B, 3, A, second + 0.5, hears_coordinator=True)) == []
        assert e.handle(Ticked(second + 0.9)) == []
    assert (e.term, e.coordinator) == (3, A)
    assert e.hears_coordinator(B, 60.0)
    assert not e.hears_coordinator(C, 60.0)  # what C's own hello says: it cannot vouch


def test_a_vouch_ends_when_the_member_no_longer_hears_the_coordinator():
    e = Election(me=C, started=0.0)
    e.handle(PeerHeard(B, 3, A, 0.5, hears_coordinator=True))
    e.handle(PeerHeard(B, 3, A, 5.0, hears_coordinator=True))
    assert e.handle(PeerHeard(B, 3, A, 6.0, hears_coordinator=False)) == [
        OpenElection(4), Broadcast()]  # B is the lowest live: C waits for its claim


def test_a_silent_member_vouches_no_longer_than_any_member_lives():
    e = Election(me=C, started=0.0)
    e.handle(PeerHeard(B, 3, A, 0.5, hears_coordinator=True))
    assert e.handle(Ticked(0.5 + DOWN_AFTER)) == []
    assert e.handle(Ticked(0.6 + DOWN_AFTER)) == [
        MarkDown(B, "silent for 3 s"),
        OpenElection(4),
        Broadcast(),
        FollowCoordinator(C, 4),
        Broadcast(),
    ]


def test_a_member_hearing_another_coordinator_or_term_does_not_vouch_for_ours():
    e = Election(me=C, started=0.0)
    e.handle(PeerHeard(B, 3, A, 0.5, hears_coordinator=True))
    # At the same term B now names D (C keeps the lower A): B's word is not about A.
    assert e.handle(PeerHeard(B, 3, D, 1.0, hears_coordinator=True)) == []
    assert e.handle(Ticked(0.5 + DOWN_AFTER)) == []  # the grace any followed coordinator gets
    assert e.handle(Ticked(0.6 + DOWN_AFTER)) == [OpenElection(4), Broadcast()]


def test_the_coordinator_hears_itself_and_a_follower_hears_it_only_while_it_speaks():
    a, b = Election(me=A, started=0.0), Election(me=B, started=0.0)
    a.handle(Ticked(GRACE))
    assert a.hears_coordinator(A, GRACE)
    b.handle(PeerHeard(A, 1, A, 2.5, hears_coordinator=True))
    assert b.hears_coordinator(B, 2.5 + DOWN_AFTER)
    assert not b.hears_coordinator(B, 2.6 + DOWN_AFTER)
    assert not Election(me=C, started=0.0).hears_coordinator(C, 0.0)  # no coordinator yet


def test_a_cut_link_in_a_triangle_keeps_one_term_for_a_minute():
    mesh = Mesh([A, B, C], [(A, B), (B, C)], {A: 0.3, B: 0.6, C: 0.9})
    mesh.run(5.0)
    assert {mesh.view(n) for n in (A, B, C)} == {(1, A)}
    mesh.run(65.0)
    assert mesh.terms_since(5.0) == 0
    assert {mesh.view(n) for n in (A, B, C)} == {(1, A)}


def test_cutting_a_link_of_a_settled_triangle_moves_nothing():
    mesh = Mesh([A, B, C], [(A, B), (B, C), (A, C)], {A: 0.3, B: 0.6, C: 0.9})
    mesh.run(10.0)
    settled = mesh.view(A)
    mesh.cut(A, C)
    mesh.run(70.0)
    assert mesh.terms_since(10.0) == 0
    assert {mesh.view(n) for n in (A, B, C)} == {settled}


def test_a_dead_coordinator_behind_a_cut_link_is_replaced_within_down_after_and_a_beat():
    mesh = Mesh([A, B, C], [(A, B), (B, C)], {A: 0.3, B: 0.6, C: 0.9})
    mesh.run(10.0)
    mesh.kill(A)
    mesh.run(10.0 + DOWN_AFTER + HEARTBEAT)
    assert {mesh.view(n) for n in (B, C)} == {(2, B)}


def test_a_dead_coordinator_is_replaced_within_down_after_and_a_beat():
    mesh = Mesh([A, B, C], [(A, B), (B, C), (A, C)], {A: 0.3, B: 0.6, C: 0.9})
    mesh.run(10.0)
    mesh.kill(A)
    mesh.run(10.0 + DOWN_AFTER + HEARTBEAT)
    assert {mesh.view(n) for n in (B, C)} == {(2, B)}


def test_members_that_heard_a_dead_coordinator_do_not_keep_it_alive_for_each_other():
    mesh = Mesh([B, C], [(B, C)], {B: 0.3, C: 0.8})
    for node in (B, C):  # both heard A once; then A died
        mesh.machines[node].handle(PeerHeard(A, 3, A, 0.0, hears_coordinator=True))
    mesh.run(DOWN_AFTER + HEARTBEAT)
    assert {mesh.view(n) for n in (B, C)} == {(4, B)}


def test_members_that_never_heard_their_coordinator_do_not_keep_it_alive_for_each_other():
    mesh = Mesh([B, C], [(B, C)], {B: 0.3, C: 0.8})
    mesh.machines[B].handle(PeerHeard(C, 3, A, 0.0))  # a claim relayed, never heard first hand
    mesh.machines[C].handle(PeerHeard(B, 3, A, 0.0))
    mesh.run(DOWN_AFTER + STEP)
    assert {mesh.view(n) for n in (B, C)} == {(4, B)}
    mesh.run(60.0)
    assert mesh.terms_since(DOWN_AFTER + STEP) == 0


def test_a_settled_mesh_beats_with_its_coordinator_alone_and_every_member_stays_live():
    mesh = Mesh([A, B, C, D], itertools.combinations([A, B, C, D], 2),
                {A: 0.3, B: 0.6, C: 0.9, D: 0.1})
    mesh.run(10.0)
    hellos, beats = mesh.hellos, mesh.beats
    mesh.run(70.0)
    assert mesh.hellos == hellos  # no hello between members: the heartbeats are a star
    assert mesh.beats - beats == 3 * 60  # one a second from each of B, C and D to A
    assert mesh.terms_since(10.0) == 0
    for node in (B, C, D):
        assert mesh.machines[node].live() == [A, B, C, D]


def test_a_relay_from_anyone_but_the_coordinator_we_hear_moves_nothing():
    e = Election(me=C, started=0.0)
    e.handle(PeerHeard(A, 1, A, 0.5, hears_coordinator=True))
    assert e.handle(PeersRelayed(B, (D,), 0.6)) == []  # B is not the coordinator
    assert not e.is_up(D)
    assert e.handle(PeersRelayed(A, (D, C, A), 0.7)) == [MarkUp(D)]
    assert e.handle(PeersRelayed(A, (D,), 0.5 + DOWN_AFTER + 0.1)) == []  # A itself gone quiet
    assert e.handle(Ticked(0.7 + DOWN_AFTER + 0.1)) == [
        MarkDown(A, "silent for 3 s"), MarkDown(D, "silent for 3 s"),
        OpenElection(2), Broadcast(), FollowCoordinator(C, 2), Broadcast()]


def test_a_member_known_only_by_relay_is_down_once_the_coordinator_stops_naming_it():
    e = Election(me=C, started=0.0)
    e.handle(PeerHeard(A, 1, A, 0.5, hears_coordinator=True))
    e.handle(PeerHeard(D, 1, A, 0.5, hears_coordinator=True))  # D, heard directly
    assert e.handle(PeersRelayed(A, (B, D), 0.6)) == [MarkUp(B)]
    e.handle(PeerHeard(A, 1, A, 1.5, hears_coordinator=True))
    # A names neither now: B, known by its word alone, is down at once; D we heard ourselves.
    assert e.handle(PeersRelayed(A, (), 1.5)) == [
        MarkDown(B, "no longer heard by the coordinator")]
    assert e.is_up(D)


def test_a_relay_does_not_bring_back_a_member_we_saw_leave_until_it_could_be_back():
    e = Election(me=C, started=0.0)
    e.handle(PeerHeard(A, 1, A, 0.5, hears_coordinator=True))
    e.handle(PeerHeard(B, 1, A, 0.5, hears_coordinator=True))
    e.handle(PeerLeft(B, 1.0))  # its goodbye reached us before it reached A
    assert e.handle(PeersRelayed(A, (B,), 1.1)) == []
    assert not e.is_up(B)
    e.handle(PeerHeard(A, 1, A, 3.0, hears_coordinator=True))
    assert e.handle(PeersRelayed(A, (B,), 4.1)) == [MarkUp(B)]  # A still hears it: back


def test_a_member_relayed_live_keeps_no_vouch_so_a_closed_coordinator_is_replaced_at_once():
    e = Election(me=C, started=0.0)
    e.handle(PeerHeard(A, 1, A, 0.5, hears_coordinator=True))
    e.handle(PeerHeard(B, 1, A, 0.5, hears_coordinator=True))  # B said it, directly, once
    for second in range(1, 10):
        e.handle(PeerHeard(A, 1, A, second + 0.5, hears_coordinator=True))
        e.handle(PeersRelayed(A, (B, C), second + 0.5))
    assert e.is_up(B)
    assert not e.hears_coordinator(B, 10.0)  # relayed live, but its word to us is old
    assert e.handle(PeerLeft(A, 10.0)) == [MarkDown(A, "left"), OpenElection(2), Broadcast()]


def test_a_member_that_finds_a_vouched_coordinator_gone_tells_the_others_at_once():
    e = Election(me=C, started=0.0)
    e.handle(PeerHeard(A, 1, A, 0.5, hears_coordinator=True))
    e.handle(PeerHeard(B, 1, A, 0.6, hears_coordinator=True))  # B heard A a moment ago
    assert e.handle(PeerLeft(A, 0.7)) == [MarkDown(A, "left"), Broadcast()]
    assert (e.term, e.coordinator) == (1, A)  # B's word keeps it until B looks for itself
    # B found it gone too: no vouch is left, and B, the lowest live, will claim term 2.
    assert e.handle(PeerHeard(B, 1, A, 0.8, hears_coordinator=False)) == [
        OpenElection(2), Broadcast()]


def test_a_member_asks_everyone_once_its_coordinator_is_silent_for_a_beat_and_a_half():
    e = Election(me=C, started=0.0)
    assert e.needs_hellos(0.0)  # no coordinator yet
    e.handle(PeerHeard(A, 1, A, 1.0, hears_coordinator=True))
    assert not e.needs_hellos(1.0 + SUSPECT)
    assert e.needs_hellos(1.1 + SUSPECT)
    e.handle(PeersRelayed(A, (B,), 1.0 + SUSPECT))  # a relay is not a hearing of A
    assert e.needs_hellos(1.1 + SUSPECT)
    assert not e.greets(B, 1.1 + SUSPECT, everyone=False)  # relayed live: its beats are A's
    lone = Election(me=A, started=0.0)
    lone.handle(Ticked(GRACE))
    assert lone.coordinator == A
    assert not lone.needs_hellos(100.0)  # members beat with it


def test_a_coordinator_greets_a_member_whose_beats_stopped_before_it_counts_it_down():
    e = Election(me=A, started=0.0)
    e.handle(Ticked(GRACE))
    e.handle(PeerHeard(B, 1, A, 3.0, hears_coordinator=True))
    assert not e.greets(B, 3.0 + SUSPECT, everyone=False)
    assert e.greets(B, 3.1 + SUSPECT, everyone=False)  # its link may be down, not it
    assert e.greets(C, 3.0, everyone=False)  # never heard: not up


def _parts(nodes: list[NodeId], links: set[frozenset[NodeId]]) -> list[set[NodeId]]:
    """The connected parts of a network."""
    parts: list[set[NodeId]] = []
    for node in nodes:
        joined = [p for p in parts if any(frozenset((node, n)) in links for n in p)]
        parts = [p for p in parts if p not in joined] + [{node}.union(*joined)]
    return parts


def _diameter_at_most_two(nodes: list[NodeId], links: set[frozenset[NodeId]]) -> bool:
    """Every two nodes of a connected part are linked, or share a neighbour."""
    def near(a: NodeId) -> set[NodeId]:
        return {b for b in nodes if frozenset((a, b)) in links}

    return all(b in near(a) or near(a) & near(b)
               for part in _parts(nodes, links) for a, b in itertools.combinations(part, 2))


PAIRS = list(itertools.combinations([A, B, C, D], 2))
DISTURBANCE = st.tuples(
    st.floats(0.0, 20.0),
    st.sampled_from(["cut", "join", "restart", "force"]),
    st.sampled_from(PAIRS),
)


@given(
    count=st.sampled_from([3, 4]),
    links=st.sets(st.sampled_from(PAIRS)),
    phases=st.lists(st.floats(0.0, 0.99), min_size=4, max_size=4),
    disturbances=st.lists(DISTURBANCE, max_size=8),
)
def test_with_links_stable_the_term_settles_and_stays_put(
    count: int, links: set[tuple[NodeId, NodeId]], phases: list[float],
    disturbances: list[tuple[float, str, tuple[NodeId, NodeId]]],
) -> None:
    nodes = [A, B, C, D][:count]
    kept = [link for link in links if set(link) <= set(nodes)]
    final = {frozenset(link) for link in kept}
    assume(_diameter_at_most_two(nodes, final))  # farther than a voucher: a known limit
    mesh = Mesh(nodes, kept, dict(zip(nodes, phases, strict=False)))
    for when, what, (a, b) in sorted(disturbances):
        mesh.run(when)
        if a not in mesh.machines or b not in mesh.machines:
            continue
        if what == "cut":
            mesh.cut(a, b)
        elif what == "join":
            mesh.join(a, b)
        elif what == "restart":
            mesh.restart(a)
        else:
            mesh.force(a)
    mesh.links = final  # from here on the links are stable
    stable = max(mesh.now, 20.0)
    mesh.run(stable)
    top = max(m.term for m in mesh.machines.values())
    mesh.run(stable + 70.0)
    # Stale views and healed partitions settle in one election at most; then nothing moves,
    # and the nodes that can reach each other agree on a coordinator among them.
    assert max(m.term for m in mesh.machines.values()) <= top + 1
    assert mesh.terms_since(stable + 10.0) == 0
    for part in _parts(nodes, final):
        views = {mesh.view(n) for n in part}
        assert len(views) == 1
        assert views.pop()[1] in part


NODES = [A, B, C, D]
# An event but for its time: called with `now` when it happens.
EVENT: st.SearchStrategy[Callable[[float], Event]] = st.one_of(
    st.builds(lambda peer, term, coordinator, hears: partial(
        PeerHeard, peer, term, coordinator, hears_coordinator=hears),
              st.sampled_from(NODES[1:]), st.integers(0, 3), st.sampled_from([None, *NODES]),
              st.booleans()),
    st.builds(lambda by, peers: partial(PeersRelayed, by, tuple(peers)),
              st.sampled_from(NODES[1:]), st.lists(st.sampled_from(NODES), max_size=3)),
    st.builds(lambda peer: partial(PeerLeft, peer), st.sampled_from(NODES[1:])),
    st.just(ElectionForced),
    st.just(Ticked),
)


@given(steps=st.lists(st.tuples(st.floats(0.0, 2.0), EVENT), max_size=30),
       start=st.floats(0.0, 100.0), within=st.floats(0.0, 1.0, exclude_max=True))
def test_until_the_next_tick_time_alone_moves_nothing(
        steps: list[tuple[float, Callable[[float], Event]]], start: float,
        within: float) -> None:
    """The node ticks only from next_tick on: a tick any earlier would have acted on
    nothing, whatever came before."""
    e = Election(me=A, started=start)
    now = start
    for gap, event in steps:
        now += gap
        e.handle(event(now))
        e.handle(Ticked(now))
        upcoming = e.next_tick(now)
        assert upcoming >= now
        if upcoming == now:
            continue  # due at once: nothing to skip
        quiet = copy.deepcopy(e)
        at = min(now + (min(upcoming, now + 60.0) - now) * within,
                 math.nextafter(upcoming, -math.inf))  # before it, whatever the rounding
        assert quiet.handle(Ticked(at)) == []
        assert quiet == e


def test_the_end_of_a_vouch_is_a_moment_to_tick_though_relays_keep_its_member_live():
    e = Election(me=B, started=0.0)
    e.handle(PeerHeard(A, 3, A, 0.5))
    e.handle(PeerHeard(C, 3, A, 1.0, hears_coordinator=True))  # C vouches for A till 4.0
    e.handle(PeersRelayed(A, (C,), 2.0))  # C is live till 5.0 by A's word
    e.handle(PeerLeft(A, 2.6))
    assert e.handle(Ticked(3.6)) == []
    assert e.next_tick(3.6) == 1.0 + DOWN_AFTER
    assert OpenElection(4) in e.handle(Ticked(e.next_tick(3.6) + 0.001))


def test_a_lone_node_ticks_at_the_end_of_its_grace_and_then_never():
    e = Election(me=A, started=10.0)
    assert e.next_tick(10.0) == 10.0 + GRACE
    e.handle(Ticked(10.0 + GRACE))
    assert e.next_tick(10.0 + GRACE) == math.inf

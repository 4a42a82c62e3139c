"""Who coordinates: liveness of members and a bully election (lowest live ID wins, terms fence).

A state machine with no I/O: `handle(event)` returns the actions the node must carry out.
Rules, in the order they are applied:
- Every message carries the sender's (term, coordinator). A higher term is adopted with its
  coordinator (None means "an election is open"); a lower term is fenced off and ignored.
- At one term, a coordinator claim fills an empty seat; two claims at one term (both sides
  of a partition elected at the same term) resolve to the lower ID. A term that has a
  coordinator is never claimed by another node: following one we have not heard from yet
  (a relayed claim, a healing partition) gives it DOWN_AFTER seconds to be heard.
- A member silent for DOWN_AFTER seconds, or one that said it is leaving, is down.
- Heartbeats form a star, so that they do not grow with the square of the mesh: in the steady
  state a member beats with its coordinator alone, and the coordinator's beats name the
  members it hears itself, which keeps them live for the others (a relay). A member that has
  not heard its coordinator itself for SUSPECT seconds, or has none, says hello to every
  member each heartbeat, as every node does while an election is open (`needs_hellos`); a
  coordinator greets a member whose beats stopped for as long (`greets`).
- The coordinator is live while we hear it ourselves, or while a member following it at our
  term said within DOWN_AFTER, to us directly, that it hears it itself (a vouch). Only a
  direct hearing vouches, so a cut link (A-B and B-C up, A-C down) does not make C call
  elections A's side never needs, and two members that do not hear the coordinator cannot
  keep a dead one alive by vouching for each other. A relay never vouches: a dead
  coordinator is given up DOWN_AFTER after the last member that heard it last said so
  (DOWN_AFTER after its death, plus a hello), or at once when its port is found closed.
- With no live coordinator a node opens term+1; the lowest live ID, on learning of the open
  term, announces itself coordinator of that same term. Nobody opens an election during the
  first GRACE seconds after start, so a joining node first hears the mesh it joins: that is
  what makes the coordinator sticky.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from meshsync.core.ids import NodeId

DOWN_AFTER = 3.0
SUSPECT = 1.5  # seconds without a beat from the coordinator before we ask every member
GRACE = 2.0
# No mesh holds more elections than this many a second, ever: a term above the ceiling it
# gives for the present is a claim no honest node can have made.
TERMS_PER_SECOND = 1000
TERM_EPOCH = 1_767_225_600  # 2026-01-01 00:00:00 UTC
TERM_BASE = 2**32  # room for any honest term, whatever a node's clock says


def term_ceiling(wall: float) -> int:
    """The highest term a node accepts at wall-clock time `wall`.

    A faulty or hostile member that claims a huge term would otherwise drag every node to it,
    and the next election's term (one more) would then be past what the wire carries: the
    mesh would split for good. The ceiling grows with time, so a term a hostile member put at
    the ceiling is followed, one election later, by a term that is valid a millisecond later
    (members repeat their hellos every second); and it stays below 2**53 for 280,000 years.
    """
    return TERM_BASE + max(0, int((wall - TERM_EPOCH) * TERMS_PER_SECOND))


# Events (past tense)
@dataclass(frozen=True, slots=True)
class PeerHeard:
    """A member spoke to us, or answered us, with its view of the mesh (term 0 and no
    coordinator: heard, with no claim to take)."""

    peer: NodeId
    term: int
    coordinator: NodeId | None
    now: float
    hears_coordinator: bool = False  # it heard its coordinator itself within DOWN_AFTER


@dataclass(frozen=True, slots=True)
class PeersRelayed:
    """A coordinator's beat named the members it hears itself: live, by its word."""

    by: NodeId
    peers: tuple[NodeId, ...]
    now: float


@dataclass(frozen=True, slots=True)
class PeerLeft:
    """A member said it is leaving, or its port is closed: it is down without waiting."""

    peer: NodeId
    now: float


@dataclass(frozen=True, slots=True)
class ElectionForced:
    """The user asked for a new election."""

    now: float


@dataclass(frozen=True, slots=True)
class Ticked:
    """Time passed."""

    now: float


Event = PeerHeard | PeersRelayed | PeerLeft | ElectionForced | Ticked


# Actions (imperative)
@dataclass(frozen=True, slots=True)
class Broadcast:
    """Tell every member our view now, not at the next heartbeat."""


@dataclass(frozen=True, slots=True)
class MarkUp:
    """Record that a member is online."""

    peer: NodeId


@dataclass(frozen=True, slots=True)
class MarkDown:
    """Record that a member is down."""

    peer: NodeId
    reason: str


@dataclass(frozen=True, slots=True)
class OpenElection:
    """Report that an election for `term` is open."""

    term: int


@dataclass(frozen=True, slots=True)
class FollowCoordinator:
    """Report that `coordinator` holds the server role for `term`."""

    coordinator: NodeId
    term: int


@dataclass(frozen=True, slots=True)
class StepDown:
    """Stop acting as coordinator: a higher term or a lower claim exists."""

    term: int


Action = Broadcast | MarkUp | MarkDown | OpenElection | FollowCoordinator | StepDown


NEVER = float("-inf")


@dataclass(slots=True)
class _Member:
    last_heard: float  # from it, or relayed by our coordinator
    direct: float = NEVER  # from it
    up: bool = True
    down_at: float = 0.0
    hears: tuple[int, NodeId] | None = None  # the (term, coordinator) it last said it hears


@dataclass(slots=True)
class Election:
    """One node's view of the mesh: the term, the coordinator and which members are live."""

    me: NodeId
    started: float
    term: int = 0
    coordinator: NodeId | None = None
    _following_since: float = 0.0
    _members: dict[NodeId, _Member] = field(default_factory=dict)

    def live(self) -> list[NodeId]:
        """The live members, this node included, lowest ID first."""
        return sorted([self.me, *(p for p, m in self._members.items() if m.up)])

    @property
    def electing(self) -> bool:
        """An election is open and nobody has won it yet."""
        return self.coordinator is None and self.term > 0

    def needs_hellos(self, now: float) -> bool:
        """Whether to say hello to every member this heartbeat, not beat with the coordinator
        alone: no coordinator, or one we have not heard ourselves for SUSPECT seconds."""
        coordinator = self.coordinator
        if coordinator == self.me:
            return False  # members beat with us
        return coordinator is None or not self._fresh(coordinator, now, SUSPECT)

    def greets(self, peer: NodeId, now: float, everyone: bool) -> bool:
        """Whether to say hello to member `peer` this heartbeat (`everyone`: `needs_hellos`):
        one not up, and as coordinator one whose beats we have missed for SUSPECT seconds
        (its link may be down while it is not)."""
        if everyone or not self.is_up(peer):
            return True
        return self.coordinator == self.me and not self._fresh(peer, now, SUSPECT)

    def heard_directly(self, now: float) -> tuple[NodeId, ...]:
        """The live members we heard ourselves within DOWN_AFTER, lowest ID first: what our
        beats name when we coordinate."""
        return tuple(sorted(p for p in self._members if self._fresh(p, now)))

    def heard_at(self, peer: NodeId) -> float | None:
        """When we last heard of a member (from it, or by our coordinator's word)."""
        member = self._members.get(peer)
        return member.last_heard if member is not None else None

    def is_up(self, peer: NodeId) -> bool:
        """Whether a member is live."""
        member = self._members.get(peer)
        return member is not None and member.up

    def hears_coordinator(self, node: NodeId, now: float) -> bool:
        """Whether `node` (this one, or a live member by its last word) hears our coordinator
        itself, not through others; the coordinator hears itself."""
        coordinator = self.coordinator
        if coordinator is None:
            return False
        if node == self.me:
            return coordinator == self.me or self._fresh(coordinator, now)
        if not self._fresh(node, now):
            return False
        member = self._members[node]
        return node == coordinator or member.hears == (self.term, coordinator)

    def cut_from_coordinator(self, node: NodeId, now: float) -> bool:
        """Whether a live member told us itself, within DOWN_AFTER, that it does not hear our
        coordinator (a member cut off from it greets every member each heartbeat, saying so).
        One not heard directly lately says nothing either way: in the star of beats members
        hear the coordinator, not one another, and taking that silence for a cut had every
        member pass each change on to every other (N² notices a change)."""
        coordinator = self.coordinator
        if coordinator is None or node in (self.me, coordinator) or not self._fresh(node, now):
            return False
        return self._members[node].hears != (self.term, coordinator)

    def next_tick(self, now: float) -> float:
        """The earliest moment, from `now` on, at which a tick may act (inf: none may): before
        it, time alone changes nothing here, so the node need not tick. Every moment an event
        records is `now` at the time, so what a later event changes lies DOWN_AFTER ahead."""
        moments = []
        if self.coordinator is None and self.term == 0:
            moments.append(self.started + GRACE)
        if self.coordinator not in (None, self.me):  # given time to be heard (see _alive)
            moments.append(self._following_since + DOWN_AFTER)
        for member in self._members.values():
            moments.append(member.direct + DOWN_AFTER)
            if member.up:
                moments.append(member.last_heard + DOWN_AFTER)
        return min((m for m in moments if m >= now), default=float("inf"))

    def handle(self, event: Event) -> list[Action]:
        """Apply one event; return what the node must do, in order."""
        actions: list[Action] = []
        match event:
            case PeerHeard(peer, term, coordinator, now, hears):
                member = self._members.get(peer)
                if member is None or not member.up:
                    actions.append(MarkUp(peer))
                heard = (term, coordinator) if hears and coordinator is not None else None
                self._members[peer] = _Member(last_heard=now, direct=now, hears=heard)
                actions += self._consider(term, coordinator, now)
                actions += self._settle(now)
            case PeersRelayed(by, relayed, now):
                if by != self.coordinator or by == self.me or not self._fresh(by, now):
                    return []  # only the coordinator we hear ourselves speaks for others
                for peer in relayed:
                    member = self._members.get(peer)
                    if peer in (self.me, by) or (
                            member is not None and not member.up
                            and now - member.down_at <= DOWN_AFTER):
                        continue  # one we saw go: the coordinator may not have yet
                    if member is None or not member.up:
                        actions.append(MarkUp(peer))
                        self._members[peer] = _Member(last_heard=now)
                    else:
                        member.last_heard = now
                named = set(relayed)
                for peer, member in self._members.items():
                    if (member.up and peer != by and peer not in named
                            and not self._fresh(peer, now)):
                        # Known live only by the coordinator's word, which it no longer gives.
                        member.up, member.down_at = False, now
                        actions.append(MarkDown(peer, "no longer heard by the coordinator"))
                actions += self._settle(now)
            case PeerLeft(peer, now):
                member = self._members.get(peer)
                if member is not None and member.up:
                    member.up, member.down_at = False, now
                    actions.append(MarkDown(peer, "left"))
                settled = self._settle(now)
                if peer == self.coordinator and not settled:
                    # Still vouched for by members that heard it lately: tell them at once
                    # that we found it gone, so that they look (and stop vouching) now.
                    settled = [Broadcast()]
                actions += settled
            case ElectionForced(now):
                actions += self._open(self.term + 1)
                actions += self._settle(now)
            case Ticked(now):
                for peer, member in self._members.items():
                    if member.up and now - member.last_heard > DOWN_AFTER:
                        member.up, member.down_at = False, now
                        actions.append(MarkDown(peer, f"silent for {DOWN_AFTER:.0f} s"))
                actions += self._settle(now)
        return actions

    def _consider(self, term: int, coordinator: NodeId | None, now: float) -> list[Action]:
        if term < self.term:
            return []  # fenced: a view from before the latest election we know of
        if term > self.term:
            return self._open(term) if coordinator is None else self._follow(coordinator, term, now)
        if coordinator is None or coordinator == self.coordinator:
            return []
        if self.coordinator is None or coordinator < self.coordinator:
            return self._follow(coordinator, term, now)
        return []

    def _settle(self, now: float) -> list[Action]:
        actions: list[Action] = []
        if self.coordinator is not None and not self._alive(self.coordinator, now):
            actions += self._open(self.term + 1)
        elif self.coordinator is None and self.term == 0:
            if now - self.started < GRACE:
                return []  # listen for the mesh we are joining before calling an election
            actions += self._open(1)
        if self.coordinator is None and self.live()[0] == self.me:
            actions += self._follow(self.me, self.term, now)
        return actions

    def _open(self, term: int) -> list[Action]:
        actions = self._leave_seat()
        self.term, self.coordinator = term, None
        return [*actions, OpenElection(term), Broadcast()]

    def _follow(self, coordinator: NodeId, term: int, now: float) -> list[Action]:
        actions = self._leave_seat() if coordinator != self.me else []
        self.term, self.coordinator, self._following_since = term, coordinator, now
        return [*actions, FollowCoordinator(coordinator, term), Broadcast()]

    def _leave_seat(self) -> list[Action]:
        return [StepDown(self.term)] if self.coordinator == self.me else []

    def _fresh(self, peer: NodeId, now: float, within: float = DOWN_AFTER) -> bool:
        """Whether we heard `peer` ourselves (not by relay) within `within` seconds."""
        member = self._members.get(peer)
        return member is not None and member.up and now - member.direct <= within

    def _alive(self, coordinator: NodeId, now: float) -> bool:
        if coordinator == self.me or self.is_up(coordinator):
            return True
        if any(self.hears_coordinator(peer, now) for peer in self._members):
            return True  # vouched for: only our link to it is cut
        # One we have not heard from since we began to follow it gets the time any member gets
        # before it counts as down; one that went down while we followed it gets none.
        member = self._members.get(coordinator)
        went_down_since = member is not None and member.down_at >= self._following_since
        return not went_down_since and now - self._following_since <= DOWN_AFTER

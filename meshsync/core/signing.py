"""What a request signature covers, and the freshness rules (clock offset, replay) around it.

Clocks are allowed to disagree: a request is accepted if its time is within MAX_OFFSET of
ours, and replay is refused by memory, not by a tight window. The guard remembers the
nonces of each trusted sender for as long as a request carrying one could still be accepted;
when room runs out it forgets that sender's oldest and refuses its times up to that one from
then on (its floor). So a sender's clock may drift or step either way within MAX_OFFSET and
is followed at once, yet no request is accepted twice.
"""

from __future__ import annotations

import hashlib
import heapq
import math
from dataclasses import dataclass, field

from meshsync.core.errors import AuthError

NAMESPACE = "meshsync"
MAX_OFFSET = 900.0  # seconds two clocks may differ by and the nodes still talk: 15 minutes
NONCE_HEX = 32
MAX_REMEMBERED = 200_000  # nonces, all senders together; past it the biggest holder forgets
MAX_PER_SENDER = 20_000  # nonces of one sender; past it, its oldest is forgotten
MAX_SENDERS = 256  # trusted keys with nonces remembered at once

AUTHORIZATION = "Authorization"
TIME = "X-Meshsync-Time"
NONCE = "X-Meshsync-Nonce"
DIGEST = "X-Meshsync-Digest"
TARGET = "X-Meshsync-Target"
RESPONSE_SIGNATURE = "X-Meshsync-Signature"
SCHEME = "Meshsync "
# A vouched signature (crypto/runkey.py): this, a head the same for everything one run of a
# node signs, then a tail of its own: a 64-byte ed25519 signature as an SSH string.
VOUCHED = b"meshsync-vouched-v1"
VOUCHED_TAIL = 4 + 64


class ClockOffset(AuthError):
    """A time further from ours than MAX_OFFSET; `offset` is theirs minus ours, in seconds."""

    def __init__(self, offset: float) -> None:
        super().__init__(f"clock differs by {offset:+.0f} s (more than {MAX_OFFSET:.0f} s)")
        self.offset = offset


def split_vouched(sig: bytes) -> tuple[bytes, bytes]:
    """(head, tail) of a vouched signature, `head + tail == sig`: the head to be stored once.
    (b"", sig) for any other signature."""
    if sig.startswith(VOUCHED) and len(sig) > len(VOUCHED) + VOUCHED_TAIL:
        return sig[:-VOUCHED_TAIL], sig[-VOUCHED_TAIL:]
    return b"", sig


def body_digest(body: bytes) -> str:
    """The digest header value of a body."""
    return "sha256=" + hashlib.sha256(body).hexdigest()


def parse_time(text: str) -> float:
    """A signed timestamp as seconds since the epoch; AuthError if it is not a finite number."""
    try:
        value = float(text)
    except ValueError:
        raise AuthError("bad timestamp") from None
    if not math.isfinite(value):
        raise AuthError("bad timestamp")
    return value


def _signed_lines(kind: str, fields: tuple[str, ...]) -> bytes:
    """`kind` and `fields`, one a line: the exact bytes a signature covers."""
    if any("\n" in f for f in fields):
        raise AuthError("a signed field contains a newline")
    try:
        return (kind + "\n" + "\n".join(fields) + "\n").encode()
    except UnicodeEncodeError:  # aiohttp hands on a header's non-UTF-8 bytes as surrogates
        raise AuthError("a signed field is not valid UTF-8") from None


@dataclass(frozen=True, slots=True)
class RequestHead:
    """The signed parts of a request: everything but the body, which the digest stands for.

    `target` is the ID of the node the request is meant for, so that no other member accepts
    it: a request one member received cannot be replayed to another.
    """

    method: str
    path: str
    query: str
    target: str
    time: str
    nonce: str
    digest: str

    def canonical(self) -> bytes:
        """The exact bytes the sender signs (SSHSIG, namespace `meshsync`)."""
        return _signed_lines("meshsync-request-v2", (
            self.method.upper(), self.path, self.query, self.target, self.time, self.nonce,
            self.digest))

    def sent_at(self) -> float:
        """The sender's wall-clock timestamp; AuthError if it is not a number."""
        return parse_time(self.time)


def response_canonical(request_nonce: str, status: int, time: str, digest: str) -> bytes:
    """The bytes a responder signs: binds its answer, and its clock, to the request that asked."""
    return _signed_lines("meshsync-response-v2", (request_nonce, str(status), time, digest))


def check_time(head: RequestHead, wall: float) -> float:
    """When `head` was sent; ClockOffset if that is more than MAX_OFFSET from `wall`. Cheap:
    such a request can be refused before its signature is checked."""
    sent = head.sent_at()
    if abs(sent - wall) > MAX_OFFSET:
        raise ClockOffset(sent - wall)
    return sent


@dataclass(slots=True)
class _Sender:
    """What the guard remembers of one sender: its nonces by time, and its floor."""

    floor: float = -math.inf  # its times at or below this are refused: their nonces are gone
    seen: set[str] = field(default_factory=set)
    oldest: list[tuple[float, str]] = field(default_factory=list)  # heap of (sent, nonce)

    def forget_oldest(self) -> None:
        sent, nonce = heapq.heappop(self.oldest)
        self.seen.discard(nonce)
        self.floor = max(self.floor, sent)

    def forget_before(self, time: float) -> int:
        """Forget the nonces sent before `time`; how many were forgotten."""
        count = 0
        while self.oldest and self.oldest[0][0] < time:
            self.forget_oldest()
            count += 1
        return count


class ReplayGuard:
    """Accepts a request once: its time within MAX_OFFSET of ours, above its sender's floor,
    and its nonce not seen from that sender."""

    def __init__(self, capacity: int = MAX_REMEMBERED, per_sender: int = MAX_PER_SENDER,
                 senders: int = MAX_SENDERS) -> None:
        self._capacity = capacity
        self._per_sender = per_sender
        self._max_senders = senders
        self._senders: dict[bytes, _Sender] = {}
        self._held = 0  # nonces remembered, all senders together
        # Times below this are refused for every sender: what was sent then is forgotten (it
        # rises with our clock, and does not fall back if our clock steps back).
        self._floor = -math.inf

    def check(self, head: RequestHead, wall: float, sender: bytes = b"") -> None:
        """Accept `head` from `sender` (its key) at wall-clock time `wall`; AuthError if its time
        is out of bounds, it was accepted before, or the guard has no room for it."""
        sent = check_time(head, wall)
        if len(head.nonce) != NONCE_HEX or not all(c in "0123456789abcdef" for c in head.nonce):
            raise AuthError("bad nonce")
        # No request sent before wall - MAX_OFFSET can be accepted now, so its nonce may go (a
        # second later: at the bound's edge, check_time alone decides).
        self._floor = max(self._floor, wall - MAX_OFFSET - 1.0)
        known = self._senders.get(sender)
        if known is None:
            known = self._admit(sender)
        else:
            self._held -= known.forget_before(self._floor)
        if sent < self._floor or sent <= known.floor:
            raise AuthError("stale request: sent before what is remembered of its sender")
        if head.nonce in known.seen:
            raise AuthError("replayed request")
        self._make_room(known)
        if sent <= known.floor:  # room was made by forgetting what came after it
            raise AuthError("stale request: sent before what is remembered of its sender")
        known.seen.add(head.nonce)
        heapq.heappush(known.oldest, (sent, head.nonce))
        self._held += 1

    def _admit(self, sender: bytes) -> _Sender:
        if len(self._senders) >= self._max_senders:
            self._sweep(None)
        if len(self._senders) >= self._max_senders:
            # Dropping a sender that still holds nonces would let its requests be replayed.
            raise AuthError("too many senders in the replay window")
        known = self._senders[sender] = _Sender()
        return known

    def _make_room(self, known: _Sender) -> None:
        """Room for one more nonce of `known`, forgetting the oldest of whoever holds most."""
        if len(known.seen) >= self._per_sender:
            known.forget_oldest()
            self._held -= 1
        if self._held >= self._capacity:
            self._sweep(known)
        if self._held >= self._capacity:
            max(self._senders.values(), key=lambda s: len(s.seen)).forget_oldest()
            self._held -= 1

    def _sweep(self, keep: _Sender | None) -> None:
        """Forget every sender's nonces that can no longer be accepted, and the senders (but
        `keep`) left with none and a floor the common floor covers."""
        for key, known in list(self._senders.items()):
            self._held -= known.forget_before(self._floor)
            if known is not keep and not known.seen and known.floor < self._floor:
                del self._senders[key]

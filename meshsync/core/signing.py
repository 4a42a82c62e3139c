"""What a request signature covers, and the freshness rules (clock skew, replay) around it."""

from __future__ import annotations

import hashlib
import heapq
from dataclasses import dataclass

from meshsync.core.errors import AuthError

NAMESPACE = "meshsync"
SKEW = 30.0  # seconds a request's timestamp may differ from ours; LANs run NTP
NONCE_HEX = 32
MAX_REMEMBERED = 200_000  # nonces; at ~10 requests/s per peer this is hours of traffic
MAX_PER_SENDER = 20_000  # of them one sender may hold: one member cannot shut out the others

AUTHORIZATION = "Authorization"
TIME = "X-Meshsync-Time"
NONCE = "X-Meshsync-Nonce"
DIGEST = "X-Meshsync-Digest"
TARGET = "X-Meshsync-Target"
RESPONSE_SIGNATURE = "X-Meshsync-Signature"
SCHEME = "Meshsync "


def body_digest(body: bytes) -> str:
    """The digest header value of a body."""
    return "sha256=" + hashlib.sha256(body).hexdigest()


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
        fields = (self.method.upper(), self.path, self.query, self.target, self.time,
                  self.nonce, self.digest)
        if any("\n" in f for f in fields):
            raise AuthError("a signed field contains a newline")
        try:
            return ("meshsync-request-v2\n" + "\n".join(fields) + "\n").encode()
        except UnicodeEncodeError:  # aiohttp hands on a header's non-UTF-8 bytes as surrogates
            raise AuthError("a signed field is not valid UTF-8") from None

    def sent_at(self) -> float:
        """The sender's wall-clock timestamp; AuthError if it is not a number."""
        try:
            value = float(self.time)
        except ValueError:
            raise AuthError("bad timestamp") from None
        if value != value or value in (float("inf"), float("-inf")):  # NaN or infinite
            raise AuthError("bad timestamp")
        return value


def response_canonical(request_nonce: str, status: int, digest: str) -> bytes:
    """The bytes a responder signs: binds its answer to the request that asked."""
    return f"meshsync-response-v1\n{request_nonce}\n{status}\n{digest}\n".encode()


class ReplayGuard:
    """Refuses stale requests and any nonce seen within the skew window."""

    def __init__(self, skew: float = SKEW, capacity: int = MAX_REMEMBERED,
                 per_sender: int = MAX_PER_SENDER) -> None:
        self._skew = skew
        self._capacity = capacity
        self._per_sender = per_sender
        self._seen: set[str] = set()
        self._expiry: list[tuple[float, str, bytes]] = []
        self._held: dict[bytes, int] = {}  # sender -> nonces of its remembered

    def check_time(self, head: RequestHead, wall: float) -> float:
        """When `head` was sent; AuthError if that is not within the skew of `wall`. Cheap: a
        stale request is refused before its signature is checked."""
        sent = head.sent_at()
        if abs(wall - sent) > self._skew:
            raise AuthError(f"stale request: clock differs by {wall - sent:+.0f} s")
        return sent

    def check(self, head: RequestHead, wall: float, sender: bytes = b"") -> None:
        """Accept `head` once, at wall-clock time `wall`; AuthError if stale or replayed, or if
        `sender` (its key) or all senders together already hold too many nonces."""
        sent = self.check_time(head, wall)
        if len(head.nonce) != NONCE_HEX or not all(c in "0123456789abcdef" for c in head.nonce):
            raise AuthError("bad nonce")
        self._forget(wall)
        if head.nonce in self._seen:
            raise AuthError("replayed request")
        held = self._held.get(sender, 0)
        if len(self._seen) >= self._capacity or held >= self._per_sender:
            raise AuthError("too many requests in the replay window")
        self._seen.add(head.nonce)
        self._held[sender] = held + 1
        # A nonce can be forgotten once a request carrying it would be refused as stale anyway.
        heapq.heappush(self._expiry, (sent + self._skew, head.nonce, sender))

    def _forget(self, wall: float) -> None:
        while self._expiry and self._expiry[0][0] < wall:
            _, nonce, sender = heapq.heappop(self._expiry)
            self._seen.discard(nonce)
            if self._held[sender] > 1:
                self._held[sender] -= 1
            else:
                del self._held[sender]

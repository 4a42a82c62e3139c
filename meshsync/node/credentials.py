"""Keys, ours and others': what the net layer asks (signing, verifying, whom we trust) and who
made a record, remembering untrusted origins so that they can be trusted by their ID."""

from __future__ import annotations

from meshsync.core.ids import NodeId
from meshsync.core.throttle import shown
from meshsync.crypto import runkey, tls
from meshsync.crypto.keys import Signer
from meshsync.node.judge import Origin
from meshsync.node.peers import Peers

MAX_ORIGINS = 64  # untrusted origins of records remembered, so they can be trusted by ID


class Credentials:
    """This node's key, and its judgement of the keys of others."""

    def __init__(self, signer: Signer, peers: Peers) -> None:
        self._signer = signer
        self._signing = runkey.RunSigner(signer)
        self._peers = peers
        self._origins: dict[str, bytes] = {}  # vector key -> key, of untrusted record origins

    def sign(self, message: bytes) -> bytes:
        """This node's signature of `message`: by its SSH key, or by a key it vouched for."""
        return self._signing.sign(message)

    def verify(self, signature: bytes, message: bytes) -> bytes:
        """The SSH key behind `signature` over `message`; ValueError if none is."""
        return runkey.verify(signature, message)

    def is_trusted(self, public_blob: bytes, address: str) -> bool:
        """Whether the user trusts this key from this IP (authorized_keys or trusted_keys), or
        an introducer of theirs does."""
        return self._peers.trust.is_trusted(public_blob, address)

    def vouched_key(self, certificate: bytes) -> bytes:
        """The SSH key that vouches for a peer's TLS certificate; ValueError if none does."""
        return tls.vouched_key(certificate)

    def claimed_name(self, certificate: bytes) -> str | None:
        """The name a peer's vouched TLS certificate claims (see tls.claimed_name)."""
        return tls.claimed_name(certificate)

    def note_untrusted(self, public_blob: bytes, address: str) -> None:
        """A peer proved its key to us, but the user does not trust it: list it, accept nothing."""
        if not self._peers.not_from_there(public_blob, address):
            self._peers.remember_stranger(public_blob, address)

    def note_clock(self, public_blob: bytes, address: str, offset: float) -> None:
        """A trusted peer whose clock is too far from ours to accept its requests: list it as
        refused, with the offset and the fix."""
        self._peers.clock_refused(public_blob, offset, address, trusted=True,
                                  last_seen=self._peers.clock.wall())

    def check_origin(self, origin: str, signature: bytes, message: bytes,
                     trusted: dict[bytes, bool]) -> Origin:
        """Whether `signature` over `message` is by the node whose vector key is `origin` (us,
        or a node we trust), or by an untrusted one (remembered, so that it can be trusted by
        its ID), or not by it at all. `trusted` keeps what the trust files said of each key
        (they are read again, a stat and a realpath each, only for a key not in it)."""
        try:
            claimed = runkey.signer(signature)  # cheap: only a signature that would count
        except ValueError:                      # is worth its check
            return Origin.FORGED
        if NodeId.of_key(claimed).key != origin:
            return Origin.FORGED
        try:
            if self.verify(signature, message) != claimed:
                return Origin.FORGED
        except ValueError:
            return Origin.FORGED
        if claimed == self._signer.public_blob:
            return Origin.TRUSTED
        if claimed not in trusted:
            trusted[claimed] = self._peers.trust.knows(claimed)
        if trusted[claimed]:
            return Origin.TRUSTED
        self._origins.pop(origin, None)  # the most recent last: the oldest is forgotten first
        self._origins[origin] = claimed
        while len(self._origins) > MAX_ORIGINS:
            del self._origins[next(iter(self._origins))]
        return Origin.UNTRUSTED

    def untrusted_origin(self, origin: str) -> str:
        """Which node made versions held back here, and the command that would trust it."""
        key = self._origins.get(origin)
        if key is None:
            return (f"made by node {origin}, not trusted here: on that machine `meshsync id` "
                    "prints its key line; trust it here with: meshsync trust 'KEY LINE'")
        peer_id = NodeId.of_key(key)
        peer = self._peers.roster.get(peer_id)
        name = f" ({shown(peer.name)})" if peer is not None and peer.name != "?" else ""
        return (f"made by {peer_id}{name}, not trusted here; to trust it, run: "
                f"meshsync trust {peer_id}")

    def origin_by_id(self, text: str) -> bytes | None:
        """The key of an untrusted origin of versions held back, by its full or short ID."""
        # A copy: judging threads add origins while the loop looks.
        keys = list(self._origins.values())
        found = [k for k in keys if NodeId.of_key(k).known_as(text)]
        return found[0] if len(found) == 1 else None

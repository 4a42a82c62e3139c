"""What a node signs (its versions, requests and answers): by its SSH key, or by a key of the
run that the SSH key vouches for.

A node signs every version it makes (100k for a first index of 100k files) and every request
and answer it sends. An in-memory ed25519 or ECDSA key signs in 20-45 µs, but an RSA key takes
about 0.9 ms (3072 bits) and a key in ssh-agent a round trip to the agent: 0.6 ms for
ed25519, 2.5 ms for RSA. Such a node makes an ed25519 key when it starts, has its SSH key sign
one vouch for it, and signs with that key: each signature carries the vouch, so it is checked
on its own (a version relayed, or read back from the index, as well as a request), and the
SSH key still stands behind everything the node signs.

A signature is either an SSHSIG blob (namespace `meshsync`), which `ssh-keygen -Y verify`
checks, or a vouched one: `MAGIC`, then as SSH strings the vouch (an SSHSIG by the SSH key
over `VOUCH_PREFIX` and the run's 32-byte ed25519 key), that key, and its 64-byte signature
over `SIGNED_PREFIX` and the message. `ssh-keygen -Y verify` checks the vouch.
"""

from __future__ import annotations

import functools

from nacl.bindings import (
    crypto_sign,
    crypto_sign_BYTES,
    crypto_sign_keypair,
    crypto_sign_open,
    crypto_sign_PUBLICKEYBYTES,
)
from nacl.exceptions import CryptoError

from meshsync.core.signing import VOUCHED
from meshsync.crypto import sshsig
from meshsync.crypto.keys import KeySigner, Signer
from meshsync.crypto.sshsig import BadSignature
from meshsync.crypto.sshwire import Reader, put_string

MAGIC = VOUCHED
VOUCH_PREFIX = b"meshsync-run-key-v1\n"
SIGNED_PREFIX = b"meshsync-run-v1\n"


class RunSigner:
    """Signs for this node: with its SSH key where that is fast, else with a vouched ed25519
    key made now (one signature by the SSH key, here: an AgentError from the agent reaches
    the caller)."""

    def __init__(self, signer: Signer) -> None:
        self._signer = signer
        self._secret = b""
        self._head = b""
        if not (isinstance(signer, KeySigner) and signer.fast):
            public, self._secret = crypto_sign_keypair()
            vouch = sshsig.sign(signer, VOUCH_PREFIX + public)
            self._head = MAGIC + put_string(vouch) + put_string(public)

    def sign(self, message: bytes) -> bytes:
        """This node's signature of `message`."""
        if not self._secret:
            return sshsig.sign(self._signer, message)
        signature = crypto_sign(SIGNED_PREFIX + message, self._secret)[:crypto_sign_BYTES]
        return self._head + put_string(signature)


# A version's signature is parsed to see whose it claims to be, then again to check it.
@functools.lru_cache(maxsize=4)
def _parts(sig: bytes) -> tuple[bytes, bytes, bytes]:
    """(vouch, run key, signature) of a vouched signature."""
    if len(sig) > sshsig.MAX_SIZE:
        raise BadSignature(f"signature is {len(sig)} bytes, more than {sshsig.MAX_SIZE}")
    try:
        r = Reader(sig[len(MAGIC):])
        vouch, public, signature = r.string(), r.string(), r.string()
    except ValueError as e:
        raise BadSignature(f"malformed vouched signature: {e}") from None
    if not r.done():
        raise BadSignature("trailing bytes after a vouched signature")
    if len(public) != crypto_sign_PUBLICKEYBYTES or len(signature) != crypto_sign_BYTES:
        raise BadSignature("a vouched signature's key or signature has the wrong length")
    return vouch, public, signature


# One vouch stands behind everything a run signs: checked once, not once a signature.
@functools.lru_cache(maxsize=256)
def _voucher(vouch: bytes, public: bytes) -> bytes:
    return sshsig.verify(vouch, VOUCH_PREFIX + public)


def signer(sig: bytes) -> bytes:
    """The SSH key a signature claims to be by, unchecked: to decide, before paying for the
    check, whether a signature by that key would count at all. BadSignature if malformed."""
    if sig.startswith(MAGIC):
        return sshsig.signer(_parts(sig)[0])
    return sshsig.signer(sig)


def verify(sig: bytes, message: bytes) -> bytes:
    """Check a signature over `message` and return the SSH key behind it (the signer's, or the
    voucher's); BadSignature if it does not verify."""
    if not sig.startswith(MAGIC):
        return sshsig.verify(sig, message)
    vouch, public, signature = _parts(sig)
    owner = _voucher(vouch, public)
    try:
        crypto_sign_open(signature + SIGNED_PREFIX + message, public)
    except (CryptoError, ValueError, TypeError):
        raise BadSignature("signature does not verify") from None
    return owner

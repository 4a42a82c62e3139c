"""SSHSIG: OpenSSH's detached signature format (PROTOCOL.sshsig), as `ssh-keygen -Y` uses."""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib

from meshsync.crypto.keys import Signer, verify_signature
from meshsync.crypto.sshwire import Reader, put_string, put_u32

MAGIC = b"SSHSIG"
VERSION = 1
MAX_SIZE = 16 * 1024
_HASHES = {b"sha256": hashlib.sha256, b"sha512": hashlib.sha512}
_BEGIN = "-----BEGIN SSH SIGNATURE-----"
_END = "-----END SSH SIGNATURE-----"


class BadSignature(ValueError):
    """The SSHSIG blob is malformed, oversized, for another namespace or does not verify."""


def _signed_data(namespace: bytes, hash_algorithm: bytes, message: bytes) -> bytes:
    digest = _HASHES[hash_algorithm](message).digest()
    return _signed_head(namespace, hash_algorithm) + put_string(digest)


# The framing around the digest and the signature is the same for every record a node signs
# or checks: made once, not twice per record (a first index signs 100k of them).
@functools.lru_cache(maxsize=16)
def _signed_head(namespace: bytes, hash_algorithm: bytes) -> bytes:
    # The reserved field is signed as empty whatever the envelope carries, as OpenSSH does.
    return MAGIC + b"".join(map(put_string, (namespace, b"", hash_algorithm)))


@functools.lru_cache(maxsize=16)
def _envelope_head(public_blob: bytes, namespace: bytes) -> bytes:
    fields = (public_blob, namespace, b"", b"sha512")
    return MAGIC + put_u32(VERSION) + b"".join(map(put_string, fields))


def sign(signer: Signer, message: bytes, namespace: str = "meshsync") -> bytes:
    """Return the binary SSHSIG blob over message, hashed with SHA-512."""
    ns = namespace.encode()
    signature = signer.sign(_signed_data(ns, b"sha512", message))
    return _envelope_head(signer.public_blob, ns) + put_string(signature)


# A record's signature is parsed to see whose it claims to be, then again to check it.
@functools.lru_cache(maxsize=4)
def _fields(sig: bytes) -> tuple[int, bytes, bytes, bytes, bytes]:
    """(version, public key, namespace, hash name, signature) of an SSHSIG blob."""
    if len(sig) > MAX_SIZE:
        raise BadSignature(f"signature is {len(sig)} bytes, more than {MAX_SIZE}")
    if not sig.startswith(MAGIC):
        raise BadSignature("not an SSHSIG signature (bad magic)")
    try:
        r = Reader(sig[len(MAGIC) :])
        version, public_blob, ns = r.u32(), r.string(), r.string()
        _reserved, hash_algorithm, signature = r.string(), r.string(), r.string()
    except ValueError as e:
        raise BadSignature(f"malformed SSHSIG: {e}") from None
    if not r.done():
        raise BadSignature("trailing bytes after SSHSIG")
    return version, public_blob, ns, hash_algorithm, signature


def signer(sig: bytes) -> bytes:
    """The public key an SSHSIG blob claims to be by, unchecked: to decide, before paying for
    the check, whether a signature by that key would count at all."""
    return _fields(sig)[1]


def verify(sig: bytes, message: bytes, namespace: str = "meshsync") -> bytes:
    """Check an SSHSIG blob over message and return the signer's public key blob."""
    version, public_blob, ns, hash_algorithm, signature = _fields(sig)
    if version != VERSION:
        raise BadSignature(f"unsupported SSHSIG version {version}")
    if ns != namespace.encode():
        raise BadSignature(f"signature is for namespace {ns!r}, not {namespace!r}")
    if hash_algorithm not in _HASHES:
        raise BadSignature(f"unsupported hash algorithm {hash_algorithm!r}")
    if not verify_signature(public_blob, _signed_data(ns, hash_algorithm, message), signature):
        raise BadSignature("signature does not verify")
    return public_blob


def armor(blob: bytes) -> str:
    """Wrap a binary SSHSIG blob in the text armor `ssh-keygen -Y sign` writes."""
    b64 = base64.b64encode(blob).decode()
    lines = [b64[i : i + 70] for i in range(0, len(b64), 70)]
    return "\n".join([_BEGIN, *lines, _END]) + "\n"


def dearmor(text: str) -> bytes:
    """Return the binary SSHSIG blob inside armored text; BadSignature if there is none."""
    start, end = text.find(_BEGIN), text.find(_END)
    if start < 0 or end < start:
        raise BadSignature("no SSH SIGNATURE block")
    body = "".join(text[start + len(_BEGIN) : end].split())
    if len(body) > MAX_SIZE * 4 // 3 + 4:
        raise BadSignature("armored signature is too large")
    try:
        return base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError) as e:
        raise BadSignature(f"bad base64 in signature: {e}") from None

"""What a peer may name as an SSH public key: a blob framed as its type says, checked before
any key code reads it (the crypto layer still checks that an ECDSA point is on its curve)."""

from __future__ import annotations

import base64

from meshsync.core.errors import WireError

# An RSA key of 8192 bits with a 32-bit exponent: the largest a hello carries, so that 64 of
# them fit beside the rest of the largest hello.
MAX_KEY_BYTES = 4 + 7 + 4 + 5 + 4 + 1025
MAX_KEY_TEXT = 4 * -(-MAX_KEY_BYTES // 3)  # as base64
_EC_POINT = {b"ecdsa-sha2-nistp256": 65, b"ecdsa-sha2-nistp384": 97, b"ecdsa-sha2-nistp521": 133}


def check_key(text: object) -> bytes:
    """An SSH public key blob given in base64, at most MAX_KEY_BYTES: ed25519, ECDSA on a NIST
    curve, or RSA of 1024 bits or more, each encoded its one canonical way (RFC 4253, 5656,
    8709)."""
    if not isinstance(text, str) or not text.isascii() or len(text) > MAX_KEY_TEXT:
        raise WireError(f"a key must be base64 of at most {MAX_KEY_BYTES} bytes")
    try:
        blob = base64.b64decode(text, validate=True)
    except ValueError:
        raise WireError("a key is not base64") from None
    if base64.b64encode(blob).decode() != text:  # one spelling: keys are compared as blobs
        raise WireError("a key is not in canonical base64")
    if len(blob) > MAX_KEY_BYTES:
        raise WireError(f"a key must be base64 of at most {MAX_KEY_BYTES} bytes")
    fields = _strings(blob)
    kind = fields[0]
    if kind == b"ssh-ed25519":
        ok = len(fields) == 2 and len(fields[1]) == 32
    elif kind in _EC_POINT:
        ok = (len(fields) == 3 and fields[1] == kind[len(b"ecdsa-sha2-"):]
              and len(fields[2]) == _EC_POINT[kind] and fields[2][0] == 4)  # uncompressed
    elif kind == b"ssh-rsa":
        ok = len(fields) == 3 and all(map(_canonical_mpint, fields[1:]))
        if ok:
            e, n = (int.from_bytes(f, "big") for f in fields[1:])
            ok = 3 <= e <= 2**32 and e % 2 == 1 and n.bit_length() >= 1024
    else:
        raise WireError(f"not an ed25519, ECDSA or RSA key: {kind[:40]!r}")
    if not ok:
        raise WireError(f"a {kind.decode()} key of the wrong shape")
    return blob


def _strings(blob: bytes) -> list[bytes]:
    """The SSH strings a blob is made of; WireError if it is not exactly a run of them."""
    fields: list[bytes] = []
    at = 0
    while at < len(blob):
        size = int.from_bytes(blob[at : at + 4], "big")
        if at + 4 + size > len(blob):
            raise WireError("a key's fields overrun it")
        fields.append(blob[at + 4 : at + 4 + size])
        at += 4 + size
    if not fields:
        raise WireError("a key is empty")
    return fields


def _canonical_mpint(field: bytes) -> bool:
    """A positive mpint in its fewest bytes: a zero byte in front only to clear the sign bit."""
    return (bool(field) and field[0] < 0x80
            and not (field[0] == 0 and (len(field) == 1 or field[1] < 0x80)))

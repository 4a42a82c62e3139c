"""The crypto layer's decoders (SSHSIG, SSH wire, public keys) and the auth headers' decoders,
fed arbitrary, almost-valid and extreme input: nothing but their own errors escapes them.

Real keys of every type we accept, made in process; stock OpenSSH checks our format elsewhere
(test_sshsig.py, test_keys.py).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
from collections.abc import Callable
from functools import cache
from typing import Any, TypeVar

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat, load_ssh_public_key
from hypothesis import given
from hypothesis import strategies as st

from meshsync.core import signing
from meshsync.core.errors import AuthError
from meshsync.core.signing import SCHEME
from meshsync.crypto import runkey, sshsig, tls
from meshsync.crypto.keys import (
    KeySigner,
    fingerprint,
    load_public_blob,
    parse_public_line,
    public_key_line,
    verify_signature,
)
from meshsync.crypto.sshsig import BadSignature
from meshsync.crypto.sshwire import Reader, put_mpint, put_string, put_u32
from meshsync.net.auth import MAX_SIGNATURE, decode_signature, head_of
from tests import decoding
from tests.decoding import decoded

T = TypeVar("T")

MESSAGE = b"meshsync-request-v1\nPOST\n/v1/hello\n"
EDGE_CHARS = ["\0", "\t", "\n", "\r", " ", "\x1c", "\x85", "\xa0", "\u2028", "\ufeff",
              "\U0001f389", "\ud800", "\udcff", "=", "+", "/", "-", "é"]
CHARS = st.characters() | st.sampled_from(EDGE_CHARS)
TEXT = st.text(CHARS, max_size=24)
FRAGMENTS = [b"\0\0\0\0", b"\xff\xff\xff\xff", b"\0\0\0\x01\x80", b"\x80", b"SSHSIG",
             b"ssh-ed25519", b"ssh-rsa", b"sha512", b"sha256", b"meshsync"]


@cache
def signers() -> tuple[KeySigner, ...]:
    """One key of every type we accept; RSA at the smallest size OpenSSH takes and a usual one."""
    return (
        KeySigner(Ed25519PrivateKey.generate()),
        KeySigner(ec.generate_private_key(ec.SECP256R1())),
        KeySigner(ec.generate_private_key(ec.SECP384R1())),
        KeySigner(ec.generate_private_key(ec.SECP521R1())),
        KeySigner(rsa.generate_private_key(65537, 1024)),  # noqa: S505 - the edge we accept
        KeySigner(rsa.generate_private_key(65537, 2048)),
    )


SIGNERS = st.integers(0, 5).map(lambda n: signers()[n])


@cache
def signed_by(signer: KeySigner, message: bytes, sshsig_hash: str = "") -> bytes:
    """The key's SSH signature over `message` (an SSHSIG if a hash is named), made once: ECDSA
    signatures are random, and hypothesis must draw the same example twice to shrink it."""
    if not sshsig_hash:
        return signer.sign(message)
    if sshsig_hash == "sha512":
        return sshsig.sign(signer, message)
    signed = sshsig.MAGIC + b"".join(map(put_string, (
        b"meshsync", b"", b"sha256", hashlib.sha256(message).digest())))
    fields = (signer.public_blob, b"meshsync", b"", b"sha256", signer.sign(signed))
    return sshsig.MAGIC + put_u32(1) + b"".join(map(put_string, fields))




def damaged(bodies: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    """Valid bytes damaged, with the fragments SSH wire decoders find hard."""
    return decoding.damaged(bodies, FRAGMENTS).map(bytes)


def fields_of(blob: bytes, head: int = 0) -> list[bytes] | None:
    """An SSH-wire blob split into its strings (after `head` bytes), None if it is not one."""
    reader, out = Reader(blob[head:]), []
    try:
        while not reader.done():
            out.append(reader.string())
    except ValueError:
        return None
    return out


@st.composite
def respliced(draw: st.DrawFn, blobs: st.SearchStrategy[bytes], head: int = 0) -> bytes:
    """A valid blob with one of its strings replaced, dropped, repeated or damaged."""
    blob = draw(blobs)
    fields = fields_of(blob, head)
    if not fields:
        return blob
    at = draw(st.integers(0, len(fields) - 1))
    how = draw(st.sampled_from(("replace", "drop", "repeat", "damage", "nest")))
    if how == "replace":
        fields[at] = draw(st.binary(max_size=40) | st.sampled_from(FRAGMENTS)
                          | SIGNERS.map(lambda s: s.public_blob))
    elif how == "drop":
        del fields[at]
    elif how == "repeat":
        fields.insert(at, fields[at])
    elif how == "damage":
        fields[at] = draw(damaged(st.just(fields[at])))
    else:
        fields[at] = draw(respliced(st.just(fields[at])))  # a key or signature has fields too
    return blob[:head] + b"".join(map(put_string, fields))


# -- SSH wire -------------------------------------------------------------------------------------

READS = st.lists(st.sampled_from(("u32", "string", "mpint", "done")), max_size=8)
WIRE_FIELDS = st.lists(
    st.tuples(st.just("u32"), st.integers(0, 2**32 - 1) | st.sampled_from([0, 2**31, 2**32 - 1]))
    | st.tuples(st.just("string"), st.binary(max_size=40) | st.sampled_from([b"", b"\0" * 600]))
    | st.tuples(st.just("mpint"), st.integers(0, 2**4096) | st.sampled_from(
        [0, 0x7F, 0x80, 0xFF, 0x100, 2**521 - 1, 2**4096])),
    max_size=6,
)
PUT: dict[str, Callable[[Any], bytes]] = {"u32": put_u32, "string": put_string, "mpint": put_mpint}
READ: dict[str, Callable[[Reader], object]] = {
    "u32": Reader.u32, "string": Reader.string, "mpint": Reader.mpint, "done": Reader.done}


def wire(fields: list[tuple[str, Any]]) -> bytes:
    return b"".join(PUT[kind](value) for kind, value in fields)


@given(st.binary(max_size=64) | damaged(WIRE_FIELDS.map(wire)), READS)
def test_a_reader_reads_fields_or_raises_value_error(data: bytes, reads: list[str]) -> None:
    reader = Reader(data)
    for read in reads:
        value = decoded(READ[read], reader, ValueError)
        if value is None:
            return
        if read == "u32":
            assert isinstance(value, int)
            assert 0 <= value < 2**32
        elif read == "string":
            assert isinstance(value, bytes)
            assert len(value) <= len(data)
        elif read == "mpint":
            assert isinstance(value, int)
            assert value >= 0


@given(WIRE_FIELDS)
def test_every_wire_field_reads_back_as_written(fields: list[tuple[str, Any]]) -> None:
    reader = Reader(wire(fields))
    assert [READ[kind](reader) for kind, _ in fields] == [value for _, value in fields]
    assert reader.done()


# -- SSHSIG ---------------------------------------------------------------------------------------

# Ours hash with SHA-512; `ssh-keygen -Y sign -O hashalg=sha256` makes the other kind.
GOOD = st.builds(signed_by, SIGNERS, st.just(MESSAGE), st.sampled_from(["sha512", "sha256"]))
SSHSIG_HEAD = len(sshsig.MAGIC) + 4


@given(st.binary(max_size=200) | st.binary(max_size=200).map(lambda b: sshsig.MAGIC + b)
       | damaged(GOOD) | respliced(GOOD, SSHSIG_HEAD))
def test_sshsig_verify_returns_the_signers_key_or_raises_bad_signature(blob: bytes) -> None:
    key = decoded(lambda b: sshsig.verify(b, MESSAGE), blob, BadSignature)
    if key is not None:
        # Only the signer's own key comes out, and it is a key the trust store can hold.
        assert key in {s.public_blob for s in signers()}
        assert load_public_blob(key) == key
        assert parse_public_line(public_key_line(key)) == (key, "")


@given(GOOD)
def test_every_key_type_and_hash_verifies(blob: bytes) -> None:
    key = sshsig.verify(blob, MESSAGE)
    with pytest.raises(BadSignature):
        sshsig.verify(blob, MESSAGE + b"\0")
    with pytest.raises(BadSignature):
        sshsig.verify(blob, MESSAGE, namespace="file")
    assert key == Reader(blob[SSHSIG_HEAD:]).string()


ARMORED = st.binary(max_size=64) | st.sampled_from([b"", b"\0" * sshsig.MAX_SIZE]) | GOOD


@given(TEXT | ARMORED.map(sshsig.armor) | damaged(ARMORED.map(lambda b: sshsig.armor(b).encode()))
       .map(lambda b: b.decode(errors="surrogateescape")))
def test_dearmor_gives_the_blob_or_raises_bad_signature(text: str) -> None:
    blob = decoded(sshsig.dearmor, text, BadSignature)
    if blob is not None:
        assert sshsig.dearmor(sshsig.armor(blob)) == blob


@given(st.binary(max_size=sshsig.MAX_SIZE) | st.just(b"\xff" * sshsig.MAX_SIZE), TEXT, TEXT)
def test_armor_round_trips_every_blob_a_verifier_takes(
    blob: bytes, before: str, after: str
) -> None:
    text = before.replace("-", "") + "\n" + sshsig.armor(blob) + after.replace("-", "")
    assert sshsig.dearmor(text) == blob


# -- what a node signs: by SSHSIG, or by a run's key that the SSH key vouches for ------------------

RECORD = b'["Sync",{"blocks":[],"deleted":false,"kind":"file","path":"a"}]'


@cache
def record_signer(n: int) -> runkey.RunSigner:
    """Signs records for signers()[n]: the RSA keys by a vouched run key, the others by SSHSIG."""
    return runkey.RunSigner(signers()[n])


@cache
def record_signed(n: int, message: bytes = RECORD) -> bytes:
    return record_signer(n).sign(message)


RECORD_SIGNATURES = st.integers(0, 5).map(record_signed)
VOUCHED_HEAD = len(runkey.MAGIC)


def vouched(vouch: bytes, n: int = 4) -> bytes:
    """signers()[n]'s vouched signature of RECORD with its vouch replaced by `vouch`."""
    _, key, signature = fields_of(record_signed(n), VOUCHED_HEAD)  # type: ignore[misc]
    return runkey.MAGIC + b"".join(map(put_string, (vouch, key, signature)))


VOUCHES = st.sampled_from([4, 5]).map(lambda n: fields_of(record_signed(n), VOUCHED_HEAD)[0])  # type: ignore[index]


@given(st.binary(max_size=200).map(lambda b: runkey.MAGIC + b) | damaged(RECORD_SIGNATURES)
       | respliced(RECORD_SIGNATURES, VOUCHED_HEAD)
       | (damaged(VOUCHES) | respliced(VOUCHES, SSHSIG_HEAD)).map(vouched))
def test_a_record_signature_names_the_key_it_verifies_by_or_raises_bad_signature(
        blob: bytes) -> None:
    claimed = decoded(runkey.signer, blob, BadSignature)
    key = decoded(lambda b: runkey.verify(b, RECORD), blob, BadSignature)
    if key is not None:
        # What a verified signature is by is what it claims: the origin check relies on it.
        assert key == claimed
        assert key in {s.public_blob for s in signers()}


@given(st.integers(0, 5), st.binary(max_size=64))
def test_a_record_signature_verifies_for_its_record_only(n: int, other: bytes) -> None:
    signature = record_signed(n)
    assert signature.startswith(runkey.MAGIC) == (not signers()[n].fast)
    assert runkey.verify(signature, RECORD) == signers()[n].public_blob
    assert runkey.signer(signature) == signers()[n].public_blob
    if other != RECORD:
        with pytest.raises(BadSignature):
            runkey.verify(signature, other)


def test_a_vouch_cannot_be_lent_to_another_run_key() -> None:
    """A forger who copies a node's vouch and signs with a run key of its own is refused, and
    so is a vouch over a TLS key or a request: what the SSH key signed for those is not a vouch."""
    with pytest.raises(BadSignature):  # 4's vouch, 5's run key and signature
        runkey.verify(vouched(fields_of(record_signed(4), VOUCHED_HEAD)[0], 5), RECORD)  # type: ignore[index]
    spki = Ed25519PrivateKey.generate().public_key().public_bytes(
        Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    with pytest.raises(BadSignature):
        runkey.verify(vouched(sshsig.sign(signers()[4], tls.vouch_message(spki))), RECORD)


# -- public keys ----------------------------------------------------------------------------------

BLOBS = SIGNERS.map(lambda s: s.public_blob)
COMMENTS = st.text(CHARS, max_size=40).filter(lambda c: c == c.strip()) | st.sampled_from(
    ["", "me@box", "x" * 4000, "a b  c", "\U0001f389", "\udcff"])


@st.composite
def zero_padded(draw: st.DrawFn) -> bytes:
    """A key's blob with zero bytes before one of its numbers: the same key, spelled otherwise."""
    fields = fields_of(draw(BLOBS))
    assert fields is not None
    at = draw(st.integers(1, len(fields) - 1))
    fields[at] = b"\0" * draw(st.integers(1, 3)) + fields[at]
    return b"".join(map(put_string, fields))


def canonical(blob: bytes) -> bytes:
    """The blob OpenSSH (and cryptography) writes for the key `blob` holds."""
    line = (Reader(blob).string() + b" " + base64.b64encode(blob)).decode()
    key = load_ssh_public_key(line.encode())
    return base64.b64decode(key.public_bytes(Encoding.OpenSSH, PublicFormat.OpenSSH).split()[1])


@given(st.binary(max_size=100) | damaged(BLOBS) | respliced(BLOBS) | zero_padded())
def test_a_public_key_blob_loads_as_its_only_spelling_or_raises_value_error(blob: bytes) -> None:
    loaded = decoded(load_public_blob, blob, ValueError)
    if loaded is not None:
        # The node ID is the blob's hash: one key must have one blob, the one ssh-keygen hashes.
        assert canonical(loaded) == loaded
        assert parse_public_line(public_key_line(loaded, "c")) == (loaded, "c")
        assert fingerprint(loaded).startswith("SHA256:")


def test_an_rsa_key_whose_numbers_carry_leading_zeros_is_refused() -> None:
    # Found by the property above: `e` or `n` with a leading zero byte loaded (and verified
    # signatures) as a second blob of the same key, so one key had many node IDs, none of them
    # the fingerprint `ssh-keygen -l` prints for that key.
    rsa_signer = signers()[5]
    kind, e, n = fields_of(rsa_signer.public_blob) or []
    for padded in (put_string(kind) + put_string(b"\0" + e) + put_string(n),
                   put_string(kind) + put_string(e) + put_string(b"\0" + n)):
        with pytest.raises(ValueError, match="canonical"):
            load_public_blob(padded)
        assert not verify_signature(padded, b"m", rsa_signer.sign(b"m"))
        with pytest.raises(ValueError, match="canonical"):
            parse_public_line(public_key_line(padded))


@st.composite
def damaged_lines(draw: st.DrawFn) -> str:
    line = public_key_line(draw(BLOBS), draw(COMMENTS))
    at = draw(st.integers(0, len(line)))
    how = draw(st.sampled_from(("cut", "replace", "insert", "type")))
    if how == "cut":
        return line[:at]
    if how == "type":
        word = draw(st.sampled_from(["ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256",
                                     "ecdsa-sha2-nistp521", "ssh-dss", ""]))
        return word + line[line.index(" ") :]
    extra = draw(st.text(CHARS, min_size=1, max_size=3))
    return line[:at] + extra + line[at + (how == "replace") :]


@given(TEXT | damaged_lines())
def test_a_public_key_line_parses_or_raises_value_error(line: str) -> None:
    parsed = decoded(parse_public_line, line, ValueError)
    if parsed is not None:
        blob, comment = parsed
        assert load_public_blob(blob) == blob
        assert parse_public_line(public_key_line(blob, comment)) == (blob, comment)


@given(BLOBS, COMMENTS)
def test_a_key_line_with_any_comment_round_trips(blob: bytes, comment: str) -> None:
    assert parse_public_line(public_key_line(blob, comment)) == (blob, comment)


@given(st.data(), SIGNERS, st.binary(max_size=64))
def test_verify_signature_answers_yes_or_no_and_never_raises(
    data: st.DataObject, signer: KeySigner, message: bytes
) -> None:
    good = signed_by(signer, message)
    assert verify_signature(signer.public_blob, message, good) is True
    key = data.draw(st.just(signer.public_blob) | damaged(BLOBS) | respliced(BLOBS)
                    | st.binary(max_size=64))
    signature = data.draw(st.just(good) | damaged(st.just(good)) | respliced(st.just(good))
                          | st.binary(max_size=64))
    verdict = verify_signature(key, message, signature)
    assert verdict in (True, False)
    if verdict:
        assert key == signer.public_blob


def test_an_ed25519_signature_a_byte_short_is_refused_not_read_into_the_message() -> None:
    # libsodium checks signature and message as one string: a 63-byte signature whose missing
    # byte leads the message must not pass as the 64-byte signature of the rest.
    signer = KeySigner(Ed25519PrivateKey.generate())
    raw = signer.sign(b"m")[-64:]
    short = put_string(b"ssh-ed25519") + put_string(raw[:63])
    assert verify_signature(signer.public_blob, raw[63:] + b"m", short) is False
    assert verify_signature(signer.public_blob, b"m", signer.sign(b"m")) is True


# -- request headers ------------------------------------------------------------------------------

# Every X-Meshsync header the signing module names (extra ones are ignored).
HEADERS = sorted(v for k, v in vars(signing).items()
                 if k.isupper() and isinstance(v, str) and v.startswith("X-Meshsync-"))


@given(st.none() | TEXT | TEXT.map(lambda t: SCHEME + t)
       | st.binary(max_size=64).map(lambda b: SCHEME + base64.b64encode(b).decode())
       | st.integers(0, MAX_SIGNATURE).map(lambda n: SCHEME + "A" * (n - n % 4)))
def test_a_signature_header_decodes_or_raises_auth_error(value: str | None) -> None:
    blob = decoded(decode_signature, value, AuthError)
    if blob is not None:
        assert len(blob) <= sshsig.MAX_SIZE  # no header we take is one SSHSIG refuses for size
        assert decode_signature(SCHEME + base64.b64encode(blob).decode()) == blob


@given(TEXT, TEXT, TEXT, st.dictionaries(st.sampled_from(HEADERS), TEXT | st.sampled_from(
    ["1700000000.000", "0" * 32, "sha256=" + "0" * 64, "\udcff", "nan"])))
def test_a_request_head_decodes_to_signable_bytes_or_raises_auth_error(
    method: str, path: str, query: str, headers: dict[str, str]
) -> None:
    head = decoded(lambda h: head_of(method, path, query, h), headers, AuthError)
    if head is not None:
        decoded(lambda h: h.canonical(), head, AuthError)
        decoded(lambda h: h.sent_at(), head, AuthError)


async def test_a_header_that_is_not_utf8_is_refused_with_401_not_a_server_error(
    aiohttp_server: Any,
) -> None:
    # aiohttp hands a header's bytes that are not UTF-8 on as lone surrogates; the signed form
    # of such a head used to raise UnicodeEncodeError: a 500 with a traceback in the log.
    async def handle(request: web.Request) -> web.Response:
        try:
            head = head_of(request.method, request.rel_url.raw_path,
                           request.rel_url.raw_query_string, request.headers)
            return web.Response(body=head.canonical())
        except AuthError as e:
            return web.Response(status=401, text=str(e))

    app = web.Application()
    app.router.add_post("/v1/hello", handle)
    server = await aiohttp_server(app)
    others = "".join(f"{name}: 1\r\n" for name in HEADERS if name != signing.TIME)
    request = ("POST /v1/hello HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n"
               f"Connection: close\r\n{others}{signing.TIME}: 17\xff00\r\n\r\n").encode("latin-1")
    reader, writer = await asyncio.open_connection(server.host, server.port)
    writer.write(request)
    answer = await reader.read()
    writer.close()
    await writer.wait_closed()
    assert answer.startswith(b"HTTP/1.1 401"), answer[:200]
    assert answer.endswith(b"a signed field is not valid UTF-8")


# -- the TLS binding: a certificate and the SSH key that vouches for it ----------------------------
@cache
def certificates() -> tuple[tuple[bytes, bytes], ...]:
    """(DER certificate, the key blob vouching for it), one per key type we accept."""
    found = []
    for signer in signers():
        pem = tls.make_certificate(signer)
        der = x509.load_pem_x509_certificate(pem).public_bytes(Encoding.DER)
        found.append((der, signer.public_blob))
    return tuple(found)


CERTIFICATES = st.sampled_from(range(len(signers()))).map(lambda n: certificates()[n][0])


@given(st.binary(max_size=600) | damaged(CERTIFICATES))
def test_a_certificate_names_its_vouching_key_or_raises_not_vouched(der: bytes) -> None:
    key = decoded(tls.vouched_key, der, tls.NotVouched)
    # What a damaged certificate may still yield is the one key that vouched for the original.
    assert key is None or key in {blob for _, blob in certificates()}


@given(st.sampled_from(range(len(signers()))))
def test_every_key_type_vouches_for_its_certificate(n: int) -> None:
    der, blob = certificates()[n]
    assert tls.vouched_key(der) == blob


@given(st.binary(max_size=200).map(lambda b: runkey.MAGIC + b) | st.binary(max_size=200))
def test_a_signature_split_for_storage_joins_back_whole(signature: bytes) -> None:
    head, tail = signing.split_vouched(signature)
    assert head + tail == signature
    assert not head or (head.startswith(runkey.MAGIC) and len(tail) == signing.VOUCHED_TAIL)

"""TLS bound to the SSH key, for real: certificates, the listener's limits and the client's pin."""

from __future__ import annotations

import asyncio
import base64
import datetime
import hashlib
import logging
import os
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)
from cryptography.x509.oid import NameOID

from meshsync.core.ids import NodeId
from meshsync.core.records import BLOCK_SIZE
from meshsync.core.signing import (
    AUTHORIZATION,
    DIGEST,
    NONCE,
    SCHEME,
    TARGET,
    TIME,
    RequestHead,
    body_digest,
)
from meshsync.core.wire import (
    MAX_BLOCKS_PER_REQUEST,
    BlockRequest,
    FolderId,
    Hello,
    IndexRequest,
    Records,
)
from meshsync.crypto import sshsig, tls
from meshsync.crypto.keys import KeySigner
from meshsync.net import server as server_module
from meshsync.net.client import Identity, PeerClient, PeerMismatch, PeerUnreachable
from meshsync.net.listener import Limits, Listener, server_context
from meshsync.net.server import make_app, serve
from meshsync.net.socket import LinkSocket

HELLO = Hello("client", 22300, frozenset({FolderId("docs")}), 1, None)


def new_key() -> KeySigner:
    return KeySigner(Ed25519PrivateKey.generate())


def der_of(pem: bytes) -> bytes:
    return x509.load_pem_x509_certificate(pem).public_bytes(Encoding.DER)


# -- the certificate and its vouch ---------------------------------------------------------------
@pytest.mark.parametrize("curve", [None, ec.SECP256R1(), ec.SECP384R1()])
def test_a_certificate_names_the_ssh_key_that_vouched_for_it(curve: ec.EllipticCurve | None):
    signer = new_key() if curve is None else KeySigner(ec.generate_private_key(curve))
    assert tls.vouched_key(der_of(tls.make_certificate(signer))) == signer.public_blob


def test_a_vouch_copied_into_a_certificate_for_another_tls_key_does_not_verify() -> None:
    victim = x509.load_pem_x509_certificate(tls.make_certificate(new_key()))
    vouch = victim.extensions.get_extension_for_oid(tls.VOUCH_OID).value
    key = Ed25519PrivateKey.generate()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "meshsync")])
    now = datetime.datetime.now(datetime.UTC)
    forged = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
              .public_key(key.public_key()).serial_number(1)
              .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
              .add_extension(vouch, critical=False).sign(key, None))
    with pytest.raises(tls.NotVouched, match="does not verify"):
        tls.vouched_key(forged.public_bytes(Encoding.DER))


@pytest.mark.parametrize("der", [b"", b"\x30\x03\x02\x01\x01", b"not a certificate" * 10,
                                 b"\x30" * 20_000])
def test_bytes_that_are_not_a_vouched_certificate_are_refused_with_not_vouched(der: bytes):
    with pytest.raises(tls.NotVouched):
        tls.vouched_key(der)


def test_the_certificate_file_is_private_and_made_anew_for_another_key(tmp_path: Path) -> None:
    first, second = new_key(), new_key()
    path = tls.certificate_file(tmp_path, first)
    assert path.stat().st_mode & 0o777 == 0o600
    pem = path.read_bytes()
    assert tls.certificate_file(tmp_path, first).read_bytes() == pem  # kept across starts
    assert tls.vouched_key(der_of(tls.certificate_file(tmp_path, second).read_bytes())) == (
        second.public_blob)


def test_the_certificate_claims_the_nodes_name_and_is_made_anew_for_another(
        tmp_path: Path) -> None:
    key = new_key()
    der = der_of(tls.certificate_file(tmp_path, key, "laptop").read_bytes())
    assert tls.claimed_name(der) == "laptop"
    renamed = der_of(tls.certificate_file(tmp_path, key, "desk").read_bytes())
    assert (tls.claimed_name(renamed), tls.vouched_key(renamed)) == ("desk", key.public_blob)
    assert tls.claimed_name(b"not a certificate") is None
    bell = der_of(tls.make_certificate(key, "ring\a"))  # a name no hello could carry
    assert tls.claimed_name(bell) is None


# -- a real server and client over loopback ------------------------------------------------------
@dataclass
class Node:
    """Credentials and a peer API that counts what reached it."""

    signer: KeySigner
    hellos: list[Hello] = field(default_factory=list)
    links: list[bytes] = field(default_factory=list)  # the keys that opened one
    held: dict[bytes, bytes] = field(default_factory=dict)  # blocks served, by hash

    def sign(self, message: bytes) -> bytes:
        return sshsig.sign(self.signer, message)

    def verify(self, signature: bytes, message: bytes) -> bytes:
        return sshsig.verify(signature, message)

    def is_trusted(self, public_blob: bytes, address: str) -> bool:
        return True

    def note_untrusted(self, public_blob: bytes, address: str) -> None:
        raise AssertionError("everyone is trusted here")

    def note_clock(self, public_blob: bytes, address: str, offset: float) -> None:
        raise AssertionError("clocks agree here")

    def vouched_key(self, certificate: bytes) -> bytes:
        return tls.vouched_key(certificate)

    def claimed_name(self, certificate: bytes) -> str | None:
        return tls.claimed_name(certificate)

    async def handle_hello(self, key: bytes, hello: Hello, remote: str) -> Hello:
        self.hellos.append(hello)
        return Hello("server", 1, frozenset(), 1, None)

    async def handle_notice(self, key: bytes, notice: Records) -> None:
        return None

    async def handle_index(self, key: bytes, request: IndexRequest) -> Records:
        raise AssertionError("not asked")

    async def handle_blocks(self, key: bytes, request: BlockRequest) -> list[bytes | None]:
        return [self.held.get(digest) for digest in request.hashes]

    async def handle_link(self, key: bytes, link: LinkSocket, remote: str) -> None:
        """Answers each frame with `echo:` and the frame, until the link closes."""
        self.links.append(key)
        while (text := await link.receive(5.0)) is not None:
            await link.send(f"echo:{text}")


@dataclass
class Running:
    node: Node
    address: str
    listener: Listener


def listening() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    sock.setblocking(False)
    return sock


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Running]:
    node = Node(new_key())
    certificate = tls.certificate_file(tmp_path, node.signer)
    sock = listening()
    listener = Listener(sock, server_context(str(certificate)), Limits(prove_within=0.5))
    runner, protocol = await serve(make_app(node, NodeId.of_key(node.signer.public_blob),
                                            time.time, node, listener))
    task = asyncio.create_task(listener.run(protocol))
    try:
        yield Running(node, f"127.0.0.1:{sock.getsockname()[1]}", listener)
    finally:
        task.cancel()
        await runner.cleanup()
        sock.close()


async def test_a_request_pinned_to_the_servers_key_is_answered(server: Running) -> None:
    async with PeerClient(Node(new_key()), time.time) as client:
        who = await client.identify(server.address)
        key = who.key
        assert who == Identity(server.node.signer.public_blob, "meshsync")
        reply = await client.send_hello(server.address, key, HELLO)
    assert (reply.status, reply.key) == (200, key)
    assert server.node.hellos == [HELLO]
    assert server.listener.count() == (0, 0)  # closed with the client, each of them


async def test_blocks_written_a_frame_at_a_time_arrive_whole_and_signed(server: Running) -> None:
    # The answer goes out a block at a time (cheaper for TLS than one 8 MiB write), signed
    # over its framing before the first byte: the client checks that signature, then each frame.
    blocks = [os.urandom(BLOCK_SIZE) for _ in range(MAX_BLOCKS_PER_REQUEST - 2)] + [b"tail"]
    server.node.held = {hashlib.sha256(b).digest(): b for b in blocks}
    asked = (hashlib.sha256(b"not held").digest(), *server.node.held)
    async with PeerClient(Node(new_key()), time.time) as client:
        key = (await client.identify(server.address)).key
        got = await client.fetch_blocks(server.address, key, BlockRequest(FolderId("docs"), asked))
    assert got == [None, *blocks]


@pytest.mark.parametrize("days", [10, -4000], ids=["not-yet-valid", "long-expired"])
async def test_a_certificate_outside_its_validity_dates_still_carries_the_vouch(
    tmp_path: Path, days: int
) -> None:
    # What a node whose clock is days off makes, or what its peers see when theirs is: the
    # dates are nobody's check (no authority signs these), so clocks cannot break TLS.
    node = Node(new_key())
    key = Ed25519PrivateKey.generate()
    spki = key.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "meshsync")])
    start = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=days)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(1).not_valid_before(start)
            .not_valid_after(start + datetime.timedelta(days=1))
            .add_extension(x509.UnrecognizedExtension(
                tls.VOUCH_OID, sshsig.sign(node.signer, tls.vouch_message(spki))), critical=False)
            .sign(key, None))
    pem = tmp_path / "dated.pem"
    pem.write_bytes(key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
                    + cert.public_bytes(Encoding.PEM))
    sock = listening()
    listener = Listener(sock, server_context(str(pem)), Limits())
    runner, protocol = await serve(make_app(node, NodeId.of_key(node.signer.public_blob),
                                            time.time, node, listener))
    task = asyncio.create_task(listener.run(protocol))
    address = f"127.0.0.1:{sock.getsockname()[1]}"
    try:
        async with PeerClient(Node(new_key()), time.time) as client:
            assert (await client.identify(address)).key == node.signer.public_blob
            reply = await client.send_hello(address, node.signer.public_blob, HELLO)
        assert reply.status == 200
    finally:
        task.cancel()
        await runner.cleanup()
        sock.close()


async def test_a_request_pinned_to_another_key_is_never_sent(server: Running) -> None:
    async with PeerClient(Node(new_key()), time.time) as client:
        with pytest.raises(PeerMismatch):
            await client.send_hello(server.address, new_key().public_blob, HELLO)
    assert server.node.hellos == []


async def test_a_link_pinned_to_the_servers_key_carries_frames_both_ways_until_closed(
        server: Running) -> None:
    member = Node(new_key())
    async with PeerClient(member, time.time) as client:
        link = await client.open_link(server.address, server.node.signer.public_blob)
        await link.send("beat 1")
        assert await link.receive(5.0) == "echo:beat 1"
        await link.send("beat 2")
        assert await link.receive(5.0) == "echo:beat 2"
        assert server.node.links == [member.signer.public_blob]  # its signed request proved it
        await link.close()
        assert link.closed
        assert await link.receive(5.0) is None
    async with asyncio.timeout(5):  # the server's end closes in turn
        while server.listener.count() != (0, 0):  # noqa: ASYNC110 (a count, not an event)
            await asyncio.sleep(0.01)


async def test_a_link_pinned_to_another_key_is_never_opened(server: Running) -> None:
    async with PeerClient(Node(new_key()), time.time) as client:
        with pytest.raises(PeerMismatch):
            await client.open_link(server.address, new_key().public_blob)
    assert server.node.links == []


async def test_a_server_whose_certificate_no_key_vouches_for_is_found_out(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "meshsync")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(1).not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=1)).sign(key, None))
    pem = tmp_path / "plain.pem"
    pem.write_bytes(key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
                    + cert.public_bytes(Encoding.PEM))
    received: list[bytes] = []

    async def take(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received.append(await reader.read(65536))
        writer.close()

    plain = await asyncio.start_server(take, "127.0.0.1", 0, ssl=server_context(str(pem)))
    address = f"127.0.0.1:{plain.sockets[0].getsockname()[1]}"
    async with plain, PeerClient(Node(new_key()), time.time) as client:
        with pytest.raises(PeerMismatch, match="not vouched"):
            await client.identify(address)
        with pytest.raises(PeerMismatch):
            await client.send_hello(address, new_key().public_blob, HELLO)
    assert b"".join(received) == b""  # not one byte of a request


async def open_raw(address: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, _, port = address.rpartition(":")
    return await asyncio.open_connection(host, int(port))


async def closed(reader: asyncio.StreamReader, within: float) -> bool:
    try:
        async with asyncio.timeout(within):
            return await reader.read(1) == b""
    except ConnectionResetError:
        return True


async def test_a_connection_that_proves_nothing_is_closed_after_the_grace(server: Running) -> None:
    reader, writer = await open_raw(server.address)  # no TLS handshake, ever
    assert await closed(reader, 5.0)
    writer.close()
    assert server.listener.count() == (0, 0)


async def test_an_address_holds_few_unproven_connections(server: Running) -> None:
    limit = server.listener.limits.unproven_per_address
    held = [await open_raw(server.address) for _ in range(limit)]
    extra_reader, extra_writer = await open_raw(server.address)
    assert await closed(extra_reader, 2.0)  # shown out at once, while the others wait
    assert server.listener.count() == (limit, limit)
    for _, writer in [*held, (extra_reader, extra_writer)]:
        writer.close()


async def test_when_too_many_are_unproven_the_oldest_goes_first(tmp_path: Path) -> None:
    node = Node(new_key())
    sock = listening()
    listener = Listener(sock, server_context(str(tls.certificate_file(tmp_path, node.signer))),
                        Limits(unproven=2, unproven_per_address=8, prove_within=30))
    task = asyncio.create_task(listener.run(asyncio.Protocol))
    address = f"127.0.0.1:{sock.getsockname()[1]}"
    try:
        first = await open_raw(address)
        second = await open_raw(address)
        third = await open_raw(address)
        assert await closed(first[0], 2.0)
        assert listener.count() == (2, 2)
        for _, writer in (first, second, third):
            writer.close()
    finally:
        task.cancel()
        sock.close()


async def test_when_too_many_are_unproven_a_strangers_go_before_a_members(
        tmp_path: Path) -> None:
    node = Node(new_key())
    sock = listening()
    listener = Listener(sock, server_context(str(tls.certificate_file(tmp_path, node.signer))),
                        Limits(unproven=2, unproven_per_address=8, prove_within=30),
                        known=lambda host: host == "127.0.0.2")
    task = asyncio.create_task(listener.run(asyncio.Protocol))
    host, port = sock.getsockname()
    try:
        member = await asyncio.open_connection(host, port, local_addr=("127.0.0.2", 0))
        flood = [await open_raw(f"{host}:{port}") for _ in range(3)]
        assert await closed(flood[0][0], 2.0)  # the oldest stranger's, not the older member's
        assert await closed(flood[1][0], 2.0)
        assert listener.count() == (2, 2)
        assert not member[0].at_eof()
        for _, writer in (member, *flood):
            writer.close()
    finally:
        task.cancel()
        sock.close()


async def test_connections_cancelled_before_their_handshake_leave_no_descriptor(
    tmp_path: Path,
) -> None:
    certificate = str(tls.certificate_file(tmp_path, new_key()))
    before = open_descriptors()
    sock = listening()
    listener = Listener(sock, server_context(certificate),
                        Limits(unproven=1, unproven_per_address=1000, prove_within=30))
    address = f"127.0.0.1:{sock.getsockname()[1]}"
    # Waiting in the backlog, they are accepted in one burst: each evicts the one before it
    # before that one's handshake task has even run.
    clients = [await open_raw(address) for _ in range(50)]
    task = asyncio.create_task(listener.run(asyncio.Protocol))
    try:
        assert await closed(clients[-2][0], 2.0)
        for _, writer in clients:
            writer.close()
            await writer.wait_closed()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        sock.close()
    assert open_descriptors() == before


def open_descriptors() -> int:
    return len(list(Path("/proc/self/fd").iterdir()))


def test_the_limits_leave_most_descriptors_to_the_rest_of_the_node() -> None:
    assert Limits.for_open_files(1024).connections == 256
    assert Limits.for_open_files(1024).unproven == 64
    assert Limits.for_open_files(1 << 20).connections == 512
    assert Limits.for_open_files(40).connections == 16


def test_the_server_speaks_only_tls_1_3(tmp_path: Path) -> None:
    context = server_context(str(tls.certificate_file(tmp_path, new_key())))
    assert context.minimum_version is ssl.TLSVersion.TLSv1_3


def test_a_certificate_for_a_key_type_nobody_knows_is_not_vouched() -> None:
    # Found by the property test: an OID cryptography cannot load raised UnsupportedAlgorithm,
    # which no caller expected (a peer's certificate could have stopped the node).
    der = bytearray(der_of(tls.make_certificate(new_key())))
    ed25519 = bytes.fromhex("06032b6570")  # OID 1.3.101.112
    at = der.rindex(ed25519, 0, der.index(b"SSHSIG"))  # the subject key's, not the signature's
    der[at + 4] ^= 0x40
    with pytest.raises(tls.NotVouched, match="not a usable certificate"):
        tls.vouched_key(bytes(der))


async def test_malformed_requests_after_the_handshake_add_a_printable_line_or_two(
    server: Running, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.check_hostname, client.verify_mode = False, ssl.CERT_NONE
    host, _, port = server.address.rpartition(":")
    bad = [b"POST /v1/hello HTTP/1.1\r\nHost: x\r\nX-Evil: a\x1b[31m\nFAKE LINE\r\n\r\n",
           b"POST /v1/hello HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
           b"POST /v1/hello HTTP/1.1\r\n" + b"X-A: b\r\n" * 200 + b"Bad\x00Header\r\n\r\n"]
    for n in range(30):
        reader, writer = await asyncio.open_connection(host, int(port), ssl=client,
                                                       server_hostname="")
        writer.write(bad[n % len(bad)])
        await reader.read()
        writer.close()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) <= len(bad)  # one per kind of error a minute, not one per request
    assert all(line.isprintable() and r.exc_info is None
               for line, r in zip(lines, caplog.records, strict=True))


async def test_a_peer_that_drops_then_stalls_a_request_fails_it_as_a_peer_error(
    tmp_path: Path,
) -> None:
    # The retry on a fresh connection timing out used to escape as a bare TimeoutError,
    # out of the node's heartbeat task: a stranger relaying a member's port stopped the node.
    node = Node(new_key())
    context = server_context(str(tls.certificate_file(tmp_path, node.signer)))
    seen: list[int] = []

    async def drop_then_stall(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(len(seen))
        await reader.read(65536)
        if len(seen) == 1:
            writer.transport.abort()  # the request arrived: the connection "was stale"
        else:
            await asyncio.sleep(3600)

    stalling = await asyncio.start_server(drop_then_stall, "127.0.0.1", 0, ssl=context)
    address = f"127.0.0.1:{stalling.sockets[0].getsockname()[1]}"
    async with stalling, PeerClient(Node(new_key()), time.time) as client:
        with pytest.raises(PeerUnreachable, match="no answer"):
            await client.send_hello(address, node.signer.public_blob, HELLO, timeout=0.5)
    assert seen == [0, 1]


async def test_an_answer_signed_by_another_key_than_the_one_asked_is_refused(
    tmp_path: Path,
) -> None:
    # The TLS certificate is vouched for by the key we asked, but the answers are signed by
    # another: whatever answers there is not the node we meant, and nothing it says counts.
    vouching, answering = new_key(), new_key()
    node = Node(answering)
    sock = listening()
    listener = Listener(sock, server_context(str(tls.certificate_file(tmp_path, vouching))),
                        Limits())
    runner, protocol = await serve(make_app(node, NodeId.of_key(vouching.public_blob),
                                            time.time, node, listener))
    task = asyncio.create_task(listener.run(protocol))
    address = f"127.0.0.1:{sock.getsockname()[1]}"
    try:
        async with PeerClient(Node(new_key()), time.time) as client:
            with pytest.raises(PeerUnreachable, match="is not signed by"):
                await client.send_hello(address, vouching.public_blob, HELLO)
    finally:
        task.cancel()
        await runner.cleanup()
        sock.close()


async def test_a_members_next_request_head_must_come_whole_within_the_idle_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The proven connection of a member that starts a request and stalls (slowloris) is
    # closed when aiohttp's keep-alive timer runs out: it stops only for a whole head.
    monkeypatch.setattr(server_module, "IDLE", 0.5)  # 20 s in the node
    node, member = Node(new_key()), new_key()
    sock = listening()
    listener = Listener(sock, server_context(str(tls.certificate_file(tmp_path, node.signer))),
                        Limits())
    runner, protocol = await serve(make_app(node, NodeId.of_key(node.signer.public_blob),
                                            time.time, node, listener))
    task = asyncio.create_task(listener.run(protocol))
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.check_hostname, client.verify_mode = False, ssl.CERT_NONE
    body = HELLO.to_json()
    head = RequestHead("POST", "/v1/hello", "", str(NodeId.of_key(node.signer.public_blob)),
                       f"{time.time():.3f}", os.urandom(16).hex(), body_digest(body))
    signature = base64.b64encode(sshsig.sign(member, head.canonical())).decode()
    request = (f"POST /v1/hello HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
               f"{AUTHORIZATION}: {SCHEME}{signature}\r\n{TARGET}: {head.target}\r\n"
               f"{TIME}: {head.time}\r\n{NONCE}: {head.nonce}\r\n{DIGEST}: {head.digest}\r\n"
               "\r\n").encode() + body
    try:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", sock.getsockname()[1], ssl=client, server_hostname="")
        writer.write(request)
        answer = await reader.readuntil(b"\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 200")
        length = next(int(line.split(b":")[1]) for line in answer.split(b"\r\n")
                      if line.lower().startswith(b"content-length:"))
        await reader.readexactly(length)
        assert listener.count() == (1, 0)  # proven
        writer.write(b"POST /v1/hello HTTP/1.1\r\nHost: x\r\n")  # and never the rest
        assert await closed(reader, 5.0)
        writer.close()
    finally:
        task.cancel()
        await runner.cleanup()
        sock.close()


def test_the_open_file_limit_is_raised_to_the_hard_one() -> None:
    script = ("import resource; from meshsync.net.listener import raise_open_file_limit; "
              "resource.setrlimit(resource.RLIMIT_NOFILE, (256, 2048)); "
              "print(raise_open_file_limit(), resource.getrlimit(resource.RLIMIT_NOFILE)[0])")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            check=True)
    assert result.stdout.split() == ["2048", "2048"]

"""Hostile parties on the test LAN, each run inside a host's namespace by a test.

    python -m tests.integration.hostile mitm PORT MODE OUT [VICTIM_PEM]
        a man in the middle that terminates TLS on PORT with a certificate of its own (MODE
        `plain`: vouched for by no SSH key; `own`: vouched for by a key of its own; `copied`:
        its own key under the vouch copied from VICTIM_PEM) and appends every byte of
        plaintext it is sent to OUT
    python -m tests.integration.hostile flood HOST:PORT COUNT SOURCE...
        COUNT connections from the SOURCE addresses that never finish a TLS handshake (half
        send nothing, half the start of a ClientHello), each reopened as soon as it is closed
    python -m tests.integration.hostile relay PORT HOST:PORT
        a plain TCP relay from PORT to HOST:PORT (TLS passes through it, end to end)
    python -m tests.integration.hostile keys HOST:PORT COUNT
        COUNT hellos, each signed by a fresh key; prints how they were answered
    python -m tests.integration.hostile adverts IP PORT TEXT ID
        mDNS answers, every second, for services at IP:PORT, PORT+1… whose names and TXT
        fields carry TEXT (a line with control characters, say), and a last one, well formed,
        that claims the ID ID
    python -m tests.integration.hostile member KEYFILE PORT STATE PLAN OUT PEER...
        a member its peers trust that lies as PLAN (JSON) says; appends what it saw to OUT

Each prints `ready` once it is in place.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime
import hashlib
import json
import os
import random
import resource
import select
import socket
import ssl
import sys
import time
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
)
from cryptography.x509.oid import NameOID

from meshsync.core.ids import NodeId
from meshsync.core.paths import RelPath
from meshsync.core.records import BLOCK_SIZE, FileRecord, Kind
from meshsync.core.vclock import Vector
from meshsync.core.wire import FolderId, Hello, Records, Signed
from meshsync.crypto import sshsig, tls
from meshsync.crypto.keys import KeySigner, load_signer
from meshsync.net.client import PeerClient, PeerError
from meshsync.net.listener import Limits, Listener, server_context
from meshsync.net.server import make_app, serve
from tests.integration.probe import node_at, post, signed

FOLDER = FolderId("Sync")


def ready() -> None:
    print("ready", flush=True)


# -- a man in the middle -------------------------------------------------------------------------
def certificate(mode: str, victim_pem: Path | None) -> bytes:
    """A key and certificate for the man in the middle, as one PEM."""
    if mode == "own":
        return tls.make_certificate(KeySigner(Ed25519PrivateKey.generate()))
    key = Ed25519PrivateKey.generate()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "meshsync")])
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(days=1))
               .not_valid_after(now + datetime.timedelta(days=1)))
    if mode == "copied":
        assert victim_pem is not None
        victim = x509.load_pem_x509_certificate(victim_pem.read_bytes())
        vouch = victim.extensions.get_extension_for_oid(tls.VOUCH_OID)
        builder = builder.add_extension(vouch.value, critical=False)
    cert = builder.sign(key, None)
    return (key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
            + cert.public_bytes(Encoding.PEM))


def mitm_context(mode: str, out: Path, victim_pem: Path | None) -> ssl.SSLContext:
    pem = out.with_suffix(".pem")
    pem.write_bytes(certificate(mode, victim_pem))
    out.touch()
    return server_context(str(pem))


async def mitm(context: ssl.SSLContext, port: int, out: Path) -> None:

    async def take(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await asyncio.wait_for(reader.read(65536), 10):
                with out.open("ab") as f:
                    f.write(data)
        except (OSError, TimeoutError):
            pass
        finally:
            writer.transport.abort()

    server = await asyncio.start_server(take, "0.0.0.0", port, ssl=context)  # noqa: S104
    ready()
    async with server:
        await server.serve_forever()


# -- a relay ---------------------------------------------------------------------------------------
async def relay(port: int, target: str) -> None:
    host, _, target_port = target.rpartition(":")

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.transport.abort()

    async def take(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            far_reader, far_writer = await asyncio.open_connection(host, int(target_port))
        except OSError:
            writer.transport.abort()
            return
        await asyncio.gather(pipe(reader, far_writer), pipe(far_reader, writer))

    server = await asyncio.start_server(take, "0.0.0.0", port)  # noqa: S104
    ready()
    async with server:
        await server.serve_forever()


# -- half-open connections -----------------------------------------------------------------------
def flood(address: str, count: int, sources: list[str]) -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    host, _, port = address.rpartition(":")
    hello_start = bytes.fromhex("160301020001")  # a TLS record and ClientHello header, no more
    open_: dict[int, socket.socket] = {}
    made = 0

    def connect(i: int) -> None:
        nonlocal made
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        s.bind((sources[i % len(sources)], 0))
        s.connect_ex((host, int(port)))
        open_[s.fileno()] = s
        made += 1

    for i in range(count):
        connect(i)
    ready()
    sent: set[int] = set()
    while True:
        poller = select.poll()  # not select(): that stops at descriptor 1024
        for fd in open_:
            poller.register(fd, select.POLLIN | (select.POLLOUT if fd not in sent else 0))
        for fd, events in poller.poll(500):
            if events & select.POLLOUT and fd not in sent:
                if fd % 2:
                    with contextlib.suppress(OSError):
                        open_[fd].send(hello_start)
                sent.add(fd)
            if events & (select.POLLIN | select.POLLHUP | select.POLLERR) and fd in open_:
                # The node closed it (or answered): reopen it, keep the pressure on.
                open_.pop(fd).close()
                sent.discard(fd)
                connect(random.randrange(len(sources)))
        print(f"open {len(open_)} made {made}", file=sys.stderr, flush=True)


# -- a fresh key per request ---------------------------------------------------------------------
def fresh_keys(address: str, count: int) -> None:
    target = node_at(address)
    answers: collections.Counter[int] = collections.Counter()
    body = Hello("stranger", 9, frozenset(), 0, None).to_json()
    ready()
    for _ in range(count):
        signer = KeySigner(Ed25519PrivateKey.generate())
        try:
            answers[post(address, body, signed(signer, body, to=target))] += 1
        except OSError:
            answers[0] += 1
    print(json.dumps(dict(answers)), flush=True)


# -- forged mDNS adverts -------------------------------------------------------------------------
def adverts(ip: str, port: int, text: str, valid_id: str) -> None:
    """Raw mDNS answers: names and TXT strings no well-behaved responder would send."""
    from zeroconf import (
        DNSAddress,
        DNSOutgoing,
        DNSPointer,
        DNSService,
        DNSText,
        IPVersion,
        Zeroconf,
        const,
    )

    service = "_meshsync._tcp.local."
    forged = [(f"evil\n{text}\x1b[2J", f"SHA256:x\n{text}"),
              ("fine", f"{valid_id}\r\n{text}"),
              ("also\x1b]0;owned\x07", valid_id),
              ("plain", valid_id)]
    zc = Zeroconf(ip_version=IPVersion.V4Only)
    ready()
    while True:
        out = DNSOutgoing(const._FLAGS_QR_RESPONSE | const._FLAGS_AA)
        for n, (label, node_id) in enumerate(forged):
            name, host = f"{label}.{service}", f"evil{n}.local."
            fields = [b"v=2", f"id={node_id}".encode()]
            txt = b"".join(bytes([len(f)]) + f for f in fields)
            for record in (
                DNSPointer(service, const._TYPE_PTR, const._CLASS_IN, 120, name),
                DNSService(name, const._TYPE_SRV, const._CLASS_IN, 120, 0, 0, port + n, host),
                DNSText(name, const._TYPE_TXT, const._CLASS_IN, 120, txt),
                DNSAddress(host, const._TYPE_A, const._CLASS_IN, 120, socket.inet_aton(ip)),
            ):
                out.add_answer_at_time(record, 0)
        zc.send(out)
        time.sleep(1.0)


# -- a trusted member that lies ------------------------------------------------------------------
class Member:
    """Speaks meshsync's protocol with meshsync's own parts, and says what its plan says.

    Plan keys: `term` (claimed in every hello; default: the highest heard), `files`
    ({path: text} it announces as its own, at `counter`), `counter` (its vector counter),
    `foreign` ({path: node key} records whose vector names that node's counter at `counter`),
    `unfetchable` ({path: blocks} records of files whose blocks nobody holds), `seq` (the
    sequence its index pages claim).
    """

    def __init__(self, signer: Any, port: int, plan: dict[str, Any], out: Path) -> None:
        self.signer = signer
        self.id = NodeId.of_key(signer.public_blob)
        self.port = port
        self.plan = plan
        self.out = out
        self.term = 0
        self.coordinator: NodeId | None = None
        self.blocks: dict[bytes, bytes] = {}
        self.block_requests = 0
        self.records = self._records()

    # what the node layer would give the net layer
    def sign(self, message: bytes) -> bytes:
        return sshsig.sign(self.signer, message)

    def verify(self, signature: bytes, message: bytes) -> bytes:
        return sshsig.verify(signature, message)

    def is_trusted(self, public_blob: bytes, address: str) -> bool:
        return True

    def note_untrusted(self, public_blob: bytes, address: str) -> None:
        pass

    def vouched_key(self, certificate: bytes) -> bytes:
        return tls.vouched_key(certificate)

    def claimed_name(self, certificate: bytes) -> str | None:
        return tls.claimed_name(certificate)

    def _signed(self, record: FileRecord) -> Signed:
        return Signed(record, self.sign(record.canonical(FOLDER)))

    def _records(self) -> tuple[Signed, ...]:
        me = self.id.key
        counter = int(self.plan.get("counter", 1))
        now = time.time_ns()
        found = []
        for path, text in self.plan.get("files", {}).items():
            data = text.encode()
            digest = hashlib.sha256(data).digest()
            self.blocks[digest] = data
            found.append(FileRecord(RelPath(path), Kind.FILE, Vector.of({me: counter}), me,
                                    size=len(data), mtime_ns=now, blocks=(digest,)))
        for path, key in self.plan.get("foreign", {}).items():
            data = f"{path} names another node's counter\n".encode()
            digest = hashlib.sha256(data).digest()
            self.blocks[digest] = data
            found.append(FileRecord(RelPath(path), Kind.FILE, Vector.of({me: 1, key: counter}),
                                    me, size=len(data), mtime_ns=now, blocks=(digest,)))
        for path, count in self.plan.get("unfetchable", {}).items():
            blocks = tuple(os.urandom(32) for _ in range(count))
            found.append(FileRecord(RelPath(path), Kind.FILE, Vector.of({me: 1}), me,
                                    size=count * BLOCK_SIZE, mtime_ns=now, blocks=blocks))
        return tuple(self._signed(r) for r in found)

    def _hello(self) -> Hello:
        term = int(self.plan.get("term", self.term))
        return Hello("mallory", self.port, frozenset({FOLDER}), term,
                     self.coordinator if "term" not in self.plan else self.id)

    def note(self, **what: object) -> None:
        with self.out.open("a") as f:
            f.write(json.dumps(what) + "\n")

    async def handle_hello(self, key: bytes, hello: Hello, remote: str) -> Hello:
        if hello.term >= self.term:
            self.term, self.coordinator = hello.term, hello.coordinator
        return self._hello()

    async def handle_notice(self, key: bytes, notice: Records) -> None:
        return None

    async def handle_index(self, key: bytes, request: Any) -> Records:
        seq = int(self.plan.get("seq", len(self.records)))
        self.note(index_request=request.since)
        records = self.records if request.since == 0 else ()
        return Records(FOLDER, records, "mallory-epoch", seq)

    async def handle_blocks(self, key: bytes, request: Any) -> list[bytes | None]:
        self.block_requests += 1
        self.note(block_requests=self.block_requests, hashes=len(request.hashes))
        return [self.blocks.get(h) for h in request.hashes]

    async def run(self, certificate: Path, peers: list[str]) -> None:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("0.0.0.0", self.port))  # noqa: S104
        sock.listen(64)
        sock.setblocking(False)
        listener = Listener(sock, server_context(str(certificate)), Limits())
        _, protocol = await serve(make_app(self, self.id, time.time, self, listener))
        async with PeerClient(self, time.time) as client, asyncio.TaskGroup() as tg:
            tg.create_task(listener.run(protocol))
            keys: dict[str, bytes] = {}
            ready()
            announced: set[str] = set()
            while True:
                for address in peers:
                    try:
                        keys[address] = keys.get(address) or (await client.identify(address)).key
                        await client.send_hello(address, keys[address], self._hello())
                        if address not in announced and self.records:
                            await client.send_notice(address, keys[address],
                                                     Records(FOLDER, self.records))
                            announced.add(address)
                            self.note(announced=address)
                    except PeerError as e:
                        self.note(error=str(e))
                await asyncio.sleep(1.0)


def main() -> None:
    mode, args = sys.argv[1], sys.argv[2:]
    if mode == "mitm":
        learned = Path(args[2])
        context = mitm_context(args[1], learned, Path(args[3]) if args[3:] else None)
        asyncio.run(mitm(context, int(args[0]), learned))
    elif mode == "flood":
        flood(args[0], int(args[1]), args[2:])
    elif mode == "relay":
        asyncio.run(relay(int(args[0]), args[1]))
    elif mode == "keys":
        fresh_keys(args[0], int(args[1]))
    elif mode == "adverts":
        adverts(args[0], int(args[1]), args[2], args[3])
    elif mode == "member":
        keyfile, port, state, plan, out, *peers = args
        signer = load_signer(Path(keyfile), None)
        Path(state).mkdir(parents=True, exist_ok=True)
        certificate = tls.certificate_file(Path(state), signer)
        member = Member(signer, int(port), json.loads(plan), Path(out))
        asyncio.run(member.run(certificate, peers))
    else:
        sys.exit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()

"""Signed HTTP over TLS: requests to peers, signed by us, answers checked to be signed by them.

Every connection is pinned, before a byte of the request is sent, to the SSH key the request
is meant for: the server's TLS certificate must be vouched for by that key (see
`crypto.tls`). A key not yet known at an address is learned first by `identify`, which
reads the certificate and nothing else.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import ssl
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol

import aiohttp

from meshsync.core.errors import AuthError
from meshsync.core.ids import NodeId
from meshsync.core.records import BLOCK_SIZE
from meshsync.core.signing import (
    AUTHORIZATION,
    DIGEST,
    MAX_OFFSET,
    NONCE,
    RESPONSE_SIGNATURE,
    SCHEME,
    TARGET,
    TIME,
    RequestHead,
    body_digest,
    parse_time,
    response_canonical,
)
from meshsync.core.wire import (
    MAX_BATCH_BYTES,
    MAX_BEAT_BYTES,
    MAX_HELLO_BYTES,
    BlockRequest,
    Hello,
    IndexRequest,
    Records,
    frames_digest,
    unpack_blocks,
)
from meshsync.net.auth import LINK, decode_signature
from meshsync.net.socket import LinkSocket

MAX_ANSWER = 1024 * 1024
MAX_PINS = 256  # keys and addresses remembered; the oldest are forgotten first
IDLE = 15.0  # seconds a pooled connection is kept: less than the server's 20
RESET_PAUSE = 0.05  # seconds before connecting again to a port that reset our connection
READ_BUFFER = 4 << 20  # an answer of blocks is read in few turns of the loop, not 128 of 64 KiB


class PeerError(Exception):
    """A request to a peer failed; the message says how."""


class PeerClosed(PeerError):
    """Nothing listens at the peer's address: its node is not running there."""


class PeerUnreachable(PeerError):
    """The peer did not answer in time, or answered something that is not a signed answer."""


class PeerMismatch(PeerUnreachable):
    """The TLS certificate at the address is not vouched for by the key we expected there: a
    man in the middle, or another node that now listens at that address."""


class PeerRefused(PeerError):
    """The peer answered, signed, with a refusal or an error."""


class PeerClockOffset(PeerRefused):
    """The peer holding `key` refused us because our clocks differ by more than MAX_OFFSET;
    `offset` is its clock minus ours, in seconds, as its signed answer showed."""

    def __init__(self, address: str, key: bytes, offset: float) -> None:
        super().__init__(f"{address}: refused, as its clock differs from ours by {offset:+.0f} s "
                         f"(more than {MAX_OFFSET:.0f} s)")
        self.key = key
        self.offset = offset


class Signing(Protocol):
    """What the client needs of the crypto layer."""

    def sign(self, message: bytes) -> bytes:
        """This node's signature of `message`: an SSHSIG, or one by a key it vouched for."""

    def verify(self, signature: bytes, message: bytes) -> bytes:
        """The signer's public key blob; ValueError if the signature is not valid."""

    def vouched_key(self, certificate: bytes) -> bytes:
        """The SSH key that vouches for a DER certificate; ValueError if none does."""

    def claimed_name(self, certificate: bytes) -> str | None:
        """The name a vouched DER certificate claims, if a hello could carry it."""


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a node is, as its TLS certificate says: the SSH key that vouches for it, and the
    name it claims (None if it claims none a hello could carry)."""

    key: bytes
    name: str | None


def client_context() -> ssl.SSLContext:
    """TLS 1.3, no certificate authorities: who is at the other end is checked by the vouch."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


class _Pin(aiohttp.Fingerprint):
    """aiohttp's certificate pin, checked as soon as the handshake is done: here the pin is the
    SSH key that must vouch for the certificate, not the certificate's own hash."""

    def __init__(self, key: bytes, vouched: Callable[[bytes], bytes]) -> None:
        super().__init__(hashlib.sha256(key).digest())
        self.key = key
        self._vouched = vouched

    def check(self, transport: asyncio.Transport) -> None:
        """Refuse (as aiohttp's fingerprint mismatch) unless `key` vouches for the certificate."""
        ssl_object = transport.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        try:
            if der is None or ssl_object.version() != "TLSv1.3":
                raise ValueError("not TLS 1.3 with a certificate")
            vouched = self._vouched(der)
        except ValueError:
            vouched = b""
        if vouched != self.key:
            host, port = (transport.get_extra_info("peername") or ("?", 0))[:2]
            raise aiohttp.ServerFingerprintMismatch(
                self.fingerprint, hashlib.sha256(vouched).digest(), host, port)


@dataclass(frozen=True, slots=True)
class Reply:
    """A peer's signed answer: its status, body, the public key that signed it, and how far its
    clock is from ours (its minus ours, in seconds)."""

    status: int
    body: bytes
    key: bytes
    clock_offset: float


class PeerClient:
    """One pooled HTTP session for all requests this node makes to peers."""

    def __init__(self, signing: Signing, wall: Callable[[], float]) -> None:
        self._signing = signing
        self._wall = wall
        self._session: aiohttp.ClientSession | None = None
        self._context = client_context()
        self._pins: OrderedDict[bytes, _Pin] = OrderedDict()
        self._vouches: OrderedDict[bytes, bytes] = OrderedDict()  # certificate hash -> key

    async def __aenter__(self) -> PeerClient:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit_per_host=8, keepalive_timeout=IDLE),
            auto_decompress=False, read_bufsize=READ_BUFFER,
        )
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._session is not None:
            await self._session.close()

    async def identify(self, address: str, timeout: float = 1.5) -> Identity:
        """Who is at `address`: the SSH key that vouches for its TLS certificate, and the name
        that certificate claims; nothing is sent."""
        host, _, port = address.rpartition(":")
        try:
            async with asyncio.timeout(timeout):
                _, writer = await asyncio.open_connection(
                    host, int(port), ssl=self._context, server_hostname="")
        except ConnectionRefusedError:
            raise PeerClosed(f"{address}: connection refused") from None
        except (OSError, ValueError) as e:  # ssl.SSLError is an OSError
            raise PeerUnreachable(f"{address}: {e.__class__.__name__}: {e}") from None
        except TimeoutError:
            raise PeerUnreachable(f"{address}: no TLS handshake within {timeout:.1f} s") from None
        try:
            ssl_object = writer.get_extra_info("ssl_object")
            der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
            key = self._vouched(der or b"")
            return Identity(key, self._signing.claimed_name(der or b""))
        except ValueError as e:
            raise PeerMismatch(f"{address}: its TLS certificate is not vouched for by an SSH "
                               f"key ({e})") from None
        finally:
            writer.transport.abort()

    async def send_hello(
        self, address: str, key: bytes, hello: Hello, timeout: float = 1.5
    ) -> Reply:
        """Post our hello to the node holding `key`; the answer (if 200) is its hello."""
        return await self.post(address, key, "/v1/hello", hello.to_json(), timeout,
                               MAX_HELLO_BYTES)

    async def send_notice(
        self, address: str, key: bytes, notice: Records, timeout: float = 5.0
    ) -> None:
        """Tell a peer of changes; PeerError if it did not take them."""
        reply = await self.post(address, key, "/v1/notice", notice.to_json(), timeout, 4096)
        self._ok(address, reply)

    async def fetch_index(
        self, address: str, key: bytes, request: IndexRequest, timeout: float = 30.0
    ) -> Records:
        """A page of a peer's index after `request.since`."""
        reply = await self.post(address, key, "/v1/index", request.to_json(), timeout,
                                MAX_BATCH_BYTES)
        return Records.from_json(self._ok(address, reply))

    async def fetch_blocks(
        self, address: str, key: bytes, request: BlockRequest, timeout: float = 30.0
    ) -> list[memoryview | None]:
        """The blocks asked for, None where the peer has not got one; the caller checks hashes."""
        limit = len(request.hashes) * (BLOCK_SIZE + 4)
        reply = await self.post(address, key, "/v1/blocks", request.to_json(), timeout, limit,
                                frames_digest)
        return unpack_blocks(self._ok(address, reply), len(request.hashes))

    def _vouched(self, der: bytes) -> bytes:
        """The key vouching for a certificate, remembered by the certificate's hash."""
        digest = hashlib.sha256(der).digest()
        key = self._vouches.get(digest)
        if key is None:
            key = self._signing.vouched_key(der)
            self._vouches[digest] = key
            if len(self._vouches) > MAX_PINS:
                self._vouches.popitem(last=False)
        return key

    def _pin(self, key: bytes) -> _Pin:
        """One pin per key, so that connections to a peer are pooled."""
        pin = self._pins.get(key)
        if pin is None:
            pin = self._pins[key] = _Pin(key, self._vouched)
            if len(self._pins) > MAX_PINS:
                self._pins.popitem(last=False)
        self._pins.move_to_end(key)
        return pin

    @staticmethod
    def _ok(address: str, reply: Reply) -> bytes:
        if reply.status != 200:
            raise PeerRefused(f"{address} answered {reply.status}: {reply.body[:200]!r}")
        return reply.body

    async def post(
        self, address: str, key: bytes, path: str, body: bytes, timeout: float,
        limit: int = MAX_ANSWER, digest: Callable[[bytes], str] = body_digest,
    ) -> Reply:
        """A signed POST to the node holding `key`; PeerClosed if nothing listens, PeerMismatch
        if another key answers there, PeerUnreachable for any other failure (never anything
        but a PeerError: whoever is at the address chooses how it fails)."""
        pooled_failed = reset = False
        while True:
            try:
                return await self._post_once(address, key, path, body, timeout, limit, digest)
            except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as e:
                opening = e if isinstance(e, aiohttp.ClientConnectorError) else None
                if opening and not reset and isinstance(opening.os_error, ConnectionResetError):
                    # Reset as it opened: a node being killed (the kernel took our handshake,
                    # then its port closed), and once more finds the port closed, which a
                    # probe of a member whose link broke must learn now, not a heartbeat
                    # later; or a full backlog, which may have room by then.
                    reset = True
                    await asyncio.sleep(RESET_PAUSE)
                elif opening is not None or pooled_failed:
                    raise self._failure(address, e) from None
                else:  # a pooled connection the peer had already closed: once on a fresh one
                    pooled_failed = True
            except aiohttp.ClientError as e:
                raise self._failure(address, e) from None
            except TimeoutError:
                raise PeerUnreachable(f"{address}: no answer within {timeout:.1f} s") from None
            except OSError as e:  # ssl errors, resets: whatever aiohttp did not wrap
                raise PeerUnreachable(f"{address}: {e.__class__.__name__}: {e}") from None

    async def _post_once(
        self, address: str, key: bytes, path: str, body: bytes, timeout: float, limit: int,
        digest: Callable[[bytes], str],
    ) -> Reply:
        if self._session is None:
            raise RuntimeError("PeerClient used outside `async with`")
        sent = self._wall()
        head, headers = self._signed("POST", path, key, body, sent)
        async with asyncio.timeout(timeout), self._session.post(
            f"https://{address}{path}", data=body, headers=headers, ssl=self._pin(key)
        ) as response:
            if (response.content_length or 0) > limit:
                raise PeerUnreachable(f"{address}: answer larger than {limit} bytes")
            answer = await _read_bounded(response.content, limit)
            if answer is None:
                raise PeerUnreachable(f"{address}: answer larger than {limit} bytes")
            stamp = response.headers.get(TIME, "")
            try:
                their_time = parse_time(stamp)
                message = response_canonical(head.nonce, response.status, stamp, digest(answer))
                signature = decode_signature(response.headers.get(RESPONSE_SIGNATURE))
                signer = self._signing.verify(signature, message)
            except (AuthError, ValueError):
                signer = b""
            if signer != key:
                raise PeerUnreachable(f"{address}: answer (HTTP {response.status}) is not signed "
                                      f"by {NodeId.of_key(key)}, the node it was sent to")
            # It stamped its answer between our sending and our reading it: halfway, at best guess.
            offset = their_time - (sent + self._wall()) / 2
            if response.status == 401 and abs(offset) > MAX_OFFSET:
                raise PeerClockOffset(address, key, offset)
            return Reply(response.status, answer, key, offset)

    def _signed(self, method: str, path: str, key: bytes, body: bytes,
                sent: float) -> tuple[RequestHead, dict[str, str]]:
        """The signed head of a request to the node holding `key`, and its headers."""
        head = RequestHead(method, path, "", str(NodeId.of_key(key)), f"{sent:.3f}",
                           os.urandom(16).hex(), body_digest(body))
        return head, {
            AUTHORIZATION: SCHEME + base64.b64encode(self._signing.sign(head.canonical())).decode(),
            TARGET: head.target,
            TIME: head.time,
            NONCE: head.nonce,
            DIGEST: head.digest,
            "Content-Type": "application/json",
        }

    async def open_link(self, address: str, key: bytes,
                        timeout: float = 1.5) -> LinkSocket:
        """A heartbeat link to the node holding `key`: a WebSocket on a connection pinned to
        its key, opened by a signed request (so both ends are proven for its lifetime)."""
        if self._session is None:
            raise RuntimeError("PeerClient used outside `async with`")
        _, headers = self._signed("GET", LINK, key, b"", self._wall())
        try:
            async with asyncio.timeout(timeout):
                return LinkSocket(await self._session.ws_connect(
                    f"wss://{address}{LINK}", headers=headers, ssl=self._pin(key),
                    autoping=True, heartbeat=None, max_msg_size=MAX_BEAT_BYTES))
        except aiohttp.WSServerHandshakeError as e:
            raise PeerRefused(f"{address} refused a link: HTTP {e.status}") from None
        except aiohttp.ClientError as e:
            raise self._failure(address, e) from None
        except TimeoutError:
            raise PeerUnreachable(f"{address}: no link within {timeout:.1f} s") from None
        except OSError as e:
            raise PeerUnreachable(f"{address}: {e.__class__.__name__}: {e}") from None

    @staticmethod
    def _failure(address: str, e: aiohttp.ClientError) -> PeerError:
        if isinstance(e, aiohttp.ServerFingerprintMismatch):
            return PeerMismatch(f"{address}: its TLS certificate is not vouched for by the key "
                                "expected there")
        if isinstance(e, aiohttp.ClientConnectorError) and isinstance(
            e.os_error, ConnectionRefusedError
        ):
            return PeerClosed(f"{address}: connection refused")
        return PeerUnreachable(f"{address}: {e.__class__.__name__}: {e}")


async def _read_bounded(stream: aiohttp.StreamReader, limit: int) -> bytes | None:
    """The whole body, or None once it passes `limit` bytes (one read returns what arrived)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in stream.iter_any():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)

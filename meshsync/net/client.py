"""Signed HTTP: requests to peers, signed by us, and answers checked to be signed by them."""

from __future__ import annotations

import asyncio
import base64
import os
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol

import aiohttp

from meshsync.core.errors import AuthError
from meshsync.core.records import BLOCK_SIZE
from meshsync.core.signing import (
    AUTHORIZATION,
    DIGEST,
    NONCE,
    RESPONSE_SIGNATURE,
    SCHEME,
    TIME,
    RequestHead,
    body_digest,
    response_canonical,
)
from meshsync.core.wire import (
    MAX_BATCH_BYTES,
    MAX_HELLO_BYTES,
    BlockRequest,
    Hello,
    IndexRequest,
    Records,
    unpack_blocks,
)
from meshsync.net.auth import decode_signature

MAX_ANSWER = 1024 * 1024


class PeerError(Exception):
    """A request to a peer failed; the message says how."""


class PeerClosed(PeerError):
    """Nothing listens at the peer's address: its node is not running there."""


class PeerUnreachable(PeerError):
    """The peer did not answer in time, or answered something that is not a signed answer."""


class PeerRefused(PeerError):
    """The peer answered, signed, with a refusal or an error."""


class Signing(Protocol):
    """What the client needs of the crypto layer."""

    def sign(self, message: bytes) -> bytes:
        """SSHSIG of `message` by this node, namespace `meshsync`."""

    def verify(self, signature: bytes, message: bytes) -> bytes:
        """The signer's public key blob; ValueError if the signature is not valid."""


@dataclass(frozen=True, slots=True)
class Reply:
    """A peer's signed answer: its status, body and the public key that signed it."""

    status: int
    body: bytes
    key: bytes


class PeerClient:
    """One pooled HTTP session for all requests this node makes to peers."""

    def __init__(self, signing: Signing, wall: Callable[[], float]) -> None:
        self._signing = signing
        self._wall = wall
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> PeerClient:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit_per_host=8, keepalive_timeout=30),
            auto_decompress=False,
        )
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._session is not None:
            await self._session.close()

    async def send_hello(self, address: str, hello: Hello, timeout: float = 1.5) -> Reply:
        """Post our hello; the answer (if 200) is the peer's hello."""
        return await self.post(address, "/v1/hello", hello.to_json(), timeout, MAX_HELLO_BYTES)

    async def send_notice(self, address: str, notice: Records, timeout: float = 5.0) -> None:
        """Tell a peer of changes; PeerError if it did not take them."""
        self._ok(address, await self.post(address, "/v1/notice", notice.to_json(), timeout, 4096))

    async def fetch_index(
        self, address: str, request: IndexRequest, timeout: float = 30.0
    ) -> Records:
        """A page of a peer's index after `request.since`."""
        reply = await self.post(address, "/v1/index", request.to_json(), timeout, MAX_BATCH_BYTES)
        return Records.from_json(self._ok(address, reply))

    async def fetch_blocks(
        self, address: str, request: BlockRequest, timeout: float = 30.0
    ) -> list[bytes | None]:
        """The blocks asked for, None where the peer has not got one; the caller checks hashes."""
        limit = len(request.hashes) * (BLOCK_SIZE + 4)
        reply = await self.post(address, "/v1/blocks", request.to_json(), timeout, limit)
        return unpack_blocks(self._ok(address, reply), len(request.hashes))

    @staticmethod
    def _ok(address: str, reply: Reply) -> bytes:
        if reply.status != 200:
            raise PeerRefused(f"{address} answered {reply.status}: {reply.body[:200]!r}")
        return reply.body

    async def post(
        self, address: str, path: str, body: bytes, timeout: float, limit: int = MAX_ANSWER
    ) -> Reply:
        """A signed POST; PeerClosed if nothing listens, PeerUnreachable for any other failure."""
        try:
            return await self._post_once(address, path, body, timeout, limit)
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as e:
            if isinstance(e, aiohttp.ClientConnectorError):
                raise self._failure(address, e) from None
            # A pooled connection the peer had already closed: one retry on a fresh one.
            try:
                return await self._post_once(address, path, body, timeout, limit)
            except aiohttp.ClientError as e2:
                raise self._failure(address, e2) from None
        except aiohttp.ClientError as e:
            raise self._failure(address, e) from None
        except TimeoutError:
            raise PeerUnreachable(f"{address}: no answer within {timeout:.1f} s") from None

    async def _post_once(
        self, address: str, path: str, body: bytes, timeout: float, limit: int
    ) -> Reply:
        if self._session is None:
            raise RuntimeError("PeerClient used outside `async with`")
        head = RequestHead("POST", path, "", f"{self._wall():.3f}", os.urandom(16).hex(),
                           body_digest(body))
        headers = {
            AUTHORIZATION: SCHEME + base64.b64encode(self._signing.sign(head.canonical())).decode(),
            TIME: head.time,
            NONCE: head.nonce,
            DIGEST: head.digest,
            "Content-Type": "application/json",
        }
        async with asyncio.timeout(timeout), self._session.post(
            f"http://{address}{path}", data=body, headers=headers
        ) as response:
            if (response.content_length or 0) > limit:
                raise PeerUnreachable(f"{address}: answer larger than {limit} bytes")
            answer = await _read_bounded(response.content, limit)
            if answer is None:
                raise PeerUnreachable(f"{address}: answer larger than {limit} bytes")
            message = response_canonical(head.nonce, response.status, body_digest(answer))
            try:
                signature = decode_signature(response.headers.get(RESPONSE_SIGNATURE))
                key = self._signing.verify(signature, message)
            except (AuthError, ValueError):
                raise PeerUnreachable(
                    f"{address}: answer (HTTP {response.status}) is not signed by a meshsync node"
                ) from None
            return Reply(response.status, answer, key)

    @staticmethod
    def _failure(address: str, e: aiohttp.ClientError) -> PeerError:
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

"""Signed HTTP: the server middleware that checks every request and signs every answer.

A request is judged from its head alone: signature, target, freshness and trust. A refused one
is answered (signed) without reading its body, and its connection is closed rather than
drained. An accepted one proves its connection to the listener, has its body read within a
size per route and a time limit, and counts against its peer's requests in flight.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Protocol

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.payload import Payload

from meshsync.core.errors import AuthError
from meshsync.core.ids import NodeId
from meshsync.core.signing import (
    AUTHORIZATION,
    DIGEST,
    NONCE,
    RESPONSE_SIGNATURE,
    SCHEME,
    TARGET,
    TIME,
    ClockOffset,
    ReplayGuard,
    RequestHead,
    body_digest,
    check_time,
    response_canonical,
)
from meshsync.core.throttle import Throttle, shown

log = logging.getLogger("meshsync.auth")

LINK = "/v1/link"  # the heartbeat link: a WebSocket, the one request that is not a POST
PEER_KEY = web.RequestKey("peer_key", bytes)
BODY = web.RequestKey("body", bytes)
MAX_SIGNATURE = 16 * 1024
MAX_IN_FLIGHT = 16  # requests one peer may have in hand at once (our client sends at most 8)
BODY_WITHIN = 30.0  # seconds to receive a body, whatever its size
SIGNED_REFUSALS_EVERY = 1.0  # seconds between signed refusals to one address (signing costs)
MAX_ADDRESSES = 1024  # addresses sent a signed refusal in one such interval, at most


class Credentials(Protocol):
    """What the auth layer needs of the crypto layer and the trust store."""

    def sign(self, message: bytes) -> bytes:
        """This node's signature of `message`: an SSHSIG, or one by a key it vouched for."""

    def verify(self, signature: bytes, message: bytes) -> bytes:
        """The signer's public key blob; ValueError if the signature is not valid."""

    def is_trusted(self, public_blob: bytes, address: str) -> bool:
        """Whether requests signed by this key, from this IP address, are accepted."""

    def note_untrusted(self, public_blob: bytes, address: str) -> None:
        """Record a peer that proved its key but is not trusted (shown by `meshsync peers`)."""

    def note_clock(self, public_blob: bytes, address: str, offset: float) -> None:
        """Record a trusted peer refused because its clock is `offset` seconds from ours (its
        minus ours), beyond what is accepted; called only once its signature verified."""


class Connections(Protocol):
    """What the auth layer tells the listener: this connection carries a trusted peer."""

    def prove(self, transport: asyncio.BaseTransport | None) -> None:
        """A request on this connection was signed by a trusted key."""


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def head_of(
    method: str, path: str, query: str, headers: Mapping[str, str]
) -> RequestHead:
    """The signed head of a request from its parts; AuthError if a header is missing."""
    target, time = headers.get(TARGET), headers.get(TIME)
    nonce, digest = headers.get(NONCE), headers.get(DIGEST)
    if not (target and time and nonce and digest):
        raise AuthError("unsigned request")
    return RequestHead(method, path, query, target, time, nonce, digest)


def decode_signature(value: str | None, scheme: str = SCHEME) -> bytes:
    """The signature carried in a header; AuthError if absent or not base64."""
    # An empty one too: some aiohttp releases strip a header's trailing space, some keep it.
    if not value or not value.startswith(scheme) or len(value) > MAX_SIGNATURE or not value[
            len(scheme):].strip():
        raise AuthError("unsigned request")
    try:
        return base64.b64decode(value[len(scheme) :], validate=True)
    except ValueError:  # binascii.Error, or a non-ASCII character in the header
        raise AuthError("signature is not base64") from None


def auth_middleware(
    credentials: Credentials,
    me: NodeId,
    wall: Callable[[], float],
    routes: Mapping[str, int],
    connections: Connections,
    digests: Mapping[str, Callable[[bytes], str]] | None = None,
    links: frozenset[str] = frozenset(),
) -> web.middleware:  # type: ignore[valid-type]
    """Refuse unsigned, misdirected, forged, stale, replayed or untrusted requests before reading
    their bodies; `routes` maps each path to the largest body it takes, `digests` a path
    to what its answers are signed over (by default, the whole body), and `links` the paths
    that open a WebSocket (a GET, with no body; its frames need no signature, as the request
    that opened it proved the peer on this connection, and our TLS certificate proves us)."""
    guard = ReplayGuard()
    throttle = Throttle()
    in_flight: Counter[bytes] = Counter()
    # A stranger that knocks once a second (a node that trusts us) gets a signed refusal, which
    # tells it apart from a spoofed one; a flood gets unsigned ones, which cost nothing.
    signed_refusals = Throttle(SIGNED_REFUSALS_EVERY, per_cause=MAX_ADDRESSES)

    def answer_digest(path: str) -> Callable[[bytes], str]:
        return (digests or {}).get(path, body_digest)

    def refuse(
        request: web.Request, status: int, reason: str, nonce: str = "", cause: str = ""
    ) -> web.Response:
        # Keyed on the kind of refusal, not its detail: a peer chooses the clock offset or key.
        if throttle.allow((request.remote, cause or reason.partition(":")[0]), wall()):
            log.warning("refused %s %s from %s: %s", request.method, shown(request.path),
                        request.remote, reason)
        return answer(request, status, reason, nonce)

    def answer(request: web.Request, status: int, reason: str, nonce: str) -> web.Response:
        response = web.json_response({"error": reason}, status=status)
        response.force_close()  # never drain a body we will not read, nor keep the connection
        if not nonce:
            return response
        return sign_response(credentials, nonce, response, wall(), answer_digest(request.path))

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        limit = routes.get(request.path)
        if limit is None or request.method != ("GET" if request.path in links else "POST"):
            return refuse(request, 404, "no such route")
        address = request.remote or "?"
        clock: ClockOffset | None = None
        try:
            head = head_of(request.method, request.rel_url.raw_path,
                           request.rel_url.raw_query_string, request.headers)
            signature = decode_signature(request.headers.get(AUTHORIZATION))
            try:
                check_time(head, wall())
            except ClockOffset as e:
                # Checked, at most once a second per address, so that a trusted sender learns
                # why from a signed answer and is shown refused for its clock; the others are
                # refused from the head alone.
                if not signed_refusals.allow((address, "signed"), wall()):
                    raise
                clock = e
            try:
                key = credentials.verify(signature, head.canonical())
            except ValueError:
                raise AuthError("bad signature") from None
            if head.target != str(me):
                raise AuthError("request meant for another node")
        except AuthError as e:
            return refuse(request, 401, str(e), cause="clock" if isinstance(e, ClockOffset) else "")
        if not credentials.is_trusted(key, address):
            credentials.note_untrusted(key, address)
            signs = clock is not None or signed_refusals.allow((address, "signed"), wall())
            return refuse(request, 403, f"untrusted key {NodeId.of_key(key)}",
                          head.nonce if signs else "")
        if clock is not None:
            credentials.note_clock(key, address, clock.offset)
            return answer(request, 401, str(clock), head.nonce)  # the node logs it, with the fix
        try:
            # Only members' nonces are remembered: strangers cannot fill the replay window.
            guard.check(head, wall(), key)
        except AuthError as e:
            return refuse(request, 401, str(e))
        connections.prove(request.transport)
        if (request.content_length or 0) > limit:
            return refuse(request, 413, f"body over {limit} bytes", head.nonce)
        if in_flight[key] >= MAX_IN_FLIGHT:
            return refuse(request, 429, f"over {MAX_IN_FLIGHT} requests in flight", head.nonce)
        in_flight[key] += 1
        try:
            try:
                async with asyncio.timeout(BODY_WITHIN):
                    body = await _read_bounded(request, limit)
            except TimeoutError:
                return refuse(request, 408, f"body not received within {BODY_WITHIN:.0f} s",
                              head.nonce)
            if body is None:
                return refuse(request, 413, f"body over {limit} bytes", head.nonce)
            if body_digest(body) != head.digest:
                return refuse(request, 401, "body does not match its signed digest", head.nonce)
            request[PEER_KEY] = key
            request[BODY] = body
            reply = await handler(request)
        finally:
            in_flight[key] -= 1
            if not in_flight[key]:
                del in_flight[key]
        if isinstance(reply, web.Response):
            sign_response(credentials, head.nonce, reply, wall(), answer_digest(request.path))
        return reply

    return middleware


async def _read_bounded(request: web.Request, limit: int) -> bytes | None:
    """The whole body, or None once it passes `limit` bytes."""
    chunks: list[bytes] = []
    size = 0
    while chunk := await request.content.readany():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


class StreamedBody(Payload):
    """An answer written a part at a time, signed over `digest`, what its route's digest of
    the whole would be: one 8 MiB write costs the TLS layer three times the CPU that 64 writes
    of 128 KiB do (2.3 against 0.8 CPU-s a GiB, aiohttp over TLS on a 2-core Xeon)."""

    def __init__(self, parts: Callable[[], Iterator[bytes]], size: int, digest: str) -> None:
        super().__init__(None, content_type="application/octet-stream")
        self._parts, self._size, self.digest = parts, size, digest

    async def write(self, writer: AbstractStreamWriter) -> None:
        """Each part as it comes, waiting for the peer to take what went before."""
        for part in self._parts():
            await writer.write(part)
            # Writing a frame does not wait while the socket takes it, so without a turn given
            # here eight answers of 8 MiB held the loop for tens of milliseconds at a time:
            # during a big transfer, a small file's request, notice or scan waited behind them.
            await asyncio.sleep(0)

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        """The whole body, as text."""
        return b"".join(self._parts()).decode(encoding, errors)


def sign_response(
    credentials: Credentials, nonce: str, response: web.Response, wall: float,
    digest: Callable[[bytes], str] = body_digest,
) -> web.Response:
    """Sign `response`, stamped with our time `wall`, as the answer to the request that carried
    `nonce`: the asker learns how far our clocks differ."""
    body = response.body
    if isinstance(body, StreamedBody):
        signed = body.digest
    else:
        signed = digest(body if isinstance(body, bytes) else b"")
    response.headers[TIME] = f"{wall:.3f}"
    message = response_canonical(nonce, response.status, response.headers[TIME], signed)
    response.headers[RESPONSE_SIGNATURE] = SCHEME + base64.b64encode(
        credentials.sign(message)
    ).decode()
    return response

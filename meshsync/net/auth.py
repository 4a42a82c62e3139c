"""Signed HTTP: the server middleware that checks every request and signs every answer."""

from __future__ import annotations

import base64
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Protocol

from aiohttp import web

from meshsync.core.errors import AuthError
from meshsync.core.ids import NodeId
from meshsync.core.signing import (
    AUTHORIZATION,
    DIGEST,
    NONCE,
    RESPONSE_SIGNATURE,
    SCHEME,
    TIME,
    ReplayGuard,
    RequestHead,
    body_digest,
    response_canonical,
)
from meshsync.core.throttle import Throttle

log = logging.getLogger("meshsync.auth")

PEER_KEY = web.RequestKey("peer_key", bytes)
MAX_SIGNATURE = 16 * 1024


class Credentials(Protocol):
    """What the auth layer needs of the crypto layer and the trust store."""

    def sign(self, message: bytes) -> bytes:
        """SSHSIG of `message` by this node, namespace `meshsync`."""

    def verify(self, signature: bytes, message: bytes) -> bytes:
        """The signer's public key blob; ValueError if the signature is not valid."""

    def is_trusted(self, public_blob: bytes) -> bool:
        """Whether requests signed by this key are accepted."""

    def note_untrusted(self, public_blob: bytes, address: str) -> None:
        """Record a peer that proved its key but is not trusted (shown by `meshsync peers`)."""


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def head_of(method: str, path: str, query: str, headers: Mapping[str, str]) -> RequestHead:
    """The signed head of a request from its parts; AuthError if a header is missing."""
    time, nonce, digest = headers.get(TIME), headers.get(NONCE), headers.get(DIGEST)
    if not (time and nonce and digest):
        raise AuthError("unsigned request")
    return RequestHead(method, path, query, time, nonce, digest)


def decode_signature(value: str | None, scheme: str = SCHEME) -> bytes:
    """The SSHSIG blob carried in a header; AuthError if absent or not base64."""
    if not value or not value.startswith(scheme) or len(value) > MAX_SIGNATURE:
        raise AuthError("unsigned request")
    try:
        return base64.b64decode(value[len(scheme) :], validate=True)
    except ValueError:  # binascii.Error, or a non-ASCII character in the header
        raise AuthError("signature is not base64") from None


def auth_middleware(credentials: Credentials, wall: Callable[[], float]) -> web.middleware:  # type: ignore[valid-type]
    """Refuse unsigned, forged, stale or replayed requests with 401 before reading the body."""
    guard = ReplayGuard()
    throttle = Throttle()

    def refuse(request: web.Request, status: int, reason: str) -> web.Response:
        # Keyed on the kind of refusal, not its detail: a peer chooses the clock offset or key.
        if throttle.allow((request.remote, status, reason.partition(":")[0]), wall()):
            log.warning("refused %s %s from %s: %s", request.method, request.path,
                        request.remote, reason)
        return web.json_response({"error": reason}, status=status)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            head = head_of(request.method, request.rel_url.raw_path,
                           request.rel_url.raw_query_string, request.headers)
            signature = decode_signature(request.headers.get(AUTHORIZATION))
            try:
                key = credentials.verify(signature, head.canonical())
            except ValueError:
                raise AuthError("bad signature") from None
            guard.check(head, wall())
        except AuthError as e:
            return refuse(request, 401, str(e))
        if not credentials.is_trusted(key):
            credentials.note_untrusted(key, request.remote or "?")
            response = refuse(request, 403, f"untrusted key {NodeId.of_key(key)}")
            return sign_response(credentials, head.nonce, response)
        body = await request.read()
        if body_digest(body) != head.digest:
            return refuse(request, 401, "body does not match its signed digest")
        request[PEER_KEY] = key
        answer = await handler(request)
        if isinstance(answer, web.Response):
            sign_response(credentials, head.nonce, answer)
        return answer

    return middleware


def sign_response(credentials: Credentials, nonce: str, response: web.Response) -> web.Response:
    """Sign `response` as the answer to the request that carried `nonce`."""
    body = response.body if isinstance(response.body, bytes) else b""
    message = response_canonical(nonce, response.status, body_digest(body))
    response.headers[RESPONSE_SIGNATURE] = SCHEME + base64.b64encode(
        credentials.sign(message)
    ).decode()
    return response

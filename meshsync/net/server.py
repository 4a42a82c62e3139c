"""The peer endpoint: an aiohttp app behind the listener, on port 22300 or a free one."""

from __future__ import annotations

import errno
import logging
import socket
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Protocol

from aiohttp import web

from meshsync.core.errors import Refused, WireError
from meshsync.core.ids import NodeId
from meshsync.core.throttle import Throttle, shown
from meshsync.core.wire import (
    MAX_BATCH_BYTES,
    MAX_BEAT_BYTES,
    MAX_BLOCK_REQUEST_BYTES,
    MAX_HELLO_BYTES,
    MAX_INDEX_REQUEST_BYTES,
    BlockRequest,
    Hello,
    IndexRequest,
    Records,
    block_frames,
    blocks_digest,
    frames_digest,
)
from meshsync.net.auth import (
    BODY,
    LINK,
    PEER_KEY,
    Connections,
    Credentials,
    StreamedBody,
    auth_middleware,
)
from meshsync.net.socket import LinkSocket

log = logging.getLogger("meshsync.server")

DEFAULT_PORT = 22300
# The largest body each route takes: the middleware refuses a larger one without reading it.
ROUTES = {
    LINK: 0,
    "/v1/hello": MAX_HELLO_BYTES,
    "/v1/notice": MAX_BATCH_BYTES,
    "/v1/index": MAX_INDEX_REQUEST_BYTES,
    "/v1/blocks": MAX_BLOCK_REQUEST_BYTES,
}
# Answers signed over less than their whole body: blocks are checked against their hashes.
ANSWER_DIGESTS = {"/v1/blocks": frames_digest}
# A member's next request must arrive complete (line and headers) within this long of its
# last answer, or the connection is closed: aiohttp's keep-alive timer doubles as the header
# timeout, since it only stops once a whole request head has been parsed.
IDLE = 20.0


class PeerApi(Protocol):
    """What the node answers to peers; each takes the caller's proven key first."""

    async def handle_hello(self, key: bytes, hello: Hello, remote: str) -> Hello:
        """A hello or heartbeat; the answer is ours."""

    async def handle_notice(self, key: bytes, notice: Records) -> None:
        """Signed records of changes made somewhere in the mesh."""

    async def handle_index(self, key: bytes, request: IndexRequest) -> Records:
        """A page of our index after the sequence asked for."""

    async def handle_blocks(self, key: bytes, request: BlockRequest) -> list[bytes | None]:
        """The blocks asked for that we hold, None for the others."""

    async def handle_link(self, key: bytes, link: LinkSocket, remote: str) -> None:
        """A member's heartbeat link, open; returns when it is to close."""


def make_app(
    credentials: Credentials,
    me: NodeId,
    wall: Callable[[], float],
    api: PeerApi,
    connections: Connections,
) -> web.Application:
    """The peer API: every route behind the signature check, every body parsed before use."""
    app = web.Application(
        middlewares=[auth_middleware(credentials, me, wall, ROUTES, connections,
                                     ANSWER_DIGESTS, frozenset({LINK}))],
        client_max_size=MAX_BATCH_BYTES,
    )

    def route(name: str,
              handle: Callable[[bytes, bytes, str], Awaitable[bytes | StreamedBody]]) -> None:
        async def handler(request: web.Request) -> web.Response:
            try:
                body = await handle(request[PEER_KEY], request[BODY], request.remote or "?")
            except WireError as e:
                return web.json_response({"error": f"bad {name}: {e}"}, status=400)
            except Refused as e:
                return web.json_response({"error": str(e)}, status=403)
            return web.Response(body=body, content_type="application/octet-stream")

        app.router.add_post(f"/v1/{name}", handler)

    async def hello(key: bytes, body: bytes, remote: str) -> bytes:
        return (await api.handle_hello(key, Hello.from_json(body), remote)).to_json()

    async def notice(key: bytes, body: bytes, remote: str) -> bytes:
        await api.handle_notice(key, Records.from_json(body))
        return b"{}"

    async def index(key: bytes, body: bytes, remote: str) -> bytes:
        return (await api.handle_index(key, IndexRequest.from_json(body))).to_json()

    async def blocks(key: bytes, body: bytes, remote: str) -> StreamedBody:
        found = await api.handle_blocks(key, BlockRequest.from_json(body))
        size = sum(4 + len(block or b"") for block in found)
        return StreamedBody(partial(block_frames, found), size, blocks_digest(found))

    async def link(request: web.Request) -> web.StreamResponse:
        socket = web.WebSocketResponse(max_msg_size=MAX_BEAT_BYTES, autoping=True)
        await socket.prepare(request)
        try:
            await api.handle_link(request[PEER_KEY], LinkSocket(socket), request.remote or "?")
        finally:
            await socket.close()
        return socket

    app.router.add_get(LINK, link, allow_head=False)
    route("hello", hello)
    route("notice", notice)
    route("index", index)
    route("blocks", blocks)
    return app


class _OneLine(logging.Filter):
    """aiohttp's own reports of a bad request (a malformed header, say) as one printable line
    per kind a minute: as they come, each is a traceback quoting the peer's bytes."""

    def __init__(self) -> None:
        super().__init__()
        self._throttle = Throttle()

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        kind = type(error).__name__ if error is not None else str(record.msg)[:40]
        if not self._throttle.allow((kind, "aiohttp"), time.monotonic()):
            return False
        if error is not None:
            record.msg, record.args = "%s: %s", (shown(record.getMessage()), shown(error))
            record.exc_info = record.exc_text = None
        return True


async def serve(app: web.Application) -> tuple[web.AppRunner, web.Server]:
    """Set `app` up to answer connections: the server is the protocol the listener runs, and
    `cleanup()` on the runner closes every connection."""
    # A short shutdown: peers retry, and a node on its way out must not wait a minute.
    # No lingering: a request we refuse is not drained, its connection is closed.
    reports = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, _OneLine) for f in reports.filters):
        reports.addFilter(_OneLine())
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0,
                           keepalive_timeout=IDLE, lingering_time=0)
    await runner.setup()
    if runner.server is None:
        raise RuntimeError("aiohttp's runner has no server after setup")
    return runner, runner.server


def bind(port: int | None, host: str = "0.0.0.0") -> socket.socket:  # noqa: S104 (a LAN service)
    """A listening socket on `port` (default 22300); a free port if that one is taken."""
    wanted = DEFAULT_PORT if port is None else port
    try:
        return _listen(host, wanted)
    except OSError as e:
        if e.errno != errno.EADDRINUSE or port is not None:
            raise
        log.info("port %d is taken; using a free one", wanted)
        return _listen(host, 0)


def _listen(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock

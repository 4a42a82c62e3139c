"""The peer endpoint: an aiohttp server on the fixed default port, or a free one if it is taken."""

from __future__ import annotations

import errno
import logging
import socket
from collections.abc import Awaitable, Callable

from aiohttp import web

from meshsync.core.errors import WireError
from meshsync.core.wire import MAX_HELLO_BYTES, Hello
from meshsync.net.auth import PEER_KEY, Credentials, auth_middleware

log = logging.getLogger("meshsync.server")

DEFAULT_PORT = 22300

HelloHandler = Callable[[bytes, Hello, str], Awaitable[Hello]]


def make_app(
    credentials: Credentials, wall: Callable[[], float], handle_hello: HelloHandler
) -> web.Application:
    """The peer API: every route behind the signature check."""
    app = web.Application(
        middlewares=[auth_middleware(credentials, wall)], client_max_size=MAX_HELLO_BYTES
    )

    async def hello(request: web.Request) -> web.Response:
        try:
            their = Hello.from_json(await request.read())
        except WireError as e:
            return web.json_response({"error": f"bad hello: {e}"}, status=400)
        ours = await handle_hello(request[PEER_KEY], their, request.remote or "?")
        return web.Response(body=ours.to_json(), content_type="application/json")

    app.router.add_post("/v1/hello", hello)
    return app


async def serve(app: web.Application, sock: socket.socket) -> web.AppRunner:
    """Serve `app` on a bound socket; `cleanup()` on the result stops it."""
    # A short shutdown: peers retry, and a node on its way out must not wait a minute.
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    await web.SockSite(runner, sock).start()
    return runner


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

"""The node's web page: the control API and a static page, on 127.0.0.1 only.

Other local users and other web sites must neither read nor drive it. Every API request
carries the token kept 0600 in the state directory (`meshsync open` puts it in the page's
address, after the #, which browsers never send); a request naming any other host is refused
(a DNS name pointed at 127.0.0.1 must not make another site's script same-origin with us);
and one that changes anything must come from the page's own origin. The page itself holds
no data, and forbids being framed.
"""

from __future__ import annotations

import hmac
import os
import secrets
import socket
from importlib.resources import files
from pathlib import Path

from aiohttp import web

from meshsync.control.events import Events
from meshsync.control.server import Dispatch, Handler, api, runner_of

TOKEN_HEADER = "X-Meshsync-Token"  # noqa: S105 - the name of a header, not a secret
_STATIC = {"/": ("index.html", "text/html"), "/page.js": ("page.js", "text/javascript"),
           "/page.css": ("page.css", "text/css")}
_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'; base-uri 'none';"
                               " form-action 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def token_of(state: Path) -> str:
    """The page's token, made once and kept 0600 in the state directory."""
    path = state / "page-token"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        text = path.read_text().strip()
        if len(text) >= 32:
            return text
        path.unlink()  # cut short (a crash while writing): a new one
        return token_of(state)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_urlsafe(32))
    return token_of(state)


async def serve(port: int, dispatch: Dispatch, events: Events,
                token: str) -> tuple[web.AppRunner, int]:
    """Serve the page on 127.0.0.1:`port` (0, or taken: a free one); the runner and port."""
    allowed: set[str] = set()  # Host values: filled once the port is known

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.host not in allowed:
            return _refused(403, f"not a host this page answers for: {request.host[:80]!r}")
        if request.path in _STATIC:
            return await handler(request)
        given = request.headers.get(TOKEN_HEADER, "")
        if not given and request.method == "GET" and request.path == "/v1/events":
            given = request.query.get("token", "")  # an EventSource sets no headers
        if not hmac.compare_digest(given.encode(), token.encode()):
            return _refused(401, "no valid token: open the page with `meshsync open`")
        if request.method != "GET" and request.headers.get("Origin") not in {
                f"http://{host}" for host in allowed}:
            return _refused(403, "a change must come from the page itself")
        return await handler(request)

    app = api(dispatch, events, (guard,))
    for route, (name, kind) in _STATIC.items():
        app.router.add_get(route, _static(name, kind))
    runner = await runner_of(app)
    sock = _bind(port)
    bound = sock.getsockname()[1]
    await web.SockSite(runner, sock).start()
    allowed.update({f"127.0.0.1:{bound}", f"localhost:{bound}"})
    return runner, bound


def _bind(port: int) -> socket.socket:
    """A listening socket on 127.0.0.1:`port`; if that one is taken (another node, another
    program), on a free one."""
    for attempt in (port, 0):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", attempt))
        except OSError:
            sock.close()
            if attempt == 0:
                raise
            continue
        sock.listen(64)
        sock.set_inheritable(False)
        return sock
    raise AssertionError("unreachable")


def _static(name: str, kind: str) -> Handler:
    body = files("meshsync.control").joinpath("static", name).read_bytes()

    async def handle(_: web.Request) -> web.Response:
        return web.Response(body=body, content_type=kind, charset="utf-8", headers=_HEADERS)

    return handle


def _refused(status: int, reason: str) -> web.Response:
    return web.json_response({"error": reason}, status=status, headers=_HEADERS)

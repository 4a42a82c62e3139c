"""The node side of the control socket: a JSON API over HTTP on a Unix socket only the owner
may open, which the CLI, the web page and `curl --unix-socket` all use.

Every answer is JSON: the result with 200, or `{"error": "one line"}` with 400 (the node
refused the request: the line says why), 404, 405, 413, 500 (the node cannot now, its
index unusable say: the line says what to do) or 503 (not now: too many event streams
open). `GET /v1/events` streams the node's
events as server-sent events, resumable with Last-Event-ID.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Middleware

from meshsync.control.events import Events
from meshsync.control.protocol import ControlError
from meshsync.core.errors import MeshsyncError

log = logging.getLogger("meshsync.control")

Dispatch = Callable[[str, dict[str, Any]], Awaitable[Any]]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
MAX_BODY = 64 * 1024  # a request's body: key lines, a path
MAX_FOLLOWERS = 32  # event streams open at once
IDLE = 15.0  # seconds between keep-alive comments on a quiet event stream

# (method, path, command, fixed arguments, what the endpoint does); GET takes its arguments
# from the query, POST from a JSON object body.
ENDPOINTS: tuple[tuple[str, str, str, dict[str, Any], str], ...] = (
    ("GET", "/v1/id", "id", {}, "this node's ID, name and public key line"),
    ("GET", "/v1/peers", "peers", {}, "every node this node knows, itself first"),
    ("GET", "/v1/status", "status", {}, "each folder's state, progress and members"),
    ("GET", "/v1/election", "elect", {}, "the coordinator and the term"),
    ("GET", "/v1/conflicts", "conflicts", {}, "the conflict copies and both versions"),
    ("GET", "/v1/versions", "versions", {}, "kept versions: ?path=ABSOLUTE-PATH"),
    ("GET", "/v1/log", "log", {}, "the latest change to each path, newest first:"
                                  " ?path=ABSOLUTE-PATH&limit=N (50)"),
    ("POST", "/v1/elect", "elect", {"force": True}, "open an election; answers when settled"),
    ("POST", "/v1/restore", "restore", {}, 'put a kept version back: {"path", "at"?}'),
    ("POST", "/v1/trust", "trust", {}, 'trust keys or peer IDs: {"keys": [...], '
                                       '"introducer"?}'),
    ("POST", "/v1/add", "add", {}, 'sync one more folder: {"path", "as"?, and settings as'
                                   ' for set}'),
    ("POST", "/v1/set", "set", {}, 'change a folder\'s settings: {"id", "mode"?, "share_with"?'
                                   ' (IDs or "all"), "keep_days"?, "keep_size"?}'),
    ("POST", "/v1/override", "override", {}, "a send-only folder's versions win over the"
                                             ' mesh\'s changes: {"id"}'),
    ("POST", "/v1/revert", "revert", {}, "the mesh's versions replace a receive-only folder's"
                                         ' changes made here: {"id"}'),
    ("POST", "/v1/remove", "remove", {}, 'stop syncing a folder, files kept: {"id"}'),
    ("POST", "/v1/pause", "pause", {}, 'pause folders: {"ids"?} (none: all)'),
    ("POST", "/v1/resume", "resume", {}, 'resume paused folders: {"ids"?} (none: all)'),
    ("GET", "/v1/page", "page", {}, "the web page's address, with its token"),
    ("POST", "/v1/stop", "stop", {}, "stop the node"),
)


async def serve(path: Path, dispatch: Dispatch, events: Events) -> web.AppRunner:
    """Answer on `path` (only the owner may connect) until `close`."""
    _remove_stale(path)
    runner = await runner_of(api(dispatch, events))
    await web.UnixSite(runner, str(path)).start()
    _restrict(path)
    return runner


async def close(runner: web.AppRunner, path: Path) -> None:
    """Stop answering and remove the socket, so the CLI says no node runs."""
    await runner.cleanup()
    _remove_stale(path)


def api(dispatch: Dispatch, events: Events,
        middlewares: tuple[Middleware, ...] = ()) -> web.Application:
    """The API's application; `middlewares` run before it answers."""
    streams: set[asyncio.Task[Any]] = set()
    app = web.Application(client_max_size=MAX_BODY, middlewares=[_as_json, *middlewares])
    for method, route, command, fixed, _ in ENDPOINTS:
        app.router.add_route(method, route, _endpoint(dispatch, command, fixed))
    app.router.add_get("/v1", _index)
    app.router.add_get("/v1/events", _follower(events, streams))

    async def end_streams(_: web.Application) -> None:
        for task in streams:
            task.cancel()

    app.on_shutdown.append(end_streams)
    return app


async def runner_of(app: web.Application) -> web.AppRunner:
    """A runner for the app, set up: no access log, and the node handles the signals."""
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    return runner


def _endpoint(dispatch: Dispatch, command: str,
              fixed: dict[str, Any]) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handle(request: web.Request) -> web.Response:
        args = dict(request.query) if request.method == "GET" else await _body(request)
        result = await dispatch(command, {**args, **fixed})
        return web.json_response(result, dumps=_dumps)

    return handle


async def _body(request: web.Request) -> dict[str, Any]:
    """A POST's JSON object (an empty body: no arguments); ControlError if it is not one."""
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        found = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ControlError(f"the request body is not JSON: {e}") from None
    except RecursionError:
        raise ControlError("the request body is not JSON: nested too deep") from None
    if not isinstance(found, dict):
        raise ControlError("the request body must be a JSON object")
    return found


async def _index(_: web.Request) -> web.Response:
    return web.json_response([{"method": m, "path": p, "does": does}
                              for m, p, _, _, does in ENDPOINTS] + [
        {"method": "GET", "path": "/v1/events",
         "does": "server-sent events: peer, coordinator, changed, conflict, warning;"
                 " ?after=N: those kept after number N too (0: all)"}])


def _follower(events: Events, streams: set[asyncio.Task[Any]]) -> Callable[
        [web.Request], Awaitable[web.StreamResponse]]:
    async def follow(request: web.Request) -> web.StreamResponse:
        if len(streams) >= MAX_FOLLOWERS:
            raise ControlError(f"{MAX_FOLLOWERS} event streams are open already", status=503)
        after = _last_event_id(request.headers.get("Last-Event-ID",
                                                   request.query.get("after")), events.last)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                               "Cache-Control": "no-store"})
        await response.prepare(request)
        task = asyncio.current_task()
        assert task is not None  # noqa: S101 - a handler runs in a task
        streams.add(task)
        try:
            async for found in events.follow(after, IDLE):
                await response.write(b"".join(map(_frame, found)) or b": idle\n\n")
        except ConnectionError:  # the follower left
            pass
        finally:
            streams.discard(task)
        return response

    return follow


def _last_event_id(text: str | None, last: int) -> int:
    """Where a stream starts: after the event a returning follower saw last (Last-Event-ID,
    or ?after=N: 0 for all that are kept), else now."""
    if text is not None and text.isascii() and text.isdigit() and len(text) < 20:
        return min(int(text), last)
    return last


def _frame(event: dict[str, Any]) -> bytes:
    return f"id: {event['id']}\nevent: {event['type']}\ndata: {_dumps(event)}\n\n".encode()


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


@web.middleware
async def _as_json(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every refusal as `{"error": ...}`: the node's one line (400), or HTTP's own."""
    try:
        return await handler(request)
    except ControlError as e:
        return web.json_response({"error": str(e)}, status=e.status)
    except MeshsyncError as e:  # the node cannot now (its index unusable, say): its line
        return web.json_response({"error": str(e)}, status=500)
    except web.HTTPException as e:
        if e.status == 404:
            text = f"no such endpoint: {request.method} {request.path} (GET /v1 lists them)"
        elif e.status == 405:
            text = f"{request.path} does not take {request.method}"
        elif e.status == 413:
            text = f"the request body is over {MAX_BODY} bytes"
        else:
            raise
        return web.json_response({"error": text}, status=e.status)


def _restrict(path: Path) -> None:
    """Only the owner may command the node (the state directory is 0700 too)."""
    path.chmod(0o600)


def _remove_stale(path: Path) -> None:
    """Remove a socket left by a node that crashed; the state lock says none runs now."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()

"""The node side of the control socket: one command per connection, answered as JSON."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from meshsync.control.protocol import MAX_LINE, ControlError, decode, encode

log = logging.getLogger("meshsync.control")

Dispatch = Callable[[str, dict[str, Any]], Awaitable[Any]]


async def serve(path: Path, dispatch: Dispatch) -> asyncio.Server:
    """Listen on `path` (only the owner may connect) and answer commands with `dispatch`."""
    _remove_stale(path)

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await reader.readuntil(b"\n")
            request = decode(line)
            command = request.pop("command", None)
            if not isinstance(command, str):
                raise ControlError("no command given")
            answer = {"ok": True, "result": await dispatch(command, request)}
        except ControlError as e:
            answer = {"ok": False, "error": str(e)}
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            writer.close()
            return
        writer.write(encode(answer))
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        writer.close()

    server = await asyncio.start_unix_server(on_connect, path=str(path), limit=MAX_LINE)
    _restrict(path)
    return server


def close(server: asyncio.Server, path: Path) -> None:
    """Stop answering and remove the socket, so the CLI says no node runs."""
    server.close()
    _remove_stale(path)


def _restrict(path: Path) -> None:
    """Only the owner may command the node (the state directory is 0700 too)."""
    path.chmod(0o600)


def _remove_stale(path: Path) -> None:
    """Remove a socket left by a node that crashed; the state lock says none runs now."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()

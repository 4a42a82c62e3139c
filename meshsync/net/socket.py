"""A heartbeat link's socket, as the node sees it: text frames in and out, and a close.

Both ends of a link are aiohttp WebSockets (the client's and the server's); this wraps either,
so that the node sees frames, not aiohttp, and a frame no node sends closes the link.
"""

from __future__ import annotations

import contextlib

import aiohttp
from aiohttp import web


class LinkClosed(Exception):
    """The link is closed, or broke under a send."""


class LinkSocket:
    """One open link: `send` a frame, `receive` the next (None once closed), `close`."""

    def __init__(self, socket: aiohttp.ClientWebSocketResponse | web.WebSocketResponse) -> None:
        self._socket = socket

    @property
    def closed(self) -> bool:
        """Whether the link is closed."""
        return self._socket.closed

    async def send(self, text: str) -> None:
        """Send one text frame; LinkClosed if the link is closed or breaks."""
        try:
            await self._socket.send_str(text)
        except (ConnectionError, RuntimeError, aiohttp.ClientError) as e:
            raise LinkClosed(str(e) or e.__class__.__name__) from None

    async def receive(self, timeout: float) -> str | None:
        """The next text frame; None once the link closes or sends anything else (TimeoutError
        after `timeout` seconds of silence)."""
        try:
            message = await self._socket.receive(timeout=timeout)
        except (ConnectionError, RuntimeError, aiohttp.ClientError):
            return None
        return message.data if message.type == aiohttp.WSMsgType.TEXT else None

    async def close(self) -> None:
        """Close the link (a close frame, then the connection); never raises."""
        with contextlib.suppress(OSError, RuntimeError, aiohttp.ClientError):
            await self._socket.close()

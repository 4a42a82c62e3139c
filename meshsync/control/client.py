"""The CLI side of the control socket: plain blocking sockets, so commands start fast."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

from meshsync.control.protocol import MAX_LINE, ControlError, decode, encode


def call(sock_path: Path, command: str, timeout: float = 30.0, **args: Any) -> Any:
    """Send one command to the node and return its result; ControlError if it fails."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(str(sock_path))
        except (FileNotFoundError, ConnectionRefusedError):
            raise ControlError(f"no meshsync node is running (no answer at {sock_path})") from None
        except OSError as e:
            raise ControlError(f"cannot reach the node at {sock_path}: {e.strerror}") from None
        sock.sendall(encode({"command": command, **args}))
        line = _read_line(sock)
    answer = decode(line)
    if not answer.get("ok"):
        raise ControlError(str(answer.get("error", "the node refused the command")))
    return answer.get("result")


def _read_line(sock: socket.socket) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            raise ControlError("the node did not answer in time") from None
        if not chunk:
            raise ControlError("the node closed the connection without answering")
        chunks.append(chunk)
        size += len(chunk)
        if chunk.endswith(b"\n"):
            return b"".join(chunks)
        if size > MAX_LINE:
            raise ControlError("the node's answer is too long")

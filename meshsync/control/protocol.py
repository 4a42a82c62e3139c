"""The control protocol: one JSON request line, one JSON answer line, over a Unix socket."""

from __future__ import annotations

import json
from typing import Any

MAX_LINE = 1024 * 1024


class ControlError(Exception):
    """The node refused a command, or no node answers; the message is for the user."""


def encode(message: dict[str, Any]) -> bytes:
    """One message as a line."""
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


def decode(line: bytes) -> dict[str, Any]:
    """One line as a message; ControlError if it is not a JSON object."""
    try:
        message = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ControlError(f"bad control message: {e}") from None
    if not isinstance(message, dict):
        raise ControlError("bad control message: not an object")
    return message

"""What the control socket's two sides share."""

from __future__ import annotations

MAX_ANSWER = 16 * 1024 * 1024  # an answer the CLI reads: status with 100 held back, peers...


class ControlError(Exception):
    """The node refused a command, or no node answers; the message is for the user."""

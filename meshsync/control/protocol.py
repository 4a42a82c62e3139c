"""What the control socket's two sides share."""

from __future__ import annotations

MAX_ANSWER = 16 * 1024 * 1024  # an answer the CLI reads: status with 100 held back, peers...


class ControlError(Exception):
    """The node refused a command, or no node answers; the message is for the user, the
    status for HTTP (400: the request cannot be done as asked; 503: not now)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status

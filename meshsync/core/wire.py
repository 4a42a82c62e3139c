"""The peer messages and their validation: every byte a peer sends is checked here first."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, NewType

from meshsync.core.errors import WireError
from meshsync.core.ids import NodeId

FolderId = NewType("FolderId", str)

MAX_HELLO_BYTES = 64 * 1024
MAX_FOLDERS = 256
MAX_NAME = 64


def check_folder_id(text: object) -> FolderId:
    """A folder ID is a base name: non-empty, at most 255 bytes, no `/`, NUL, `.` or `..`."""
    if (
        not isinstance(text, str)
        or not text
        or len(text.encode(errors="surrogatepass")) > 255
        or "/" in text
        or "\0" in text
        or text in (".", "..")
        or any("\ud800" <= c <= "\udfff" for c in text)  # JSON's lone surrogates: no file name
    ):
        raise WireError(f"bad folder ID: {text!r}")
    return FolderId(text)


@dataclass(frozen=True, slots=True)
class Hello:
    """What a node says of itself: sent on discovery and as every heartbeat, answered in kind."""

    name: str
    port: int
    folders: frozenset[FolderId]
    term: int
    coordinator: NodeId | None
    leaving: bool = False

    def to_json(self) -> bytes:
        """The message body."""
        return json.dumps(
            {
                "name": self.name,
                "port": self.port,
                "folders": sorted(self.folders),
                "term": self.term,
                "coordinator": str(self.coordinator) if self.coordinator else None,
                "leaving": self.leaving,
            },
            separators=(",", ":"),
        ).encode()

    @classmethod
    def from_json(cls, body: bytes) -> Hello:
        """Parse and validate a peer's hello; WireError says what is wrong."""
        data = _object(body, MAX_HELLO_BYTES)
        name = data.get("name")
        if not isinstance(name, str) or not name or len(name) > MAX_NAME or not name.isprintable():
            raise WireError(f"bad name: {str(name)[:80]!r}")
        folders = data.get("folders")
        if not isinstance(folders, list) or len(folders) > MAX_FOLDERS:
            raise WireError("folders must be a list of at most 256 folder IDs")
        coordinator = data.get("coordinator")
        leaving = data.get("leaving", False)
        if not isinstance(leaving, bool):
            raise WireError("leaving must be true or false")
        return cls(
            name=name,
            port=_int(data, "port", 1, 65535),
            folders=frozenset(check_folder_id(f) for f in folders),
            term=_int(data, "term", 0, 2**53),
            coordinator=None if coordinator is None else _node_id(coordinator),
            leaving=leaving,
        )


def _object(body: bytes, limit: int) -> dict[str, Any]:
    if len(body) > limit:
        raise WireError(f"message too large ({len(body)} bytes, limit {limit})")
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as e:  # bad UTF-8 or syntax, 4300+ digits, deep nesting
        raise WireError(f"not JSON: {e}") from None
    if not isinstance(data, dict):
        raise WireError("message must be a JSON object")
    return data


def _int(data: dict[str, Any], key: str, low: int, high: int) -> int:
    value = data.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise WireError(f"{key} must be an integer in [{low}, {high}]")
    return value


def _node_id(text: object) -> NodeId:
    if not isinstance(text, str):
        raise WireError("a node ID must be a string")
    try:
        return NodeId.parse(text)
    except ValueError as e:
        raise WireError(str(e)) from None

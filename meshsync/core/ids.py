"""Node identity: the SHA-256 fingerprint of an SSH public key, ordered by its digest bytes."""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass

_PREFIX = "SHA256:"


@dataclass(frozen=True, slots=True, order=True)
class NodeId:
    """A node's ID; compares by the raw 32 digest bytes, so `min()` picks the election winner."""

    digest: bytes

    def __post_init__(self) -> None:
        if len(self.digest) != 32:
            raise ValueError("a node ID is a 32-byte SHA-256 digest")

    @classmethod
    def of_key(cls, public_blob: bytes) -> NodeId:
        """The ID of an SSH public key given as its wire-format blob."""
        return cls(hashlib.sha256(public_blob).digest())

    @classmethod
    def parse(cls, text: str) -> NodeId:
        """Parse `SHA256:…` as `ssh-keygen -l` prints it; ValueError if it is not one."""
        if not isinstance(text, str) or not text.startswith(_PREFIX) or len(text) != 50:
            raise ValueError(f"not a node ID (expected SHA256: and 43 base64 characters): {text!r}")
        try:
            digest = base64.b64decode(text[len(_PREFIX) :] + "=", validate=True)
        except ValueError:  # binascii.Error, or a non-ASCII character
            raise ValueError(f"not a node ID (bad base64): {text!r}") from None
        node = cls(digest)
        # Non-zero trailing bits would give one node a second spelling.
        if str(node) != text:
            raise ValueError(f"not a node ID (non-canonical base64): {text!r}")
        return node

    def __str__(self) -> str:
        return _PREFIX + base64.b64encode(self.digest).decode().rstrip("=")

    @property
    def short(self) -> str:
        """The short form used everywhere (tables, logs, status, conflict copy names)."""
        return short_of(str(self))

    def known_as(self, text: str) -> bool:
        """Whether `text` names this node: its ID, or its short form (in either alphabet)."""
        return text == str(self) or (len(text) == SHORT and short_of(text) == self.short)

    @property
    def key(self) -> str:
        """The node's key in version vectors: 16 hex digits of its digest."""
        return self.digest[:8].hex()

    @property
    def label(self) -> str:
        """A DNS-safe label unique to this ID, used as the mDNS instance name."""
        return "meshsync-" + self.digest[:12].hex()


SHORT = 8  # characters of the short form
_FILE_SAFE = str.maketrans("/", "_")


def short_of(text: str) -> str:
    """The short form of a node ID as written (`SHA256:…`), or of a short form in either
    alphabet: the first 8 characters after `SHA256:` (6 bytes of the digest), with `_` for
    `/`, as it also names files. (Not `-` for `+`: a short ID must never read as an option.)"""
    return text.removeprefix(_PREFIX)[:SHORT].translate(_FILE_SAFE)


def short_of_key(key: str) -> str:
    """The short form of the node whose vector key (`NodeId.key`, 16 hex digits) is `key`."""
    return base64.b64encode(bytes.fromhex(key)[:6]).decode().translate(_FILE_SAFE)

"""ssh-agent client: listing identities and signing over the agent's Unix socket."""

from __future__ import annotations

import socket
from dataclasses import dataclass

from meshsync.crypto.sshwire import Reader, put_string, put_u32

FAILURE = 5
REQUEST_IDENTITIES = 11
IDENTITIES_ANSWER = 12
SIGN_REQUEST = 13
SIGN_RESPONSE = 14
RSA_SHA2_512 = 4
TIMEOUT = 5.0
MAX_REPLY = 256 * 1024


class AgentError(Exception):
    """The ssh-agent is unreachable, refused the request or answered nonsense."""


def _call(sock_path: str, request: bytes, expect: int) -> Reader:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(TIMEOUT)
            sock.connect(sock_path)
            sock.sendall(put_string(request))
            with sock.makefile("rb") as f:
                head = f.read(4)
                size = int.from_bytes(head, "big")
                if len(head) != 4 or not 0 < size <= MAX_REPLY:
                    raise AgentError(f"ssh-agent at {sock_path} sent a bad reply header")
                reply = f.read(size)
    except OSError as e:
        raise AgentError(f"ssh-agent at {sock_path}: {e}") from e
    if len(reply) != size:
        raise AgentError(f"ssh-agent at {sock_path} closed the connection mid-reply")
    if reply[0] == FAILURE:
        raise AgentError(f"ssh-agent at {sock_path} refused the request")
    if reply[0] != expect:
        raise AgentError(f"ssh-agent at {sock_path} sent message type {reply[0]}, not {expect}")
    return Reader(reply[1:])


def list_identities(sock_path: str) -> list[bytes]:
    """Return the public key blobs the agent holds."""
    r = _call(sock_path, bytes([REQUEST_IDENTITIES]), IDENTITIES_ANSWER)
    try:
        blobs = []
        for _ in range(r.u32()):
            blobs.append(r.string())
            r.string()  # comment
    except ValueError as e:
        raise AgentError(f"malformed identities answer: {e}") from e
    return blobs


@dataclass(frozen=True, slots=True)
class AgentSigner:
    """Signer backed by a key held in an ssh-agent; thread-safe (one connection per call)."""

    sock_path: str
    public_blob: bytes

    def sign(self, data: bytes) -> bytes:
        """Return an SSH signature blob over data made by the agent."""
        is_rsa = self.public_blob.startswith(put_string(b"ssh-rsa"))
        # Without the flag the agent signs RSA with SHA-1, which verifiers must refuse.
        flags = RSA_SHA2_512 if is_rsa else 0
        request = bytes([SIGN_REQUEST]) + put_string(self.public_blob) + put_string(data)
        r = _call(self.sock_path, request + put_u32(flags), SIGN_RESPONSE)
        try:
            sig = r.string()
            algorithm = Reader(sig).string()
        except ValueError as e:
            raise AgentError(f"malformed sign response: {e}") from e
        if algorithm == b"ssh-rsa":
            raise AgentError("ssh-agent ignored the rsa-sha2-512 request and signed with SHA-1")
        return sig

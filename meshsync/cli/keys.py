"""`meshsync id`, `trust` and `untrust`: through the running node when there is one, else on
the files in the state directory themselves (a running node reads them again within a second).
"""

from __future__ import annotations

import re
import socket
from pathlib import Path
from typing import Any

from meshsync.control.client import NoNode, call
from meshsync.control.protocol import ControlError
from meshsync.core.ids import NodeId
from meshsync.crypto.keys import (
    KeyLoadError,
    find_key,
    fingerprint,
    load_signer,
    parse_public_line,
    public_key_line,
)
from meshsync.crypto.trust import TrustStore, parse_key_line

# A node ID as `peers` shows it: whole (`SHA256:` and 43 characters) or its first 8.
_ID = re.compile(r"(SHA256:)?[A-Za-z0-9+/]{43}|[A-Za-z0-9+/_]{8}")  # a short ID has _ for /


class UsageError(Exception):
    """The command line is wrong as written (exit 2); the message is for the user."""


def node_id(sock: Path, state: Path, ssh_dir: Path) -> dict[str, Any]:
    """This node's ID, name and key line: the running node's, else those of the key
    `meshsync start` would take."""
    try:
        return dict(call(sock, "GET", "/v1/id"))
    except NoNode:
        pass
    try:
        path = find_key(None, ssh_dir, state)
        public = path.with_name(path.name + ".pub")
        if public.is_file():
            blob, _ = parse_public_line(public.read_text().strip())
        else:
            blob = load_signer(path, None).public_blob
    except (KeyLoadError, OSError, ValueError) as e:
        raise ControlError(f"no node is running, and its key cannot be read: {e}") from None
    name = socket.gethostname()
    return {"id": fingerprint(blob), "name": name, "key": public_key_line(blob, name)}


def key_texts(arg: str) -> list[str]:
    """A key line or ID as given, or the key lines of a file such as `id_ed25519.pub`."""
    path = Path(arg).expanduser()
    if ("\n" in arg or len(arg) >= 4096 or _ID.fullmatch(arg.strip())
            or parse_key_line(arg) is not None):  # base64 holds slashes too
        return [arg]
    if path.is_file():
        try:
            lines = path.read_text().splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise ControlError(f"cannot read {path}: {e}") from None
        if any("PRIVATE KEY" in line for line in lines):
            raise UsageError(f"{path} is a private key: give its public half"
                             f" ({path.name}.pub), never the key itself")
        keys = [line for line in lines if line.strip() and not line.lstrip().startswith("#")]
        if not keys:
            raise UsageError(f"{path} holds no key lines")
        return keys
    if "/" in arg or arg.endswith(".pub"):
        raise ControlError(f"no such file: {path}")
    return [arg]


def trust(sock: Path, trust_store: TrustStore, arg: str, introducer: bool) -> dict[str, Any]:
    """Trust keys or peers: by the running node, else in trusted_keys (key lines only: only
    a running node knows which key a peer's ID stands for)."""
    texts = key_texts(arg)
    for text in texts:
        if parse_key_line(text) is None and not _ID.fullmatch(text.strip()):
            raise UsageError(f"not a public key line nor a peer's ID: {text[:80]!r} (a key line"
                             " looks like `ssh-ed25519 AAAA… name`)")
    try:
        return dict(call(sock, "POST", "/v1/trust", {"keys": texts, "introducer": introducer}))
    except NoNode:
        pass
    result: dict[str, Any] = {"added": [], "already": []}
    for text in texts:
        key = parse_key_line(text)
        if key is None:
            raise ControlError(f"no node is running to tell which key {text.strip()} is: give"
                               " its key line (`meshsync id` on that machine prints it)")
        done = trust_store.add(key, introducer=introducer)
        result["added" if done else "already"].append(str(NodeId.of_key(key.blob)))
    if introducer:
        result["introducer"] = True
    return result


def untrust(trust_store: TrustStore, arg: str) -> dict[str, Any]:
    """Take keys out of trusted_keys: by key line, file of them, or ID (whole or short)."""
    blobs: list[bytes] = []
    for text in key_texts(arg):
        key = parse_key_line(text)
        if key is not None:
            blobs.append(key.blob)
            continue
        if not _ID.fullmatch(text := text.strip()):
            raise UsageError(f"not a public key line nor a node's ID: {text[:80]!r}")
        found = [b for b in trust_store.known_keys(introduced=False)
                 if NodeId.of_key(b).known_as(text)]
        if len(found) != 1:
            raise ControlError(f"no trusted key has the ID {text}" if not found else
                               f"{len(found)} trusted keys have IDs starting {text}: give more")
        blobs += found
    removed = []
    for blob in blobs:
        shown = str(NodeId.of_key(blob))
        if trust_store.remove(blob):
            removed.append(shown)
            continue
        holding = trust_store.holding(blob)
        if holding:
            raise ControlError(f"{shown} is trusted by {holding[0]}: remove its line there"
                               " (meshsync does not edit that file)")
        raise ControlError(f"{shown} is not trusted here")
    return {"removed": removed}

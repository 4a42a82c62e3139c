"""Send hand-made requests to a node's peer port and print each answer's status as JSON.

Run inside a host's namespace: `python -m tests.integration.probe HOST:PORT KEYFILE [MODE]`.
Requests go over TLS and name the node they are for, as meshsync's own client does (the
target is read from the key that vouches for the node's certificate).
Each case is what an attacker or a broken peer on the LAN could send; `notice` sends change
notices, signed by a trusted member, whose paths try to leave the folder; `forged` sends
records that their claimed origin did not sign; `index` asks for the index of folder `Sync`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
import ssl
import sys
import time
import urllib.error
import urllib.request
from functools import cache
from pathlib import Path

from meshsync.core.ids import NodeId
from meshsync.core.paths import RelPath
from meshsync.core.records import FileRecord, Kind
from meshsync.core.signing import (
    AUTHORIZATION,
    DIGEST,
    NONCE,
    SCHEME,
    TARGET,
    TIME,
    RequestHead,
    body_digest,
)
from meshsync.core.vclock import Vector
from meshsync.core.wire import Hello
from meshsync.crypto import sshsig, tls
from meshsync.crypto.agent import AgentSigner
from meshsync.crypto.keys import KeySigner, load_signer

PATH = "/v1/hello"
BAD_PATHS = ["../escape.txt", "/etc/evil", "a/../../b", "nul\0byte", ".meshsync/versions/x"]


ADDRESS = ""  # the node probed, HOST:PORT


def tls_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # who answers is checked by the vouch, as meshsync does
    return context


@cache
def node_at(address: str) -> str:
    """The ID of the node at `address`, from the key that vouches for its TLS certificate."""
    host, _, port = address.rpartition(":")
    with socket.create_connection((host, int(port)), timeout=5) as raw, \
            tls_context().wrap_socket(raw) as conn:
        return str(NodeId.of_key(tls.vouched_key(conn.getpeercert(binary_form=True) or b"")))


def post(address: str, body: bytes, headers: dict[str, str], path: str = PATH) -> int:
    request = urllib.request.Request(f"https://{address}{path}", data=body, method="POST",
                                     headers={"Content-Type": "application/json", **headers})
    try:
        with urllib.request.urlopen(  # noqa: S310 (a lab address)
                request, timeout=5, context=tls_context()) as response:
            return int(response.status)
    except urllib.error.HTTPError as e:
        return e.code


def signed(
    signer: object, body: bytes, *, sent: float | None = None, path: str = PATH,
    to: str | None = None,
) -> dict[str, str]:
    when = time.time() if sent is None else sent
    head = RequestHead("POST", path, "", to or node_at(ADDRESS), f"{when:.3f}",
                       os.urandom(16).hex(), body_digest(body))
    signature = sshsig.sign(signer, head.canonical())  # type: ignore[arg-type]
    return {AUTHORIZATION: SCHEME + base64.b64encode(signature).decode(), TARGET: head.target,
            TIME: head.time, NONCE: head.nonce, DIGEST: head.digest}


def notices(address: str, signer: KeySigner | AgentSigner) -> dict[str, int]:
    """One notice per path, each record signed by this (trusted) node as its origin."""
    origin = NodeId.of_key(signer.public_blob).key
    return {path: notice(address, signer, FileRecord(RelPath(path), Kind.FILE,
                                                     Vector.of({origin: 1}), origin))
            for path in [*BAD_PATHS, "ok.txt", "out/evil.txt"]}


def forged(address: str, signer: KeySigner | AgentSigner) -> dict[str, int]:
    """Records their origin did not sign: one claiming a stranger's origin, one whose signed
    content was swapped, and one honest record beside them."""
    ours = NodeId.of_key(signer.public_blob).key
    stranger = NodeId.of_key(b"a key nobody holds").key

    return {
        "stranger.txt": notice(address, signer, record("stranger.txt", stranger, b"x")),
        "swapped.txt": notice(address, signer, record("swapped.txt", ours, b"x"),
                              record("swapped.txt", ours, b"signed")),
        "honest.txt": notice(address, signer, record("honest.txt", ours, b"x")),
    }


def record(path: str, origin: str, content: bytes) -> FileRecord:
    """A first version of a one-block file."""
    return FileRecord(RelPath(path), Kind.FILE, Vector.of({origin: 1}), origin,
                      size=len(content), blocks=(hashlib.sha256(content).digest(),))


def notice(address: str, signer: KeySigner | AgentSigner, record: FileRecord,
           signed_record: FileRecord | None = None) -> int:
    """Send `record` in a notice with this node's signature of `signed_record` (itself)."""
    signature = sshsig.sign(signer, (signed_record or record).canonical("Sync"))
    entry = {"record": record.to_json(), "signature": base64.b64encode(signature).decode()}
    body = json.dumps({"folder": "Sync", "records": [entry]}).encode()
    return post(address, body, signed(signer, body, path="/v1/notice"), "/v1/notice")


def main() -> None:
    global ADDRESS
    address, keyfile = sys.argv[1], Path(sys.argv[2])
    ADDRESS = address
    signer = load_signer(keyfile, None)
    modes = {"notice": notices, "forged": forged}
    if sys.argv[3:] and sys.argv[3] in modes:
        print(json.dumps(modes[sys.argv[3]](address, signer)))
        return
    if sys.argv[3:] == ["index"]:
        body = json.dumps({"folder": "Sync", "since": 0}).encode()
        print(json.dumps({"index": post(address, body, signed(signer, body, path="/v1/index"),
                                        "/v1/index")}))
        return
    body = Hello("probe", 9, frozenset(), 0, None).to_json()
    results: dict[str, int] = {}
    results["unsigned"] = post(address, body, {})
    valid = signed(signer, body)
    results["valid"] = post(address, body, valid)
    results["replayed"] = post(address, body, valid)
    results["body_swapped"] = post(address, b'{"evil":1}', signed(signer, body))
    tampered = signed(signer, body)
    raw = bytearray(base64.b64decode(tampered[AUTHORIZATION][len(SCHEME):]))
    raw[-1] ^= 1
    tampered[AUTHORIZATION] = SCHEME + base64.b64encode(bytes(raw)).decode()
    results["bad_signature"] = post(address, body, tampered)
    # Clocks may differ by up to 15 minutes (MAX_OFFSET); these are 17 minutes off.
    results["stale"] = post(address, body, signed(signer, body, sent=time.time() - 1020))
    results["from_the_future"] = post(address, body, signed(signer, body, sent=time.time() + 1020))
    # Signed for another member: what a member that received it could try to replay elsewhere.
    other = str(NodeId.of_key(b"another member"))
    results["meant_for_another"] = post(address, body, signed(signer, body, to=other))
    garbage = b"\x00\xff not json"
    results["garbage_body"] = post(address, garbage, signed(signer, garbage))
    print(json.dumps(results))


if __name__ == "__main__":
    main()

"""Send hand-made requests to a node's peer port and print each answer's status as JSON.

Run inside a host's namespace: `python -m tests.integration.probe HOST:PORT KEYFILE`.
Each case is what an attacker or a broken peer on the LAN could send.
"""

from __future__ import annotations

import base64
import json
import os
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from meshsync.core.signing import (
    AUTHORIZATION,
    DIGEST,
    NONCE,
    SCHEME,
    TIME,
    RequestHead,
    body_digest,
)
from meshsync.core.wire import Hello
from meshsync.crypto import sshsig
from meshsync.crypto.keys import load_signer

PATH = "/v1/hello"


def post(address: str, body: bytes, headers: dict[str, str]) -> int:
    request = urllib.request.Request(f"http://{address}{PATH}", data=body, method="POST",
                                     headers={"Content-Type": "application/json", **headers})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 (lab address)
            return int(response.status)
    except urllib.error.HTTPError as e:
        return e.code


def signed(signer: object, body: bytes, *, sent: float | None = None) -> dict[str, str]:
    when = time.time() if sent is None else sent
    head = RequestHead("POST", PATH, "", f"{when:.3f}", os.urandom(16).hex(), body_digest(body))
    signature = sshsig.sign(signer, head.canonical())  # type: ignore[arg-type]
    return {AUTHORIZATION: SCHEME + base64.b64encode(signature).decode(),
            TIME: head.time, NONCE: head.nonce, DIGEST: head.digest}


def main() -> None:
    address, keyfile = sys.argv[1], Path(sys.argv[2])
    signer = load_signer(keyfile, None)
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
    results["stale"] = post(address, body, signed(signer, body, sent=time.time() - 120))
    results["from_the_future"] = post(address, body, signed(signer, body, sent=time.time() + 120))
    garbage = b"\x00\xff not json"
    results["garbage_body"] = post(address, garbage, signed(signer, garbage))
    print(json.dumps(results))


if __name__ == "__main__":
    main()

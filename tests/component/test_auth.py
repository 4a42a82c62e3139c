"""The peer API's signature check for real: ed25519 keys, SSHSIG, a trust file and aiohttp."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import os
import socket
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from meshsync.core import election as el
from meshsync.core.ids import NodeId
from meshsync.core.signing import (
    AUTHORIZATION,
    DIGEST,
    MAX_OFFSET,
    NONCE,
    RESPONSE_SIGNATURE,
    SCHEME,
    TARGET,
    TIME,
    RequestHead,
    body_digest,
    response_canonical,
)
from meshsync.core.throttle import WINDOW
from meshsync.core.wire import BlockRequest, FolderId, Hello, IndexRequest, Records
from meshsync.crypto import sshsig, tls
from meshsync.crypto.keys import KeySigner, public_key_line
from meshsync.crypto.sshsig import BadSignature
from meshsync.crypto.trust import TrustStore
from meshsync.net import auth
from meshsync.net.auth import LINK, MAX_IN_FLIGHT
from meshsync.net.client import Identity, PeerClient, PeerClockOffset, PeerClosed, Reply
from meshsync.net.listener import Limits, Listener, server_context
from meshsync.net.server import ANSWER_DIGESTS, ROUTES, make_app, serve
from meshsync.net.socket import LinkSocket
from meshsync.node.config import Config, Folder
from meshsync.node.node import Node
from tests.clock import FakeClock

T0 = 1_700_000_000.0
THEIRS = Hello("client", 22300, frozenset({FolderId("docs")}), 3, None)
OURS = Hello("server", 22301, frozenset({FolderId("docs"), FolderId("music")}), 3, None)
# Long enough that a server waiting for a body we never finish is plainly hanging.
ANSWER_DEADLINE = 10.0


class Wall:
    """The server's wall clock, set by the test."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


class Credentials:
    """The node's credentials as the auth layer sees them: real SSHSIG, a real trust file."""

    def __init__(self, signer: KeySigner, trust: TrustStore) -> None:
        self.signer = signer
        self.trust = trust
        self.untrusted: list[tuple[bytes, str]] = []
        self.clocks: list[tuple[bytes, str, float]] = []

    def sign(self, message: bytes) -> bytes:
        return sshsig.sign(self.signer, message)

    def verify(self, signature: bytes, message: bytes) -> bytes:
        return sshsig.verify(signature, message)

    def is_trusted(self, public_blob: bytes, address: str) -> bool:
        return self.trust.is_trusted(public_blob, address)

    def note_untrusted(self, public_blob: bytes, address: str) -> None:
        self.untrusted.append((public_blob, address))

    def note_clock(self, public_blob: bytes, address: str, offset: float) -> None:
        self.clocks.append((public_blob, address, offset))


@dataclass
class HelloHandler:
    """The peer API as far as hellos go: records every one that got past the middleware."""

    calls: list[tuple[bytes, Hello, str]] = field(default_factory=list)
    hold: asyncio.Event | None = None  # when set, hellos wait for it before answering
    all_in: asyncio.Event | None = None  # set once `expected` hellos are in hand
    expected: int = 0

    async def handle_hello(self, key: bytes, hello: Hello, address: str) -> Hello:
        self.calls.append((key, hello, address))
        if self.all_in is not None and len(self.calls) >= self.expected:
            self.all_in.set()
        if self.hold is not None:
            await self.hold.wait()
        return OURS

    async def handle_notice(self, key: bytes, notice: Records) -> None:
        raise AssertionError("only hellos are sent here")

    async def handle_index(self, key: bytes, request: IndexRequest) -> Records:
        raise AssertionError("only hellos are sent here")

    async def handle_blocks(self, key: bytes, request: BlockRequest) -> list[bytes | None]:
        raise AssertionError("only hellos are sent here")


@dataclass
class Proofs:
    """The listener as the middleware sees it: which connections a trusted request proved."""

    proven: list[object] = field(default_factory=list)

    def prove(self, transport: object) -> None:
        self.proven.append(transport)


@dataclass
class Server:
    client: TestClient[Any, Any]
    key: KeySigner
    credentials: Credentials
    handled: HelloHandler
    wall: Wall
    proofs: Proofs

    @property
    def id(self) -> NodeId:
        return NodeId.of_key(self.key.public_blob)


def new_key() -> KeySigner:
    return KeySigner(Ed25519PrivateKey.generate())


@pytest.fixture
def member() -> KeySigner:
    """A peer the server trusts."""
    return new_key()


@pytest.fixture
def stranger() -> KeySigner:
    """A peer with a valid key the server does not trust."""
    return new_key()


@pytest.fixture
async def server(aiohttp_client: Any, tmp_path: Path, member: KeySigner) -> Server:
    trusted = tmp_path / "authorized_keys"
    trusted.write_text(public_key_line(member.public_blob, "member@lan") + "\n")
    key = new_key()
    credentials = Credentials(key, TrustStore([trusted], tmp_path / "state" / "trusted_keys"))
    handled, wall, proofs = HelloHandler(), Wall(), Proofs()
    me = NodeId.of_key(key.public_blob)
    client = await aiohttp_client(make_app(credentials, me, wall, handled, proofs))
    SERVER_ID[0] = str(me)
    return Server(client, key, credentials, handled, wall, proofs)


SERVER_ID = [""]  # the ID requests are signed for: the server of the running test


def signed(
    signer: KeySigner,
    body: bytes = b"",
    *,
    method: str = "POST",
    path: str = "/v1/hello",
    query: str = "",
    sent: float = T0,
    nonce: str | None = None,
    target: str | None = None,
) -> dict[str, str]:
    """The headers meshsync/net/client.py sends for this request."""
    head = RequestHead(method, path, query, target or SERVER_ID[0], f"{sent:.3f}",
                       nonce or os.urandom(16).hex(), body_digest(body))
    signature = sshsig.sign(signer, head.canonical())
    return {
        AUTHORIZATION: SCHEME + base64.b64encode(signature).decode(),
        TARGET: head.target,
        TIME: head.time,
        NONCE: head.nonce,
        DIGEST: head.digest,
        "Content-Type": "application/json",
    }


@dataclass(frozen=True)
class Answer:
    status: int
    raw: bytes
    headers: Mapping[str, str]

    @property
    def error(self) -> str:
        """The refusal's reason, from the JSON body every refusal carries."""
        reason = json.loads(self.raw)["error"]
        assert isinstance(reason, str)
        return reason

    def assert_signed_by(self, key: KeySigner, request_nonce: str, path: str = "") -> None:
        """The answer carries a signature by `key` binding it, and the time it carries, to the
        request with that nonce (over its body, or what that path's answers are signed over)."""
        value = self.headers[RESPONSE_SIGNATURE]
        assert value.startswith(SCHEME)
        signature = base64.b64decode(value[len(SCHEME) :])
        digest = ANSWER_DIGESTS.get(path, body_digest)
        message = response_canonical(request_nonce, self.status, self.headers[TIME],
                                     digest(self.raw))
        assert sshsig.verify(signature, message) == key.public_blob


async def post(
    server: Server, headers: Mapping[str, str], body: bytes, path: str = "/v1/hello"
) -> Answer:
    async with server.client.post(path, data=body, headers=headers) as response:
        return Answer(response.status, await response.read(), response.headers)


async def post_unfinished_body(
    server: Server, headers: Mapping[str, str], path: str = "/v1/hello"
) -> Answer:
    """Send the headers and the start of a body that is never finished.

    A server that reads the body before deciding can never answer this request; one that
    refuses from the headers alone answers at once.
    """
    never = asyncio.Event()

    async def body() -> AsyncIterator[bytes]:
        yield b'{"name": "cli'
        await never.wait()

    try:
        async with asyncio.timeout(ANSWER_DEADLINE), server.client.post(
            path, data=body(), headers=headers
        ) as response:
            return Answer(response.status, await response.read(), response.headers)
    except TimeoutError:
        pytest.fail("no answer: the server is waiting for a body it should never have read")
    finally:
        never.set()


async def test_trusted_peer_gets_our_hello_signed_as_the_answer_to_its_request(
    server: Server, member: KeySigner
) -> None:
    body = THEIRS.to_json()
    headers = signed(member, body)
    answer = await post(server, headers, body)
    assert answer.status == 200
    assert Hello.from_json(answer.raw) == OURS
    assert server.handled.calls == [(member.public_blob, THEIRS, "127.0.0.1")]
    answer.assert_signed_by(server.key, headers[NONCE])


async def test_answer_signature_does_not_fit_another_request(
    server: Server, member: KeySigner
) -> None:
    body = THEIRS.to_json()
    answer = await post(server, signed(member, body), body)
    assert answer.status == 200
    with pytest.raises(BadSignature):
        answer.assert_signed_by(server.key, os.urandom(16).hex())


async def test_unsigned_request_is_refused_with_401(server: Server) -> None:
    answer = await post_unfinished_body(server, {"Content-Type": "application/json"})
    assert (answer.status, answer.error) == (401, "unsigned request")
    assert server.handled.calls == []


@pytest.mark.parametrize("missing", [AUTHORIZATION, TARGET, TIME, NONCE, DIGEST])
async def test_request_missing_a_signed_header_is_refused_with_401(
    server: Server, member: KeySigner, missing: str
) -> None:
    headers = signed(member, THEIRS.to_json())
    del headers[missing]
    answer = await post_unfinished_body(server, headers)
    assert (answer.status, answer.error) == (401, "unsigned request")
    assert server.handled.calls == []


@pytest.mark.parametrize(
    ("signed_as", "sent_to"),
    [
        pytest.param({"path": "/v1/other"}, "/v1/hello", id="other-path"),
        pytest.param({"query": "x=1"}, "/v1/hello", id="query-dropped"),
        pytest.param({}, "/v1/hello?x=1", id="query-added"),
        pytest.param({"query": "x=1"}, "/v1/hello?x=2", id="query-changed"),
        pytest.param({"method": "PUT"}, "/v1/hello", id="other-method"),
    ],
)
async def test_signature_over_another_request_is_refused_with_401(
    server: Server, member: KeySigner, signed_as: dict[str, str], sent_to: str
) -> None:
    headers = signed(member, THEIRS.to_json(), **signed_as)  # type: ignore[arg-type]
    answer = await post_unfinished_body(server, headers, sent_to)
    assert (answer.status, answer.error) == (401, "bad signature")
    assert server.handled.calls == []


@pytest.mark.parametrize("header", [TARGET, TIME, NONCE, DIGEST])
async def test_signed_header_altered_after_signing_is_refused_with_401(
    server: Server, member: KeySigner, header: str
) -> None:
    headers = signed(member, THEIRS.to_json())
    altered = {TIME: f"{T0 + 1:.3f}", NONCE: os.urandom(16).hex(), DIGEST: body_digest(b"{}"),
               TARGET: str(NodeId.of_key(b"another member"))}
    headers[header] = altered[header]
    answer = await post_unfinished_body(server, headers)
    assert (answer.status, answer.error) == (401, "bad signature")
    assert server.handled.calls == []


async def test_signature_for_another_namespace_is_refused_with_401(
    server: Server, member: KeySigner
) -> None:
    headers = signed(member, THEIRS.to_json())
    head = RequestHead("POST", "/v1/hello", "", headers[TARGET], headers[TIME], headers[NONCE],
                       headers[DIGEST])
    git = sshsig.sign(member, head.canonical(), namespace="git")
    headers[AUTHORIZATION] = SCHEME + base64.b64encode(git).decode()
    answer = await post_unfinished_body(server, headers)
    assert (answer.status, answer.error) == (401, "bad signature")
    assert server.handled.calls == []


async def test_body_altered_after_signing_is_refused_with_401(
    server: Server, member: KeySigner
) -> None:
    headers = signed(member, THEIRS.to_json())
    tampered = Hello("client", 22300, frozenset({FolderId("secrets")}), 3, None).to_json()
    answer = await post(server, headers, tampered)
    assert (answer.status, answer.error) == (401, "body does not match its signed digest")
    assert server.handled.calls == []


async def test_replayed_request_is_refused_with_401(server: Server, member: KeySigner) -> None:
    body = THEIRS.to_json()
    headers = signed(member, body)
    first = await post(server, headers, body)
    server.wall.now += 1
    again = await post(server, headers, body)
    assert (first.status, again.status) == (200, 401)
    assert again.error == "replayed request"
    assert len(server.handled.calls) == 1


async def test_replay_is_refused_before_its_body_is_read(
    server: Server, member: KeySigner
) -> None:
    body = THEIRS.to_json()
    headers = signed(member, body)
    assert (await post(server, headers, body)).status == 200
    answer = await post_unfinished_body(server, headers)
    assert (answer.status, answer.error) == (401, "replayed request")
    assert len(server.handled.calls) == 1


async def test_a_signed_answer_carries_our_time_under_its_signature(
    server: Server, member: KeySigner
) -> None:
    body = THEIRS.to_json()
    headers = signed(member, body)
    answer = await post(server, headers, body)
    assert answer.headers[TIME] == f"{T0:.3f}"
    answer.assert_signed_by(server.key, headers[NONCE])
    moved = Answer(answer.status, answer.raw, {**answer.headers, TIME: f"{T0 + 3600:.3f}"})
    with pytest.raises(BadSignature):
        moved.assert_signed_by(server.key, headers[NONCE])


@pytest.mark.parametrize("offset", [-(MAX_OFFSET + 5), MAX_OFFSET + 5, 1234.0],
                         ids=["past", "future", "twenty-minutes"])
async def test_a_member_whose_clock_is_beyond_the_bound_gets_a_signed_401_and_is_noted(
    server: Server, member: KeySigner, offset: float
) -> None:
    headers = signed(member, THEIRS.to_json(), sent=T0 + offset)
    answer = await post_unfinished_body(server, headers)
    assert answer.status == 401
    assert answer.error == f"clock differs by {offset:+.0f} s (more than 900 s)"
    answer.assert_signed_by(server.key, headers[NONCE])  # so that it can tell its user why
    [(key, address, noted)] = server.credentials.clocks
    assert (key, address, noted) == (member.public_blob, "127.0.0.1", pytest.approx(offset))
    assert server.handled.calls == []
    assert server.proofs.proven == []


async def test_a_far_clock_is_checked_once_a_second_per_address_and_otherwise_refused_unread(
    server: Server, member: KeySigner
) -> None:
    # Checking a signature costs: a flood of far-off times gets refusals made from the head.
    for _ in range(5):
        answer = await post_unfinished_body(server, signed(member, b"{}", sent=T0 + 2000))
        assert (answer.status, answer.error) == (401, "clock differs by +2000 s (more than 900 s)")
    assert len(server.credentials.clocks) == 1
    server.wall.now += 1.5
    headers = signed(member, b"{}", sent=server.wall.now + 2000)
    (await post_unfinished_body(server, headers)).assert_signed_by(server.key, headers[NONCE])
    assert len(server.credentials.clocks) == 2


async def test_a_stranger_whose_clock_is_beyond_the_bound_is_refused_as_untrusted(
    server: Server, stranger: KeySigner
) -> None:
    headers = signed(stranger, b"{}", sent=T0 - 5000)
    answer = await post_unfinished_body(server, headers)
    assert answer.status == 403
    answer.assert_signed_by(server.key, headers[NONCE])
    assert server.credentials.untrusted == [(stranger.public_blob, "127.0.0.1")]
    assert server.credentials.clocks == []


async def test_a_forged_request_whose_clock_is_beyond_the_bound_is_not_noted(
    server: Server, member: KeySigner
) -> None:
    headers = signed(member, b"{}", sent=T0 + 2000)
    headers[NONCE] = os.urandom(16).hex()  # no longer what the member signed
    answer = await post_unfinished_body(server, headers)
    assert (answer.status, answer.error) == (401, "bad signature")
    assert server.credentials.clocks == []


async def test_a_request_within_the_clock_bound_is_accepted(
    server: Server, member: KeySigner
) -> None:
    body = THEIRS.to_json()
    for sent in (T0 - MAX_OFFSET + 1, T0 - 300, T0 + 300, T0 + MAX_OFFSET - 1):
        assert (await post(server, signed(member, body, sent=sent), body)).status == 200
    assert server.credentials.clocks == []


@pytest.mark.parametrize(
    ("authorization", "reason"),
    [
        pytest.param("Meshsync !!not base64!!", "signature is not base64", id="not-base64"),
        pytest.param("Meshsync é", "signature is not base64", id="non-ascii"),
        pytest.param(
            "Meshsync " + base64.b64encode(os.urandom(300)).decode(),
            "bad signature",
            id="random-bytes",
        ),
        pytest.param(
            "Meshsync " + base64.b64encode(b"SSHSIG" + os.urandom(64)).decode(),
            "bad signature",
            id="sshsig-magic-then-junk",
        ),
        pytest.param("Meshsync " + "A" * 8000, "bad signature", id="long-zeros"),
        pytest.param("Meshsync ", "unsigned request", id="empty"),
        pytest.param("Bearer abcdef", "unsigned request", id="other-scheme"),
    ],
)
async def test_garbage_authorization_is_refused_with_401(
    server: Server, member: KeySigner, authorization: str, reason: str
) -> None:
    headers = signed(member, THEIRS.to_json())
    headers[AUTHORIZATION] = authorization
    answer = await post_unfinished_body(server, headers)
    assert (answer.status, answer.error) == (401, reason)
    assert server.handled.calls == []


async def test_untrusted_key_is_refused_with_403_and_noted(
    server: Server, stranger: KeySigner
) -> None:
    headers = signed(stranger, THEIRS.to_json())
    answer = await post_unfinished_body(server, headers)
    assert answer.status == 403
    assert answer.error == f"untrusted key {NodeId.of_key(stranger.public_blob)}"
    assert server.credentials.untrusted == [(stranger.public_blob, "127.0.0.1")]
    assert server.handled.calls == []
    # Signed, so the stranger can tell "not trusted" from a spoofed refusal.
    answer.assert_signed_by(server.key, headers[NONCE])


async def test_key_trusted_after_a_refusal_is_accepted(
    server: Server, stranger: KeySigner, tmp_path: Path
) -> None:
    body = THEIRS.to_json()
    assert (await post(server, signed(stranger, body), body)).status == 403
    with (tmp_path / "authorized_keys").open("a") as f:
        f.write(public_key_line(stranger.public_blob, "stranger") + "\n")
    assert (await post(server, signed(stranger, body), body)).status == 200
    assert [key for key, _, _ in server.handled.calls] == [stranger.public_blob]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        pytest.param(b"not json", "bad hello: not JSON", id="not-json"),
        pytest.param(b"[]", "bad hello: message must be a JSON object", id="not-an-object"),
        pytest.param(
            b'{"name": "", "port": 22300, "folders": [], "term": 0}',
            "bad hello: bad name: ''",
            id="empty-name",
        ),
        pytest.param(
            b'{"name": "x", "port": 22300, "folders": ["../etc"], "term": 0}',
            "bad hello: bad folder ID: '../etc'",
            id="folder-with-slash",
        ),
        pytest.param(
            b'{"name": "x", "port": 0, "folders": [], "term": 0}',
            "bad hello: port must be an integer in [1, 65535]",
            id="port-0",
        ),
    ],
)
async def test_trusted_peer_sending_a_malformed_hello_gets_400_saying_why(
    server: Server, member: KeySigner, body: bytes, reason: str
) -> None:
    headers = signed(member, body)
    answer = await post(server, headers, body)
    assert answer.status == 400
    assert answer.error.startswith(reason)
    assert server.handled.calls == []
    answer.assert_signed_by(server.key, headers[NONCE])


def refusals(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "meshsync.auth"]


async def test_burst_of_identical_bad_requests_is_logged_once(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="meshsync.auth")
    for _ in range(50):
        assert (await post(server, {}, b"{}")).status == 401
    assert refusals(caplog) == ["refused POST /v1/hello from 127.0.0.1: unsigned request"]
    server.wall.now += WINDOW
    assert (await post(server, {}, b"{}")).status == 401
    assert len(refusals(caplog)) == 2


async def test_burst_of_far_off_requests_with_varying_clocks_is_logged_once(
    server: Server, stranger: KeySigner, caplog: pytest.LogCaptureFixture
) -> None:
    # The clock offset is the sender's to choose: it must not make each request a new log line.
    # (A trusted sender's is said by the node, naming it and the fix: see note_clock.)
    caplog.set_level(logging.INFO, logger="meshsync.auth")
    for n in range(50):
        headers = signed(stranger, b"{}", sent=T0 - MAX_OFFSET - 10 - n)
        assert (await post(server, headers, b"{}")).status in (401, 403)
    clock_lines = [line for line in refusals(caplog) if "clock differs" in line]
    assert len(clock_lines) == 1


async def test_burst_of_fresh_untrusted_keys_is_logged_once(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    # New keys cost a stranger nothing; each is still noted for `meshsync peers`.
    caplog.set_level(logging.INFO, logger="meshsync.auth")
    for _ in range(50):
        assert (await post(server, signed(new_key(), b"{}"), b"{}")).status == 403
    assert len(refusals(caplog)) == 1
    assert len(server.credentials.untrusted) == 50


async def test_request_signed_for_another_node_is_refused_with_401(
    server: Server, member: KeySigner
) -> None:
    # What a member that received a request could try: replaying it to another member.
    headers = signed(member, THEIRS.to_json(), target=str(NodeId.of_key(b"another member")))
    answer = await post_unfinished_body(server, headers)
    assert (answer.status, answer.error) == (401, "request meant for another node")
    assert server.handled.calls == []


async def test_a_strangers_request_is_refused_without_remembering_its_nonce(
    server: Server, stranger: KeySigner
) -> None:
    # Strangers' requests are refused before the replay check: they cannot fill its memory.
    headers = signed(stranger, b"{}")
    first = await post_unfinished_body(server, headers)
    again = await post_unfinished_body(server, headers)
    assert (first.status, again.status) == (403, 403)  # not 401 "replayed": never remembered


async def test_only_a_trusted_request_proves_its_connection(
    server: Server, member: KeySigner, stranger: KeySigner
) -> None:
    body = THEIRS.to_json()
    assert (await post(server, {}, body)).status == 401
    assert (await post(server, signed(stranger, body), body)).status == 403
    assert server.proofs.proven == []
    assert (await post(server, signed(member, body), body)).status == 200
    assert len(server.proofs.proven) == 1


@pytest.mark.parametrize("status_of", ["unsigned", "untrusted"])
async def test_refused_request_closes_its_connection_instead_of_draining_the_body(
    server: Server, stranger: KeySigner, status_of: str
) -> None:
    headers = {} if status_of == "unsigned" else signed(stranger, b"{}")
    answer = await post_unfinished_body(server, headers)
    assert answer.status in (401, 403)
    assert answer.headers.get("Connection", "").lower() == "close"


@pytest.mark.parametrize("path", sorted(set(ROUTES) - {LINK}))
async def test_a_body_larger_than_its_route_takes_is_refused_unread(
    server: Server, member: KeySigner, path: str
) -> None:
    body = b"x" * (ROUTES[path] + 1)
    headers = signed(member, body, path=path)
    async with server.client.post(path, data=io.BytesIO(body), headers=headers) as response:
        answer = Answer(response.status, await response.read(), response.headers)
    assert (answer.status, answer.error) == (413, f"body over {ROUTES[path]} bytes")
    assert answer.headers.get("Connection", "").lower() == "close"
    answer.assert_signed_by(server.key, headers[NONCE], path)


async def test_a_link_opens_only_by_a_signed_get_without_a_body(
    server: Server, member: KeySigner
) -> None:
    async def get(headers: Mapping[str, str], body: bytes = b"") -> Answer:
        async with server.client.get(LINK, data=body or None, headers=headers) as response:
            return Answer(response.status, await response.read(), response.headers)

    refused = await get({})
    assert (refused.status, refused.error) == (401, "unsigned request")
    posted = await post(server, signed(member, b"", path=LINK), b"", LINK)
    assert (posted.status, posted.error) == (404, "no such route")
    forged = signed(member, b"", method="GET", path=LINK)
    forged[NONCE] = "0" * 32  # not the nonce it signed
    assert (await get(forged)).status == 401
    with_body = await get(signed(member, b"x", method="GET", path=LINK), b"x")
    assert (with_body.status, with_body.error) == (413, "body over 0 bytes")
    assert server.proofs.proven  # the one signed by a member, refused for its body


async def test_an_unknown_route_is_refused_without_checking_anything(
    server: Server, member: KeySigner
) -> None:
    answer = await post(server, signed(member, b"{}", path="/v1/nothing"), b"{}", "/v1/nothing")
    assert (answer.status, answer.error) == (404, "no such route")


async def test_a_peer_with_too_many_requests_in_flight_gets_429(
    server: Server, member: KeySigner
) -> None:
    server.handled.hold = asyncio.Event()
    server.handled.all_in = asyncio.Event()
    server.handled.expected = MAX_IN_FLIGHT
    body = THEIRS.to_json()
    held = [asyncio.create_task(post(server, signed(member, body), body))
            for _ in range(MAX_IN_FLIGHT)]
    try:
        async with asyncio.timeout(ANSWER_DEADLINE):
            await server.handled.all_in.wait()
        extra = await post(server, signed(member, body), body)
        assert (extra.status, extra.error) == (429, f"over {MAX_IN_FLIGHT} requests in flight")
    finally:
        server.handled.hold.set()
    assert [a.status for a in await asyncio.gather(*held)] == [200] * MAX_IN_FLIGHT


async def test_a_flood_from_one_address_gets_unsigned_refusals_after_the_first(
    server: Server, stranger: KeySigner
) -> None:
    # Signing costs (an RSA key, ssh-agent): a node that trusts us knocks once a second and
    # gets signed refusals; a flood gets refusals that cost nothing to make.
    first_headers = signed(stranger, b"{}")
    first = await post(server, first_headers, b"{}")
    rest = [await post(server, signed(new_key(), b"{}"), b"{}") for _ in range(20)]
    assert first.status == 403
    first.assert_signed_by(server.key, first_headers[NONCE])
    assert {a.status for a in rest} == {403}
    assert not any(RESPONSE_SIGNATURE in a.headers for a in rest)
    server.wall.now += 1.5
    later_headers = signed(stranger, b"{}", sent=server.wall.now)
    later = await post(server, later_headers, b"{}")
    later.assert_signed_by(server.key, later_headers[NONCE])


async def test_a_body_that_never_finishes_is_answered_408_and_its_connection_closed(
    server: Server, member: KeySigner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(auth, "BODY_WITHIN", 0.3)  # 30 s in the node; the rule, not the wait
    headers = signed(member, THEIRS.to_json())
    answer = await post_unfinished_body(server, headers)
    assert (answer.status, answer.error) == (408, "body not received within 0 s")
    assert answer.headers.get("Connection", "").lower() == "close"
    assert server.handled.calls == []


# -- a real client over TLS, its clock set off from the server's --------------------------------
@dataclass
class Listening:
    key: KeySigner
    credentials: Credentials
    handled: HelloHandler
    address: str


@pytest.fixture
async def over_tls(tmp_path: Path, member: KeySigner) -> AsyncIterator[Listening]:
    """The server, its clock at T0, behind the TLS listener the node puts it behind."""
    trusted = tmp_path / "authorized_keys"
    trusted.write_text(public_key_line(member.public_blob, "member@lan") + "\n")
    key = new_key()
    credentials = Credentials(key, TrustStore([trusted], tmp_path / "state" / "trusted_keys"))
    handled = HelloHandler()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    sock.setblocking(False)
    listener = Listener(sock, server_context(str(tls.certificate_file(tmp_path, key))), Limits())
    runner, protocol = await serve(make_app(credentials, NodeId.of_key(key.public_blob), Wall(),
                                            handled, listener))
    task = asyncio.create_task(listener.run(protocol))
    try:
        yield Listening(key, credentials, handled, f"127.0.0.1:{sock.getsockname()[1]}")
    finally:
        task.cancel()
        await runner.cleanup()
        sock.close()


@dataclass
class ClientSigning:
    """What the member's client needs of its crypto layer."""

    signer: KeySigner

    def sign(self, message: bytes) -> bytes:
        return sshsig.sign(self.signer, message)

    def verify(self, signature: bytes, message: bytes) -> bytes:
        return sshsig.verify(signature, message)

    def vouched_key(self, certificate: bytes) -> bytes:
        return tls.vouched_key(certificate)

    def claimed_name(self, certificate: bytes) -> str | None:
        return tls.claimed_name(certificate)


def client_of(member: KeySigner, clock_offset: float) -> PeerClient:
    """The member's client, its wall clock `clock_offset` seconds from the server's."""
    return PeerClient(ClientSigning(member), lambda: T0 + clock_offset)


@pytest.mark.parametrize("offset", [300.0, -300.0], ids=["ahead", "behind"])
async def test_a_client_five_minutes_off_is_served_and_learns_the_offset(
    over_tls: Listening, member: KeySigner, offset: float
) -> None:
    async with client_of(member, offset) as client:
        reply = await client.send_hello(over_tls.address, over_tls.key.public_blob, THEIRS)
    assert (reply.status, Hello.from_json(reply.body)) == (200, OURS)
    assert reply.clock_offset == pytest.approx(-offset, abs=1.0)  # the server's minus ours
    assert len(over_tls.handled.calls) == 1
    assert over_tls.credentials.clocks == []


@pytest.mark.parametrize("offset", [1200.0, -1200.0], ids=["ahead", "behind"])
async def test_a_client_twenty_minutes_off_is_refused_and_both_sides_know_by_how_much(
    over_tls: Listening, member: KeySigner, offset: float
) -> None:
    async with client_of(member, offset) as client:
        with pytest.raises(PeerClockOffset, match="more than 900 s") as refused:
            await client.send_hello(over_tls.address, over_tls.key.public_blob, THEIRS)
    assert refused.value.offset == pytest.approx(-offset, abs=1.0)
    assert refused.value.key == over_tls.key.public_blob
    [(key, address, noted)] = over_tls.credentials.clocks
    assert (key, address) == (member.public_blob, "127.0.0.1")
    assert noted == pytest.approx(offset, abs=1.0)  # the client's minus the server's
    assert over_tls.handled.calls == []


# -- the node's side: a peer refused for its clock is listed so, with the fix --------------------
@pytest.fixture
def node(tmp_path: Path, member: KeySigner) -> Node:
    """A node (not started) that trusts `member`."""
    (tmp_path / "ssh").mkdir()
    (tmp_path / "ssh" / "authorized_keys").write_text(
        public_key_line(member.public_blob, "member@lan") + "\n")
    config = Config(folders=(Folder(FolderId("docs"), tmp_path / "docs"),), state=tmp_path / "s",
                    ssh_dir=tmp_path / "ssh", name="a")
    trust = TrustStore([tmp_path / "ssh" / "authorized_keys"], tmp_path / "s" / "trusted_keys")
    return Node(config, new_key(), trust, FakeClock(T0))


def row_of(node: Node, key: bytes) -> dict[str, Any]:
    [row] = [r for r in node._commands.peers_json() if r["id"] == str(NodeId.of_key(key))]
    return row


def clock_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "clock differs" in r.getMessage()]


def test_a_peer_noted_by_the_server_for_its_clock_is_listed_refused_with_the_fix(
    node: Node, member: KeySigner, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    for _ in range(5):  # a request a second, each refused
        node._credentials.note_clock(member.public_blob, "10.0.0.7", 1234.0)
    row = row_of(node, member.public_blob)
    assert (row["state"], row["clock_offset"]) == ("refused", 1234.0)
    assert row["fix"] == ("the clocks differ by 21 min: set both to network time "
                          "(timedatectl set-ntp true)")
    [line] = clock_lines(caplog)  # once a minute
    assert str(NodeId.of_key(member.public_blob)) in line
    assert "+1234 s" in line
    assert "timedatectl set-ntp true" in line


class RefusingClient:
    """A PeerClient whose every hello is refused by the peer for our clocks."""

    def __init__(self, key: bytes, offset: float) -> None:
        self.key, self.offset = key, offset

    async def identify(self, address: str, timeout: float) -> Identity:
        return Identity(self.key, None)

    async def send_hello(self, address: str, key: bytes, hello: Hello, timeout: float) -> Reply:
        raise PeerClockOffset(address, key, self.offset)


async def test_a_peer_refusing_our_hello_for_the_clock_is_listed_refused_with_the_fix(
    node: Node, member: KeySigner, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    client = RefusingClient(member.public_blob, -1200.0)
    await node._dialer.contact(client, "10.0.0.7:22300")  # type: ignore[arg-type]
    row = row_of(node, member.public_blob)
    assert (row["state"], row["address"], row["clock_offset"]) == (
        "refused", "10.0.0.7:22300", -1200.0)
    assert row["fix"].startswith("the clocks differ by 20 min")
    [line] = clock_lines(caplog)
    assert "-1200 s" in line
    assert str(NodeId.of_key(member.public_blob)) in line
    # Its clock set right, its next answer shows it, and the refusal is gone.
    answering = AnsweringClient(member.public_blob, 0.4)
    await node._dialer.contact(answering, "10.0.0.7:22300")  # type: ignore[arg-type]
    row = row_of(node, member.public_blob)
    assert (row["state"], row["clock_offset"]) == ("online", 0.4)
    assert "fix" not in row


class AnsweringClient(RefusingClient):
    """A PeerClient whose hellos are answered, the peer's clock `offset` from ours."""

    async def send_hello(self, address: str, key: bytes, hello: Hello, timeout: float) -> Reply:
        return Reply(200, OURS.to_json(), key, self.offset)


async def test_a_streamed_answer_gives_the_loop_a_turn_between_its_parts() -> None:
    # A socket that takes everything at once never makes a write wait: without turns given,
    # a big answer would hold the loop until its last part, and a small request behind it.
    written: list[bytes] = []
    turns: list[int] = []

    class Writer:
        async def write(self, chunk: bytes) -> None:
            written.append(chunk)

    async def other_work() -> None:
        while len(written) < 64:
            turns.append(len(written))
            await asyncio.sleep(0)

    body = auth.StreamedBody(lambda: iter([bytes(1024)] * 64), 64 * 1024, "frames-sha256=x")
    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(body.write(Writer()))  # type: ignore[arg-type]
        tasks.create_task(other_work())
    assert len(written) == 64
    assert len(turns) >= 60  # a turn after about every part
    assert sorted(turns) == turns


# -- finding a member gone at once ---------------------------------------------------------------
async def test_a_port_that_resets_our_connection_then_closes_is_found_closed(
    member: KeySigner,
) -> None:
    # A node being killed: the kernel completes our handshake, then the port closes under it.
    # A retry finds the port closed, so a probe learns now that the node is gone.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.setblocking(False)
    port = listener.getsockname()[1]

    async def reset_then_close() -> None:
        connection, _ = await asyncio.get_running_loop().sock_accept(listener)
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
        connection.close()  # a reset, not a close
        listener.close()

    resetting = asyncio.create_task(reset_then_close())
    async with client_of(member, 0) as client:
        with pytest.raises(PeerClosed, match="connection refused"):
            await client.send_hello(f"127.0.0.1:{port}", new_key().public_blob, THEIRS, 5.0)
    await resetting


class HeldClient(AnsweringClient):
    """An AnsweringClient whose first hello is answered only once `release` is set."""

    def __init__(self, key: bytes) -> None:
        super().__init__(key, 0.0)
        self.release = asyncio.Event()
        self.hellos: list[Hello] = []

    async def send_hello(self, address: str, key: bytes, hello: Hello, timeout: float) -> Reply:
        self.hellos.append(hello)
        if len(self.hellos) == 1:
            await self.release.wait()
        return await super().send_hello(address, key, hello, timeout)


async def test_a_view_changed_while_a_hello_is_under_way_is_told_when_it_ends(
    node: Node, member: KeySigner
) -> None:
    address, peer = "10.0.0.7:22300", NodeId.of_key(member.public_blob)
    await node._dialer.contact(AnsweringClient(member.public_blob, 0.0), address)  # type: ignore[arg-type]
    client = HeldClient(member.public_blob)
    async with asyncio.TaskGroup() as tg:
        node._dialer.probe(client, tg, peer)  # type: ignore[arg-type]
        await asyncio.sleep(0)
        [held] = client.hellos
        node._feed(el.ElectionForced(node._clock.now()))  # what that hello says is old now
        node._dialer.dial(client, tg, node._clock.now())  # type: ignore[arg-type]
        await asyncio.sleep(0)
        assert client.hellos == [held]  # one hello to an address at a time
        client.release.set()
    [_, then] = client.hellos
    assert then.term == held.term + 1


class LinklessClient:
    """A PeerClient whose links never open (nothing listens); it notes whom it tried."""

    def __init__(self) -> None:
        self.tried: list[str] = []

    async def open_link(self, address: str, key: bytes, timeout: float) -> LinkSocket:
        self.tried.append(address)
        raise PeerClosed(f"{address}: connection refused")


async def test_a_link_that_failed_to_open_does_not_hold_up_the_link_to_the_next_coordinator(
    node: Node,
) -> None:
    dead, next_one = new_key().public_blob, new_key().public_blob
    for key, address in ((dead, "10.0.0.7:22300"), (next_one, "10.0.0.8:22300")):
        node._peers.roster.update(key, trusted=True, address=address)
    client = LinklessClient()

    async def maintain_following(key: bytes) -> None:
        node._election.term += 1
        node._election.coordinator = NodeId.of_key(key)
        async with asyncio.TaskGroup() as tg:
            node._links.maintain(client, tg)  # type: ignore[arg-type]

    await maintain_following(dead)
    await maintain_following(dead)  # the clock stands still: not tried again yet
    await maintain_following(next_one)
    assert client.tried == ["10.0.0.7:22300", "10.0.0.8:22300"]
    node._clock.wait_out(0.3)  # type: ignore[attr-defined]
    await maintain_following(next_one)  # its own wait, from the first
    assert client.tried[2:] == ["10.0.0.8:22300"]

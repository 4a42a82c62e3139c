"""The peer API's signature check for real: ed25519 keys, SSHSIG, a trust file and aiohttp."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import os
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from meshsync.core.ids import NodeId
from meshsync.core.signing import (
    AUTHORIZATION,
    DIGEST,
    NONCE,
    RESPONSE_SIGNATURE,
    SCHEME,
    SKEW,
    TARGET,
    TIME,
    RequestHead,
    body_digest,
    response_canonical,
)
from meshsync.core.throttle import WINDOW
from meshsync.core.wire import BlockRequest, FolderId, Hello, IndexRequest, Records
from meshsync.crypto import sshsig
from meshsync.crypto.keys import KeySigner, public_key_line
from meshsync.crypto.sshsig import BadSignature
from meshsync.crypto.trust import TrustStore
from meshsync.net import auth
from meshsync.net.auth import MAX_IN_FLIGHT
from meshsync.net.server import ANSWER_DIGESTS, ROUTES, make_app

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

    def sign(self, message: bytes) -> bytes:
        return sshsig.sign(self.signer, message)

    def verify(self, signature: bytes, message: bytes) -> bytes:
        return sshsig.verify(signature, message)

    def is_trusted(self, public_blob: bytes, address: str) -> bool:
        return self.trust.is_trusted(public_blob, address)

    def note_untrusted(self, public_blob: bytes, address: str) -> None:
        self.untrusted.append((public_blob, address))


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
        """The answer carries a signature by `key` binding it to the request with that nonce
        (over its body, or what that path's answers are signed over)."""
        value = self.headers[RESPONSE_SIGNATURE]
        assert value.startswith(SCHEME)
        signature = base64.b64decode(value[len(SCHEME) :])
        digest = ANSWER_DIGESTS.get(path, body_digest)
        message = response_canonical(request_nonce, self.status, digest(self.raw))
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


@pytest.mark.parametrize("offset", [-(SKEW + 5), SKEW + 5], ids=["past", "future"])
async def test_stale_request_is_refused_with_401(
    server: Server, member: KeySigner, offset: float
) -> None:
    headers = signed(member, THEIRS.to_json(), sent=T0 + offset)
    answer = await post_unfinished_body(server, headers)
    assert answer.status == 401
    assert answer.error == f"stale request: clock differs by {-offset:+.0f} s"
    assert server.handled.calls == []


async def test_request_within_the_skew_is_accepted(server: Server, member: KeySigner) -> None:
    body = THEIRS.to_json()
    for sent in (T0 - SKEW + 1, T0 + SKEW - 1):
        assert (await post(server, signed(member, body, sent=sent), body)).status == 200


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


async def test_burst_of_stale_requests_with_varying_clocks_is_logged_once(
    server: Server, member: KeySigner, caplog: pytest.LogCaptureFixture
) -> None:
    # The clock offset is the sender's to choose: it must not make each request a new log line.
    caplog.set_level(logging.INFO, logger="meshsync.auth")
    for n in range(50):
        headers = signed(member, b"{}", sent=T0 - SKEW - 10 - n)
        assert (await post(server, headers, b"{}")).status == 401
    assert len(refusals(caplog)) == 1
    assert "stale request" in refusals(caplog)[0]


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


@pytest.mark.parametrize("path", sorted(ROUTES))
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

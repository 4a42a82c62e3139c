"""What a request signature covers, and the replay guard, on a fake wall clock."""

import random
from collections.abc import Iterator

import pytest

from meshsync.core.errors import AuthError
from meshsync.core.signing import (
    SKEW,
    ReplayGuard,
    RequestHead,
    body_digest,
    response_canonical,
)

T0 = 1_700_000_000.0
NONCE = "0123456789abcdef0123456789abcdef"
EMPTY_DIGEST = "sha256=e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
TARGET = "SHA256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU"


def head(time: float | str = T0, nonce: str = NONCE) -> RequestHead:
    stamp = f"{time:.3f}" if isinstance(time, float) else time
    return RequestHead("POST", "/v1/hello", "", TARGET, stamp, nonce, EMPTY_DIGEST)


def nonces(seed: int = 1) -> Iterator[str]:
    rng = random.Random(seed)
    while True:
        yield rng.randbytes(16).hex()


def test_body_digest_is_the_hex_sha256_with_its_algorithm() -> None:
    assert body_digest(b"") == EMPTY_DIGEST
    assert body_digest(b"abc") == (
        "sha256=ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )


def test_request_canonical_form_is_the_documented_byte_layout() -> None:
    signed = RequestHead(
        "post", "/v1/hello", "a=1&b=%20", TARGET, "1700000000.250", NONCE, EMPTY_DIGEST
    ).canonical()
    assert signed == (
        b"meshsync-request-v2\n"
        b"POST\n"
        b"/v1/hello\n"
        b"a=1&b=%20\n"
        b"SHA256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU\n"
        b"1700000000.250\n"
        b"0123456789abcdef0123456789abcdef\n"
        b"sha256=e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\n"
    )


def test_request_canonical_form_keeps_an_empty_query_as_an_empty_line() -> None:
    assert head().canonical().split(b"\n")[3] == b""


def test_response_canonical_form_binds_the_answer_to_the_request_nonce() -> None:
    assert response_canonical(NONCE, 200, EMPTY_DIGEST) == (
        b"meshsync-response-v1\n"
        b"0123456789abcdef0123456789abcdef\n"
        b"200\n"
        b"sha256=e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\n"
    )


@pytest.mark.parametrize(
    "field", ["method", "path", "query", "target", "time", "nonce", "digest"])
def test_a_signed_field_containing_a_newline_cannot_be_signed(field: str) -> None:
    parts = {"method": "POST", "path": "/v1/hello", "query": "", "target": TARGET, "time": "1",
             "nonce": NONCE, "digest": EMPTY_DIGEST}
    parts[field] += "\nPOST"
    with pytest.raises(AuthError, match="newline"):
        RequestHead(**parts).canonical()


def test_a_fresh_request_is_accepted_once() -> None:
    guard = ReplayGuard()
    guard.check(head(), wall=T0)
    with pytest.raises(AuthError, match="replayed"):
        guard.check(head(), wall=T0 + 1)


def test_a_replay_is_refused_up_to_the_edge_of_the_window() -> None:
    guard = ReplayGuard()
    guard.check(head(), wall=T0 - SKEW)
    with pytest.raises(AuthError, match="replayed"):
        guard.check(head(), wall=T0)
    with pytest.raises(AuthError, match="replayed"):
        guard.check(head(), wall=T0 + SKEW)
    with pytest.raises(AuthError, match="stale"):
        guard.check(head(), wall=T0 + SKEW + 0.001)


def test_different_nonces_are_each_accepted() -> None:
    guard = ReplayGuard()
    for nonce, _ in zip(nonces(), range(100), strict=False):
        guard.check(head(nonce=nonce), wall=T0)


@pytest.mark.parametrize(
    "offset", [SKEW + 0.001, SKEW + 5, 3600.0, -SKEW - 0.001, -SKEW - 5, -3600.0]
)
def test_a_timestamp_beyond_the_skew_either_way_is_stale(offset: float) -> None:
    guard = ReplayGuard()
    with pytest.raises(AuthError, match="stale"):
        guard.check(head(T0 + offset), wall=T0)


@pytest.mark.parametrize("offset", [SKEW, -SKEW, 0.0])
def test_a_timestamp_within_the_skew_is_fresh(offset: float) -> None:
    ReplayGuard().check(head(T0 + offset), wall=T0)


def test_a_stale_request_is_not_remembered_so_the_sender_may_retry_in_time() -> None:
    guard = ReplayGuard()
    with pytest.raises(AuthError, match="stale"):
        guard.check(head(T0 - 100), wall=T0)
    guard.check(head(T0), wall=T0)


@pytest.mark.parametrize(
    "stamp", ["nan", "NaN", "inf", "-inf", "Infinity", "1e400", "", "yesterday", "0x10", "1,5"]
)
def test_a_timestamp_that_is_not_a_finite_number_is_refused(stamp: str) -> None:
    with pytest.raises(AuthError, match="bad timestamp"):
        ReplayGuard().check(head(stamp), wall=T0)


@pytest.mark.parametrize(
    "nonce",
    [
        pytest.param("", id="empty"),
        pytest.param(NONCE[:-1], id="short"),
        pytest.param(NONCE + "0", id="long"),
        pytest.param(NONCE.upper(), id="uppercase"),
        pytest.param("g" * 32, id="not-hex"),
        pytest.param(" " * 32, id="spaces"),
        pytest.param("\u0660" * 32, id="arabic-indic-digits"),
        pytest.param("0x" + NONCE[2:], id="hex-prefix"),
    ],
)
def test_a_malformed_nonce_is_refused(nonce: str) -> None:
    guard = ReplayGuard()
    with pytest.raises(AuthError, match="bad nonce"):
        guard.check(head(nonce=nonce), wall=T0)
    assert not guard._seen


def test_a_nonce_is_forgotten_once_a_replay_would_be_stale_anyway() -> None:
    guard = ReplayGuard()
    guard.check(head(T0, NONCE), wall=T0)
    later = "f" * 32
    guard.check(head(T0 + SKEW + 1, later), wall=T0 + SKEW + 1)
    assert guard._seen == {later}


def test_memory_stays_bounded_over_a_long_stream_of_requests() -> None:
    guard = ReplayGuard()
    rng = random.Random(7)
    rate = 10  # requests per simulated second
    biggest = 0
    for n, nonce in zip(range(10_000), nonces(2), strict=False):
        wall = T0 + n / rate
        # Peers' clocks disagree with ours by up to the skew, either way.
        sent = wall + rng.uniform(-SKEW, SKEW)
        guard.check(head(f"{sent:.3f}", nonce), wall=wall)
        biggest = max(biggest, len(guard._seen), len(guard._expiry))
    # At most the requests of the last 2*SKEW seconds are remembered, not all 10,000.
    assert biggest <= rate * (2 * SKEW + 1)
    assert len(guard._seen) == len(guard._expiry)


def test_a_full_guard_refuses_until_the_window_moves_on() -> None:
    guard = ReplayGuard(capacity=3)
    stream = nonces(3)
    for _ in range(3):
        guard.check(head(T0, next(stream)), wall=T0)
    refused = next(stream)
    with pytest.raises(AuthError, match="too many requests"):
        guard.check(head(T0, refused), wall=T0)
    # The refused nonce was not used up: once the first ones expire, it is accepted.
    guard.check(head(T0 + SKEW, refused), wall=T0 + SKEW + 1)
    assert len(guard._seen) == 1


def test_one_sender_cannot_fill_the_replay_window_for_the_others() -> None:
    guard = ReplayGuard(capacity=100, per_sender=10)
    fresh = nonces(7)
    for _ in range(10):
        guard.check(head(nonce=next(fresh)), wall=T0, sender=b"greedy")
    with pytest.raises(AuthError, match="too many"):
        guard.check(head(nonce=next(fresh)), wall=T0, sender=b"greedy")
    guard.check(head(nonce=next(fresh)), wall=T0, sender=b"another")  # still let in
    # Once its nonces would be stale anyway, the sender's room comes back.
    guard.check(head(T0 + SKEW + 1, next(fresh)), wall=T0 + SKEW + 1, sender=b"greedy")

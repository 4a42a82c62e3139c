"""What a request signature covers, and the replay guard, on a fake wall clock."""

import random
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshsync.core.errors import AuthError
from meshsync.core.signing import (
    MAX_OFFSET,
    ClockOffset,
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


def test_response_canonical_form_binds_the_answer_and_its_time_to_the_request_nonce() -> None:
    assert response_canonical(NONCE, 200, "1700000000.250", EMPTY_DIGEST) == (
        b"meshsync-response-v2\n"
        b"0123456789abcdef0123456789abcdef\n"
        b"200\n"
        b"1700000000.250\n"
        b"sha256=e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\n"
    )


@pytest.mark.parametrize("time", ["1700000000.250\n200", "\udcff"])
def test_a_response_time_that_could_shift_or_break_the_signed_lines_cannot_be_signed(
    time: str,
) -> None:
    with pytest.raises(AuthError, match="signed field"):
        response_canonical(NONCE, 200, time, EMPTY_DIGEST)


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


def test_different_nonces_are_each_accepted() -> None:
    guard = ReplayGuard()
    for nonce, _ in zip(nonces(), range(100), strict=False):
        guard.check(head(nonce=nonce), wall=T0)


@pytest.mark.parametrize("offset", [300.0, -300.0, MAX_OFFSET, -MAX_OFFSET, 0.0])
def test_a_clock_up_to_the_bound_either_way_is_accepted(offset: float) -> None:
    guard = ReplayGuard()
    stream = nonces()
    for second in range(0, 600, 10):  # a peer five minutes off, say, talking for ten minutes
        guard.check(head(T0 + second + offset, next(stream)), wall=T0 + second)


@pytest.mark.parametrize("offset", [MAX_OFFSET + 0.001, 1234.0, 86400.0, -MAX_OFFSET - 0.001,
                                    -1234.0, -86400.0])
def test_a_clock_beyond_the_bound_is_refused_saying_by_how_much(offset: float) -> None:
    with pytest.raises(ClockOffset) as refused:
        ReplayGuard().check(head(T0 + offset), wall=T0)
    assert refused.value.offset == pytest.approx(offset, abs=0.001)
    assert str(refused.value) == f"clock differs by {offset:+.0f} s (more than 900 s)"


def test_the_offset_in_a_refusal_is_the_senders_clock_minus_ours() -> None:
    with pytest.raises(ClockOffset, match=r"clock differs by \+1234 s \(more than 900 s\)"):
        ReplayGuard().check(head(T0 + 1234), wall=T0)


def test_a_refusal_for_the_clock_is_not_remembered_so_the_sender_may_retry_in_time() -> None:
    guard = ReplayGuard()
    with pytest.raises(ClockOffset):
        guard.check(head(T0 - 1000), wall=T0)
    guard.check(head(T0), wall=T0)


def test_a_replay_is_refused_for_as_long_as_its_time_is_accepted() -> None:
    guard = ReplayGuard()
    guard.check(head(T0 + 300), wall=T0)  # a sender five minutes ahead
    for later in (1.0, 60.0, 600.0, 300.0 + MAX_OFFSET):
        with pytest.raises(AuthError, match="replayed"):
            guard.check(head(T0 + 300), wall=T0 + later)
    with pytest.raises(ClockOffset):
        guard.check(head(T0 + 300), wall=T0 + 300 + MAX_OFFSET + 0.001)


def test_a_clock_drifting_across_the_whole_range_is_followed() -> None:
    guard = ReplayGuard()
    stream = nonces()
    for second in range(3600):  # NTP slewing, fast: its clock moves half a second a second
        offset = -MAX_OFFSET + second / 2
        guard.check(head(T0 + second + offset, next(stream)), wall=T0 + second)


@pytest.mark.parametrize("step", [-600.0, 600.0, -1700.0], ids=["back", "forward", "back-far"])
def test_a_clock_stepping_is_followed_at_once(step: float) -> None:
    # A peer ahead (or behind) by 850 s has its clock set right by NTP, or wrong by hand.
    start = 850.0 if step < 0 else -850.0
    guard = ReplayGuard()
    stream = nonces()
    for second in range(120):
        guard.check(head(T0 + second + start, next(stream)), wall=T0 + second)
    for second in range(120, 240):
        guard.check(head(T0 + second + start + step, next(stream)), wall=T0 + second)


def test_after_a_step_back_the_requests_sent_before_it_are_still_refused_as_replays() -> None:
    guard = ReplayGuard()
    before = [head(T0 + 600 + n, nonce) for n, nonce in zip(range(10), nonces(1), strict=False)]
    for n, sent in enumerate(before):
        guard.check(sent, wall=T0 + n)
    guard.check(head(T0 + 11, next(nonces(2))), wall=T0 + 11)  # stepped back by 600 s
    for sent in before:
        with pytest.raises(AuthError, match="replayed"):
            guard.check(sent, wall=T0 + 12)


def test_our_clock_stepping_back_does_not_bring_forgotten_requests_back() -> None:
    guard = ReplayGuard()
    old = head(T0)
    guard.check(old, wall=T0)
    guard.check(head(T0 + 2000, next(nonces())), wall=T0 + 2000)  # the old nonce is forgotten
    with pytest.raises(AuthError, match="stale"):
        guard.check(old, wall=T0 + 100)  # our clock set back: the old time is in bounds again


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
    assert guard._held == 0


def test_a_nonce_is_forgotten_once_no_request_carrying_it_could_be_accepted() -> None:
    guard = ReplayGuard()
    guard.check(head(T0, NONCE), wall=T0)
    later = "f" * 32
    guard.check(head(T0 + MAX_OFFSET + 2, later), wall=T0 + MAX_OFFSET + 2)
    assert guard._senders[b""].seen == {later}


def test_memory_stays_bounded_over_a_long_stream_of_requests() -> None:
    guard = ReplayGuard()
    rng = random.Random(7)
    rate = 10  # requests per simulated second
    biggest = 0
    for n, nonce in zip(range(60_000), nonces(2), strict=False):
        wall = T0 + n / rate
        # Peers' clocks disagree with ours by up to the bound, either way.
        sent = wall + rng.uniform(-MAX_OFFSET, MAX_OFFSET)
        guard.check(head(f"{sent:.3f}", nonce), wall=wall)
        biggest = max(biggest, guard._held)
    # At most the requests of the last 2 * MAX_OFFSET seconds are remembered, not all 60,000.
    assert biggest <= rate * (2 * MAX_OFFSET + 2)
    known = guard._senders[b""]
    assert guard._held == len(known.seen) == len(known.oldest)


def test_a_sender_at_its_limit_forgets_its_oldest_and_refuses_what_came_before() -> None:
    guard = ReplayGuard(per_sender=3)
    stream = nonces(3)
    sent = [head(T0 + n, next(stream)) for n in range(4)]
    for n, request in enumerate(sent):
        guard.check(request, wall=T0 + n)  # never "too many": the oldest makes room
    assert len(guard._senders[b""].seen) == 3
    with pytest.raises(AuthError, match="stale"):
        guard.check(sent[0], wall=T0 + 5)  # forgotten, so its time is refused from now on
    with pytest.raises(AuthError, match="stale"):
        guard.check(head(T0 - 1, next(stream)), wall=T0 + 5)
    guard.check(head(T0 + 4, next(stream)), wall=T0 + 5)


def test_a_full_guard_forgets_the_oldest_of_the_sender_holding_most() -> None:
    guard = ReplayGuard(capacity=4, per_sender=10)
    stream = nonces(4)
    greedy = [head(T0 + n, next(stream)) for n in range(3)]
    for request in greedy:
        guard.check(request, wall=T0, sender=b"greedy")
    modest = head(T0, next(stream))
    guard.check(modest, wall=T0, sender=b"modest")
    guard.check(head(T0 + 1, next(stream)), wall=T0, sender=b"modest")  # the guard was full
    assert guard._held == 4
    with pytest.raises(AuthError, match="stale"):
        guard.check(greedy[0], wall=T0, sender=b"greedy")
    with pytest.raises(AuthError, match="replayed"):
        guard.check(modest, wall=T0, sender=b"modest")


def test_one_sender_cannot_push_out_the_others_nonces() -> None:
    guard = ReplayGuard(capacity=100, per_sender=10)
    stream = nonces(7)
    other = head(T0, next(stream))
    guard.check(other, wall=T0, sender=b"another")
    for n in range(1000):
        guard.check(head(T0 + n / 100, next(stream)), wall=T0, sender=b"greedy")
    with pytest.raises(AuthError, match="replayed"):
        guard.check(other, wall=T0 + 1, sender=b"another")


def test_senders_are_bounded_and_one_holding_nothing_makes_room() -> None:
    guard = ReplayGuard(senders=2)
    stream = nonces(5)
    guard.check(head(T0, next(stream)), wall=T0, sender=b"a")
    guard.check(head(T0, next(stream)), wall=T0, sender=b"b")
    with pytest.raises(AuthError, match="too many senders"):
        guard.check(head(T0, next(stream)), wall=T0, sender=b"c")
    later = T0 + MAX_OFFSET + 2  # what a and b sent can no longer be accepted
    guard.check(head(later, next(stream)), wall=later, sender=b"c")
    assert len(guard._senders) == 1


def test_a_sender_that_lost_its_last_nonce_for_room_is_kept_so_its_floor_holds() -> None:
    # Found by the property test: dropped as holding nothing, it came back with no floor.
    guard = ReplayGuard(capacity=1, senders=2)
    stream = nonces(8)
    first = head(T0, next(stream))
    guard.check(first, wall=T0, sender=b"a")
    guard.check(head(T0, next(stream)), wall=T0, sender=b"b")  # a's nonce goes, for room
    with pytest.raises(AuthError, match="too many senders"):
        guard.check(head(T0, next(stream)), wall=T0, sender=b"c")
    with pytest.raises(AuthError, match="stale"):
        guard.check(first, wall=T0, sender=b"a")


def test_a_forgotten_sender_stays_refused_when_our_clock_steps_back() -> None:
    # Found by the property test: the common floor fell back with our clock.
    guard = ReplayGuard(capacity=2)
    stream = nonces(9)
    first = head(T0, next(stream))
    guard.check(first, wall=T0, sender=b"a")
    later = T0 + MAX_OFFSET + 2
    guard.check(head(later, next(stream)), wall=later, sender=b"b")
    guard.check(head(later, next(stream)), wall=later, sender=b"b")  # a is swept out
    assert b"a" not in guard._senders
    with pytest.raises(AuthError, match="stale"):
        guard.check(first, wall=T0 + 10, sender=b"a")


# A request is (sender, our wall clock's step, the offset of its time, or which earlier request
# to send again); our clock may step back, and senders' clocks anywhere.
requests = st.lists(st.tuples(
    st.sampled_from([b"a", b"b", b"c", b"d"]),
    st.floats(-300, 1200),
    st.floats(-1.2 * MAX_OFFSET, 1.2 * MAX_OFFSET) | st.integers(0, 50),
), max_size=80)


@given(requests, st.integers(1, 6), st.integers(1, 3), st.integers(1, 3))
def test_no_sequence_of_requests_is_accepted_twice_nor_grows_the_guard_past_its_bounds(
    steps: list[tuple[bytes, float, float | int]], capacity: int, per_sender: int, senders: int
) -> None:
    guard = ReplayGuard(capacity=capacity, per_sender=per_sender, senders=senders)
    wall = T0
    sent: list[tuple[bytes, RequestHead]] = []
    accepted: set[tuple[bytes, RequestHead]] = set()
    fresh = nonces()
    for sender, step, what in steps:
        wall += step
        if isinstance(what, int) and sent:
            request = sent[what % len(sent)]  # a replay: the same head, from the same key
        else:
            request = (sender, head(f"{wall + what:.3f}", next(fresh)))
            sent.append(request)
        try:
            guard.check(request[1], wall, request[0])
        except AuthError:
            pass
        else:
            assert request not in accepted
            accepted.add(request)
        assert len(guard._senders) <= senders
        assert all(len(s.seen) == len(s.oldest) <= per_sender for s in guard._senders.values())
        assert guard._held == sum(len(s.seen) for s in guard._senders.values()) <= capacity

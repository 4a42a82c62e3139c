"""Log lines caused by peers: per key and per cause on a fake clock, bounded, printable."""

import pytest

from meshsync.core.throttle import MAX_KEYS, PER_CAUSE, SHOWN, WINDOW, Throttle, shown


def test_first_report_of_a_key_is_allowed_and_repeats_in_the_window_are_not() -> None:
    throttle = Throttle()
    assert throttle.allow("bad signature", now=10.0)
    assert not throttle.allow("bad signature", now=10.0)
    assert not throttle.allow("bad signature", now=10.0 + WINDOW / 2)
    assert not throttle.allow("bad signature", now=10.0 + WINDOW - 0.001)


def test_a_key_is_reported_again_once_the_window_has_passed() -> None:
    throttle = Throttle()
    assert throttle.allow("k", now=0.0)
    assert throttle.allow("k", now=WINDOW)
    assert not throttle.allow("k", now=WINDOW + 1)


def test_keys_are_throttled_independently() -> None:
    throttle = Throttle()
    assert throttle.allow(("10.0.0.1", "stale"), now=0.0)
    assert throttle.allow(("10.0.0.2", "stale"), now=0.0)
    assert throttle.allow(("10.0.0.1", "replayed"), now=0.0)
    assert not throttle.allow(("10.0.0.1", "stale"), now=1.0)


def test_a_steady_flood_gets_one_report_per_window() -> None:
    throttle = Throttle()
    # One bad request every 100 ms for five windows: refusals do not extend the window.
    reports = sum(throttle.allow("flood", now=n / 10) for n in range(int(5 * WINDOW * 10)))
    assert reports == 5


def test_window_is_configurable() -> None:
    throttle = Throttle(window=1.0)
    assert throttle.allow("k", now=0.0)
    assert not throttle.allow("k", now=0.5)
    assert throttle.allow("k", now=1.0)


def test_memory_stays_bounded_however_many_keys_are_seen() -> None:
    throttle = Throttle()
    for n in range(10 * MAX_KEYS):
        assert throttle.allow(("10.0.0.1", f"reason {n}"), now=float(n))
        assert len(throttle._last) <= MAX_KEYS


def test_a_cause_gets_a_few_lines_a_window_however_many_peers_it_comes_from() -> None:
    # A fresh key per request is a new peer each time, but one flood.
    throttle = Throttle()
    allowed = sum(throttle.allow((f"key {n}", "untrusted"), now=n / 100) for n in range(5000))
    assert allowed == PER_CAUSE
    assert throttle.allow(("key 0", "untrusted"), now=WINDOW + 1)  # the next window
    assert throttle.allow(("key 1", "another cause"), now=1.0)  # other causes are not held


def test_a_flood_of_distinct_causes_stays_bounded_in_memory_and_lines() -> None:
    throttle = Throttle()
    allowed = sum(throttle.allow((n, f"cause {n}"), now=0.0) for n in range(10 * MAX_KEYS))
    assert allowed <= MAX_KEYS
    assert len(throttle._last) <= MAX_KEYS


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("laptop", "laptop"),
        ("a\nb", "a\\nb"),
        ("\x1b[2J", "\\x1b[2J"),
        ("right\u202eleft", "right\\u202eleft"),
        ("lone \ud800", "lone \\ud800"),
        ("x" * 200, "x" * SHOWN + "…"),
    ],
)
def test_peer_text_is_shown_on_one_printable_bounded_line(text: str, expected: str) -> None:
    assert shown(text) == expected
    assert shown(text).isprintable()


def test_shown_takes_anything_that_has_a_text() -> None:
    assert shown(ValueError("bad\r\npath")) == "bad\\r\\npath"
    assert shown(b"\x00") == "b'\\x00'"

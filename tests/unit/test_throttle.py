"""Log throttling: one report per key per window, on a fake clock, in bounded memory."""

from meshsync.core.throttle import MAX_KEYS, WINDOW, Throttle


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

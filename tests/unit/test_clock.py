"""The clock's test seam: MESHSYNC_CLOCK_OFFSET shifts wall time, and a bad value is refused."""

import pytest

from meshsync.node import catchup
from meshsync.node.clock import OFFSET_VARIABLE, Clock, offset_from


@pytest.mark.parametrize(("text", "seconds"), [(None, 0.0), ("", 0.0), ("300", 300.0),
                                                (" -1234.5 ", -1234.5), ("1e3", 1000.0)])
def test_the_offset_is_read_as_seconds_and_is_zero_when_unset(
    text: str | None, seconds: float
) -> None:
    assert offset_from({} if text is None else {OFFSET_VARIABLE: text}) == seconds


@pytest.mark.parametrize("text", ["five", "nan", "inf", "-inf", "1e12", "5 min", "0x10"])
def test_a_bad_offset_is_refused_in_one_line_naming_the_variable(text: str) -> None:
    with pytest.raises(ValueError, match=f"^{OFFSET_VARIABLE}=.* is not a number of seconds"):
        offset_from({OFFSET_VARIABLE: text})


def test_the_offset_shifts_wall_time_but_not_monotonic_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(OFFSET_VARIABLE, "-600")
    shifted, real = Clock(), Clock(0.0)
    assert shifted.wall() - real.wall() == pytest.approx(-600, abs=1)
    assert shifted.now() == pytest.approx(real.now(), abs=1)


def test_a_bad_offset_stops_the_clock_being_made(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(OFFSET_VARIABLE, "soon")
    with pytest.raises(ValueError, match=OFFSET_VARIABLE):
        Clock()


@pytest.mark.parametrize("text", ["0", "-5", "soon", "1e9", "nan"])
def test_a_catch_up_interval_that_is_not_seconds_from_1_to_a_day_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="MESHSYNC_CATCH_UP_EVERY"):
        catchup.interval_from({"MESHSYNC_CATCH_UP_EVERY": text})


def test_the_catch_up_interval_is_5_s_unless_the_environment_says_otherwise() -> None:
    assert catchup.interval_from({}) == 5.0
    assert catchup.interval_from({"MESHSYNC_CATCH_UP_EVERY": " 86400 "}) == 86400.0

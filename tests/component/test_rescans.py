"""How often a folder is rescanned whole: the watcher does the work, the rescan is a safety net."""

from __future__ import annotations

from meshsync.node.folder import rescan_every


def test_a_watched_folder_is_rescanned_hourly_not_every_minute() -> None:
    assert rescan_every(watching=True, took=0.5) == 3600


def test_a_folder_that_cannot_be_watched_is_rescanned_every_minute() -> None:
    assert rescan_every(watching=False, took=0.5) == 60


def test_a_slow_rescan_takes_at_most_a_hundredth_of_the_time() -> None:
    assert rescan_every(watching=False, took=6.0) == 600
    assert rescan_every(watching=True, took=90.0) == 9000

"""The clock tests set: monotonic time `t`, and wall time moving with it from `epoch`."""

from __future__ import annotations

from meshsync.node.clock import Clock


class FakeClock(Clock):
    """Monotonic time the test sets; wall time alike, from `epoch`."""

    def __init__(self, epoch: float = 1_800_000_000.0) -> None:
        self.t = 1000.0
        self.epoch = epoch

    def now(self) -> float:  # type: ignore[override]
        return self.t

    def wall(self) -> float:
        return self.epoch + self.t

    def wait_out(self, seconds: float) -> None:
        """Let `seconds` pass, and a hair more: sums of floats round either way."""
        self.t += seconds + 1e-6

"""How big and how long the bench is, and what its workloads share."""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path

from bench.payload import Tree, small_files
from bench.table import Figure

Figures = Generator[Figure, None, None]  # a workload's, one per row, in the order of its rows


@dataclass(frozen=True, slots=True)
class Plan:
    """How big and how long: the full bench or --quick."""

    runs: int  # of each timed row
    slow_runs: int  # of the rows that take minutes at full size
    files: int
    large: int  # bytes
    idle_one: float  # seconds of the single node's idle window
    idle_mesh: float  # seconds of the meshes' idle windows
    samples: int = 20  # small files timed for a latency figure
    stall: float = 8.0  # seconds a member stays stopped: past the 3 s after which it is down

    @property
    def tree_name(self) -> str:
        return f"{self.files // 1000}k"

    @property
    def large_name(self) -> str:
        return f"{self.large >> 30} GiB" if self.large >= 1 << 30 else f"{self.large >> 20} MiB"


@dataclass(slots=True)
class Bench:
    """What the workloads share: the plan, a scratch directory, figures one row compares with
    another's."""

    plan: Plan
    tmp: Path
    made: Tree | None = None
    mesh3: tuple[float, float, list[float]] | None = None  # 3 nodes: CPU-s, bytes, latencies

    def tree(self) -> Tree:
        """The tree of small files, made on first use."""
        if self.made is None:
            self.made = small_files(self.tmp / "tree", self.plan.files)
        return self.made

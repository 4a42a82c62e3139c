"""The bench's one table: a row per workload, meshsync beside its baseline, and how figures read."""

from __future__ import annotations

import math
import os
import platform
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

NONE = "—"
COLUMNS = ("workload", "meshsync", "baseline", "ratio", "goal")


@dataclass(frozen=True, slots=True)
class Figure:
    """What a workload measured for one row."""

    meshsync: str
    baseline: str = NONE
    ratio: str = NONE


@dataclass(frozen=True, slots=True)
class Row:
    """One line of the table."""

    workload: str
    figure: Figure
    goal: str

    def cells(self) -> tuple[str, ...]:
        f = self.figure
        return self.workload, f.meshsync, f.baseline, f.ratio, self.goal


def spread(values: list[float], show: Callable[[float], str], unit: str) -> str:
    """One figure, or min / median / max of several."""
    if len(values) == 1:
        return f"{show(values[0])}{unit}"
    low, middle, high = min(values), statistics.median(values), max(values)
    return f"{show(low)} / {show(middle)} / {show(high)}{unit}"


def seconds(values: list[float]) -> str:
    """Durations, as `spread` shows them."""
    return spread(values, lambda v: f"{v:.2f}" if v < 10 else f"{v:.1f}", " s")


def ratio(mine: list[float], theirs: list[float]) -> str:
    """Our median over the baseline's."""
    return f"{statistics.median(mine) / statistics.median(theirs):.2f}x"


def percentile(values: list[float], p: float) -> float:
    """The nearest-rank percentile `p` (0 to 100) of some values."""
    ranked = sorted(values)
    return ranked[max(0, math.ceil(len(ranked) * p / 100) - 1)]


def percentiles(values: list[float]) -> str:
    """p50 and p95 of latency samples, in milliseconds, and how many there were."""
    return (f"p50 {percentile(values, 50) * 1000:.0f} ms, "
            f"p95 {percentile(values, 95) * 1000:.0f} ms (n={len(values)})")


def latency_ratio(mine: list[float], theirs: list[float]) -> str:
    """Our p50 and p95 over the baseline's."""
    return " / ".join(f"{percentile(mine, p) / percentile(theirs, p):.1f}x" for p in (50, 95))


def mib(size: float) -> str:
    """A size in MiB (KiB below one MiB)."""
    return f"{size / 1024:.0f} KiB" if size < 1 << 20 else f"{size / (1 << 20):.0f} MiB"


def machine() -> str:
    """CPU model, cores, memory and kernel of this machine, and the date."""
    model = next((line.split(":", 1)[1].strip()
                  for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor() or "unknown CPU")
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return (f"{model}, {os.cpu_count()} cores, {memory / (1 << 30):.0f} GiB, "
            f"Linux {platform.release()}; {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")


def render(rows: list[Row]) -> str:
    """The rows as a table with a header, `|` between columns."""
    lines = [COLUMNS, *(row.cells() for row in rows)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(COLUMNS) - 1)]

    def line(cells: tuple[str, ...]) -> str:
        padded = [cell.ljust(width) for cell, width in zip(cells, widths, strict=False)]
        return " | ".join([*padded, cells[-1]]).rstrip()

    rule = "-+-".join("-" * w for w in [*widths, max(len(line[-1]) for line in lines)])
    return "\n".join([line(COLUMNS), rule, *(line(cells) for cells in lines[1:])])

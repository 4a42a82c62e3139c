"""What a process has cost, read from /proc: CPU time, disk I/O, peak memory, network bytes.

A node's costs are those of its whole family: it runs its file watcher in a child process.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
T = TypeVar("T")


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process and its children, all their threads included,
    children that have ended too."""
    def own(pid: int) -> float:
        # The command name (field 2) may hold spaces: count fields from its closing parenthesis.
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return sum(map(int, fields[11:15])) / CLOCK_TICKS  # utime stime cutime cstime

    return sum(_each(pid, own))


def io(pid: int) -> dict[str, int]:
    """The I/O counters of a process and its children: `read_bytes`/`write_bytes` (disk),
    `rchar`/`wchar` (syscalls)."""
    def own(pid: int) -> Counter[str]:
        text = Path(f"/proc/{pid}/io").read_text()
        return Counter({key: int(value)
                        for key, value in (line.split(":") for line in text.splitlines())})

    return dict(sum(_each(pid, own), Counter[str]()))


def peak_rss(pid: int) -> int:
    """The peak resident memory (VmHWM) of a process and its children, added up, in bytes."""
    def own(pid: int) -> int:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError(f"no VmHWM for process {pid}")

    return sum(_each(pid, own))


def _each(pid: int, own: Callable[[int], T]) -> list[T]:
    """`own` of the process, and of each process it started that still runs."""
    found = [own(pid)]
    for child in _children(pid):
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):  # it ended meanwhile
            found += _each(child, own)
    return found


def _children(pid: int) -> list[int]:
    found: list[int] = []
    with contextlib.suppress(FileNotFoundError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(FileNotFoundError):
                found += map(int, (task / "children").read_text().split())
    return found


def wire_bytes(pid: int, interface: str = "eth0") -> tuple[int, int]:
    """(received, sent) bytes on an interface of the network namespace `pid` lives in."""
    for line in Path(f"/proc/{pid}/net/dev").read_text().splitlines()[2:]:
        name, counters = line.split(":", 1)
        if name.strip() == interface:
            fields = counters.split()
            return int(fields[0]), int(fields[8])
    raise RuntimeError(f"no {interface} in process {pid}'s namespace")


def drop_caches() -> None:
    """Write out dirty pages and empty the page cache, so the next reads come from the disk."""
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


def page_cached(root: Path) -> int:
    """Bytes of the files under `root` held in the page cache (read since it was dropped)."""
    listing = subprocess.run(
        ["sh", "-c", 'find "$1" -type f -print0 | xargs -0 fincore --bytes --noheadings -o RES',
         "sh", str(root)], check=True, capture_output=True, text=True).stdout
    return sum(int(size) for size in listing.split())

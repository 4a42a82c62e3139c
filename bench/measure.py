"""What a process has cost, read from /proc: CPU time, disk I/O, peak memory, network bytes."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process, all its threads included."""
    # The command name (field 2) may hold spaces: count fields from its closing parenthesis.
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of proc(5)
    return (utime + stime) / CLOCK_TICKS


def io(pid: int) -> dict[str, int]:
    """A process's I/O counters: `read_bytes`/`write_bytes` (disk), `rchar`/`wchar` (syscalls)."""
    text = Path(f"/proc/{pid}/io").read_text()
    return {key: int(value) for key, value in (line.split(":") for line in text.splitlines())}


def peak_rss(pid: int) -> int:
    """A process's peak resident memory (VmHWM), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmHWM for process {pid}")


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

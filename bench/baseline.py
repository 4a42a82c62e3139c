"""What meshsync is measured beside: rsync to and from its daemon, sha256sum, `rsync -an`, and
the least any tool with atomic writes must do to take in a change to a big file."""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import re
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from bench.measure import io
from tests.integration.lan import Host, run, wait_for

PORT = "8730"
_libc = ctypes.CDLL(None, use_errno=True)


@dataclass(frozen=True, slots=True)
class Daemon:
    """An rsync daemon serving one module."""

    url: str
    pid: int

    def written(self) -> int:
        """Bytes the daemon's finished transfers caused to be written to disk (a transfer's
        process counts in its parent's once reaped)."""
        children = Path(f"/proc/{self.pid}/task/{self.pid}/children")
        wait_for("the rsync daemon's transfer to end", lambda: not children.read_text(), 10)
        return io(self.pid)["write_bytes"]


@contextlib.contextmanager
def rsync_daemon(host: Host, path: Path) -> Iterator[Daemon]:
    """An rsync daemon in `host`'s namespace serving `path`, writable, until the block ends."""
    conf = path.with_name(f"{path.name}.rsyncd.conf")
    conf.write_text("use chroot = no\nuid = root\ngid = root\nlog file = /dev/null\n"
                    f"[t]\npath = {path}\nread only = no\n")
    url = f"rsync://{host.ip}:{PORT}/t/"
    # `ip netns exec` execs rsync: the process started is the daemon.
    with subprocess.Popen(["ip", "netns", "exec", host.ns, "rsync", "--daemon", "--no-detach",
                           "--port", PORT, f"--config={conf}"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as daemon:
        try:
            wait_for("the rsync daemon",
                     lambda: host.exec("rsync", url, check=False).returncode == 0, 10)
            yield Daemon(url, daemon.pid)
        finally:
            daemon.kill()


def rsync_push(sender: Host, tree: Path, receiver: Host, into: Path) -> tuple[float, int]:
    """(seconds, bytes the receiving daemon wrote to disk) for `rsync -a` of a tree from
    `sender` to a daemon on `receiver` writing `into`."""
    with rsync_daemon(receiver, into) as daemon:
        start = time.monotonic()
        sender.exec("rsync", "-a", f"{tree}/", daemon.url)
        seconds = time.monotonic() - start
        return seconds, daemon.written()


def rsync_pull(receiver: Host, sender: Host, served: Path, into: Path) -> tuple[float, int]:
    """(seconds, bytes received) for `rsync -a` on `receiver` fetching the directory `served`
    from a daemon on `sender` into `into` (onto what is there already)."""
    with rsync_daemon(sender, served) as daemon:
        start = time.monotonic()
        stats = receiver.exec("rsync", "-a", "--stats", daemon.url, f"{into}/").stdout
        seconds = time.monotonic() - start
    received = re.search(r"Total bytes received: ([\d,]+)", stats)
    assert received, f"no byte count in rsync's --stats: {stats}"
    return seconds, int(received[1].replace(",", ""))


def sha256sum_all_cores(tree: Path) -> float:
    """Seconds to hash every file of a tree with sha256sum, one process per core."""
    start = time.monotonic()
    run("sh", "-c", f'find "$1" -type f -print0 | xargs -0 -P{os.cpu_count()} -n 500 sha256sum '
        ">/dev/null", "sh", str(tree))
    return time.monotonic() - start


def rsync_walk(tree: Path, empty: Path) -> float:
    """Seconds for `rsync -an` of a tree to an empty directory: a walk of stats, nothing read."""
    start = time.monotonic()
    run("rsync", "-an", f"{tree}/", f"{empty}/")
    return time.monotonic() - start


def rewrite_floor(changed: Path, beside: Path) -> float:
    """Seconds that taking in a change to `changed` (a big file, in the page cache) costs at
    the least where writes are atomic: its sender reads and hashes it all, on every core, to
    find what changed (nothing says where); a receiver then copies its old file beside it
    (copy_file_range: free where extents are shared) and makes the copy durable before it can
    rename it into place. The transfer of the changed bytes is left out."""
    size, span = changed.stat().st_size, 8 << 20

    def hash_span(offset: int) -> bytes:
        with changed.open("rb") as f:
            f.seek(offset)
            return hashlib.sha256(f.read(span)).digest()

    start = time.monotonic()
    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        list(pool.map(hash_span, range(0, size, span)))
    source = os.open(changed, os.O_RDONLY)
    copy = os.open(beside, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        # In the kernel, each 8 MiB sent on to the disk as it is copied: `cp` then `sync`
        # takes twice as long, the writing out only starting at the end.
        for offset in range(0, size, span):
            os.copy_file_range(source, copy, span, offset, offset)
            _write_out(copy)
        os.fsync(copy)
    finally:
        os.close(source)
        os.close(copy)
    seconds = time.monotonic() - start
    beside.unlink()
    return seconds


def _write_out(fd: int) -> None:
    """Have the kernel start writing the file's dirty pages out (sync_file_range(2))."""
    _libc.sync_file_range(fd, ctypes.c_int64(0), ctypes.c_int64(0), ctypes.c_uint(2))

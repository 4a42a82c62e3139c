"""What meshsync is measured beside: rsync to and from its daemon, sha256sum, `rsync -an`."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bench.measure import io
from tests.integration.lan import Host, run, wait_for

PORT = "8730"


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

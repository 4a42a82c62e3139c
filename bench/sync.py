"""How fast changes travel, on the namespace LAN, beside rsync.

    scripts/bench sync [--samples N]

- latency: a small file written and closed on h1 until it is whole on h2 and h3
  (p50 and p95 over N files written one after another);
- the standard library (thousands of files) untarred on h1 until identical on all 3 hosts,
  beside `rsync -a` of the same tree from h1 to an rsync daemon on h2.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

from tests.integration.lan import Lan, run, same_trees, tree, wait_for, why_no_lan
from tests.integration.test_election import agreed, start_all


def latency(lan: Lan, samples: int) -> list[float]:
    h1, h2, h3 = lan.hosts
    figures = []
    for i in range(samples):
        payload = f"sample {i}\n".encode() * 10
        start = time.monotonic()
        (h1.sync / f"lat{i}.txt").write_bytes(payload)
        wait_for("the sample on both", lambda i=i, payload=payload: all(
            _whole(h.sync / f"lat{i}.txt", payload) for h in (h2, h3)), 10, every=0.002)
        figures.append(time.monotonic() - start)
    return figures


def _whole(path: Path, payload: bytes) -> bool:
    try:
        return path.read_bytes() == payload
    except FileNotFoundError:
        return False


def stdlib_tree(tmp: Path) -> Path:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    archive = tmp / "stdlib.tar"
    run("tar", "-cf", str(archive), "--exclude=__pycache__", "--exclude=site-packages",
        "-C", str(stdlib.parent), stdlib.name)
    return archive


def meshsync_tree(lan: Lan, archive: Path) -> tuple[float, int]:
    h1 = lan.hosts[0]
    start = time.monotonic()
    run("tar", "-xf", str(archive), "-C", str(h1.sync))
    expected, shape = tree(h1.sync), _shape(h1.sync)
    # Hashing three trees takes about a second of one of the two cores, so it waits until
    # every host has the right names and sizes, which a walk of stats tells cheaply.
    wait_for("convergence", lambda: all(_shape(h.sync) == shape for h in lan.hosts)
             and same_trees(lan.hosts) == expected, 300, every=0.05)
    return time.monotonic() - start, len(expected)


def _shape(root: Path) -> dict[str, int]:
    """Every path under root but the marker, with its size (-1 for a directory)."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        if here == root:
            dirnames[:] = [d for d in dirnames if d != ".meshsync"]
        rel = here.relative_to(root)
        found.update((str(rel / name), -1) for name in dirnames)
        for name in filenames:
            try:
                found[str(rel / name)] = (here / name).lstat().st_size
            except FileNotFoundError:
                found[str(rel / name)] = -2  # went while we looked
    return found


def rsync_tree(lan: Lan, tree_or_archive: Path, tmp: Path, name: str = "tree") -> float:
    """Seconds for `rsync -a` of a tree (or a tar's contents) from h1 to a daemon on h2."""
    h1, h2 = lan.hosts[0], lan.hosts[1]
    target = tmp / f"rsync-dst-{name}"
    target.mkdir()
    if tree_or_archive.is_dir():
        source = tree_or_archive
    else:
        source = tmp / f"rsync-src-{name}"
        source.mkdir()
        run("tar", "-xf", str(tree_or_archive), "-C", str(source))
    conf = tmp / f"rsyncd-{name}.conf"
    conf.write_text(f"use chroot = no\nuid = root\ngid = root\n[t]\npath = {target}\n"
                    "read only = no\n")
    with subprocess.Popen(["ip", "netns", "exec", h2.ns, "rsync", "--daemon", "--no-detach",
                           "--port", "8730", f"--config={conf}"]) as daemon:
        try:
            wait_for("rsync daemon", lambda: h1.exec("rsync", f"rsync://{h2.ip}:8730/",
                                                     check=False).returncode == 0, 10)
            start = time.monotonic()
            h1.exec("rsync", "-a", f"{source}/", f"rsync://{h2.ip}:8730/t/")
            return time.monotonic() - start
        finally:
            daemon.kill()


def peak_rss(pid: int) -> int:
    """A process's peak resident memory, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM")


def large_file(lan: Lan, tmp: Path, size: int) -> tuple[float, int, int, float]:
    """(seconds, receiver's peak RSS before, after) for one file on h1 until whole on h2,
    and rsync's seconds for the same file."""
    h1, h2 = lan.hosts[0], lan.hosts[1]
    staged = h1.home / "large.bin"
    with staged.open("wb") as f:
        for _ in range(size // (1 << 20)):
            f.write(os.urandom(1 << 20))
    assert h2.proc is not None
    before = peak_rss(h2.proc.pid)
    start = time.monotonic()
    staged.rename(h1.sync / "large.bin")
    target = h2.sync / "large.bin"
    wait_for("the large file", lambda: target.exists() and target.stat().st_size == size, 300,
             every=0.05)
    seconds = time.monotonic() - start
    after = peak_rss(h2.proc.pid)
    single = tmp / "rsync-large"
    single.mkdir()
    os.link(h1.sync / "large.bin", single / "large.bin")
    rsync = rsync_tree(lan, single, tmp, name="large")
    return seconds, before, after, rsync


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=40)
    parser.add_argument("--large-mib", type=int, default=512)
    args = parser.parse_args()
    reason = why_no_lan()
    if reason:
        sys.exit(f"bench: {reason}")
    with tempfile.TemporaryDirectory(prefix="msbench") as name:
        tmp = Path(name)
        archive = stdlib_tree(tmp)
        lan = Lan(tmp / "lan", 3)
        for host in lan.hosts:
            host.catch_up = True  # the node as shipped
        try:
            start_all(lan)
            wait_for("the mesh", lambda: agreed(lan.hosts, lan.by_id()[0]), 20)
            lat = latency(lan, args.samples)
            mesh_time, files = meshsync_tree(lan, archive)
            rsync_time = rsync_tree(lan, archive, tmp)
            large = large_file(lan, tmp, args.large_mib << 20)
        finally:
            lan.close()
    lat.sort()
    p95 = lat[min(len(lat) - 1, int(len(lat) * 0.95))]
    print("meshsync sync on a 3-host namespace LAN (2-core machine)")
    print(f"small-file latency, close on h1 -> whole on h2 and h3, {len(lat)} files: "
          f"p50 {statistics.median(lat) * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms")
    print(f"standard library tree ({files} paths):")
    print(f"  meshsync, untar on h1 -> identical on 3 hosts  {mesh_time:6.2f} s")
    print(f"  rsync -a h1 -> rsync daemon on h2 (1 target)   {rsync_time:6.2f} s")
    seconds, before, after, rsync = large
    print(f"one {args.large_mib} MiB file, h1 -> whole on h2 (and h3):")
    print(f"  meshsync {seconds:6.2f} s ({args.large_mib / seconds:.0f} MiB/s); receiver's peak "
          f"RSS {before >> 20} MiB before, {after >> 20} MiB after")
    print(f"  rsync -a {rsync:6.2f} s")


if __name__ == "__main__":
    main()

"""The workloads that move data: a tree to a new host, a tree indexed, a large file and a
change in it; each runs meshsync, then its baseline, and yields a figure per row."""

from __future__ import annotations

import itertools
import os
import shutil
import statistics
import time
from functools import partial
from pathlib import Path

from bench.baseline import (
    rewrite_floor,
    rsync_pull,
    rsync_push,
    rsync_walk,
    sha256sum_all_cores,
)
from bench.measure import drop_caches, io, page_cached, peak_rss, wire_bytes
from bench.mesh import (
    arrivals,
    folder_status,
    idle,
    lan_of,
    latencies,
    mesh,
    pid,
    scanned,
)
from bench.payload import byte_at, has_byte, has_size, large_file, shape
from bench.plan import Bench, Figures
from bench.table import Figure, latency_ratio, mib, percentiles, ratio, seconds
from tests.component.openssh import ssh_agent
from tests.integration.lan import Host, run, tree, wait_for

median = statistics.median


def first_sync(bench: Bench) -> Figures:
    """The tree, in h1's folder before it starts, until whole on h2 (both started together),
    beside `rsync -a` to a daemon on h2."""
    data = bench.tree()
    took: list[float] = []
    rsync: list[float] = []
    writes: list[int] = []
    rsync_writes: list[int] = []
    first: list[float] = []
    scan: list[float] = []
    for i in range(bench.plan.slow_runs):
        with lan_of(bench.tmp / f"first{i}", 2) as lan:
            h1, h2 = lan.hosts
            run("cp", "-al", str(data.root), str(h1.sync))
            lan.trust_all()
            drop_caches()
            start = time.monotonic()
            for host in lan.hosts:
                host.launch()
            # Hashing the trees takes seconds: it waits until the receiver is in sync with a
            # sender that has scanned it all, and has the right names and sizes.
            marks = arrivals(f"the tree on {h2.name}", start, {
                "first": lambda: _anything_in(h2.sync),
                "scanned": lambda: scanned(h1),
                "synced": lambda: scanned(h1) and _in_sync(h2) and shape(h2.sync) == data.shape,
            }, timeout=60 + data.files / 50, every=0.1)
            writes.append(io(pid(h2))["write_bytes"])
            assert tree(h1.sync) == tree(h2.sync), "the same names and sizes, not the same content"
            took.append(marks["synced"])
            first.append(marks["first"])
            scan.append(marks["scanned"])
            for host in lan.hosts:
                host.kill()
            target = bench.tmp / f"first{i}-rsync"
            target.mkdir()
            drop_caches()
            pushed, wrote = rsync_push(h1, data.root, h2, target)
            rsync.append(pushed)
            rsync_writes.append(wrote)
    yield Figure(seconds(took), f"rsync -a: {seconds(rsync)}", ratio(took, rsync))
    # Written a page at a time, files of a few KiB cost more than their bytes on any tool.
    written, theirs = median(writes), median(rsync_writes)
    yield Figure(f"{written / data.size:.2f}x the data ({mib(written)} of {mib(data.size)})",
                 f"rsync -a: {theirs / data.size:.2f}x ({mib(theirs)})",
                 f"{written / theirs:.2f}x")
    yield Figure(f"first path {median(first):.2f} s; scan done {median(scan):.2f} s")


def _anything_in(folder: Path) -> bool:
    try:
        with os.scandir(folder) as entries:
            return any(entry.name != ".meshsync" for entry in entries)
    except FileNotFoundError:
        return False


def _in_sync(host: Host) -> bool:
    status = folder_status(host)
    return status is not None and status["state"] == "in sync"


def one_node(bench: Bench) -> Figures:
    """One node indexing the tree from a cold cache, beside sha256sum on all cores; restarted,
    beside `rsync -an`; then idle."""
    data, plan = bench.tree(), bench.plan
    index: list[float] = []
    agent_index: list[float] = []
    hashing: list[float] = []
    restart: list[float] = []
    walk: list[float] = []
    reads: list[dict[str, int]] = []
    timeout = 60 + data.files / 100
    for i in range(plan.slow_runs):
        with lan_of(bench.tmp / f"one{i}", 1) as lan:
            (host,) = lan.hosts
            run("cp", "-al", str(data.root), str(host.sync))
            drop_caches()
            index.append(_scan_time(host, timeout))
            drop_caches()
            hashing.append(sha256sum_all_cores(data.root))
            host.stop()
            drop_caches()
            restart.append(_scan_time(host, timeout))
            reads.append({**io(pid(host)), "cached": page_cached(data.root)})
            empty = bench.tmp / f"one{i}-empty"
            empty.mkdir()
            drop_caches()
            walk.append(rsync_walk(data.root, empty))
            agent_index.append(_index_with_agent(bench, i, timeout))
            if i < plan.slow_runs - 1:
                continue
            yield Figure(seconds(index), f"sha256sum: {seconds(hashing)}", ratio(index, hashing))
            yield Figure(seconds(agent_index), f"sha256sum: {seconds(hashing)}",
                         ratio(agent_index, hashing))
            yield Figure(seconds(restart), f"rsync -an: {seconds(walk)}", ratio(restart, walk))
            disk = median(r["read_bytes"] for r in reads)
            cached = median(r["cached"] for r in reads)
            yield Figure(f"{mib(disk)} from disk in all; of the files' {mib(data.size)}, "
                         f"{mib(cached)} read")
            cpu, _ = idle([host], plan.idle_one)
            yield Figure(f"{cpu / 60 * 100:.2f} % of a core over {plan.idle_one:.0f} s; "
                         f"peak RSS {mib(peak_rss(pid(host)))}")


def _index_with_agent(bench: Bench, i: int, timeout: float) -> float:
    """The first index again (cold cache), by a node whose key is an RSA key in ssh-agent:
    the keys that sign slowest, 0.9 ms in process and 2.5 ms through the agent."""
    root = bench.tmp / f"agent{i}"
    root.mkdir()
    with ssh_agent(root) as sock, lan_of(root, 1) as lan:
        (host,) = lan.hosts
        phrase = "a phrase only this bench's agent hears"
        host.make_key(phrase, kind="rsa")
        host.use_agent(sock, phrase)
        run("cp", "-al", str(bench.tree().root), str(host.sync))
        drop_caches()
        return _scan_time(host, timeout)


def _scan_time(host: Host, timeout: float) -> float:
    """Seconds from launching the node until it has scanned its whole folder."""
    start = time.monotonic()
    host.launch()
    wait_for(f"{host.name}'s scan", lambda: scanned(host), timeout)
    return time.monotonic() - start


def large_files(bench: Bench) -> Figures:
    """A large file to two receivers, beside an rsync pull; one byte of it changed in place,
    beside rsync onto the old copy; small files while another large file transfers."""
    plan = bench.plan
    size, middle = plan.large, plan.large // 2
    with mesh(bench.tmp / "large", 3) as lan:
        h1, *receivers = lan.hosts
        whole: dict[str, list[float]] = {h.name: [] for h in receivers}
        changed: dict[str, list[float]] = {h.name: [] for h in receivers}
        received: dict[str, list[int]] = {h.name: [] for h in receivers}
        pulls: list[tuple[float, int]] = []
        repulls: list[tuple[float, int]] = []
        floors: list[float] = []  # hashing it all, then a durable copy: see rewrite_floor
        for i in range(plan.slow_runs):
            path = h1.sync / "large.bin"
            staged = h1.home / path.name
            large_file(staged, size, seed=i)
            start = time.monotonic()
            staged.rename(path)
            marks = arrivals("the large file", start, {
                h.name: partial(has_size, h.sync / path.name, size) for h in receivers
            }, timeout=60 + size / (10 << 20))
            _same_file(path, receivers)
            served, pulled = bench.tmp / f"served{i}", bench.tmp / f"pulled{i}"
            served.mkdir()
            pulled.mkdir()
            os.link(path, served / path.name)  # so the change below is served too
            pulls.append(rsync_pull(receivers[0], h1, served, pulled))

            # One byte in the middle rewritten in place, as a database or a disk image is.
            new = bytes([byte_at(path, middle)[0] ^ 0xFF])
            before = {h.name: wire_bytes(pid(h))[0] for h in receivers}
            start = time.monotonic()
            fd = os.open(path, os.O_WRONLY)
            try:
                os.pwrite(fd, new, middle)
            finally:
                os.close(fd)
            os.utime(path)
            seen = arrivals("the changed byte", start, {
                h.name: partial(has_byte, h.sync / path.name, middle, new) for h in receivers
            }, timeout=120)
            _same_file(path, receivers)
            for h in receivers:
                whole[h.name].append(marks[h.name])
                changed[h.name].append(seen[h.name])
                received[h.name].append(wire_bytes(pid(h))[0] - before[h.name])
            repulls.append(rsync_pull(receivers[0], h1, served, pulled))
            floors.append(rewrite_floor(receivers[0].sync / path.name, receivers[0].home / "copy"))

            path.unlink()
            wait_for("the large file gone", lambda: not any(
                (h.sync / path.name).exists() for h in receivers), 60)
            shutil.rmtree(served)
            shutil.rmtree(pulled)
        later = [max(t) for t in zip(*whole.values(), strict=True)]
        rsync = [p[0] for p in pulls]
        yield Figure(seconds(later), f"rsync pull: {seconds(rsync)}", ratio(later, rsync))
        one, other = (median(whole[h.name]) for h in receivers)
        behind = max(one, other) / min(one, other) - 1
        yield Figure(f"{one:.2f} s; {other:.2f} s (2nd {behind * 100:.0f} % behind)")
        yield Figure(", ".join(f"{h.name} {mib(peak_rss(pid(h)))}" for h in receivers))
        later = [max(t) for t in zip(*changed.values(), strict=True)]
        rsync = [p[0] for p in repulls]
        yield Figure(seconds(later), f"rsync onto the old copy: {seconds(rsync)}; floor with "
                     f"atomic writes: {seconds(floors)}", ratio(later, rsync))
        most = max(median(received[h.name]) for h in receivers)
        yield Figure(", ".join(f"{h.name} {mib(median(received[h.name]))}" for h in receivers),
                     f"rsync: {mib(median(p[1] for p in repulls))}",
                     f"{most / median(p[1] for p in repulls):.1f}x")
        yield _loaded_latency(h1, receivers, size, plan.samples)


def _receiving(host: Host) -> bool:
    status = folder_status(host)
    return status is not None and bool(status["transfers"])


def _same_file(path: Path, receivers: list[Host]) -> None:
    for h in receivers:
        run("cmp", str(path), str(h.sync / path.name))


def _loaded_latency(h1: Host, receivers: list[Host], size: int, samples: int) -> Figure:
    """Small files one after another while a large file transfers, beside the same with
    nothing else going on."""
    quiet = list(itertools.islice(latencies(h1, receivers, "quiet"), samples))
    staged = h1.home / "load.bin"
    large_file(staged, size, seed=1000)
    staged.rename(h1.sync / staged.name)
    # Sampling starts once the file is on its way: before that, h1 is still hashing it.
    wait_for("the large file to be on its way", lambda: any(
        _receiving(h) or has_size(h.sync / staged.name, size) for h in receivers), 120, every=0.01)
    loaded: list[float] = []
    for sample in latencies(h1, receivers, "loaded"):
        loaded.append(sample)
        if len(loaded) >= 10 * samples or all(
                has_size(h.sync / staged.name, size) for h in receivers):
            break
    return Figure(percentiles(loaded), f"idle: {percentiles(quiet)}", latency_ratio(loaded, quiet))

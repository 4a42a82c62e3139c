"""The mesh at rest and under strain: idle cost at 3 and 10 nodes, failover after kill -9,
small files while a member is stopped."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time

from bench.measure import cpu_seconds
from bench.mesh import SETTLE, agree, idle, latencies, mesh, pid, synced
from bench.payload import shape, small_files
from bench.plan import Bench, Figures
from bench.table import NONE, Figure, latency_ratio, mib, percentiles, seconds
from tests.integration.lan import Host, Lan, wait_for


def _small_tree(lan: Lan) -> None:
    """A small tree written on the first host, until every host has it."""
    h1 = lan.hosts[0]
    small_files(h1.sync / "small", 200, seed=7)
    expected = shape(h1.sync)
    wait_for("the small tree everywhere", lambda: synced(lan.hosts, expected), 60, every=0.2)


def _idle_figure(cpu: float, wire: float) -> str:
    return f"{cpu:.2f} CPU-s, {mib(wire)} per node per minute"


# The file watcher meshsync runs (watchfiles polls its change queue every `step` ms), alone
# on an empty folder: the floor of a node's idle CPU, whatever the mesh does.
WATCHER_ALONE = """
import asyncio, sys, tempfile
from pathlib import Path
from meshsync.fs.watch import watch
async def main():
    async for _ in watch(Path(tempfile.mkdtemp())):
        pass
asyncio.run(main())
"""


def three_idle(bench: Bench) -> Figures:
    """Three nodes with nothing changing, beside meshsync's file watcher alone; then the
    coordinator killed, again and again."""
    plan = bench.plan
    with mesh(bench.tmp / "idle3", 3) as lan:
        _small_tree(lan)
        watcher = subprocess.Popen([sys.executable, "-c", WATCHER_ALONE])
        try:
            time.sleep(SETTLE)
            before, start = cpu_seconds(watcher.pid), time.monotonic()
            cpu, wire = idle(lan.hosts, plan.idle_mesh)
            floor = (cpu_seconds(watcher.pid) - before) * 60 / (time.monotonic() - start)
        finally:
            watcher.kill()
            watcher.wait()
        yield Figure(_idle_figure(cpu, wire), f"its file watcher alone: {floor:.2f} CPU-s",
                     f"{cpu / floor:.1f}x" if floor else NONE)
        h1, *others = lan.hosts
        bench.mesh3 = cpu, wire, list(itertools.islice(latencies(h1, others, "three"),
                                                       plan.samples))
        yield Figure(seconds([_failover(lan) for _ in range(plan.runs)]))


def _failover(lan: Lan) -> float:
    """Seconds from kill -9 of the coordinator until the others agree on the next; then the
    killed node is started again and the mesh is whole."""
    result = lan.hosts[0].json("elect")
    coordinator = next(h for h in lan.hosts if str(h.id) == result["coordinator"])
    survivors = [h for h in lan.hosts if h is not coordinator]

    def agreed() -> Host | None:
        # Most often the lowest ID; a survivor that has not yet heard another (just started)
        # may claim the term first, and a claimed term is not taken from it (sticky).
        return next((h for h in survivors if agree(survivors, h, result["term"])), None)

    start = time.monotonic()
    coordinator.kill()
    successor = wait_for("failover", agreed, 20, every=0.02)
    seconds = time.monotonic() - start
    coordinator.start()
    wait_for("the mesh whole again", lambda: agree(lan.hosts, successor), 20)
    return seconds


def ten_idle(bench: Bench) -> Figures:
    """Ten nodes with nothing changing, beside three; a small file to all of them."""
    plan = bench.plan
    with mesh(bench.tmp / "idle10", 10) as lan:
        _small_tree(lan)
        cpu, wire = idle(lan.hosts, plan.idle_mesh)
        if bench.mesh3 is None:
            yield Figure(_idle_figure(cpu, wire))
        else:
            cpu3, wire3, _ = bench.mesh3
            yield Figure(_idle_figure(cpu, wire), f"3 nodes: {cpu3:.2f} CPU-s, {mib(wire3)}",
                         f"{cpu / cpu3:.1f}x / {wire / wire3:.1f}x")
        h1, *others = lan.hosts
        before, start = sum(cpu_seconds(pid(h)) for h in lan.hosts), time.monotonic()
        samples = list(itertools.islice(latencies(h1, others, "ten"), plan.samples))
        # The ten nodes share this machine's cores: what all of them spend on one file, less
        # what they spend idle meanwhile, over the cores, is how long one file keeps the whole
        # machine busy (some of it after the file has arrived: the catch-up round it sets off).
        spent = sum(cpu_seconds(pid(h)) for h in lan.hosts) - before
        per_file = (spent - cpu * len(lan.hosts) * (time.monotonic() - start) / 60) / len(samples)
        cores = os.cpu_count() or 1
        ms = per_file * 1000
        work = f"all 10 nodes' CPU per file: {ms:.0f} ms ({ms / cores:.0f} ms of all {cores} cores)"
        yield Figure(percentiles(samples),
                     f"3 nodes: {percentiles(bench.mesh3[2])}; {work}" if bench.mesh3 else work,
                     latency_ratio(samples, bench.mesh3[2]) if bench.mesh3 else NONE)


def stalled_member(bench: Bench) -> Figures:
    """Small files from h1 to h2 while h3 is stopped (SIGSTOP), beside the same before."""
    plan = bench.plan
    with mesh(bench.tmp / "stall", 3) as lan:
        h1, h2, h3 = lan.hosts
        before = list(itertools.islice(latencies(h1, [h2], "before"), plan.samples))
        stopped = time.monotonic()
        os.kill(pid(h3), signal.SIGSTOP)
        try:
            during: list[float] = []
            for sample in latencies(h1, [h2], "stalled"):
                during.append(sample)
                if time.monotonic() - stopped > plan.stall:
                    break
        finally:
            os.kill(pid(h3), signal.SIGCONT)
        resumed = time.monotonic()
        yield Figure(percentiles(during), f"before: {percentiles(before)}",
                     latency_ratio(during, before))
        expected = shape(h1.sync)
        wait_for("the stalled member to catch up", lambda: synced([h1, h3], expected), 60)
        yield Figure(seconds([time.monotonic() - resumed]))

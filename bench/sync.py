"""meshsync beside its baselines on the namespace LAN: one table, a row per workload.

    scripts/bench [--quick] [--runs N]

Each workload runs meshsync and then its baseline in the same run, on the same data and
namespaces. Timed rows show min / median / max over the runs. --quick makes it smaller (10k
files instead of 100k, 256 MiB instead of 1 GiB, fewer runs, shorter idle windows).
"""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from bench.idle import stalled_member, ten_idle, three_idle
from bench.mesh import SETTLE
from bench.plan import Bench, Figures, Plan
from bench.table import Figure, Row, machine, render
from bench.workload import first_sync, large_files, one_node
from tests.integration.lan import why_no_lan

Workload = Callable[[Bench], Figures]


def suite(plan: Plan) -> list[tuple[Workload, list[tuple[str, str]]]]:
    """Each workload with its rows, in the order it yields their figures: (title, goal)."""
    files, large = plan.tree_name, plan.large_name
    return [
        (first_sync, [
            (f"{files} small files, first sync to a new host",
             "≤ 2x rsync; files flow while the sender still scans"),
            ("  receiver's disk writes for a first sync", "≤ 1.2x the data"),
            ("  first path on h2; h1's scan done (medians)", ""),
        ]),
        (one_node, [
            (f"{files} files, first index on one node (cold cache)", "≤ 2x sha256sum (all cores)"),
            ("  the same, the node's key an RSA key in ssh-agent", "≤ 2x sha256sum"),
            (f"{files} files, restart with nothing changed (cold cache)", "≤ 2x rsync -an"),
            ("  read by the restarted node (medians)", "no content read"),
            (f"{files} files, idle", "< 1 % of a core, peak RSS ≤ 150 MiB"),
        ]),
        (large_files, [
            (f"{large} file to two receivers", "≤ 0.8x rsync; 2nd receiver ≤ 20 % behind"),
            ("  whole on h2; on h3 (medians)", ""),
            ("  receivers' peak RSS", ""),
            (f"one byte changed in {large} (in place)", "within 1 s of the file being stable"),
            ("  bytes received per receiver (medians)", "≤ 256 KiB received per receiver"),
            (f"small-file latency while a {large} transfer runs", "p50 ≤ 100 ms, p95 ≤ 300 ms"),
        ]),
        (three_idle, [
            ("3 nodes, idle", "≤ 0.2 CPU-s and ≤ 60 KiB per node per minute"),
            ("  failover after kill -9 of the coordinator", "≤ 2 s"),
        ]),
        (ten_idle, [
            ("10 nodes, idle", "per node ≤ 1.5x 3 nodes"),
            ("  small file to all 10 nodes", "p50 ≤ 100 ms"),
        ]),
        (stalled_member, [
            ("a slow or stalled member (h3 SIGSTOPped)", "never delays the others"),
            ("  the stalled member catches up after SIGCONT", ""),
        ]),
    ]


def run_suite(bench: Bench, rows: list[Row]) -> None:
    """Every workload in turn, its rows added as they come; one that fails shows its error in
    the rows it did not fill, and the next goes on."""
    for work, titles in suite(bench.plan):
        began = time.monotonic()
        figures, filled = work(bench), 0
        try:
            for title, goal in titles:
                rows.append(Row(title, next(figures), goal))
                filled += 1
        except Exception as e:
            traceback.print_exc()
            rest = [Figure(f"error: {_one_line(e)}"), *[Figure("not reached")] * len(titles)]
            rows.extend(Row(t, f, g) for (t, g), f in zip(titles[filled:], rest, strict=False))
        finally:
            figures.close()  # its clean-up, after its last figure
        print(f"bench: {titles[0][0]}: {time.monotonic() - began:.0f} s", file=sys.stderr)


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= 120 else text[:117] + "..."


def notes(plan: Plan) -> str:
    """How to read the table."""
    return "\n".join([
        f"Timed rows: min / median / max over {plan.runs} runs ({plan.slow_runs} for the "
        "rows of the tree and the large file); ratio = meshsync's median over the baseline's "
        "(latencies: p50 / p95; idle: CPU / bytes).",
        "Cold cache: the page cache is dropped (sync; echo 3 > /proc/sys/vm/drop_caches) "
        "before each run of the first sync, the first index and the restart, meshsync and "
        "baseline alike.",
        f"Idle: measured from /proc {SETTLE:.0f} s after the last change (the catch-up round it "
        "sets going is its cost); bytes = received + sent on the node's interface (heartbeats "
        "included, as in the bytes received for one changed byte).",
        "Nodes run as shipped (periodic catch-up on); every host is a network namespace on one "
        "bridge of this machine, so the wire is memory.",
    ])


def main() -> None:
    parser = argparse.ArgumentParser(prog="scripts/bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="10k files, 256 MiB, one run of the slow rows, short idle windows: "
                        "a few minutes")
    parser.add_argument("--runs", type=int,
                        help="runs of each timed row (default 3; --quick: 1 of the slow rows)")
    args = parser.parse_args()
    reason = why_no_lan()
    if reason:
        sys.exit(f"bench: {reason}")
    if args.quick:
        plan = Plan(runs=args.runs or 3, slow_runs=1, files=10_000, large=256 << 20,
                    idle_one=30, idle_mesh=20)
    else:
        runs = args.runs or 3
        plan = Plan(runs=runs, slow_runs=runs, files=100_000, large=1 << 30, idle_one=120,
                    idle_mesh=60)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # clean up when killed, too
    rows: list[Row] = []
    began = time.monotonic()
    try:
        with tempfile.TemporaryDirectory(prefix="msbench") as tmp:
            try:
                run_suite(Bench(plan, Path(tmp)), rows)
            finally:
                print(f"meshsync sync beside its baselines{' (--quick)' if args.quick else ''}; "
                      f"{machine()}; {time.monotonic() - began:.0f} s")
                print(render(rows))
                print(notes(plan))
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()

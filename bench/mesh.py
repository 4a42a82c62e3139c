"""Nodes on the namespace LAN as the bench drives them: meshes to start, arrivals to time."""

from __future__ import annotations

import contextlib
import itertools
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bench.measure import cpu_seconds, wire_bytes
from bench.payload import shape
from meshsync.control.client import call
from meshsync.control.protocol import ControlError
from meshsync.net.client import IDLE
from meshsync.node.catchup import CATCH_UP_EVERY
from meshsync.node.node import HEARTBEAT, PROGRESS_EVERY
from tests.integration.lan import Host, Lan, same_trees, wait_for
from tests.integration.test_election import start_all

# Seconds left to a node after its last change before it counts as idle: the catch-up round
# that follows a change (members' hellos tell of their moved indexes within PROGRESS_EVERY and a
# heartbeat, and catch-up asks at its next CATCH_UP_EVERY), and the closing of the connections
# it used once they have been idle for IDLE, are that change's cost, not idleness.
SETTLE = CATCH_UP_EVERY + PROGRESS_EVERY + 2 * HEARTBEAT + IDLE + 1.0


@contextlib.contextmanager
def lan_of(root: Path, count: int) -> Iterator[Lan]:
    """`count` hosts whose nodes run as shipped (periodic catch-up on), closed after the block."""
    lan = Lan(root, count)
    try:
        for host in lan.hosts:
            host.catch_up = True
        yield lan
    finally:
        lan.close()


@contextlib.contextmanager
def mesh(root: Path, count: int) -> Iterator[Lan]:
    """`count` nodes trusting each other, started together and agreed on a coordinator."""
    with lan_of(root, count) as lan:
        start_all(lan)
        # On one coordinator, not always the lowest ID: ten nodes starting on two cores take
        # longer than the start-up grace, and a coordinator elected meanwhile is sticky.
        wait_for("the mesh to agree", lambda: agreed_on(lan.hosts), 20 + 2 * count)
        yield lan


def pid(host: Host) -> int:
    """The host's node process."""
    assert host.proc is not None, f"{host.name}'s node was never started"
    return host.proc.pid


def ask(host: Host, endpoint: str) -> Any:
    """What a GET of the node's API answers (`/v1/status`), None while it does not answer.

    Asked on the control socket itself: a CLI process per poll costs the nodes CPU and takes
    a few hundred milliseconds, too coarse to time a failover."""
    try:
        return call(host.state / "control.sock", "GET", endpoint)
    except ControlError:
        if host.proc is not None and host.proc.poll() is not None:
            raise RuntimeError(f"{host.name}'s node exited with {host.proc.returncode}") from None
        return None


def folder_status(host: Host) -> dict[str, Any] | None:
    """The folder's part of `meshsync status --json`, None while the node does not answer."""
    status = ask(host, "/v1/status")
    if status is None:
        return None
    folder: dict[str, Any] = status["folders"][0]
    return folder


def agreed_on(hosts: list[Host]) -> Host | None:
    """The coordinator every host names, at one term; None while they do not agree."""
    view = ask(hosts[0], "/v1/election")
    if view is None or view["coordinator"] is None:
        return None
    coordinator = next((h for h in hosts if str(h.id) == view["coordinator"]), None)
    return coordinator if coordinator is not None and agree(hosts, coordinator) else None


def agree(hosts: list[Host], coordinator: Host, above_term: int = 0) -> bool:
    """Whether every host names `coordinator` at one common term above `above_term` (as
    test_election.agreed, asked on the sockets)."""
    views = [ask(h, "/v1/election") for h in hosts]
    return all(v is not None and v["coordinator"] == str(coordinator.id)
               and v["term"] == views[0]["term"] > above_term for v in views)


def scanned(host: Host) -> bool:
    """Whether the node has finished its first full scan since it started."""
    status = folder_status(host)
    return status is not None and status["state"] != "scanning"


def arrivals(what: str, start: float, probes: dict[str, Callable[[], object]], timeout: float,
             every: float = 0.02) -> dict[str, float]:
    """Seconds from `start` until each probe first held; each is asked until it does."""
    seen: dict[str, float] = {}

    def all_seen() -> bool:
        for name, probe in probes.items():
            if name not in seen and probe():
                seen[name] = time.monotonic() - start
        return len(seen) == len(probes)

    wait_for(what, all_seen, timeout, every)
    return seen


def latencies(source: Host, targets: list[Host], tag: str) -> Iterator[float]:
    """Seconds from a small file written on `source` until it is whole on every target, for one
    file after another."""
    for i in itertools.count():
        name, payload = f"{tag}{i}.txt", f"{tag} {i}\n".encode() * 10
        start = time.monotonic()
        (source.sync / name).write_bytes(payload)
        wait_for(f"{name} on {len(targets)} hosts",
                 lambda: all(_holds(h.sync / name, payload) for h in targets), 120, every=0.002)
        yield time.monotonic() - start


def _holds(path: Path, payload: bytes) -> bool:
    try:
        return path.read_bytes() == payload
    except FileNotFoundError:
        return False


def synced(hosts: list[Host], expected: dict[str, int]) -> bool:
    """Whether every host's folder has the expected paths and sizes, and the same content."""
    return all(shape(h.sync) == expected for h in hosts) and same_trees(hosts) is not None


def idle(hosts: list[Host], window: float) -> tuple[float, float]:
    """(CPU-seconds, bytes in and out on its interface) per node per minute, the mean over the
    nodes, over `window` seconds with nothing changing."""
    time.sleep(SETTLE)  # what the last change set going is not idleness
    pids = [pid(h) for h in hosts]

    def costs() -> list[tuple[float, int]]:
        return [(cpu_seconds(p), sum(wire_bytes(p))) for p in pids]

    before, start = costs(), time.monotonic()
    time.sleep(window)
    after, elapsed = costs(), time.monotonic() - start
    per_node_minute = 60 / elapsed / len(hosts)
    return (sum(a[0] - b[0] for a, b in zip(after, before, strict=True)) * per_node_minute,
            sum(a[1] - b[1] for a, b in zip(after, before, strict=True)) * per_node_minute)

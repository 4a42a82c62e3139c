"""How fast the mesh forms and heals, on the namespace LAN, beside plain python-zeroconf.

    scripts/bench membership [--runs N]

Figures (medians and worst of N runs, seconds):
- discovery: from launching 3 nodes together until each lists the other two online;
- agreement: from launch until all 3 name the same coordinator (includes the 2 s grace);
- failover after kill -9 / after `meshsync stop` / after a silent cut of the coordinator:
  until the survivors agree on a new coordinator.
Baseline: a plain python-zeroconf service registered with default probing, until a browser
in another namespace resolves it (what discovery costs without meshsync's shortcuts).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from tests.integration.lan import Host, Lan, wait_for, why_no_lan
from tests.integration.test_election import agreed

BASELINE = """
import asyncio, socket, sys, time
from zeroconf import ServiceStateChange
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf
role, ip = sys.argv[1], sys.argv[2]
async def main():
    azc = AsyncZeroconf()
    if role == "register":
        info = AsyncServiceInfo("_bench._tcp.local.", "bench._bench._tcp.local.", port=9,
                                addresses=[socket.inet_aton(ip)])
        await (await azc.async_register_service(info))
        print("registered", flush=True)
        await asyncio.sleep(30)
        return
    seen = asyncio.Event()
    def on_change(zeroconf, service_type, name, state_change):
        if state_change is ServiceStateChange.Added:
            seen.set()
    AsyncServiceBrowser(azc.zeroconf, "_bench._tcp.local.", handlers=[on_change])
    print("browsing", flush=True)
    await seen.wait()
    print("seen", flush=True)
    await azc.async_close()
asyncio.run(main())
"""


def timed(start: float, what: str, probe: Callable[[], object], timeout: float = 20) -> float:
    wait_for(what, probe, timeout, every=0.02)
    return time.monotonic() - start


def online_everywhere(hosts: list[Host]) -> bool:
    return all(
        list(h.peer_states().values()) == ["online"] * (len(hosts) - 1) for h in hosts
    )


def one_run(root: Path) -> dict[str, float]:
    figures: dict[str, float] = {}
    for n, case in enumerate(("kill -9", "meshsync stop", "silent cut")):
        lan = Lan(root / str(n), 3)
        try:
            lan.trust_all()
            lowest, second, third = lan.by_id()
            t0 = time.monotonic()
            for h in lan.hosts:
                h.launch()
            if case == "kill -9":
                figures["discovery"] = timed(t0, "discovery", lambda: online_everywhere(lan.hosts))
                figures["agreement"] = timed(t0, "agreement", lambda: agreed(lan.hosts, lowest))
            term = wait_for("agreement", lambda: agreed(lan.hosts, lowest), 20)
            t1 = time.monotonic()
            if case == "kill -9":
                lowest.kill()
            elif case == "meshsync stop":
                lowest.cli("stop")
            else:
                lan.cut(lowest)
            figures[f"failover after {case}"] = timed(
                t1, "failover", lambda: agreed([second, third], second, term))
        finally:
            lan.close()
    return figures


def baseline_run(root: Path) -> float:
    lan = Lan(root, 2)
    try:
        h1, h2 = lan.hosts
        with subprocess.Popen(["ip", "netns", "exec", h2.ns, sys.executable, "-c", BASELINE,
                               "browse", h2.ip], stdout=subprocess.PIPE, text=True) as browser:
            assert browser.stdout is not None
            assert browser.stdout.readline().strip() == "browsing"
            t0 = time.monotonic()
            with subprocess.Popen(["ip", "netns", "exec", h1.ns, sys.executable, "-c", BASELINE,
                                   "register", h1.ip], stdout=subprocess.DEVNULL) as registrar:
                try:
                    assert browser.stdout.readline().strip() == "seen"
                    return time.monotonic() - t0
                finally:
                    registrar.kill()
    finally:
        lan.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    reason = why_no_lan()
    if reason:
        sys.exit(f"bench: {reason}")
    results: dict[str, list[float]] = {}
    baseline: list[float] = []
    with tempfile.TemporaryDirectory(prefix="msbench") as tmp:
        for i in range(args.runs):
            for key, value in one_run(Path(tmp) / f"r{i}").items():
                results.setdefault(key, []).append(value)
            baseline.append(baseline_run(Path(tmp) / f"b{i}"))
    print(f"meshsync membership on a 3-host namespace LAN, {args.runs} runs (seconds)")
    print(f"{'':34} {'median':>8} {'worst':>8}")
    for key, values in results.items():
        print(f"{key:34} {statistics.median(values):8.2f} {max(values):8.2f}")
    print(f"{'baseline: zeroconf default probing':34} {statistics.median(baseline):8.2f} "
          f"{max(baseline):8.2f}   (register -> seen by a browser, 2 hosts)")
    print(f"{'baseline: silence timeout alone':34} {'3.00':>8}           (DESIGN.md liveness rule)")


if __name__ == "__main__":
    main()

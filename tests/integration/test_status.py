"""`status` tells the truth: `scanning` with its progress while a scan runs, `in sync` only once
the index is complete and nothing is needed or held back."""

from __future__ import annotations

import json
from typing import Any

from tests.integration.lan import wait_for


def test_status_says_scanning_with_progress_during_the_first_scan_of_20000_files(make_lan):
    lan = make_lan(1)
    [h1] = lan.hosts
    total = 0
    for d in range(100):
        folder = h1.sync / f"d{d:03}"
        folder.mkdir(parents=True)
        for f in range(200):
            data = f"{d} {f} ".encode() * 200
            (folder / f"f{f:03}.txt").write_bytes(data)
            total += len(data)
    h1.launch()
    seen: list[dict[str, Any]] = []

    def look() -> bool:
        result = h1.cli("status", "--json")
        if result.returncode != 0:
            return False  # not answering yet
        [folder] = json.loads(result.stdout)["folders"]
        seen.append(folder)
        return folder["state"] == "in sync"

    wait_for("the first scan to end", look, 60, every=0.1)
    states = [f["state"] for f in seen]
    assert states[0] == "scanning", states[:5]
    assert states.index("in sync") == len(states) - 1, "never `in sync` before the scan ends"
    # Files are hashed while the walk goes on: what was found grows until the walk ends.
    progress = [f["scan"] for f in seen if f["scan"]]
    assert len(progress) >= 2, "a scan under way shows how far it has come"
    assert all((p["entries_found"], p["bytes_found"]) == (20_100, total)
               for p in progress if not p["walking"])
    found = [(p["entries_found"], p["bytes_found"]) for p in progress]
    done = [(p["entries_done"], p["bytes_done"]) for p in progress]
    assert done == sorted(done), "progress never goes back"
    assert found == sorted(found)
    assert all(0 <= e <= fe <= 20_100 and 0 <= b <= fb <= total
               for (e, b), (fe, fb) in zip(done, found, strict=True))
    assert seen[-1]["scan"] is None

"""Every change of kind converges: file, directory (with contents) and symlink, each into each,
made on any host; what is replaced is kept in versions, and no temporary file is left."""

from __future__ import annotations

import time
from pathlib import Path

from tests.integration.lan import Host, same_trees, wait_for
from tests.integration.test_sync import mesh


def make(root: Path, path: str, kind: str) -> None:
    """Put a `kind` at root/path, replacing whatever is there (as a user would: rm, then make)."""
    target = root / path
    if target.is_symlink() or target.is_file():
        target.unlink()
    elif target.is_dir():
        for inner in sorted(target.rglob("*"), key=lambda p: -len(p.parts)):
            inner.unlink() if inner.is_symlink() or inner.is_file() else inner.rmdir()
        target.rmdir()
    if kind == "file":
        target.write_text(f"{path} as a file")
    elif kind == "dir":
        target.mkdir()
        (target / "inside.txt").write_text(f"inside {path}")
    else:
        target.symlink_to(f"../somewhere/{path}")


def kinds(host: Host, paths: list[str]) -> dict[str, str]:
    def kind(p: Path) -> str:
        return "symlink" if p.is_symlink() else "dir" if p.is_dir() else "file"
    return {path: kind(host.sync / path) for path in paths if (host.sync / path).is_symlink()
            or (host.sync / path).exists()}


def temps(host: Host) -> list[str]:
    return [str(p) for p in host.sync.rglob(".meshsync-tmp*")]


def test_every_change_of_kind_made_on_any_host_reaches_the_others(make_lan):
    lan = mesh(make_lan, 3)
    h1, h2, h3 = lan.hosts
    # Each path goes through two kinds after its first: all six changes of kind happen.
    steps = {"a": ("file", "dir", "symlink"), "b": ("dir", "file", "symlink"),
             "c": ("symlink", "dir", "file"), "d": ("file", "symlink", "dir"),
             "e": ("dir", "symlink", "file")}
    paths = sorted(steps)
    for round_, host in enumerate((h1, h2, h3)):
        for path in paths:
            make(host.sync, path, steps[path][round_])
        wanted = {path: steps[path][round_] for path in paths}
        made = time.monotonic()
        wait_for(f"round {round_ + 1} (made on {host.name}) to reach every host", lambda w=wanted:
                 all(kinds(h, paths) == w for h in lan.hosts) and same_trees(lan.hosts), 15)
        # Pushed (periodic catch-up is off), and soon.
        assert time.monotonic() - made < 4, f"round {round_ + 1} took {time.monotonic() - made}"
    for host in lan.hosts:
        assert not temps(host), f"{host.name} shows temporary files"
        assert host.json("status")["folders"][0]["state"] == "in sync"
    # What each change replaced on the hosts that received it is kept.
    kept = {v["path"] for v in h1.json("versions", str(h1.sync))}
    assert {"a", "b/inside.txt", "c"} <= kept, kept

"""Under a random workload, a partition and a crash, every host converges and no last write is lost.

The user's side is seeded: which operation, on which host, with which content, and when the
link is cut and the node killed. How those operations interleave with sync is not, so a seed
replays the same workload, not the same race:

    MESHSYNC_SEED=1234 scripts/test tests/integration/test_random.py
"""

from __future__ import annotations

import contextlib
import os
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from meshsync.core.paths import MARKER, is_temporary
from tests.integration.lan import Host, wait_for
from tests.integration.soak_random import (
    Journal,
    Tree,
    differences,
    digest,
    log_tails,
    temporaries,
    visible,
)
from tests.integration.test_sync import mesh

SEED = int(os.environ.get("MESHSYNC_SEED") or 20240611)
RERUN = f"seed {SEED} (rerun: MESHSYNC_SEED={SEED} scripts/test tests/integration/test_random.py)"
OPS = 300
PAUSE = 0.040  # most a user waits between two operations: changes overlap sync in flight
DIRS = ("a", "b", "c")  # few names, so paths collide across hosts
NAMES = tuple(f"f{i}.txt" for i in range(8))
BIG_ONE_IN = 25  # about one write in this many is a few hundred KB: several blocks to fetch
KINDS = {"create": 35, "edit": 28, "rename": 12, "delete": 15, "edit_twice": 10}
# The errors of a user whose file or directory sync moved, replaced or removed meanwhile.
RACING = (FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError)
NOTICE_EVERY = 0.5  # how often to ask the peers whether they noticed a fault yet
CONVERGE = 90.0
STABLE_FOR = 3.0


def user_files(root: Path) -> list[str]:
    """The files a user sees in the folder (no marker, no temp files), sorted."""
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        if here == root:
            dirnames[:] = [d for d in dirnames if d != MARKER]
        found += [(here / name).relative_to(root).as_posix()
                  for name in filenames if not is_temporary(name)]
    return sorted(found)


def kept(root: Path) -> set[str]:
    """Digests of every file in the folder and in its `.meshsync/versions`, temp files aside."""
    found: set[str] = set()
    for top in (root, root / MARKER / "versions"):
        for dirpath, dirnames, filenames in os.walk(top):
            here = Path(dirpath)
            if here == root:
                dirnames[:] = [d for d in dirnames if d != MARKER]
            for name in filenames:
                path = here / name
                if is_temporary(name) or path.is_symlink():
                    continue
                with contextlib.suppress(FileNotFoundError):
                    found.add(digest(path.read_bytes()))
    return found


class User:
    """The people at the machines: seeded file operations made straight in each host's folder.

    Remembers every content written and every content discarded. A user discards a content
    only by overwriting or deleting a file whose bytes they read just before; a rename moves
    a content and discards nothing.
    """

    def __init__(self, rng: random.Random, hosts: list[Host]) -> None:
        self.rng = rng
        self.hosts = hosts
        self.written: dict[str, str] = {}  # digest -> which operation wrote it
        self.discarded: set[str] = set()
        self.journal = Journal()
        self.done: Counter[str] = Counter()
        self.skipped: Counter[str] = Counter()
        self._ops: dict[str, Callable[[int, Host], None]] = {
            "create": self.create, "edit": self.edit, "rename": self.rename,
            "delete": self.delete, "edit_twice": self.edit_twice}

    def act(self, n: int) -> None:
        """Operation n: a random kind on a random host; skipped if sync raced it."""
        kind = self.rng.choices(list(KINDS), weights=list(KINDS.values()))[0]
        host = self.rng.choice(self.hosts)
        try:
            self._ops[kind](n, host)
        except RACING as e:
            self.skipped[kind] += 1
            self.journal.append(f"op{n} {host.name} {kind}: skipped ({type(e).__name__}: {e})")
        else:
            self.done[kind] += 1

    def create(self, n: int, host: Host) -> None:
        """A new file at a path this host does not have."""
        rel = self._free_path(host)
        path = host.sync / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        data = self._content(n, host)
        with path.open("xb") as f:  # never over a file the user has not read
            f.write(data)
        self._wrote(data, f"op{n} {host.name} create {rel}")

    def edit(self, n: int, host: Host) -> None:
        """New content in one of this host's files."""
        self._edit_at(n, host, self._pick(host))

    def edit_twice(self, n: int, host: Host) -> None:
        """The same path edited on two hosts back to back: concurrent versions."""
        other = self.rng.choice([h for h in self.hosts if h is not host])
        both = sorted(set(user_files(host.sync)) & set(user_files(other.sync)))
        if not both:
            raise FileNotFoundError(f"no file on both {host.name} and {other.name}")
        rel = self.rng.choice(both)
        self._edit_at(n, host, rel)
        self._edit_at(n, other, rel)

    def rename(self, n: int, host: Host) -> None:
        """One of this host's files moved to a new name, maybe into another directory."""
        rel = self._pick(host)
        new = self._free_path(host)
        target = host.sync / new
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():  # sync put one there meanwhile: never rename over an unread file
            raise FileExistsError(f"{new} appeared on {host.name}")
        (host.sync / rel).rename(target)
        self.journal.append(f"op{n} {host.name} rename {rel} -> {new}")

    def delete(self, n: int, host: Host) -> None:
        """One of this host's files, read and then deleted."""
        rel = self._pick(host)
        path = host.sync / rel
        old = path.read_bytes()
        path.unlink()
        self.discarded.add(digest(old))
        self.journal.append(f"op{n} {host.name} delete {rel} (was {self._name(old)})")

    def _edit_at(self, n: int, host: Host, rel: str) -> None:
        path = host.sync / rel
        old = path.read_bytes()
        data = self._content(n, host)
        path.write_bytes(data)
        self.discarded.add(digest(old))
        self._wrote(data, f"op{n} {host.name} edit {rel} (was {self._name(old)})")

    def _pick(self, host: Host) -> str:
        files = user_files(host.sync)
        if not files:
            raise FileNotFoundError(f"{host.name} has no file")
        return self.rng.choice(files)

    def _free_path(self, host: Host) -> str:
        for _ in range(5):
            depth = self.rng.randint(0, 2)
            rel = "/".join([*(self.rng.choice(DIRS) for _ in range(depth)),
                            self.rng.choice(NAMES)])
            if not (host.sync / rel).exists():
                return rel
        raise FileExistsError(f"no free path found on {host.name}")

    def _content(self, n: int, host: Host) -> bytes:
        data = f"op{n} {host.name} {self.rng.getrandbits(64):016x}\n".encode()
        if self.rng.randrange(BIG_ONE_IN) == 0:
            data += self.rng.randbytes(self.rng.randint(100_000, 400_000))
        return data

    def _wrote(self, data: bytes, what: str) -> None:
        self.written[digest(data)] = f"{what} ({len(data)} B)"
        self.journal.append(f"{what} -> {digest(data)[:8]}")

    def _name(self, data: bytes) -> str:
        return self.written.get(digest(data), "?").split(" ", 1)[0] + f" {digest(data)[:8]}"


@dataclass
class Fault:
    """A fault on one host from one operation on, undone at a later one once the others noticed."""

    what: str
    host: Host
    others: list[Host]
    begin_at: int
    end_at: int
    begin: Callable[[], None]
    end: Callable[[], None]
    state: str = "pending"
    last_asked: float = 0.0

    def advance(self, n: int, journal: Journal) -> None:
        """Begin or end the fault if operation n is its time."""
        if self.state == "pending" and n >= self.begin_at:
            self.begin()
            self.state = "on"
            journal.append(f"op{n} {self.host.name}: {self.what} begins")
        elif self.state == "on" and n >= self.end_at and self._ask():
            self.end()
            self.state = "over"
            journal.append(f"op{n} {self.host.name}: {self.what} ends")

    def finish(self, journal: Journal) -> None:
        """End the fault if the workload ran out first."""
        if self.state == "on":
            wait_for(f"the others to notice {self.host.name} {self.what} ({RERUN})",
                     self.noticed, 15)
            self.end()
            self.state = "over"
            journal.append(f"after the workload {self.host.name}: {self.what} ends")

    def noticed(self) -> bool:
        """Whether no other running node sees the host online (a restarted one may not know it)."""
        running = [h for h in self.others if h.proc is not None and h.proc.poll() is None]
        return all(h.peer_states().get(self.host.name) != "online" for h in running)

    def _ask(self) -> bool:
        if time.monotonic() - self.last_asked < NOTICE_EVERY:
            return False
        self.last_asked = time.monotonic()
        return self.noticed()


def faults(rng: random.Random, hosts: list[Host]) -> list[Fault]:
    """One host's link cut and healed, one node killed and restarted, at seeded points."""
    cut, killed = rng.choice(hosts), rng.choice(hosts)
    lan = cut.lan
    cut_at = int(OPS * rng.uniform(0.10, 0.30))
    kill_at = int(OPS * rng.uniform(0.35, 0.55))
    return [
        Fault("link cut", cut, [h for h in hosts if h is not cut], cut_at,
              cut_at + int(OPS * rng.uniform(0.15, 0.30)),
              lambda: lan.cut(cut), lambda: lan.heal(cut)),
        Fault("node killed", killed, [h for h in hosts if h is not killed], kill_at,
              kill_at + int(OPS * rng.uniform(0.15, 0.30)), killed.kill, killed.start),
    ]


def in_sync(host: Host) -> bool:
    """Whether the node reports every folder in sync with nothing left to fetch."""
    return all(f["state"] == "in sync" and f["need_files"] == 0
               for f in host.json("status")["folders"])


def settle(hosts: list[Host], timeout: float) -> Tree | None:
    """The common tree once every host holds it, in sync, for STABLE_FOR s; None on timeout."""
    last: Tree | None = None
    since = 0.0

    def settled() -> Tree | None:
        nonlocal last, since
        try:
            trees = [visible(h) for h in hosts]
        except FileNotFoundError:
            return None  # a file went while we looked: still settling
        common = trees[0] if all(t == trees[0] for t in trees) else None
        if common is None or not all(in_sync(h) for h in hosts):
            last = None
            return None
        if common != last:
            last, since = common, time.monotonic()
        return common if time.monotonic() - since >= STABLE_FOR else None

    try:
        return wait_for("every host to hold the same tree, in sync", settled, timeout, every=0.25)
    except AssertionError:
        return None


def statuses(hosts: list[Host]) -> str:
    """Each node's folder status lines, or why there is none."""
    lines = []
    for h in hosts:
        try:
            folders = h.json("status")["folders"]
        except AssertionError as e:
            lines.append(f"  {h.name}: {e}")
            continue
        lines += [f"  {h.name}: {f['id']} {f['state']}, need {f['need_files']} files"
                  for f in folders]
    return "\n".join(lines)


def test_random_workload_with_a_cut_link_and_a_killed_node_converges_losing_no_last_write(
        make_lan):
    print(RERUN)
    rng = random.Random(SEED)
    lan = mesh(make_lan, 3, push_only=False)  # the whole node, safety net included
    user = User(rng, lan.hosts)
    planned = faults(rng, lan.hosts)
    try:
        for n in range(OPS):
            for fault in planned:
                fault.advance(n, user.journal)
            user.act(n)
            time.sleep(rng.uniform(0, PAUSE))
        for fault in planned:
            fault.finish(user.journal)
        finished = time.monotonic()
        common = settle(lan.hosts, CONVERGE)
        print(f"{OPS} operations in {finished - user.journal.began:.1f} s: done {dict(user.done)},"
              f" skipped {dict(user.skipped)}; settled {time.monotonic() - finished:.1f} s later")
    finally:
        print("journal:\n" + "\n".join(user.journal))

    problems = []
    if common is None:
        problems.append(f"the hosts did not settle on one tree, in sync, within {CONVERGE:.0f} s;"
                        f" paths that differ:\n{differences(lan.hosts, user.written)}\n"
                        f"status:\n{statuses(lan.hosts)}")
    everywhere = set().union(*(kept(h.sync) for h in lan.hosts))
    lost = sorted((what for d, what in user.written.items()
                   if d not in user.discarded and d not in everywhere),
                  key=lambda what: int(what.split(" ", 1)[0][2:]))
    if lost:
        problems.append(f"{len(lost)} of {len(user.written)} contents a user wrote and never"
                        " discarded are in no host's folder nor versions:\n  "
                        + "\n  ".join(lost))
    if common is not None and (left := {h.name: t for h in lan.hosts if (t := temporaries(h))}):
        problems.append("temporary files left behind after settling: " + "; ".join(
            f"{name}: {len(temps)} ({', '.join(temps[:5])}{' …' if len(temps) > 5 else ''})"
            for name, temps in left.items()))
    assert not problems, f"{RERUN}:\n" + "\n".join(problems) + "\n" + log_tails(lan.hosts)

"""Under a random workload and faults, every host converges and no write is lost.

Four hosts. Users create, edit, rename and delete files, rename directories and change what a
path is (a file, a directory with a file in it, a symlink), each on a seeded host; meanwhile
one host's link is cut and healed, one node is killed and restarted, and one host stops
trusting another for a while. Operation n is drawn from (seed, n) alone, so a seed replays the
same workload, not the same race: which path an operation finds depends on what sync did.

    MESHSYNC_SEED=1234 scripts/test tests/integration/test_random.py
    scripts/soak 20           # twenty runs with fresh seeds, beside a busy core

The promise checked: a content a user wrote and never discarded is, at the end, in the common
tree (under some name, or as a conflict copy). A user discards a content only by overwriting
or deleting a file whose bytes they read: then the version replacing it descends from it, and
sync may keep it in versions only. Every other replacement is a concurrent one, and the loser
must be kept as a conflict copy, which syncs like any file. Decided explicitly:
- A rename discards nothing. Racing an edit elsewhere, both stay: the edit under the old name
  (a change beats the rename's delete), the old content under the new one; the editor read
  the old content, so only it counts as discarded, and it survives anyway.
- A user never writes content under a conflict copy's name (see `User._no_copies`).
- An edit written into a file that sync had already set aside is raced (journaled): it need
  only be kept somewhere, versions included. Deletions are exact: the user takes the entry
  out of the folder in one rename before reading it, so they discard what they read.

scripts/test runs it once, with the seed below unless MESHSYNC_SEED says otherwise;
scripts/soak runs it with fresh seeds.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import itertools
import os
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from meshsync.core import conflicts
from meshsync.core.paths import MARKER, is_temporary
from tests.integration.lan import Host, Unsettled, tree, wait_for
from tests.integration.test_sync import mesh

SEED = int(os.environ.get("MESHSYNC_SEED") or 20240611)
RERUN = f"seed {SEED} (rerun: MESHSYNC_SEED={SEED} scripts/test tests/integration/test_random.py)"
HOSTS = 4
OPS = 500
PAUSE = 0.040  # most a user waits between two operations: changes overlap sync in flight
DIRS = ("a", "b", "c")  # few names, so paths collide across hosts
NAMES = tuple(f"f{i}.txt" for i in range(8))
MOVED = ("d", "e", *DIRS)  # what a directory is renamed to (in the top or one of DIRS)
BIG_ONE_IN = 25  # about one write in this many is a few hundred KB: several blocks to fetch
KINDS = {"create": 26, "edit": 22, "edit_twice": 8, "rename": 9, "delete": 10, "rename_dir": 5,
         "file_to_dir": 4, "dir_to_file": 4, "file_to_link": 4, "link_to_file": 4,
         "dir_to_link": 4}
# What the OS says to a user whose file or directory sync moved, replaced or removed meanwhile
# (ELOOP: a symlink where a file was, opened without following it).
RACING = frozenset({errno.ENOENT, errno.EEXIST, errno.ENOTDIR, errno.EISDIR, errno.ELOOP})
NOTICE_EVERY = 0.5  # how often to ask whether a fault took effect yet
CONVERGE = 60.0  # once the workload and the faults are over
STABLE_FOR = 3.0
LOG_TAIL = 40

_libc = ctypes.CDLL(None, use_errno=True)
_AT_FDCWD, _RENAME_NOREPLACE = -100, 1


def digest(data: bytes) -> str:
    """The content digest `tree` uses."""
    return hashlib.sha256(data).hexdigest()


def move(src: Path, dst: Path) -> None:
    """Rename src to dst in one step, failing with FileExistsError rather than replacing
    anything there (renameat2 RENAME_NOREPLACE): a user never renames over an unread file."""
    if _libc.renameat2(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst),
                       _RENAME_NOREPLACE) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), str(src), None, str(dst))


def _entries(root: Path) -> tuple[list[str], list[str], list[str]]:
    """The user's (files, directories, symlinks) in the folder: no marker, no temp files."""
    files: list[str] = []
    dirs: list[str] = []
    links: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        if here == root:
            dirnames[:] = [d for d in dirnames if d != MARKER]
        for name in [*dirnames, *filenames]:
            path = here / name
            if is_temporary(name):
                continue
            rel = path.relative_to(root).as_posix()
            if path.is_symlink():
                links.append(rel)
            elif name in dirnames:
                dirs.append(rel)
            else:
                files.append(rel)
    return sorted(files), sorted(dirs), sorted(links)


def user_files(root: Path) -> list[str]:
    """The regular files a user sees in the folder, conflict copies included, sorted."""
    return _entries(root)[0]


def kept(root: Path) -> dict[str, str]:
    """Digest -> a path holding it, of every file in the folder and in its versions."""
    found: dict[str, str] = {}
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
                    found.setdefault(digest(path.read_bytes()), path.relative_to(root).as_posix())
    return found


class Journal(list[str]):
    """What the users and the faults did, each line stamped with seconds since the start."""

    def __init__(self) -> None:
        super().__init__()
        self.began = time.monotonic()

    def append(self, line: str) -> None:
        """Add a line, stamped."""
        super().append(f"{time.monotonic() - self.began:6.2f} {line}")


class User:
    """The people at the machines: seeded operations made straight in each host's folder.

    Remembers every content written, every content discarded, and every content written into
    a file that sync had already replaced (raced). A user discards a content only by
    overwriting or deleting a file whose bytes they read, and reads exactly what they discard:
    a deletion first moves the entry out of the folder in one rename (to a bin beside it, in
    the host's home), then reads and deletes what it took; an edit reads and writes through one
    open file. Renames move contents and discard nothing, and never replace anything.
    """

    def __init__(self, hosts: list[Host]) -> None:
        self.hosts = hosts
        self.rng = random.Random(SEED)  # drawn again from (seed, n) for each operation
        self.written: dict[str, str] = {}  # digest -> which operation wrote it
        self.discarded: set[str] = set()
        self.raced: set[str] = set()
        self.journal = Journal()
        self.done: Counter[str] = Counter()
        self.skipped: Counter[str] = Counter()
        self._bins = itertools.count()
        self._ops: dict[str, Callable[[int, Host], None]] = {
            "create": self.create, "edit": self.edit, "edit_twice": self.edit_twice,
            "rename": self.rename, "delete": self.delete, "rename_dir": self.rename_dir,
            "file_to_dir": self.file_to_dir, "dir_to_file": self.dir_to_file,
            "file_to_link": self.file_to_link, "link_to_file": self.link_to_file,
            "dir_to_link": self.dir_to_link}

    def act(self, n: int) -> float:
        """Operation n: a kind on a host, drawn from (seed, n); stopped where sync raced it.
        Returns how long the user waits before the next one."""
        self.rng = random.Random(f"{SEED}/{n}")
        kind = self.rng.choices(list(KINDS), weights=list(KINDS.values()))[0]
        host = self.rng.choice(self.hosts)
        try:
            self._ops[kind](n, host)
        except OSError as e:
            if e.errno not in RACING:
                raise
            self.skipped[kind] += 1
            self.journal.append(f"op{n} {host.name} {kind}: stopped ({type(e).__name__}: {e})")
        else:
            self.done[kind] += 1
        return self.rng.uniform(0, PAUSE)

    def create(self, n: int, host: Host) -> None:
        """A new file at a path this host does not have."""
        self._create(n, host, self._free_path(host), "create")

    def edit(self, n: int, host: Host) -> None:
        """New content in one of this host's files."""
        self._edit_at(n, host, self._pick(self._editable(host)))

    def edit_twice(self, n: int, host: Host) -> None:
        """The same path edited on two hosts back to back: concurrent versions."""
        other = self.rng.choice([h for h in self.hosts if h is not host])
        rel = self._pick(sorted(set(self._editable(host)) & set(self._editable(other))))
        self._edit_at(n, host, rel)
        self._edit_at(n, other, rel)

    def rename(self, n: int, host: Host) -> None:
        """One of this host's files moved to a new name, maybe into another directory."""
        rel = self._pick(user_files(host.sync))
        new = self._free_path(host)
        (host.sync / new).parent.mkdir(parents=True, exist_ok=True)
        move(host.sync / rel, host.sync / new)
        self.journal.append(f"op{n} {host.name} rename {rel} -> {new}")

    def rename_dir(self, n: int, host: Host) -> None:
        """One of this host's directories, with all it holds, moved to a new path."""
        rel = self._pick(_entries(host.sync)[1])
        for _ in range(10):
            new = "/".join([*(self.rng.choice(DIRS) for _ in range(self.rng.randint(0, 1))),
                            self.rng.choice(MOVED)])
            if not (new.startswith(f"{rel}/") or os.path.lexists(host.sync / new)):
                break
        else:
            raise FileExistsError(errno.EEXIST, f"no free path to move {rel} to on {host.name}")
        (host.sync / new).parent.mkdir(parents=True, exist_ok=True)
        move(host.sync / rel, host.sync / new)
        self.journal.append(f"op{n} {host.name} rename_dir {rel} -> {new}")

    def delete(self, n: int, host: Host) -> None:
        """One of this host's files, read and then deleted."""
        rel = self._pick(user_files(host.sync))
        self.journal.append(f"op{n} {host.name} delete {rel} ({self._throw_away(host, rel)})")

    def file_to_dir(self, n: int, host: Host) -> None:
        """A file read and deleted, and a directory with a new file in it made in its place."""
        rel = self._pick(user_files(host.sync))
        self.journal.append(f"op{n} {host.name} file_to_dir {rel}: removed"
                            f" ({self._throw_away(host, rel)})")
        (host.sync / rel).mkdir()
        self._create(n, host, f"{rel}/{self.rng.choice(NAMES)}", "file_to_dir")

    def dir_to_file(self, n: int, host: Host) -> None:
        """A directory, all it holds read and deleted, and a new file made in its place."""
        rel = self._pick(self._no_copies(_entries(host.sync)[1]))
        self.journal.append(f"op{n} {host.name} dir_to_file {rel}: removed"
                            f" ({self._throw_away(host, rel)})")
        self._create(n, host, rel, "dir_to_file")

    def file_to_link(self, n: int, host: Host) -> None:
        """A file read and deleted, and a symlink made in its place."""
        self._to_link(n, host, self._pick(user_files(host.sync)), "file_to_link")

    def dir_to_link(self, n: int, host: Host) -> None:
        """A directory, all it holds read and deleted, and a symlink made in its place."""
        self._to_link(n, host, self._pick(_entries(host.sync)[1]), "dir_to_link")

    def link_to_file(self, n: int, host: Host) -> None:
        """A symlink deleted, and a new file made in its place."""
        rel = self._pick(self._no_copies(_entries(host.sync)[2]))
        self.journal.append(f"op{n} {host.name} link_to_file {rel}: removed"
                            f" ({self._throw_away(host, rel)})")
        self._create(n, host, rel, "link_to_file")

    def _to_link(self, n: int, host: Host, rel: str, kind: str) -> None:
        self.journal.append(f"op{n} {host.name} {kind} {rel}: removed"
                            f" ({self._throw_away(host, rel)})")
        target = f"../elsewhere/op{n}"  # dangling: only the link itself syncs
        (host.sync / rel).symlink_to(target)
        self.journal.append(f"op{n} {host.name} {kind} {rel} -> {target}")

    def _create(self, n: int, host: Host, rel: str, kind: str) -> None:
        path = host.sync / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        data = self._content(n, host)
        with path.open("xb") as f:  # never over a file the user has not read
            f.write(data)
        self._wrote(data, f"op{n} {host.name} {kind} {rel}")

    def _edit_at(self, n: int, host: Host, rel: str) -> None:
        """Read the file and write new content into it through one open file, so no version
        sync puts there meanwhile is overwritten unread. If sync replaced the file before the
        write ended, the write went into the file it set aside (versions or a conflict copy):
        that content is raced, and only needs to be kept somewhere."""
        path = host.sync / rel
        data = self._content(n, host)
        with os.fdopen(os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC), "r+b") as f:
            ours = os.fstat(f.fileno())
            old = f.read()
            f.seek(0)
            f.write(data)
            f.truncate()
            f.flush()
            try:
                now = path.lstat()
                raced = (now.st_ino, now.st_dev) != (ours.st_ino, ours.st_dev)
            except (FileNotFoundError, NotADirectoryError):
                raced = True
        self.discarded.add(digest(old))
        what = f"op{n} {host.name} edit {rel} (was {self._name(digest(old))})"
        if raced:
            self.raced.add(digest(data))
            what += " RACED: sync replaced the file while it was written"
        self._wrote(data, what)

    def _throw_away(self, host: Host, rel: str) -> str:
        """Take the entry at rel out of the folder, read and delete it; what it held."""
        gone = self._empty(host, host.sync / rel)
        self.discarded.update(gone)
        if not gone:
            return "no file"
        return "was " + ", ".join(self._name(d) for d in gone[:4]) + (" …" if len(gone) > 4
                                                                       else "")

    def _empty(self, host: Host, path: Path) -> list[str]:
        """Move `path` to the host's bin in one rename, then read and delete what it holds,
        going down a directory the same way; the digests of the files read.

        A pass over a directory repeats until it is empty: a write sync had begun in it
        may land after it was moved. Temporary files are partial versions: not contents.
        """
        bin_ = host.home / "bin" / str(next(self._bins))
        bin_.parent.mkdir(exist_ok=True)
        path.rename(bin_)
        if bin_.is_symlink():
            bin_.unlink()
            return []
        if not bin_.is_dir():
            data = bin_.read_bytes()
            bin_.unlink()
            return [] if is_temporary(path.name) else [digest(data)]
        found: list[str] = []
        while True:
            for entry in sorted(bin_.iterdir()):
                try:
                    found += self._empty(host, entry)
                except FileNotFoundError:
                    continue  # a temporary file sync moved or removed: the next pass looks
            try:
                bin_.rmdir()
            except OSError as e:
                if e.errno != errno.ENOTEMPTY:
                    raise
                continue
            return found

    def _editable(self, host: Host) -> list[str]:
        """This host's files but conflict copies."""
        return self._no_copies(user_files(host.sync))

    def _no_copies(self, paths: list[str]) -> list[str]:
        """The paths a user may write content at: all but conflict copies.

        A losing version of a copy is kept under the copy's tagged name, and a losing version
        of a tagged copy in versions only (the node's rule, not a loss). So no content is
        written under a copy's name (by an edit, or by making a file where a directory or link
        of that name was); a user may still delete a copy, rename it, or make it a directory
        or a link (reading it first: discarding it).
        """
        return [p for p in paths if not conflicts.is_copy(p)]

    def _pick(self, choices: list[str]) -> str:
        if not choices:
            raise FileNotFoundError(errno.ENOENT, "nothing of that kind here")
        return self.rng.choice(choices)

    def _free_path(self, host: Host) -> str:
        for _ in range(10):
            depth = self.rng.randint(0, 2)
            rel = "/".join([*(self.rng.choice(DIRS) for _ in range(depth)),
                            self.rng.choice(NAMES)])
            if not os.path.lexists(host.sync / rel):
                return rel
        raise FileExistsError(errno.EEXIST, f"no free path found on {host.name}")

    def _content(self, n: int, host: Host) -> bytes:
        data = f"op{n} {host.name} {self.rng.getrandbits(64):016x}\n".encode()
        if self.rng.randrange(BIG_ONE_IN) == 0:
            data += self.rng.randbytes(self.rng.randint(100_000, 400_000))
        return data

    def _wrote(self, data: bytes, what: str) -> None:
        self.written[digest(data)] = f"{what} ({len(data)} B)"
        self.journal.append(f"{what} -> {digest(data)[:8]}")

    def _name(self, content: str) -> str:
        return self.written.get(content, "?").split(" ", 1)[0] + f" {content[:8]}"


def up(host: Host) -> bool:
    """Whether the host's node process runs (a killed one does not)."""
    return host.proc is not None and host.proc.poll() is None


@dataclass
class Fault:
    """A fault from one operation on, undone at a later one once it has taken effect."""

    what: str
    host: Host
    begin_at: int
    end_at: int
    begin: Callable[[], None]
    end: Callable[[], str]  # says what it found, for the journal
    noticed: Callable[[], bool]  # whether the fault has taken effect
    state: str = "pending"
    last_asked: float = 0.0

    def advance(self, n: int, journal: Journal) -> None:
        """Begin or end the fault if operation n is its time."""
        if self.state == "pending" and n >= self.begin_at:
            self.begin()
            self.state = "on"
            journal.append(f"op{n} {self.host.name}: {self.what} begins")
        elif self.state == "on" and n >= self.end_at and self._ask():
            self.state = "over"
            journal.append(f"op{n} {self.host.name}: {self.what} ends{self.end()}")

    def finish(self, journal: Journal) -> None:
        """End the fault if the workload ran out first."""
        if self.state == "on":
            wait_for(f"{self.host.name} {self.what} to take effect ({RERUN})", self.noticed, 15)
            self.state = "over"
            journal.append(f"after the workload {self.host.name}: {self.what} ends{self.end()}")

    def _ask(self) -> bool:
        if time.monotonic() - self.last_asked < NOTICE_EVERY:
            return False
        self.last_asked = time.monotonic()
        return self.noticed()


def apart(host: Host, others: list[Host]) -> Callable[[], bool]:
    """Whether no other running node sees the host online (a restarted one may not know it)."""
    return lambda: all(h.peer_states().get(host.name) != "online" for h in others if up(h))


def faults(rng: random.Random, hosts: list[Host]) -> list[Fault]:
    """A node killed and restarted, one host's link cut and healed, and one host that stops
    trusting another and trusts it again, at seeded points (finished in this order)."""
    killed, cut = rng.choice(hosts), rng.choice(hosts)
    doubter, doubted = rng.sample(hosts, 2)
    lan = cut.lan
    kill_at = int(OPS * rng.uniform(0.35, 0.55))
    cut_at = int(OPS * rng.uniform(0.10, 0.30))
    doubt_at = int(OPS * rng.uniform(0.15, 0.50))

    def span() -> int:
        return int(OPS * rng.uniform(0.15, 0.30))

    def restart() -> str:
        killed.start()
        return ""

    def heal() -> str:
        lan.heal(cut)
        return ""

    def trust_again() -> str:
        """Put the key back; say how many versions were held back for want of it."""
        held = ("" if not up(doubter) else
                f" ({held_back(doubter, 'untrusted origin')} versions held back here)")
        doubter.trust(doubted)
        return held

    return [
        Fault("node killed", killed, kill_at, kill_at + span(), killed.kill, restart,
              apart(killed, [h for h in hosts if h is not killed])),
        Fault("link cut", cut, cut_at, cut_at + span(), lambda: lan.cut(cut), heal,
              apart(cut, [h for h in hosts if h is not cut])),
        Fault(f"trust in {doubted.name} removed", doubter, doubt_at, doubt_at + span(),
              lambda: doubter.untrust(doubted), trust_again,
              lambda: not up(doubter) or doubter.peer_states().get(doubted.name) != "online"),
    ]


def folders(host: Host) -> list[dict[str, Any]]:
    """The folders of `status --json`."""
    return list(host.json("status")["folders"])


def in_sync(host: Host) -> bool:
    """Whether the node reports every folder in sync with nothing left to fetch."""
    return all(f["state"] == "in sync" and f["need_files"] == 0 for f in folders(host))


def held_back(host: Host, cause: str | None = None) -> int:
    """How many versions the node holds back (of one cause: of those it lists)."""
    if cause is None:
        return sum(f["held_back_count"] for f in folders(host))
    return sum(1 for f in folders(host) for h in f["held_back"] if h["cause"] == cause)


Tree = dict[str, tuple[str, str, int]]


def visible(host: Host) -> Tree:
    """The host's tree as `tree` sees it, less meshsync's temporary files (checked on their own)."""
    return {p: e for p, e in tree(host.sync).items() if not is_temporary(p.rpartition("/")[2])}


def temporaries(host: Host) -> list[str]:
    """meshsync's temporary files in the host's folder."""
    return sorted(p for p in tree(host.sync) if is_temporary(p.rpartition("/")[2]))


def settle(hosts: list[Host], timeout: float) -> Tree | None:
    """The common tree once every host holds it, in sync, for STABLE_FOR s; None on timeout."""
    last: Tree | None = None
    since = 0.0

    def settled() -> Tree | None:
        nonlocal last, since
        try:
            trees = [visible(h) for h in hosts]
        except Unsettled:
            return None  # a file went or changed while we looked: still settling
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


def differences(hosts: list[Host], written: dict[str, str]) -> str:
    """The paths whose entry differs between hosts, each host's view of them."""
    trees = wait_for("a look at every tree", lambda: _look(hosts), 10)
    lines = []
    for path in sorted(set().union(*trees.values())):
        views = {name: t.get(path) for name, t in trees.items()}
        if len(set(views.values())) > 1:
            shown = ", ".join(f"{name}={_entry(v, written)}" for name, v in views.items())
            lines.append(f"  {path}: {shown}")
    return "\n".join(lines) or "  (none now: the trees agreed, but not stably or not in sync)"


def _look(hosts: list[Host]) -> dict[str, Tree] | None:
    try:
        return {h.name: visible(h) for h in hosts}
    except Unsettled:
        return None  # a file went or changed while we looked


def _entry(entry: tuple[str, str, int] | None, written: dict[str, str]) -> str:
    if entry is None:
        return "absent"
    kind, content, mode = entry
    if kind != "file":
        return f"{kind} {mode:o}"
    return f"[{written.get(content, '?').split(' ', 1)[0]} {content[:8]} {mode:o}]"


def lost_writes(user: User, hosts: list[Host], common: Tree | None) -> list[str]:
    """What a user wrote and never discarded that is not in the common tree (not having
    settled: in no host's tree), each with where it is instead, in order of writing.

    A raced edit (written into a file sync had already set aside) is only required to be kept
    somewhere: in a tree or in versions, on any host.
    """
    trees = [common] if common is not None else list(
        wait_for("a look at every tree", lambda: _look(hosts), 10).values())
    present = {content for t in trees for kind, content, _ in t.values() if kind == "file"}
    missing = [d for d in user.written if d not in user.discarded and d not in present]
    if not missing:
        return []
    found = {h.name: kept(h.sync) for h in hosts}
    lost = []
    for d in missing:
        where = [f"{name}:{places[d]}" for name, places in found.items() if d in places]
        if d in user.raced and where:
            continue
        at = "only at " + ", ".join(where) if where else "nowhere"
        lost.append(f"{user.written[d]} {d[:8]}: {at}")
    return sorted(lost, key=lambda what: int(what.split(" ", 1)[0][2:]))


def statuses(hosts: list[Host]) -> str:
    """Each node's folder status lines, or why there is none."""
    lines = []
    for h in hosts:
        try:
            found = folders(h)
        except AssertionError as e:
            lines.append(f"  {h.name}: {e}")
            continue
        lines += [f"  {h.name}: {f['id']} {f['state']}, need {f['need_files']} files, held back"
                  f" {f['held_back_count']} {[(x['path'], x['cause']) for x in f['held_back']]}"
                  for f in found]
    return "\n".join(lines)


def log_tails(hosts: list[Host]) -> str:
    """The last lines of every node's log (all of them: `lan.logs()`, printed on failure)."""
    return "\n".join(
        f"----- {h.name} ({h.id.short}), last {LOG_TAIL} lines -----\n"
        + "\n".join(h.log.read_text(errors="replace").splitlines()[-LOG_TAIL:])
        for h in hosts)


def test_random_workload_with_a_cut_link_a_killed_node_and_lost_trust_converges_losing_no_write(
        make_lan):
    print(RERUN)
    lan = mesh(make_lan, HOSTS, push_only=False)  # the whole node, safety net included
    user = User(lan.hosts)
    planned = faults(random.Random(SEED), lan.hosts)
    try:
        for n in range(OPS):
            for fault in planned:
                fault.advance(n, user.journal)
            time.sleep(user.act(n))
        for fault in planned:
            fault.finish(user.journal)
        finished = time.monotonic()
        common = settle(lan.hosts, CONVERGE)
        print(f"{OPS} operations in {finished - user.journal.began:.1f} s: done {dict(user.done)},"
              f" skipped {dict(user.skipped)}; raced {len(user.raced)};"
              f" settled {time.monotonic() - finished:.1f} s later")
    finally:
        print("journal:\n" + "\n".join(user.journal))

    problems = []
    if common is None:
        problems.append(f"the hosts did not settle on one tree, in sync, within {CONVERGE:.0f} s;"
                        f" paths that differ:\n{differences(lan.hosts, user.written)}\n"
                        f"status:\n{statuses(lan.hosts)}")
    elif held := {h.name: n for h in lan.hosts if (n := held_back(h))}:
        problems.append(f"versions still held back after settling: {held}")
    if lost := lost_writes(user, lan.hosts, common):
        problems.append(f"{len(lost)} of {len(user.written)} contents a user wrote and never"
                        " discarded are not in the final tree:\n  " + "\n  ".join(lost))
    if common is not None and (left := {h.name: t for h in lan.hosts if (t := temporaries(h))}):
        problems.append("temporary files left behind after settling: " + "; ".join(
            f"{name}: {len(temps)} ({', '.join(temps[:5])}{' …' if len(temps) > 5 else ''})"
            for name, temps in left.items()))
    assert not problems, f"{RERUN}:\n" + "\n".join(problems) + "\n" + log_tails(lan.hosts)

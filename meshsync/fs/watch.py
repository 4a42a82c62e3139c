"""Change hints from the operating system: which paths under a folder may have changed.

watchfiles places its watches by walking the whole tree while it holds the GIL: about 0.6 s
per 100,000 files from a cold cache, and more on bigger trees, during which a node doing it
itself would neither beat nor answer, and its peers would count it down. So the watching runs
in a child process (`serve`) that writes what it sees to a pipe. `meshsync start` starts it
first thing (`start_early`), so that its walk goes on while the node starts.

watchfiles has no call that sleeps until something happens: its `watch` wakes every step to
look, 100 times a second at a 10 ms step, and each wakeup costs about 35 µs of CPU on a VM, most
of an idle node's budget. So the child asks the kernel for a SIGIO whenever an event reaches
watchfiles' own inotify descriptor (O_ASYNC), sleeps until one comes, and steps only then, until
a short quiet. Where no such descriptor is found, it steps all the time, as watchfiles does.

Records on the child's stdout, each ended by a NUL (no path holds one): `R` once the watches
are in place, `P<path>` a changed path, `B` the end of a batch, `E<errno> <message>` the
watch failed. The child ends when its stdin closes, so it never outlives the node.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path
from typing import Protocol

from meshsync.core.errors import WireError
from meshsync.core.paths import RelPath, check_path

DEBOUNCE_MS = 200  # how long a burst of changes may gather into one batch
STEP_MS = 5  # while events come: how soon a change is seen (one step), and settled (two)
POLL_STEP_MS = 10  # the step without signals, all the time: how soon a change is seen
QUIET_MS = 100  # a round ends this long after the last signal, reported or not (see _Round)
LATE_S = 1.0  # after a round, one more this late, signal or not: watchfiles may lag the kernel
RECORD_LIMIT = 64 << 10  # bytes: a path is at most PATH_MAX (4 KiB) on Linux


async def watch(root: Path, ready: Callable[[], object] = lambda: None,
                ) -> AsyncIterator[set[RelPath]]:
    """Batches of paths under the absolute `root` that may have changed, until cancelled;
    `ready()` once the watches are in place, so a change made after it is reported.

    Paths are hints to stat, not events; meshsync's own are left out. A path that is now a
    directory must be scanned whole: a populated tree moved in is reported as itself alone.
    OSError if it cannot be watched.
    """
    if not root.is_absolute():
        raise ValueError(f"watch needs an absolute folder path, not {root}")
    top = f"{root}/"
    child: _Child
    if (early := _early.pop(str(root), None)) is not None:
        child = await _Adopted.of(early)
    else:
        child = await asyncio.create_subprocess_exec(
            *_command(root), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            limit=RECORD_LIMIT)
    records = child.stdout
    try:
        batch: set[RelPath] = set()
        while records is not None:
            try:
                record = await records.readuntil(b"\0")
            except asyncio.IncompleteReadError:
                raise OSError(f"the watching process ended ({await child.wait()})") from None
            except asyncio.LimitOverrunError:
                raise OSError("the watching process wrote a record too long to be ours") from None
            tag, body = record[:1], record[1:-1]
            if tag == b"P":
                if (rel := _relative(top, os.fsdecode(body))) is not None:
                    batch.add(rel)
            elif tag == b"B":
                if batch:
                    yield batch
                batch = set()
            elif tag == b"R":
                ready()
            elif tag == b"E":
                code, _, message = body.decode(errors="replace").partition(" ")
                raise OSError(int(code) if code.isdigit() else 0, message)
    finally:
        if child.returncode is None:
            child.kill()
        await child.wait()


def start_early(roots: Iterable[Path]) -> None:
    """Start watching each folder (absolute, resolved) now, for its first `watch` to take on.

    Called first thing by `meshsync start`: placing the watches walks the whole tree (about a
    second per 100,000 files from a cold cache), and this way that walk goes on while the node
    imports its libraries and opens its index, instead of after. A child nobody takes on ends
    with the node (its stdin closes), or at `stop_early`.
    """
    for root in roots:
        if root.is_absolute() and root.is_dir() and str(root) not in _early:
            _early[str(root)] = subprocess.Popen(
                _command(root), stdin=subprocess.PIPE, stdout=subprocess.PIPE)


def stop_early(root: Path) -> None:
    """End the early watch of a folder not to be watched as it was at start (it had no
    marker: a disk not mounted, whose mount point a later watch must not be left on)."""
    if (early := _early.pop(str(root), None)) is not None:
        early.kill()
        early.wait()
        for pipe in (early.stdin, early.stdout):
            if pipe is not None:
                pipe.close()


_early: dict[str, subprocess.Popen[bytes]] = {}  # root -> its watching child, started early


class _Child(Protocol):
    """What `watch` uses of its child: asyncio's Process, or a child started early."""

    stdout: asyncio.StreamReader | None

    @property
    def returncode(self) -> int | None: ...

    def kill(self) -> None: ...

    async def wait(self) -> int: ...


class _Adopted:
    """A child started early (a Popen), read on the loop as asyncio's own children are."""

    def __init__(self, process: subprocess.Popen[bytes], stdout: asyncio.StreamReader,
                 pipe: asyncio.BaseTransport) -> None:
        self._process, self._pipe = process, pipe
        self.stdout: asyncio.StreamReader | None = stdout

    @classmethod
    async def of(cls, process: subprocess.Popen[bytes]) -> _Adopted:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=RECORD_LIMIT, loop=loop)
        if process.stdout is None:
            raise OSError("the watching process started early has no pipe to read")
        pipe, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader),
                                               process.stdout)
        return cls(process, reader, pipe)

    @property
    def returncode(self) -> int | None:
        return self._process.poll()

    def kill(self) -> None:
        self._process.kill()

    async def wait(self) -> int:
        code = await asyncio.to_thread(self._process.wait)
        self._pipe.close()  # its stdout, read through the transport
        if self._process.stdin is not None:
            self._process.stdin.close()
        return code


def _command(root: Path) -> list[str]:
    return [sys.executable, "-P", "-c", _CHILD, str(root), *sys.path]


def _relative(top: str, path: str) -> RelPath | None:
    if not path.startswith(top):
        return None
    try:
        return check_path(path[len(top):])  # refuses the marker tree and temporary files
    except WireError:
        return None


# The child: the node's own code (its sys.path, never the working directory: -P).
_CHILD = ("import sys; sys.path[:] = sys.argv[2:]; "
          "from meshsync.fs.watch import serve; serve(sys.argv[1])")


def serve(root: str) -> None:
    """The child's work: watch `root`, writing records to stdout, until stdin closes."""
    try:
        _serve(root)
    except BrokenPipeError:  # the node went while we wrote: nothing left to flush to it
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _serve(root: str) -> None:
    from watchfiles._rust_notify import RustNotify  # its own loop, to say when it is ready

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C is the node's to handle
    # Blocked before any thread starts, watchfiles' too, so that every thread inherits the mask
    # and a SIGIO waits for the loop below; should one reach a thread all the same, it does
    # nothing (by default it would end the process).
    signal.signal(signal.SIGIO, lambda *_: None)
    signal.pthread_sigmask(signal.SIG_BLOCK, _SIGIO)
    out = sys.stdout.buffer
    stop = threading.Event()
    top = f"{root}/"

    def until_the_node_goes() -> None:
        sys.stdin.buffer.read()
        stop.set()
        os.kill(os.getpid(), signal.SIGIO)  # the loop may be waiting for one

    threading.Thread(target=until_the_node_goes, daemon=True).start()
    try:
        with RustNotify([root], False, False, 0, True, True) as notify:
            signalled = _signal_on_events()
            out.write(b"R\0")
            out.flush()
            woken = True  # the first round at once: events before the signals were asked for
            while not stop.is_set():
                round_ = _Round(stop)
                try:
                    changes = (notify.watch(DEBOUNCE_MS, STEP_MS, 0, round_) if signalled
                               else notify.watch(DEBOUNCE_MS, POLL_STEP_MS, 0, stop))
                except _Quiet:
                    changes = None
                if isinstance(changes, set):
                    # Each path once (a file written shows as added, modified, deleted...), and
                    # none of meshsync's own: a file synced in is a temp file's few events and
                    # its rename, which the node would otherwise sift, holding its GIL.
                    paths = {path for _, path in changes}
                    out.write(b"".join(b"P" + os.fsencode(path) + b"\0" for path in paths
                                       if _relative(top, path) is not None))
                    out.write(b"B\0")
                    out.flush()
                if signalled:
                    # The kernel signals once an event is queued, before watchfiles reads it: a
                    # round that ended without the change it woke for gets one more, LATE_S on.
                    late = woken or round_.heard or isinstance(changes, set)
                    woken = (signal.sigtimedwait(_SIGIO, LATE_S) if late
                             else signal.sigwaitinfo(_SIGIO)) is not None
    except BrokenPipeError:
        raise
    except Exception as e:  # watchfiles' own errors too: the node learns each in one line
        code = getattr(e, "errno", None) or _ERRNO.get(type(e), 0)
        message = " ".join((getattr(e, "strerror", None) or str(e) or type(e).__name__).split())
        out.write(f"E{code} {message}".encode(errors="replace").replace(b"\0", b"") + b"\0")
        out.flush()


_SIGIO = {signal.SIGIO}


class _Quiet(Exception):
    """A round heard no event for QUIET_MS: it ends, and watchfiles keeps what it gathered."""


class _Round:
    """What watchfiles asks each step whether to stop (its stop event): yes once the node goes.

    A round must also end once events stop coming (a read, say, signals and changes nothing),
    so that the child sleeps. watchfiles' own ways to end a round, its time-out and its stop
    event, empty its set as they return: a change it recorded in the instant after its last
    look would be lost, and the folder would look in sync without it until the next full
    rescan. An exception raised here ends the round and leaves the set whole, so a round
    that heard nothing for QUIET_MS ends by `_Quiet`; what it left is the next round's.
    """

    def __init__(self, stop: threading.Event) -> None:
        self._stop = stop
        self._until = time.monotonic() + QUIET_MS / 1000
        self.heard = False  # a signal came during the round: the next one is due soon

    def is_set(self) -> bool:
        """Whether the node went; `_Quiet` once no event came for QUIET_MS."""
        if self._stop.is_set():
            return True
        now = time.monotonic()
        if signal.sigtimedwait(_SIGIO, 0) is not None:
            self.heard = True
            self._until = now + QUIET_MS / 1000
        elif now > self._until:
            raise _Quiet
        return False


def _signal_on_events() -> bool:
    """Have the kernel send this process SIGIO whenever an event reaches an inotify descriptor
    of ours (watchfiles' own: it opens the only one); whether it will."""
    signalled = False
    try:
        links = list(Path("/proc/self/fd").iterdir())
    except OSError:  # no /proc: not Linux
        return False
    for link in links:
        try:
            if str(link.readlink()) != "anon_inode:inotify":
                continue
            fd = int(link.name)
            fcntl.fcntl(fd, fcntl.F_SETOWN, os.getpid())
            fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_ASYNC)
        except OSError:  # closed by now (the listing's own), or not ours to change
            continue
        signalled = True
    return signalled


_ERRNO: dict[type[Exception], int] = {  # watchfiles raises these without an errno
    FileNotFoundError: errno.ENOENT, PermissionError: errno.EACCES}

"""Trusted peer keys: authorized_keys-style files, re-read whenever the user edits them.

A line trusts its key for sync unless its options give the key for something else; `from=` and
`expiry-time=` narrow that trust as sshd does, and an option we cannot read refuses the line.
A file (or its directory) that someone else could write is ignored, as sshd's StrictModes.
In meshsync's own file, `meshsync-introducer` also trusts the keys that peer announces.
"""

from __future__ import annotations

import logging
import os
import re
import stat
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from ipaddress import IPv4Network, IPv6Network, ip_address, ip_network
from pathlib import Path

from meshsync.core.ids import NodeId
from meshsync.core.wire import MAX_MEMBER_KEYS
from meshsync.crypto.keys import (
    KEY_TYPES,
    load_public_blob,
    parse_public_line,
    public_key_line,
    replace_private,
)

log = logging.getLogger("meshsync.trust")

RACY_NS = 2_000_000_000

# sshd's options (names are case-insensitive) and whether each takes a ="value".
_FEATURES = ("port-forwarding", "agent-forwarding", "x11-forwarding", "pty", "user-rc",
             "touch-required", "verify-required")
_KNOWN = {
    **{prefix + name: False for name in _FEATURES for prefix in ("", "no-")},
    "restrict": False, "cert-authority": False,
    **dict.fromkeys(("command", "principals", "tunnel", "from", "expiry-time", "environment",
                     "permitopen", "permitlisten"), True),
}
# The key was given to sshd for one command, a tunnel or a restricted login, or it is a CA key:
# none of these is "this machine may sync". Every other option limits SSH features we never use.
_OTHER_USE = frozenset({"command", "restrict", "cert-authority", "principals", "tunnel"})
# Ours alone, so only in trusted_keys: sshd refuses a line with an option it does not know, and
# the same line in authorized_keys would silently stop that key logging in. There it refuses
# the line for sync too, as any option we cannot read does.
INTRODUCER = "meshsync-introducer"
# One option: a name, maybe ="value" in which only \" escapes (as sshd's opt_dequote), then a
# comma or the end of the field. The possessive repeat keeps the match linear on hostile input.
_OPTION = re.compile(r'([A-Za-z0-9-]+)(?:="((?:\\"|[^"])*+)")?(,?)')
_EXPIRY = re.compile(r"([0-9]{8}(?:[0-9]{4}(?:[0-9]{2})?)?)(z|utc)?", re.IGNORECASE)

Network = IPv4Network | IPv6Network
_MAPPED = IPv6Network("::ffff:0:0/96")


@dataclass(frozen=True, slots=True)
class PublicKey:
    """A public key blob with its free-text comment."""

    blob: bytes
    comment: str

    @property
    def line(self) -> str:
        """The key as an authorized_keys/.pub line."""
        return public_key_line(self.blob, self.comment)


@dataclass(frozen=True, slots=True)
class Pattern:
    """One entry of a `from=` list: a wildcard on the address text and, if it is one, a network."""

    text: str
    negated: bool
    network: Network | None


@dataclass(frozen=True, slots=True)
class Grant:
    """The sync trust one line gives its key: from `sources` (None: anywhere), until `expires`."""

    key: PublicKey
    sources: tuple[Pattern, ...] | None = None
    expires: float | None = None  # wall seconds; the line is void once the clock passes them
    introducer: bool = False  # the peer's word on other keys counts too

    def current(self, when: float) -> bool:
        """Whether the line has not expired at wall time `when`."""
        return self.expires is None or when <= self.expires

    def allows(self, address: str, when: float) -> bool:
        """Whether a peer at IP `address` may sync with this key at wall time `when`."""
        return self.current(when) and (self.sources is None or matches(self.sources, address))


def parse_patterns(text: str) -> tuple[Pattern, ...]:
    """A `from=` pattern list (UseDNS no); ValueError for an empty entry or an invalid network."""
    return tuple(map(_pattern, text.split(",")))


def _pattern(entry: str) -> Pattern:
    negated = entry.startswith("!")
    text = entry[1:] if negated else entry
    # sshd would read " 10.0.0.5" as a name that never matches: after a comma's space, a
    # negation would silently allow what it names. Refuse the line instead.
    if not text or any(c.isspace() for c in text):
        raise ValueError(f"bad from= entry {entry!r}")
    network = None
    if "/" in text:
        address, _, bits = text.partition("/")
        if not (bits.isascii() and bits.isdigit()):
            raise ValueError(f"bad mask length in {entry!r}")
        network = ip_network(f"{address}/{int(bits)}")  # ValueError if host bits are set
    else:
        with suppress(ValueError):
            network = ip_network(text)  # a bare address: compared as one, whatever its spelling
    if network is not None and network.version == 6 and network.subnet_of(_MAPPED):
        # Peers are judged as IPv4 (below); so is a network written in the mapped form.
        low = int(network.network_address) & 0xFFFF_FFFF
        network = IPv4Network((low, network.prefixlen - 96))
    return Pattern(text.lower(), negated, network)


def matches(patterns: tuple[Pattern, ...], address: str) -> bool:
    """Whether IP `address` matches some entry and no negated one; never for a host name."""
    try:
        ip = ip_address(address)
    except ValueError:
        return False
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # a dual-stack socket's view of an IPv4 peer, as sshd normalises it
    text = str(ip).lower()
    hits = [p for p in patterns
            if (p.network is not None and ip in p.network) or wildcard(text, p.text)]
    return bool(hits) and not any(p.negated for p in hits)


def wildcard(text: str, pattern: str) -> bool:
    """sshd's match_pattern: `*` is any run of characters, `?` any one, nothing else special."""
    t = p = 0
    star, resume = -1, 0
    while t < len(text):
        if p < len(pattern) and pattern[p] in ("?", text[t]):
            t, p = t + 1, p + 1
        elif p < len(pattern) and pattern[p] == "*":
            star, resume, p = p, t, p + 1
        elif star >= 0:  # let the last star take one more character, and retry from there
            resume += 1
            t, p = resume, star + 1
        else:
            return False
    return pattern[p:].strip("*") == ""


def parse_expiry(text: str) -> float:
    """An `expiry-time=`: YYYYMMDD[HHMM[SS]] local time, or UTC with a Z; ValueError if not."""
    m = _EXPIRY.fullmatch(text)
    if m is None:
        raise ValueError(f"bad expiry-time {text!r}")
    d = m[1].ljust(14, "0")
    # ValueError for a month 13, a February 30th...
    moment = datetime(int(d[:4]), int(d[4:6]), int(d[6:8]), int(d[8:10]), int(d[10:12]),
                      int(d[12:]))
    try:
        seconds = (moment.replace(tzinfo=UTC) if m[2] else moment).timestamp()
    except (OverflowError, OSError):
        raise ValueError(f"expiry-time out of range: {text!r}") from None
    if seconds <= 0:
        raise ValueError(f"expiry-time before 1970: {text!r}")
    return seconds


def _split_options(line: str) -> tuple[list[tuple[str, str | None]], str]:
    """The options in front of a key, and the rest of the line; ValueError if unreadable."""
    options: list[tuple[str, str | None]] = []
    pos = 0
    more = True
    while more:
        m = _OPTION.match(line, pos)
        if m is None:
            raise ValueError("unreadable options")
        options.append((m[1].lower(), None if m[2] is None else m[2].replace('\\"', '"')))
        pos, more = m.end(), bool(m[3])
    if line[pos : pos + 1] not in (" ", "\t"):
        raise ValueError("unreadable options")
    return options, line[pos:].lstrip(" \t")


def _grant(key: PublicKey, options: list[tuple[str, str | None]], ours: bool) -> Grant | None:
    """What `options` leave of sync trust in `key`; ValueError for one sshd would refuse, or
    for `meshsync-introducer` outside our own file."""
    usable = True
    sources: tuple[Pattern, ...] | None = None
    expires: float | None = None
    introducer = False
    for name, value in options:
        takes_value = False if ours and name == INTRODUCER else _KNOWN.get(name)
        if takes_value is None or takes_value != (value is not None):
            raise ValueError(f"unknown option {name}")
        if name == INTRODUCER:
            introducer = True
        elif name in _OTHER_USE:
            usable = False
        elif name == "from" and value is not None:
            if sources is not None:
                raise ValueError("more than one from=")
            sources = parse_patterns(value)
        elif name == "expiry-time" and value is not None:
            at = parse_expiry(value)
            expires = at if expires is None else min(expires, at)
    return Grant(key, sources, expires, introducer) if usable else None


def parse_grant(line: str, ours: bool = False) -> Grant | None:
    """The sync trust an authorized_keys line gives (`ours`: a trusted_keys line, which may
    mark an introducer); None for comments, junk and refused lines."""
    line = line.strip()
    if not line or line.startswith("#"):
        return None
    options: list[tuple[str, str | None]] = []
    try:
        if line.split(None, 1)[0] not in KEY_TYPES:
            options, line = _split_options(line)
        blob, comment = parse_public_line(line)
        return _grant(PublicKey(blob, comment), options, ours)
    except ValueError:
        return None


def parse_key_line(line: str) -> PublicKey | None:
    """The key of a line that trusts it for sync from anywhere, for good; None for any other."""
    grant = parse_grant(line)
    if grant is None or grant.sources is not None or grant.expires is not None:
        return None
    return grant.key


def _unsafe(path: Path, st: os.stat_result, parent: os.stat_result, uid: int) -> str | None:
    """Why sshd's StrictModes would refuse this file, with the fix; None if it would not."""
    if not stat.S_ISREG(st.st_mode):
        return "it is not a regular file"
    for what, where, owner, mode in (("it", path, st.st_uid, st.st_mode),
                                     ("its directory", path.parent, parent.st_uid, parent.st_mode)):
        if owner not in (uid, 0):
            return f"{what} is owned by uid {owner}, not by you or root; fix: chown {uid} {where}"
        if mode & 0o022:
            return f"{what} is writable by group or others; fix: chmod go-w {where}"
    return None


Grants = Mapping[bytes, tuple[Grant, ...]]
Stamp = tuple[int, ...]


def _usable(blob: bytes) -> bool:
    """Whether a key a peer announced is a key at all: the wire checked its shape, this also
    that an ECDSA point is on its curve."""
    try:
        load_public_blob(blob)
    except ValueError:
        return False
    return True


class TrustStore:
    """Trusted keys from several files; `writable` receives keys added at runtime and marks
    introducers, whose announced keys are trusted (in memory) while they announce them."""

    def __init__(
        self, paths: list[Path], writable: Path, wall: Callable[[], float] = time.time
    ) -> None:
        self._paths = list(dict.fromkeys([*paths, writable]))
        self._writable = writable
        self._wall = wall
        self._cache: dict[Path, tuple[Stamp, Grants]] = {}
        self._warned: dict[Path, Stamp] = {}
        self._lock = threading.Lock()
        # Introducer key -> the keys it announced last. Replaced, never changed in place: the
        # folders' threads read it without the lock.
        self._introduced: dict[bytes, frozenset[bytes]] = {}

    def _load(self, path: Path) -> Grants:
        try:
            # Looked up many times a second: two stat calls, unless the path is a link (then
            # the directory to judge is its target's, as sshd resolves it).
            st = path.lstat()
            real = path
            if stat.S_ISLNK(st.st_mode):
                st, real = path.stat(), Path(os.path.realpath(path))
            parent = real.parent.stat()
        except OSError:
            return {}
        # Mode and owners are in the stamp: a chmod or chown is a change, though no mtime moves.
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino, st.st_mode, st.st_uid,
                 parent.st_mode, parent.st_uid)
        problem = _unsafe(real, st, parent, os.geteuid())
        if problem is not None:
            if self._warned.get(path) != stamp:
                self._warned[path] = stamp
                log.warning("ignoring the keys in %s: %s", path, problem)
            return {}
        self._warned.pop(path, None)
        cached = self._cache.get(path)
        # Timestamps are coarse (ms ticks): a same-size edit right after our read would keep
        # the old stamp, so a file touched in the last seconds is never served from cache.
        settled = abs(time.time_ns() - st.st_mtime_ns) > RACY_NS  # a future mtime too
        if cached is not None and cached[0] == stamp and settled:
            return cached[1]
        try:
            text = path.read_text(errors="replace")
        except OSError:
            return {}
        grants: dict[bytes, tuple[Grant, ...]] = {}
        ours = path == self._writable
        for grant in filter(None, (parse_grant(line, ours) for line in text.splitlines())):
            grants[grant.key.blob] = (*grants.get(grant.key.blob, ()), grant)
        self._cache[path] = (stamp, grants)
        return grants

    def _grants(self, blob: bytes) -> list[Grant]:
        with self._lock:
            return [g for path in self._paths for g in self._load(path).get(blob, ())]

    def stamp(self) -> tuple[Stamp | None, ...]:
        """What the files are now, cheaply (stat only): a change means trust may have changed."""
        stamps: list[Stamp | None] = []
        for path in self._paths:
            try:
                st = path.stat()
            except OSError:
                stamps.append(None)
                continue
            stamps.append((st.st_mtime_ns, st.st_size, st.st_ino, st.st_mode, st.st_uid))
        return tuple(stamps)

    def is_trusted(self, blob: bytes, address: str) -> bool:
        """Whether a peer at IP `address` may sync with this key: as the lines that list it
        say, else if an introducer announces it."""
        when = self._wall()
        grants = self._grants(blob)
        if grants:
            return any(g.allows(address, when) for g in grants)
        # An introduced node is trusted wherever it is (its introducer's from= says where the
        # introducer may connect from, not the others); Syncthing adds them as dynamic too.
        return bool(self.introducers_of(blob))

    def knows(self, blob: bytes) -> bool:
        """Whether this key is trusted, whatever a line's `from=`: for records relayed."""
        grants = self._grants(blob)
        if grants:
            when = self._wall()
            return any(g.current(when) for g in grants)
        return bool(self.introducers_of(blob))

    def known_keys(self, *, introduced: bool = True) -> list[bytes]:
        """Every key an unexpired line trusts, whatever its `from=`, and those introduced (if
        `introduced`: without them, the keys this node may introduce to others)."""
        when = self._wall()
        with self._lock:
            lines: dict[bytes, list[Grant]] = {}
            for path in self._paths:
                for blob, grants in self._load(path).items():
                    lines.setdefault(blob, []).extend(grants)
        found = [b for b, grants in lines.items() if any(g.current(when) for g in grants)]
        if introduced:
            found += [b for introducer, keys in self._introduced.items()
                      if self.is_introducer(introducer) for b in keys if b not in lines]
        return list(dict.fromkeys(found))

    def is_introducer(self, blob: bytes) -> bool:
        """Whether an unexpired line of trusted_keys marks this key `meshsync-introducer`.

        Only lines count, never an introduction: an introduced node introduces no one.
        """
        when = self._wall()
        return any(g.introducer and g.current(when) for g in self._grants(blob))

    def introducers_of(self, blob: bytes) -> list[bytes]:
        """The introducers whose word alone trusts this key, lowest ID first; none for a key a
        line lists (the user's own lines, narrowed or expired, decide it)."""
        introducers = self._introduced  # one read: see __init__
        announcing = [i for i, keys in introducers.items() if blob in keys]
        if not announcing or self._grants(blob):
            return []
        return sorted((i for i in announcing if self.is_introducer(i)), key=NodeId.of_key)

    def introduce(self, introducer: bytes, keys: Iterable[bytes]) -> frozenset[bytes]:
        """Take the keys a peer announces now: trusted while it announces them, if it is an
        introducer (else nothing it said counts). The keys it announces newly or no longer."""
        before = self._introduced.get(introducer, frozenset())
        now: frozenset[bytes] = frozenset()
        if self.is_introducer(introducer):
            wanted = list(dict.fromkeys(keys))[:MAX_MEMBER_KEYS]
            now = frozenset(k for k in wanted if k in before or _usable(k))
        if now == before:
            return frozenset()
        introduced = {i: k for i, k in self._introduced.items() if i != introducer}
        if now:
            introduced[introducer] = now
        self._introduced = introduced
        return before ^ now

    def holding(self, blob: bytes) -> list[Path]:
        """The files with a line that names this key (whatever the line allows)."""
        with self._lock:
            return [path for path in self._paths if blob in self._load(path)]

    def remove(self, blob: bytes) -> bool:
        """Take every line naming this key out of the writable file, in one rename (a running
        node never reads it half written); False if none did. Other lines stay as they are."""
        with self._lock:
            try:
                text = self._writable.read_text(errors="surrogateescape")
            except FileNotFoundError:
                return False
            lines = text.splitlines(keepends=True)
            kept = [line for line in lines
                    if (grant := parse_grant(line, ours=True)) is None or grant.key.blob != blob]
            if len(kept) == len(lines):
                return False
            replace_private(self._writable, "".join(kept).encode(errors="surrogateescape"))
        return True

    def add(self, key: PublicKey, *, introducer: bool = False) -> bool:
        """Append key to the writable file, marked introducer if asked; False if a line trusts
        it already, without limits (and marks it, if asked)."""
        with self._lock:
            for path in self._paths:
                grants = self._load(path).get(key.blob, ())
                if any(g.sources is None and g.expires is None
                       and (g.introducer or not introducer)
                       for g in grants):
                    return False
            self._writable.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(self._writable, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
            with os.fdopen(fd, "r+b") as f:
                # A hand-edited file may lack a final newline; don't glue our key onto its last.
                glue = b"\n" if f.read()[-1:] not in (b"", b"\n") else b""
                mark = f"{INTRODUCER} " if introducer else ""
                f.write(glue + (mark + key.line).encode() + b"\n")
        return True

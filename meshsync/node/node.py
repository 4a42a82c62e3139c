"""The node: builds the parts, owns the task group, and routes events between adapters and core."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import ipaddress
import logging
import os
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from meshsync.control import server as control_server
from meshsync.control.protocol import ControlError
from meshsync.core import election as el
from meshsync.core.errors import Refused, WireError
from meshsync.core.ids import NodeId
from meshsync.core.keyblob import MAX_KEY_BYTES
from meshsync.core.membership import Peer, Roster, clock_fix
from meshsync.core.paths import RelPath, check_path
from meshsync.core.signing import MAX_OFFSET
from meshsync.core.throttle import Throttle, shown
from meshsync.core.wire import (
    MAX_MEMBER_ADDRESSES,
    MAX_MEMBER_KEYS,
    BlockRequest,
    FolderId,
    Hello,
    IndexRequest,
    MemberAddress,
    Progress,
    Records,
    check_address,
)
from meshsync.crypto import sshsig, tls
from meshsync.crypto.keys import Signer, public_key_line
from meshsync.crypto.trust import PublicKey, TrustStore, parse_key_line
from meshsync.fs import versions
from meshsync.net.client import (
    PeerClient,
    PeerClockOffset,
    PeerClosed,
    PeerError,
    PeerMismatch,
    PeerUnreachable,
    Reply,
)
from meshsync.net.discovery import Advert, Discovery, own_addresses, own_networks
from meshsync.net.listener import Limits, Listener, raise_open_file_limit, server_context
from meshsync.net.server import bind, make_app, serve
from meshsync.node import keeper
from meshsync.node.clock import Clock
from meshsync.node.config import Config, control_socket
from meshsync.node.folder import FolderSync, new_epoch
from meshsync.node.judge import Origin
from meshsync.node.state import secure_state_dir
from meshsync.store.index import Index

log = logging.getLogger("meshsync")

HEARTBEAT = 1.0
TICK = 0.2
HELLO_TIMEOUT = 1.0
HINT_RETRY = 5.0  # an advertised address that did not answer is tried again after this long,
HINT_RETRY_MAX = 300.0  # doubling each time up to this
MAX_HINTS = 64  # advertised addresses remembered (--peer addresses come on top)
NEW_HINTS_PER_SECOND = 16  # new addresses are first dialled at most this often, however many
HINTS_DIALLED_AT_ONCE = 16
ADDRESSES_PER_ADVERT = 4
STRANGER_EVERY = 10.0  # how often an untrusted node is checked again (trust may have changed)
PROGRESS_EVERY = 2.0  # how often our folders' progress is read for hellos
MAX_ORIGINS = 64  # untrusted origins of records remembered, so they can be trusted by ID
MAX_RELAYS = 8  # notices the coordinator is passing on at once; more wait for catch-up
GOODBYE_EVERY = 1.0  # mDNS goodbyes are unauthenticated: at most one round of checks a second
SETTLE_TIMEOUT = 10.0
# Seconds after start before our hellos name members' keys: a list made before we have heard
# them all would withdraw the others from each node that made us its introducer.
KEYS_AFTER = 10.0


class AlreadyRunning(Exception):
    """Another node holds this state directory."""


@dataclass(slots=True)
class _Hint:
    """An address to try: from mDNS or --peer, unproven until its TLS certificate shows a key."""

    claimed_id: str = ""
    static: bool = False
    next_try: float = 0.0
    retry: float = HINT_RETRY


class Node:
    """One running `meshsync start`."""

    def __init__(self, config: Config, signer: Signer, trust: TrustStore, clock: Clock) -> None:
        self.config = config
        self.id = NodeId.of_key(signer.public_blob)
        self._signer = signer
        self._trust = trust
        self._clock = clock
        self._election = el.Election(me=self.id, started=clock.now())
        self._roster = Roster()
        self._hints: dict[str, _Hint] = {a: _Hint(static=True) for a in config.peers}
        self._throttle = Throttle()
        self._wake = asyncio.Event()
        self._settled = asyncio.Event()
        self._stop = asyncio.Event()
        self._inflight: set[str] = set()
        self._stranger_checked: dict[str, float] = {}
        self._next_new_dial = 0.0
        self._relays = 0
        self._goodbye_wake = 0.0
        self._folders: dict[str, FolderSync] = {}
        self._progress: dict[FolderId, Progress] = {}  # ours, told in hellos
        self._origins: dict[str, bytes] = {}  # vector key -> key, of untrusted record origins
        self._trust_stamp = trust.stamp()
        self._client: PeerClient | None = None
        self._tasks: asyncio.TaskGroup | None = None
        self.port = 0

    # -- the credentials the net layer asks for ------------------------------------------------
    def sign(self, message: bytes) -> bytes:
        """SSHSIG of `message` with this node's key."""
        return sshsig.sign(self._signer, message)

    def verify(self, signature: bytes, message: bytes) -> bytes:
        """The key that made `signature` over `message`; ValueError if none did."""
        return sshsig.verify(signature, message)

    def is_trusted(self, public_blob: bytes, address: str) -> bool:
        """Whether the user trusts this key from this IP (authorized_keys or trusted_keys), or
        an introducer of theirs does."""
        return self._trust.is_trusted(public_blob, address)

    def vouched_key(self, certificate: bytes) -> bytes:
        """The SSH key that vouches for a peer's TLS certificate; ValueError if none does."""
        return tls.vouched_key(certificate)

    def note_untrusted(self, public_blob: bytes, address: str) -> None:
        """A peer proved its key to us, but the user does not trust it: list it, accept nothing."""
        if not self._not_from_there(public_blob, address):
            self._remember_stranger(public_blob, address)

    def note_clock(self, public_blob: bytes, address: str, offset: float) -> None:
        """A trusted peer whose clock is too far from ours to accept its requests: list it as
        refused, with the offset and the fix."""
        self._clock_refused(public_blob, offset, address, trusted=True,
                            last_seen=self._clock.wall())

    def _not_from_there(self, key: bytes, address: str) -> bool:
        """True (and said once) if the user trusts `key`, but not from `address` (from=)."""
        if not self._trust.knows(key):
            return False
        peer_id = NodeId.of_key(key)
        if self._throttle.allow((peer_id, "not from there"), self._clock.wall()):
            log.warning("refused %s at %s: its key is trusted, but not from there (from= in "
                        "authorized_keys)", peer_id, shown(address))
        return True

    @property
    def me(self) -> NodeId:
        """This node's ID."""
        return self.id

    def check_origin(self, origin: str, signature: bytes, message: bytes) -> Origin:
        """Whether `signature` over `message` is by the node whose vector key is `origin` (us,
        or a node we trust), or by an untrusted one (remembered, so that it can be trusted by
        its ID), or not by it at all."""
        try:
            claimed = sshsig.signer(signature)  # cheap: only a signature that would count
        except ValueError:                      # is worth its check
            return Origin.FORGED
        if NodeId.of_key(claimed).key != origin:
            return Origin.FORGED
        try:
            if self.verify(signature, message) != claimed:
                return Origin.FORGED
        except ValueError:
            return Origin.FORGED
        if claimed == self._signer.public_blob or self._trust.knows(claimed):
            return Origin.TRUSTED
        self._origins.pop(origin, None)  # the most recent last: the oldest is forgotten first
        self._origins[origin] = claimed
        while len(self._origins) > MAX_ORIGINS:
            del self._origins[next(iter(self._origins))]
        return Origin.UNTRUSTED

    def untrusted_origin(self, origin: str) -> str:
        """Which node made versions held back here, and the command that would trust it."""
        key = self._origins.get(origin)
        if key is None:
            return (f"made by node {origin}, not trusted here: on that machine `meshsync id` "
                    "prints its key line; trust it here with: meshsync trust 'KEY LINE'")
        peer_id = NodeId.of_key(key)
        peer = self._roster.get(peer_id)
        name = f" ({shown(peer.name)})" if peer is not None and peer.name != "?" else ""
        return (f"made by {peer_id}{name}, not trusted here; to trust it, run: "
                f"meshsync trust {peer_id}")

    def _remember_stranger(self, key: bytes, seen_at: str, **known: Any) -> None:
        _, new = self._roster.update(key, trusted=False, last_seen=self._clock.wall(), **known)
        if new:
            self._log_untrusted(NodeId.of_key(key), seen_at)

    # -- running -------------------------------------------------------------------------------
    async def run(self) -> None:
        """Run until `meshsync stop`, SIGTERM or SIGINT; leave the mesh cleanly."""
        # Parts close in the reverse order they opened: the peer endpoint stops answering
        # before the mDNS goodbye goes out, so a peer that checks finds the port closed.
        async with contextlib.AsyncExitStack() as parts:
            tightened = secure_state_dir(self.config.state)
            if tightened:  # as OpenSSH's StrictModes would refuse them
                log.warning("tightened permissions in %s: %s", self.config.state,
                            ", ".join(tightened))
            parts.callback(_lock(self.config.state).close)
            index = await asyncio.to_thread(Index, self.config.state / "index.db")
            parts.callback(index.close)
            epoch = index.get_meta("epoch") or new_epoch()
            index.set_meta("epoch", epoch)
            self._folders = {f.id: FolderSync(f, index, self, epoch, self.config.keep,
                                              min_free=self.config.min_free,
                                              catch_up_every=self.config.catch_up_every)
                             for f in self.config.folders}
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):  # before mDNS: a signal mid-way says bye
                loop.add_signal_handler(sig, self._stop.set)
            discovery = Discovery(self._on_advert, self._on_mdns_goodbye)
            parts.push_async_callback(discovery.close)
            sock = bind(self.config.port)
            parts.callback(sock.close)
            self.port = sock.getsockname()[1]
            certificate = await asyncio.to_thread(
                tls.certificate_file, self.config.state, self._signer)
            listener = Listener(sock, server_context(str(certificate)),
                                Limits.for_open_files(raise_open_file_limit()))
            runner, protocol = await serve(
                make_app(self, self.id, self._clock.wall, self, listener))
            parts.push_async_callback(runner.cleanup)
            path = control_socket(self.config.state)
            control = await control_server.serve(path, self.dispatch)
            parts.callback(control_server.close, control, path)
            client = await parts.enter_async_context(PeerClient(self, self._clock.wall))
            self._client = client
            log.info("node %s (%s) listening on port %d; folders: %s", self.id, self.config.name,
                     self.port, ", ".join(f"{f.id}={f.path}" for f in self.config.folders))
            async with asyncio.TaskGroup() as tg:
                self._tasks = tg
                tasks = [
                    tg.create_task(listener.run(protocol), name="listener"),
                    tg.create_task(discovery.run(self.id.label, str(self.id), self.port),
                                   name="discovery"),
                    tg.create_task(self._heartbeats(client, tg), name="heartbeats"),
                    tg.create_task(self._ticks(), name="election timer"),
                    tg.create_task(self._progresses(), name="progress"),
                    *(tg.create_task(f.run(), name=f"folder {f.id}")
                      for f in self._folders.values()),
                ]
                await self._stop.wait()
                log.info("stopping")
                self._tasks = None  # no new relays on the way out
                for task in tasks:
                    task.cancel()
                await self._say_goodbye(client)
        log.info("stopped")

    async def _heartbeats(self, client: PeerClient, tg: asyncio.TaskGroup) -> None:
        while True:
            self._wake.clear()
            now = self._clock.now()
            stamp = await asyncio.to_thread(self._trust.stamp)
            if stamp != self._trust_stamp:  # authorized_keys or trusted_keys edited
                self._trust_stamp = stamp
                self._trust_changed()
            for address in self._addresses_to_contact(now):
                self._inflight.add(address)
                tg.create_task(self._contact(client, address), name=f"hello {address}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), HEARTBEAT)

    async def _progresses(self) -> None:
        # Apart from the heartbeats: reading the index may wait on a long write, and hellos
        # must not.
        while True:
            for sync in self._folders.values():
                self._progress[sync.id] = await asyncio.to_thread(sync.progress)
            await asyncio.sleep(PROGRESS_EVERY)

    async def _ticks(self) -> None:
        while True:
            self._feed(el.Ticked(self._clock.now()))
            await asyncio.sleep(TICK)

    def _addresses_to_contact(self, now: float) -> list[str]:
        # Trusted peers every heartbeat; strangers now and then, as trust may have been added.
        known = {p.address for p in self._roster if p.address and (
            p.trusted or now - self._stranger_checked.get(p.address, -STRANGER_EVERY)
            >= STRANGER_EVERY)}
        room = HINTS_DIALLED_AT_ONCE - sum(a in self._hints for a in self._inflight)
        due = sorted((a for a, h in self._hints.items()
                      if h.next_try <= now and a not in known and a not in self._inflight),
                     key=lambda a: self._hints[a].next_try)
        return sorted((known - self._inflight) | set(due[: max(room, 0)]))

    async def _contact(self, client: PeerClient, address: str) -> None:
        """Learn who is at `address`, and if we trust it, send our hello and take its answer.

        Nothing of ours is sent before the TLS certificate there has shown whose key it is,
        and only a node we trust gets our hello (our name, folders and view of the mesh).
        """
        try:
            peer = self._roster.at(address)
            key = peer.key if peer is not None and peer.trusted else None
            if key is None:
                key = await client.identify(address, HELLO_TIMEOUT)
                if not self._worth_a_hello(address, key):
                    return
            hello = self._hello(NodeId.of_key(key))
            reply = await client.send_hello(address, key, hello, HELLO_TIMEOUT)
        except PeerClosed:
            self._unreachable(address, closed=True)
        except PeerClockOffset as e:  # its signed refusal: a trusted node, our clocks apart
            self._clock_refused(e.key, e.offset, address, address=address, trusted=True,
                                last_seen=self._clock.wall())
            self._unreachable(address, closed=False)
        except PeerMismatch as e:
            self._log_peer_input(address, "mismatch",
                                 f"refused: {e} (another node, or a man in the middle)")
            self._unreachable(address, closed=False)
            if (peer := self._roster.at(address)) is not None:
                self._roster.update(peer.key, address=None)  # it may tell us where it is now
            self._hint(address)  # who is there now is learned afresh, and proven
        except PeerError as e:  # unreachable, or anything else it chose to answer
            if self._roster.at(address) is None:  # never proven: tell the user once a minute
                self._log_peer_input(address, "no answer",
                                     f"does not answer as a meshsync node ({e})")
            self._unreachable(address, closed=False)
        else:
            self._take_reply(address, reply)
            self._roster.measured(reply.key, reply.clock_offset)
        finally:
            self._inflight.discard(address)

    def _worth_a_hello(self, address: str, key: bytes) -> bool:
        """Whether the node whose key `identify` found at `address` gets our hello."""
        peer_id = NodeId.of_key(key)
        hint = self._hints.get(address)
        if peer_id == self.id:
            self._hints.pop(address, None)  # our own advertisement, or --peer naming ourselves
            return False
        if hint is not None and hint.claimed_id and hint.claimed_id != str(peer_id):
            self._log_peer_input(address, "advert",
                                 f"advertised ID {shown(hint.claimed_id)} but its certificate "
                                 f"is vouched for by {peer_id}")
        known = self._roster.get(peer_id)
        if (known is not None and known.address not in (None, address)
                and self._election.is_up(peer_id)):
            # A member up at its own address, advertised at another: a relay, or a stale advert.
            # Dialling it there would hand the member's address to whoever advertised it.
            if hint is not None and not hint.static:
                del self._hints[address]
            return False
        if self._trust.is_trusted(key, _host(address)):
            return True
        if self._not_from_there(key, address):
            self._unreachable(address, closed=False)
            return False
        if len(self._stranger_checked) >= MAX_HINTS:  # keep only strangers still listed
            listed = {p.address for p in self._roster if not p.trusted}
            self._stranger_checked = {a: t for a, t in self._stranger_checked.items()
                                      if a in listed}
        self._stranger_checked[address] = self._clock.now()
        self._remember_stranger(key, address, address=address)
        self._unreachable(address, closed=False)  # a hint backs off; a stranger is not dialled
        return False

    def _unreachable(self, address: str, closed: bool) -> None:
        hint = self._hints.get(address)
        if hint is not None:
            hint.next_try = self._clock.now() + hint.retry
            hint.retry = min(hint.retry * 2, HINT_RETRY_MAX)
        peer = self._roster.at(address)
        if closed and peer is not None and self._election.is_up(peer.id):
            self._feed(el.PeerLeft(peer.id, self._clock.now()))

    def _take_reply(self, address: str, reply: Reply) -> None:
        peer_id = NodeId.of_key(reply.key)
        hint = self._hints.get(address)
        if hint is not None and not hint.static:
            del self._hints[address]
        elif hint is not None:
            hint.retry = HINT_RETRY
        trusted = self._trust.is_trusted(reply.key, _host(address))
        if not trusted and self._not_from_there(reply.key, address):
            return
        if reply.status == 403:
            before = self._roster.get(peer_id)
            self._roster.update(reply.key, trusted=trusted, trusts_us=False, address=address,
                                last_seen=self._clock.wall())
            if trusted and (before is None or before.trusts_us is not False):
                self._log_untrusted_by(peer_id, address)
            elif before is None:
                self._log_untrusted(peer_id, address)
            if self._election.is_up(peer_id):
                self._feed(el.PeerLeft(peer_id, self._clock.now()))
            return
        if not trusted:
            self._remember_stranger(reply.key, address, address=address)
            return
        if reply.status != 200:
            self._log_peer_input(address, "status",
                                 f"answered HTTP {reply.status}: {shown(reply.body)}")
            return
        try:
            hello = Hello.from_json(reply.body)
        except WireError as e:
            self._log_peer_input(address, "bad hello", f"sent a bad hello: {e}")
            return
        self._heard(reply.key, hello, address, trusts_us=True)

    async def handle_hello(self, key: bytes, hello: Hello, remote: str) -> Hello:
        """A trusted peer's hello (a heartbeat); the answer is ours."""
        peer = self._heard(key, hello, f"{remote}:{hello.port}", trusts_us=None)
        if peer.trusts_us is None:
            self._wake.set()  # say hello back at once: its answer tells whether it trusts us
        return self._hello(peer.id)

    def _heard(self, key: bytes, hello: Hello, address: str, trusts_us: bool | None) -> Peer:
        """Take in a trusted peer's hello, whichever way it came."""
        changes: dict[str, Any] = {"trusts_us": trusts_us} if trusts_us is not None else {}
        peer, new = self._roster.update(
            key, name=hello.name, address=address, trusted=True, folders=hello.folders,
            last_seen=self._clock.wall(), progress=hello.progress, **changes,
        )
        if new:
            log.info("peer found: %s (%s) at %s, trusted", peer.id, shown(peer.name), address)
        if hello.member_keys is not None:
            self._take_introductions(key, hello.member_keys)
        now = self._clock.now()
        if self._stop.is_set():
            pass  # on our way out we take no part in elections, or we could win one and vanish
        elif hello.term > el.term_ceiling(self._clock.wall()):
            # Not heard at all: a member that insists goes down, and the others stay together.
            self._log_peer_input(address, "term", f"claims term {hello.term}, more elections "
                                                  "than any mesh can have held by now: ignored")
        elif hello.leaving:
            self._feed(el.PeerLeft(peer.id, now))
        elif peer.is_member(self.config.folder_ids):
            term, coordinator, hears = hello.term, hello.coordinator, hello.hears_coordinator
            if term > el.term_ceiling(self._clock.wall() - MAX_OFFSET):
                # Heard, but its claim is not taken until a node whose clock is as far behind
                # ours as we accept would take it too: one pushed to our ceiling must not split
                # us from them.
                term, coordinator, hears = 0, None, False
            self._feed(el.PeerHeard(peer.id, term, coordinator, now, hears))
            self._learn_addresses(hello.members)
        elif not peer.folders & self.config.folder_ids and self._throttle.allow(
            (peer.id, "no folder"), self._clock.wall()
        ):
            log.info("peer %s (%s) shares no folder with this node", peer.id, shown(peer.name))
        return peer

    def _take_introductions(self, key: bytes, announced: tuple[bytes, ...]) -> None:
        """Trust what a peer we marked introducer announces, and only while it announces it."""
        changed = self._trust.introduce(key, announced)
        if not changed:
            return  # the steady state, and anything a peer not marked introducer announces
        for peer in self._roster:
            if peer.key in changed:
                trusted = (self._trust.is_trusted(peer.key, _host(peer.address))
                           if peer.address else self._trust.knows(peer.key))
                self._roster.update(peer.key, trusted=trusted)
        peer = self._roster.get(NodeId.of_key(key))
        if peer is not None and self._throttle.allow((peer.id, "introduces"), self._clock.wall()):
            added = len(changed & set(announced))
            log.info("introducer %s (%s) announces %d keys more, %d fewer", peer.id,
                     shown(peer.name), added, len(changed) - added)
        self._trust_changed()
        self._wake.set()

    # -- sync: what folders ask of the mesh, and what peers ask of folders -----------------------
    def _online_members(self, folder: str) -> list[Peer]:
        """The online members sharing `folder` at a known address, coordinator first."""
        found = [p for p in self._roster if folder in p.folders and p.address
                 and p.is_member(self.config.folder_ids) and self._election.is_up(p.id)]
        return sorted(found, key=lambda p: p.id != self._election.coordinator)

    def members(self, folder: str) -> int:
        """How many members share `folder`, online or not."""
        return sum(folder in p.folders and p.is_member(self.config.folder_ids)
                   for p in self._roster)

    def sources(self, folder: str) -> list[tuple[str, str]]:
        """(node key, address) of the online members sharing `folder`, coordinator first."""
        return [(p.id.key, p.address) for p in self._online_members(folder) if p.address]

    async def publish(self, notice: Records, skip: frozenset[str] = frozenset()) -> None:
        """Send a notice to the coordinator and every other member sharing its folder."""
        client = self._client
        if client is None:
            return
        targets = [(p.address, p.key) for p in self._online_members(notice.folder)
                   if p.address and p.id.key not in skip]
        results = await asyncio.gather(*(client.send_notice(a, k, notice) for a, k in targets),
                                       return_exceptions=True)
        for (address, _), result in zip(targets, results, strict=True):
            if isinstance(result, Exception):
                log.debug("notice to %s failed: %s", address, result)

    def _member_at(self, address: str) -> tuple[PeerClient, bytes]:
        """The client, and the key of the member last proven at `address`."""
        peer = self._roster.at(address)
        if self._client is None or peer is None or not peer.trusted:
            raise PeerUnreachable(f"{address}: no member there")
        return self._client, peer.key

    async def fetch_blocks(self, address: str, request: BlockRequest) -> list[bytes | None]:
        """Blocks from one member."""
        client, key = self._member_at(address)
        return await client.fetch_blocks(address, key, request)

    async def fetch_index(self, address: str, request: IndexRequest) -> Records:
        """An index page from one member."""
        client, key = self._member_at(address)
        return await client.fetch_index(address, key, request)

    def _folder(self, folder: str, key: bytes) -> FolderSync:
        """The folder a peer asks about, if we both share it (said in our hellos)."""
        sync = self._folders.get(folder)
        peer = self._roster.get(NodeId.of_key(key))
        if sync is None or peer is None or folder not in peer.folders:
            raise Refused(f"folder {folder!r} is not shared between us")
        return sync

    async def handle_notice(self, key: bytes, notice: Records) -> None:
        """Changes made in the mesh; passed on as `_relay_to` says."""
        sync = self._folder(notice.folder, key)
        sender = NodeId.of_key(key)
        news = await sync.take(sender.key, notice.records)
        to = self._relay_to(sender) if news else frozenset()
        if to and self._tasks is not None and self._relays < MAX_RELAYS:
            # Only what was news to us (what was not, we passed on before), a few at a time:
            # a member that sends one notice again and again cannot make us fan it out.
            # Not awaited: the sender should not wait on our fan-out to every member.
            self._relays += 1
            relay = Records(notice.folder, tuple(news))
            self._tasks.create_task(self._relay(relay, to), name=f"relay from {sender.key}")

    def _relay_to(self, sender: NodeId) -> frozenset[str]:
        """Whom news from `sender` goes on to (vector keys): from the coordinator, every other
        member; from a member that hears the coordinator itself, the members that do not, and
        the coordinator if the sender does not (a link cut between them: we are the bridge)."""
        election, now = self._election, self._clock.now()
        coordinator = election.coordinator
        members = {p.id for p in self._roster
                   if p.is_member(self.config.folder_ids) and election.is_up(p.id)}
        if coordinator == self.id:
            to = members
        elif coordinator is not None and election.hears_coordinator(self.id, now):
            to = {p for p in members if not election.hears_coordinator(p, now)}
            if not election.hears_coordinator(sender, now):
                to.add(coordinator)
        else:
            return frozenset()
        return frozenset(p.key for p in to - {sender})

    async def _relay(self, notice: Records, to: frozenset[str]) -> None:
        try:
            await self.publish(notice, skip=frozenset(p.id.key for p in self._roster) - to)
        finally:
            self._relays -= 1

    async def handle_index(self, key: bytes, request: IndexRequest) -> Records:
        """A page of our index for a peer catching up."""
        sync = self._folder(request.folder, key)
        return await asyncio.to_thread(sync.answer_index, request.since)

    async def handle_blocks(self, key: bytes, request: BlockRequest) -> list[bytes | None]:
        """Blocks we hold, for a peer writing a file."""
        sync = self._folder(request.folder, key)
        return await asyncio.to_thread(sync.answer_blocks, request.hashes)

    def _hello(self, to: NodeId | None = None) -> Hello:
        """Our hello; to a peer, with where the members it may sync with listen."""
        leaving = self._stop.is_set()
        return Hello(
            name=self.config.name,
            port=self.port,
            folders=self.config.folder_ids,
            term=self._election.term,
            coordinator=self._election.coordinator,
            leaving=leaving,
            hears_coordinator=self._election.hears_coordinator(self.id, self._clock.now()),
            members=() if leaving or to is None else self._member_addresses(to),
            member_keys=None if leaving or to is None else self._member_keys(to),
            progress=() if leaving or to is None else self._progress_for(to),
        )

    def _progress_for(self, to: NodeId) -> tuple[Progress, ...]:
        """How far we are with the folders we share with `to`."""
        peer = self._roster.get(to)
        shared = peer.folders if peer is not None else frozenset()
        return tuple(p for folder, p in sorted(self._progress.items()) if folder in shared)

    def _member_addresses(self, to: NodeId) -> tuple[MemberAddress, ...]:
        """Where our online members listen that share a folder with `to` (never `to` itself,
        nor a peer we do not trust), the most recently heard first."""
        recipient = self._roster.get(to)
        if recipient is None:
            return ()
        found: list[MemberAddress] = []
        for peer in sorted(self._roster, key=lambda p: p.last_seen or 0.0, reverse=True):
            if (peer.id == to or not peer.address or not peer.folders & recipient.folders
                    or not peer.is_member(self.config.folder_ids)
                    or not self._election.is_up(peer.id)):
                continue
            try:  # the address we reached it at: a --peer host name is not passed on
                found.append(MemberAddress(peer.id, check_address(peer.address)))
            except WireError:
                continue
            if len(found) == MAX_MEMBER_ADDRESSES:
                break
        return tuple(found)

    def _member_keys(self, to: NodeId) -> tuple[bytes, ...] | None:
        """The keys of members sharing a folder with `to` that we trust on our own word (never
        on an introducer's: introductions go one hop), by ID: trusted by `to` too if it made
        us its introducer. Public keys only, and only to a peer we trust; None (no word on
        keys) for KEYS_AFTER after start."""
        recipient = self._roster.get(to)
        if self._clock.now() - self._election.started < KEYS_AFTER:
            return None
        if recipient is None:
            return ()
        shared = recipient.folders & self.config.folder_ids
        found = [p for p in sorted(self._roster, key=lambda p: p.id)
                 if p.id != to and p.folders & shared and p.is_member(self.config.folder_ids)
                 and len(p.key) <= MAX_KEY_BYTES]
        if not found:
            return ()
        listed = set(self._trust.known_keys(introduced=False))
        return tuple(p.key for p in found if p.key in listed)[:MAX_MEMBER_KEYS]

    async def _say_goodbye(self, client: PeerClient) -> None:
        hello = self._hello()
        await asyncio.gather(*(client.send_hello(p.address, p.key, hello, 0.5)
                               for p in self._roster if p.address and self._election.is_up(p.id)),
                             return_exceptions=True)

    # -- election ------------------------------------------------------------------------------
    def _feed(self, event: el.Event) -> None:
        for action in self._election.handle(event):
            self._do(action)

    def _do(self, action: el.Action) -> None:
        match action:
            case el.Broadcast():
                self._wake.set()
            case el.MarkUp(peer):
                log.info("peer online: %s", self._describe(peer))
                for sync in self._folders.values():
                    sync.catch_up.wake.set()
                    sync.retry_now()  # it may hold what others could not supply
            case el.MarkDown(peer, reason):
                log.info("peer down: %s (%s)", self._describe(peer), reason)
            case el.OpenElection(term):
                self._settled.clear()
                log.info("election opened for term %d", term)
            case el.FollowCoordinator(coordinator, term):
                self._settled.set()
                log.info("coordinator is %s, term %d", self._describe(coordinator), term)
            case el.StepDown(term):
                log.info("stepping down as coordinator of term %d", term)

    def _describe(self, peer_id: NodeId) -> str:
        if peer_id == self.id:
            return f"{peer_id} ({self.config.name}, this node)"
        peer = self._roster.get(peer_id)
        return f"{peer_id} ({peer.name if peer else '?'})"

    # -- discovery -----------------------------------------------------------------------------
    def _on_advert(self, advert: Advert) -> None:
        """An mDNS advertisement: a hint of where a node may be, to be proven by its key.

        Anyone on the LAN can advertise anything, so only addresses on our own networks are
        dialled (never loopback: that would make us a reflector to local services), a few per
        advert, a bounded number in all, each backing off while it does not answer.
        """
        if advert.claimed_id == str(self.id):
            return
        networks = own_networks()
        wake = False
        for ip in advert.addresses[:ADDRESSES_PER_ADVERT]:
            address = f"{ip}:{advert.port}"
            if (_dialable(ip, networks) and self._roster.at(address) is None
                    and self._hint(address, advert.claimed_id)):
                wake = True
        if wake:
            self._wake.set()

    def _learn_addresses(self, members: tuple[MemberAddress, ...]) -> None:
        """Where a member says members we trust listen: hints, so that a mesh formed through
        one `--peer` outlives that node. Each is still proven by its TLS certificate, and
        filtered as an advert is: a member cannot make us dial where it likes."""
        unknown = [m for m in members if m.id != self.id
                   and self._roster.at(m.address) is None and not self._reached(m.id)]
        if not unknown:
            return  # the steady state: everyone it names is up here already
        networks = own_networks()
        trusted = {NodeId.of_key(key): key for key in self._trust.known_keys()}
        wake = False
        for member in unknown:
            key = trusted.get(member.id)
            host = _host(member.address).strip("[]")
            if (key is not None and _dialable(host, networks)
                    and self._trust.is_trusted(key, host)
                    and self._hint(member.address, str(member.id))):
                wake = True
        if wake:
            self._wake.set()

    def _reached(self, peer_id: NodeId) -> bool:
        """Whether a member is up here at an address we know."""
        peer = self._roster.get(peer_id)
        return peer is not None and peer.address is not None and self._election.is_up(peer_id)

    def _hint(self, address: str, claimed_id: str = "") -> bool:
        """Remember an address to try; True if it is new. The most backed-off hint makes room."""
        hint = self._hints.get(address)
        if hint is not None:
            # Re-advertising does not reset the backoff: the advertiser does not pace our dialling.
            hint.claimed_id = claimed_id or hint.claimed_id
            return False
        learned = [a for a, h in self._hints.items() if not h.static]
        if len(learned) >= MAX_HINTS:
            del self._hints[max(learned, key=lambda a: self._hints[a].next_try)]
        # A flood of adverts queues its addresses instead of dialling them all at once; the
        # queue is as long as the hints kept, so a new one waits seconds at the most.
        now = self._clock.now()
        self._next_new_dial = min(max(now, self._next_new_dial),
                                  now + MAX_HINTS / NEW_HINTS_PER_SECOND)
        self._hints[address] = _Hint(claimed_id=claimed_id, next_try=self._next_new_dial)
        self._next_new_dial += 1 / NEW_HINTS_PER_SECOND
        return True

    def _on_mdns_goodbye(self, instance: str) -> None:
        # A goodbye is unauthenticated, so it is only a reason to ask every peer at once: a node
        # that really stopped no longer answers, and one that did not keeps its seat.
        now = self._clock.now()
        if now - self._goodbye_wake >= GOODBYE_EVERY:
            self._goodbye_wake = now
            log.debug("mDNS goodbye from %s", shown(instance))
            self._wake.set()

    # -- control -------------------------------------------------------------------------------
    async def dispatch(self, command: str, args: dict[str, Any]) -> Any:
        """Answer one CLI command."""
        match command:
            case "id":
                return {"id": str(self.id), "name": self.config.name,
                        "key": public_key_line(self._signer.public_blob, self.config.name)}
            case "peers":
                return self._peers_json()
            case "elect":
                if args.get("force"):
                    self._feed(el.ElectionForced(self._clock.now()))
                    try:
                        await asyncio.wait_for(self._settled.wait(), SETTLE_TIMEOUT)
                    except TimeoutError:
                        raise ControlError(
                            f"the election for term {self._election.term} has not settled "
                            f"within {SETTLE_TIMEOUT:.0f} s") from None
                return self._election_json()
            case "trust":
                return self._trust_keys(args.get("keys"), args.get("introducer") is True)
            case "status":
                return await self._status_json()
            case "conflicts":
                return await self._conflicts_json()
            case "versions":
                sync, rel = self._locate(args.get("path"))
                found = await asyncio.to_thread(keeper.versions_of, sync.place, rel)
                return [{"folder": sync.id, **v.to_json()} for v in found]
            case "restore":
                return await self._restore(args.get("path"), args.get("at"))
            case "stop":
                self._stop.set()
                return {"stopping": True}
        raise ControlError(f"unknown command {command!r}")

    def _trust_keys(self, texts: object, introducer: bool = False) -> dict[str, Any]:
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
            raise ControlError("trust wants one or more key lines or peer IDs")
        keys: list[PublicKey] = []
        for text in texts:
            peer = self._roster.find(text.strip())
            origin = self._origin_by_id(text.strip())
            key = (PublicKey(peer.key, peer.name) if peer else PublicKey(origin, "")
                   if origin else parse_key_line(text))
            if key is None:
                raise ControlError(
                    f"not a public key line nor the ID of a discovered peer: {text[:80]!r}")
            keys.append(key)
        added: list[str] = []
        already: list[str] = []
        for key in keys:
            (added if self._trust.add(key, introducer=introducer) else already).append(
                str(NodeId.of_key(key.blob)))
            if key.blob in {p.key for p in self._roster}:
                self._roster.update(key.blob, trusted=True)
        for peer_id in added:
            log.info("trusted %s%s", peer_id, " as introducer" if introducer else "")
        if added:
            self._trust_changed()
        self._wake.set()
        result: dict[str, Any] = {"added": added, "already": already}
        if introducer:
            result["introducer"] = True  # absent otherwise, as before the option
        return result

    def _trust_changed(self) -> None:
        """Versions held back for their origin may be taken now."""
        for sync in self._folders.values():
            sync.trust_changed()

    def _origin_by_id(self, text: str) -> bytes | None:
        """The key of an untrusted origin of versions held back, by its full or short ID."""
        # A copy: judging threads add origins while the loop looks.
        keys = list(self._origins.values())
        found = [k for k in keys if text in (str(NodeId.of_key(k)), NodeId.of_key(k).short)]
        return found[0] if len(found) == 1 else None

    def _election_json(self) -> dict[str, Any]:
        coordinator = self._election.coordinator
        return {"term": self._election.term,
                "coordinator": str(coordinator) if coordinator else None}

    def _peers_json(self) -> list[dict[str, Any]]:
        coordinator = self._election.coordinator
        addresses = own_addresses()
        rows: list[dict[str, Any]] = [{
            "id": str(self.id), "name": self.config.name,
            "address": f"{addresses[0] if addresses else '?'}:{self.port}",
            "role": "coordinator" if coordinator == self.id else "member",
            "state": "online", "self": True, "last_seen": self._clock.wall(),
            "folders": sorted(self.config.folder_ids), "clock_offset": 0.0,
            "via_introducer": None,
        }]
        for peer in sorted(self._roster, key=lambda p: p.id):
            member = peer.is_member(self.config.folder_ids)
            row = {
                "id": str(peer.id), "name": peer.name, "address": peer.address,
                "role": "coordinator" if peer.id == coordinator else
                        "member" if member else "peer",
                "state": peer.state(self._election.is_up(peer.id)),
                "self": False, "last_seen": peer.last_seen, "folders": sorted(peer.folders),
                "clock_offset": None if peer.clock_offset is None else round(peer.clock_offset, 1),
                "via_introducer": next(
                    (str(NodeId.of_key(k)) for k in self._trust.introducers_of(peer.key)), None),
            }
            if row["state"] == "untrusted":
                row["trust_command"] = f"meshsync trust {peer.id}"
            if peer.clock_refused and peer.clock_offset is not None:
                row["fix"] = clock_fix(peer.clock_offset)
            rows.append(row)
        return rows

    async def _status_json(self) -> dict[str, Any]:
        members = [p for p in self._roster if p.is_member(self.config.folder_ids)]
        folders = []
        for sync in self._folders.values():
            status = sync.status(await asyncio.to_thread(sync.counts))
            online = [p for p in members if sync.id in p.folders and self._election.is_up(p.id)]
            status["members"] = [str(p.id) for p in online]
            status["completion"] = [_completion(p, sync.id) for p in online]
            folders.append(status)
        return {"id": str(self.id), "name": self.config.name, **self._election_json(),
                "folders": folders}

    def _locate(self, text: object) -> tuple[FolderSync, RelPath | None]:
        """The folder holding an absolute path, and the path in it (None: the folder itself)."""
        if not isinstance(text, str) or not text.startswith("/"):
            raise ControlError("give a path in a synced folder")
        for sync in self._folders.values():
            if Path(text).is_relative_to(sync.root):
                rel = Path(text).relative_to(sync.root).as_posix()
                try:
                    return sync, None if rel == "." else check_path(rel)
                except WireError as e:
                    raise ControlError(f"{text}: not a path meshsync syncs ({e})") from None
        raise ControlError(f"{text} is not in a synced folder (" + ", ".join(
            str(s.root) for s in self._folders.values()) + ")")

    async def _restore(self, text: object, at: object) -> dict[str, Any]:
        sync, rel = self._locate(text)
        if rel is None:
            raise ControlError("restore wants a file in the folder, not the folder itself")
        try:
            when = versions.parse_time(at) if isinstance(at, str) and at else None
            chosen = await sync.restore(rel, when)
        except (ValueError, versions.RestoreError, OSError) as e:
            raise ControlError(str(e)) from None
        return {"folder": sync.id, "restored": chosen.to_json()}

    async def _conflicts_json(self) -> list[dict[str, Any]]:
        found = []
        for sync in self._folders.values():
            found += await asyncio.to_thread(keeper.conflict_copies, sync.place)
        for conflict in found:
            for side in (conflict["copy"], conflict["current"] or {}):
                if side:
                    side["node"] = self._node_of(side["origin"])
        return found

    def _node_of(self, key: str) -> dict[str, str] | None:
        """The node whose vector key starts with `key` (a conflict copy names 7 digits)."""
        nodes = [(self.id, self.config.name), *((p.id, p.name) for p in self._roster)]
        for node_id, name in nodes:
            if node_id.key.startswith(key):
                return {"id": str(node_id), "name": name}
        return None

    # -- log lines driven by peers -------------------------------------------------------------
    def _log_untrusted(self, peer_id: NodeId, address: str) -> None:
        # One cause whatever the key: a stranger with a fresh key per request is one flood.
        if self._throttle.allow((peer_id, "untrusted"), self._clock.wall()):
            log.warning("untrusted peer %s at %s: nothing it sends is accepted; to trust it, "
                        "run: meshsync trust %s", peer_id, address, peer_id)

    def _log_untrusted_by(self, peer_id: NodeId, address: str) -> None:
        if self._throttle.allow((peer_id, "refused"), self._clock.wall()):
            log.warning("peer %s at %s does not trust this node; on that machine run: "
                        "meshsync trust %s", peer_id, address, self.id)

    def _clock_refused(self, key: bytes, offset: float, seen_at: str, **known: Any) -> None:
        """Record, and say once a minute, that our clocks are too far apart to talk."""
        peer, _ = self._roster.update(key, clock_offset=offset, **known)
        if self._throttle.allow((peer.id, "clock"), self._clock.wall()):
            log.warning("peer %s at %s: clock differs by %+.0f s (more than %.0f s), so neither "
                        "of us accepts the other; %s", peer.id, shown(seen_at), offset,
                        MAX_OFFSET, clock_fix(offset))

    def _log_peer_input(self, address: str, cause: str, what: str) -> None:
        if self._throttle.allow((address, cause), self._clock.wall()):
            log.warning("peer at %s %s", shown(address), shown(what, 300))


def _completion(peer: Peer, folder: FolderId) -> dict[str, Any]:
    """How far a member says it is with a folder, for status (None: it has not said)."""
    said = next((p for p in peer.progress if p.folder == folder), None)
    row: dict[str, Any] = {"id": str(peer.id), "name": peer.name}
    if said is None:
        return {**row, "state": None, "need_files": None, "need_bytes": None, "percent": None}
    return {**row, "state": said.state, "need_files": said.need_files,
            "need_bytes": said.need_bytes, "percent": said.percent}


def _host(address: str) -> str:
    """The IP address of a `host:port` address."""
    return address.rpartition(":")[0]


def _dialable(ip: str, networks: list[ipaddress.IPv4Network]) -> bool:
    """Whether an address a peer told us of may be dialled: on one of our own networks, and
    not loopback (that would make us a reflector to local services)."""
    try:
        parsed = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return not parsed.is_loopback and any(parsed in net for net in networks)


def _lock(state: Path) -> Any:
    """Hold the state directory for this process; AlreadyRunning if another node holds it."""
    state.mkdir(parents=True, exist_ok=True, mode=0o700)
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC | os.O_NOFOLLOW
    handle = os.fdopen(os.open(state / "node.lock", flags, 0o600), "a")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise AlreadyRunning(f"a meshsync node is already running with state in {state}") from None
    os.set_inheritable(handle.fileno(), False)
    return handle

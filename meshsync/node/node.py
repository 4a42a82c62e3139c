"""The node: builds the parts, owns the task group, and routes events between adapters and core.

Each rule lives in its part: `peers` (the roster and the log lines peers drive), `credentials`
(keys, trust, origins of records), `addressbook` (where nodes may be), `hello` (ours, and
taking theirs), `dialer` (whom to greet, and what an answer tells), `exchange` (notices,
index pages and blocks, and the relay), `command` (the CLI's commands). The node wires them,
answers adapters by handing each call to the part that owns it, and feeds the election.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
from collections.abc import Iterator, Sequence
from typing import Any

from meshsync.control import page
from meshsync.control import server as control_server
from meshsync.control.events import Events
from meshsync.core import election as el
from meshsync.core.ids import NodeId
from meshsync.core.wire import BlockRequest, Data, FolderId, Hello, IndexRequest, Records
from meshsync.crypto import tls
from meshsync.crypto.keys import Signer
from meshsync.crypto.trust import TrustStore
from meshsync.net.client import PeerClient
from meshsync.net.discovery import Discovery
from meshsync.net.listener import Limits, Listener, raise_open_file_limit, server_context
from meshsync.net.server import bind, make_app, serve
from meshsync.net.socket import LinkSocket
from meshsync.node.addressbook import AddressBook
from meshsync.node.clock import Clock
from meshsync.node.command import Commands
from meshsync.node.config import Config, Folder, control_socket, kept_out
from meshsync.node.credentials import Credentials
from meshsync.node.dialer import Dialer
from meshsync.node.exchange import Exchange
from meshsync.node.folder import FolderSync, new_epoch
from meshsync.node.hello import Greeter
from meshsync.node.judge import Origin
from meshsync.node.link import Links
from meshsync.node.peers import Peers
from meshsync.node.shelf import Shelf
from meshsync.node.state import hold_state_dir, secure_state_dir
from meshsync.store.index import Index

log = logging.getLogger("meshsync")

HEARTBEAT = 1.0
TICK_LATE = 0.005  # seconds past the moment a tick may act, so that it does
PROGRESS_EVERY = 2.0  # how often our folders' progress is read for hellos


class Node:
    """One running `meshsync start`."""

    def __init__(self, config: Config, signer: Signer, trust: TrustStore, clock: Clock) -> None:
        self.config = config
        self.id = NodeId.of_key(signer.public_blob)
        self._signer = signer
        self._trust = trust
        self._clock = clock
        self._election = el.Election(me=self.id, started=clock.now())
        self._wake = asyncio.Event()
        self._settled = asyncio.Event()
        self._stop = asyncio.Event()
        self._folders: dict[str, FolderSync] = {}  # filled when the node runs
        self._trust_stamp = trust.stamp()
        self._peers = Peers(self.id, config.name, config.folder_ids, trust, clock,
                            self._election)
        self._credentials = Credentials(signer, self._peers)
        self._book = AddressBook(self._peers, config.peers, self._wake)
        self._greeter = Greeter(self._peers, self._book, self._stop, self._wake, self._feed,
                                self._trust_changed, self._probe)
        self._dialer = Dialer(self._peers, self._book, self._greeter, self._feed)
        self._links = Links(self._peers, self._greeter, self._stop, self._feed, self._probe)
        self._dialer.linked = self._links.linked
        self._probing: tuple[PeerClient, asyncio.TaskGroup] | None = None  # once running
        self._exchange = Exchange(self._peers, self._folders)
        self._commands = Commands(self._peers, self._credentials, signer.public_blob,
                                  self._folders, self._feed, self._settled, self._stop,
                                  self._wake, self._trust_changed)
        self.events = Events()
        self._loop: asyncio.AbstractEventLoop | None = None  # once running
        self._loop_thread = 0

    # -- what folders and peers ask of the node, each answered by the part that owns it ---------
    @property
    def me(self) -> NodeId:
        """This node's ID."""
        return self.id

    def sign(self, message: bytes) -> bytes:
        """The signature of a record's bytes by this node."""
        return self._credentials.sign(message)

    def check_origin(self, origin: str, signature: bytes, message: bytes,
                     trusted: dict[bytes, bool]) -> Origin:
        """Whether `signature` over `message` is by the node whose vector key is `origin`."""
        return self._credentials.check_origin(origin, signature, message, trusted)

    def untrusted_origin(self, origin: str) -> str:
        """Which node made versions held back here, and the command that would trust it."""
        return self._credentials.untrusted_origin(origin)

    def tell(self, kind: str, **fields: Any) -> None:
        """Tell those following the node's events; `origin`, a vector key, is told as the
        node's ID and name. From any thread: the roster is read on the loop."""
        loop = self._loop
        if loop is None:
            return
        if threading.get_ident() == self._loop_thread:
            self._tell_now(kind, fields)
            return
        with contextlib.suppress(RuntimeError):  # the loop has closed: the node has stopped
            loop.call_soon_threadsafe(self._tell_now, kind, fields)

    def _tell_now(self, kind: str, fields: dict[str, Any]) -> None:
        if "origin" in fields:
            node = self._commands.node_of(fields["origin"]) if fields["origin"] else None
            fields["origin"] = node and node["id"]
            fields["origin_name"] = node and node["name"]
        self.events.publish(kind, **fields)

    def members(self, folder: str) -> int:
        """How many members share `folder`, online or not."""
        return self._exchange.members(folder)

    def sources(self, folder: str) -> list[tuple[str, str]]:
        """(node key, address) of the online members sharing `folder`, coordinator first."""
        return self._exchange.sources(folder)

    async def publish(self, notice: Records, to: str | None = None) -> None:
        """Send a notice to the coordinator and every other member sharing its folder; `to`
        one member alone (its vector key)."""
        await self._exchange.publish(notice, to=to)

    def advertised_seq(self, folder: str, key: str) -> int | None:
        """The last seq of a member's index for `folder`, by its latest hello."""
        return self._exchange.advertised_seq(folder, key)

    async def fetch_blocks(self, address: str, request: BlockRequest) -> Sequence[Data | None]:
        """Blocks from one member."""
        return await self._exchange.fetch_blocks(address, request)

    async def fetch_index(self, address: str, request: IndexRequest) -> Records:
        """An index page from one member."""
        return await self._exchange.fetch_index(address, request)

    async def handle_hello(self, key: bytes, hello: Hello, remote: str) -> Hello:
        """A trusted peer's hello (a heartbeat); the answer is ours."""
        return await self._greeter.handle_hello(key, hello, remote)

    async def handle_link(self, key: bytes, link: LinkSocket, remote: str) -> None:
        """A member's heartbeat link, held until it closes."""
        await self._links.handle_link(key, link, remote)

    async def handle_notice(self, key: bytes, notice: Records) -> None:
        """Changes made in the mesh, passed on to whom the relay rule says."""
        await self._exchange.handle_notice(key, notice)

    async def handle_index(self, key: bytes, request: IndexRequest) -> Records:
        """A page of our index for a peer catching up."""
        return await self._exchange.handle_index(key, request)

    async def handle_blocks(self, key: bytes, request: BlockRequest) -> list[bytes | None]:
        """Blocks we hold, for a peer writing a file."""
        return await self._exchange.handle_blocks(key, request)

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
            parts.callback(hold_state_dir(self.config.state).close)
            index = await asyncio.to_thread(Index, self.config.state / "index.db")
            parts.callback(index.close)
            epoch = index.get_meta("epoch") or new_epoch()
            index.set_meta("epoch", epoch)
            config = self.config

            def make(folder: Folder) -> FolderSync:
                return FolderSync(folder, index, self, epoch, config.keep,
                                  min_free=config.min_free, catch_up_every=config.catch_up_every)

            self._commands.keep = config.keep
            shelf = self._commands.shelf = Shelf(
                config.state, config.folders, self._peers, self._folders, make,
                kept_out(config.state, config.ssh_dir), self._wake)
            await shelf.prepare()  # before the node shows itself on the LAN
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):  # before mDNS: a signal mid-way says bye
                loop.add_signal_handler(sig, self._stop.set)
            discovery = Discovery(self._book.on_advert, self._book.on_mdns_goodbye)
            parts.push_async_callback(discovery.close)
            sock = bind(self.config.port)
            parts.callback(sock.close)
            port = self._peers.port = sock.getsockname()[1]
            certificate = await asyncio.to_thread(
                tls.certificate_file, self.config.state, self._signer, self.config.name)
            listener = Listener(sock, server_context(str(certificate)),
                                Limits.for_open_files(raise_open_file_limit()),
                                self._peers.member_at)
            runner, protocol = await serve(
                make_app(self._credentials, self.id, self._clock.wall, self, listener))
            parts.push_async_callback(runner.cleanup)
            self._loop = asyncio.get_running_loop()
            self._loop_thread = threading.get_ident()
            self.events.bind(self._loop)
            parts.enter_context(_warnings_told(self.events))
            path = control_socket(self.config.state)
            control = await control_server.serve(path, self._commands.dispatch, self.events)
            parts.push_async_callback(control_server.close, control, path)
            if self.config.page_port is not None:
                token = await asyncio.to_thread(page.token_of, self.config.state)
                runner, page_port = await page.serve(
                    self.config.page_port, self._commands.dispatch, self.events, token)
                parts.push_async_callback(runner.cleanup)
                self._commands.page = f"http://127.0.0.1:{page_port}/#token={token}"
            client = await parts.enter_async_context(
                PeerClient(self._credentials, self._clock.wall))
            self._exchange.client = client
            log.info("node %s (%s) listening on port %d; folders: %s", self.id, self.config.name,
                     port, ", ".join(f"{f.id}={f.path}" for f in shelf.all))
            async with asyncio.TaskGroup() as tg:
                self._exchange.tasks = tg
                self._probing = client, tg
                tasks = [
                    tg.create_task(listener.run(protocol), name="listener"),
                    tg.create_task(discovery.run(self.id.label, str(self.id), port),
                                   name="discovery"),
                    tg.create_task(self._heartbeats(client, tg), name="heartbeats"),
                    tg.create_task(self._ticks(), name="election timer"),
                    tg.create_task(self._progresses(), name="progress"),
                ]
                shelf.run(tg)
                await self._stop.wait()
                log.info("stopping")
                self._exchange.tasks = None  # no new relays on the way out
                shelf.stop()
                for task in tasks:
                    task.cancel()
                await self._dialer.say_goodbye(client)
                self._links.close_all()
        log.info("stopped")

    async def _heartbeats(self, client: PeerClient, tg: asyncio.TaskGroup) -> None:
        while True:
            self._wake.clear()
            now = self._clock.now()
            # A few stat calls, as every trust look-up makes on the loop: no trip to a thread.
            stamp = self._trust.stamp()
            if stamp != self._trust_stamp:  # authorized_keys or trusted_keys edited
                self._trust_stamp = stamp
                self._trust_changed()
            self._dialer.dial(client, tg, now)
            self._links.maintain(client, tg)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), HEARTBEAT)

    async def _progresses(self) -> None:
        # Apart from the heartbeats: reading the index may wait on a long write, and hellos
        # must not. A trip to a thread costs an idle node more than what it does there: none
        # while nothing has changed.
        read: dict[FolderId, tuple[object, ...]] = {}
        while True:
            for sync in list(self._folders.values()):  # they may come and go meanwhile
                stamp = sync.progress_stamp()  # before the read: a change meanwhile reads again
                if read.get(sync.id) != stamp:
                    self._greeter.progress[sync.id] = await asyncio.to_thread(sync.progress)
                    read[sync.id] = stamp
            await asyncio.sleep(PROGRESS_EVERY)

    async def _ticks(self) -> None:
        # Only when time alone may move the election: a wakeup costs an idle node more than
        # what it does. Waking at least every beat catches what events change meanwhile.
        while True:
            now = self._clock.now()
            self._feed(el.Ticked(now))
            await asyncio.sleep(min(self._election.next_tick(now) - now, HEARTBEAT) + TICK_LATE)

    def _probe(self, peer: NodeId) -> None:
        """A hello to a member whose link closed, now."""
        if self._probing is not None:
            client, tg = self._probing
            self._dialer.probe(client, tg, peer)

    def _trust_changed(self) -> None:
        """Versions held back for their origin may be taken now."""
        for sync in self._folders.values():
            sync.trust_changed()

    # -- election ------------------------------------------------------------------------------
    def _feed(self, event: el.Event) -> None:
        for action in self._election.handle(event):
            self._do(action)

    def _do(self, action: el.Action) -> None:
        describe = self._peers.describe
        match action:
            case el.Broadcast():
                self._wake.set()
                self._links.beat_now()
            case el.MarkUp(peer):
                log.info("peer online: %s", describe(peer))
                self._tell_peer(peer, "online", None)
                for sync in self._folders.values():
                    sync.catch_up.wake.set()
                    sync.retry_now()  # it may hold what others could not supply
            case el.MarkDown(peer, reason):
                log.info("peer down: %s (%s)", describe(peer), reason)
                self._tell_peer(peer, "down", reason)
                self._greeter.forget(peer)
            case el.OpenElection(term):
                self._settled.clear()
                log.info("election opened for term %d", term)
            case el.FollowCoordinator(coordinator, term):
                self._settled.set()
                log.info("coordinator is %s, term %d", describe(coordinator), term)
                self.events.publish("coordinator", coordinator=str(coordinator), term=term,
                                    name=self._peers.name_of(coordinator))
            case el.StepDown(term):
                log.info("stepping down as coordinator of term %d", term)

    def _tell_peer(self, peer: NodeId, state: str, reason: str | None) -> None:
        self.events.publish("peer", peer=str(peer), name=self._peers.name_of(peer),
                            state=state, reason=reason)


class _Told(logging.Handler):
    """Warnings logged by the node, told as events too (logging already bounds them)."""

    def __init__(self, events: Events) -> None:
        super().__init__(logging.WARNING)
        self._events = events

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._events.publish("warning", message=record.getMessage())
        except Exception:
            self.handleError(record)


@contextlib.contextmanager
def _warnings_told(events: Events) -> Iterator[None]:
    handler = _Told(events)
    log.addHandler(handler)
    try:
        yield
    finally:
        log.removeHandler(handler)

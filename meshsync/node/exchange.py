"""Records and blocks between folders and members: what folders ask of the mesh, what members ask
of folders, and whom news is passed on to (the coordinator's fan-out, a member's bridge)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from meshsync.core.errors import Refused
from meshsync.core.ids import NodeId
from meshsync.core.membership import Peer
from meshsync.core.wire import BlockRequest, Data, IndexRequest, Lists, Records
from meshsync.net.client import PeerClient, PeerUnreachable
from meshsync.node.folder import FolderSync
from meshsync.node.outbox import Outbox
from meshsync.node.peers import Peers


class Exchange:
    """Notices, index pages and blocks, to and from the members sharing each folder."""

    def __init__(self, peers: Peers, folders: dict[str, FolderSync]) -> None:
        self._peers = peers
        self._folders = folders
        self.client: PeerClient | None = None  # while the node runs
        self.tasks: asyncio.TaskGroup | None = None  # where notices go out; None on the way out
        self.outbox = Outbox(self._send_notice)

    def _online_members(self, folder: str) -> list[Peer]:
        """The online members sharing `folder` at a known address, coordinator first."""
        peers = self._peers
        found = [p for p in peers.roster if folder in p.folders and p.address
                 and p.is_member(peers.folder_ids) and peers.election.is_up(p.id)]
        return sorted(found, key=lambda p: p.id != peers.election.coordinator)

    def members(self, folder: str) -> int:
        """How many members share `folder`, online or not."""
        return sum(folder in p.folders and p.is_member(self._peers.folder_ids)
                   for p in self._peers.roster)

    def sources(self, folder: str) -> list[tuple[str, str]]:
        """(node key, address) of the online members sharing `folder`, coordinator first."""
        return [(p.id.key, p.address) for p in self._online_members(folder) if p.address]

    def advertised_seq(self, folder: str, key: str) -> int | None:
        """The last seq of a member's index for `folder`, by its latest hello; None if unsaid."""
        for p in self._online_members(folder):
            if p.id.key == key:
                return next((g.seq for g in p.progress if g.folder == folder and g.seq >= 0),
                            None)
        return None

    async def publish(self, notice: Records, skip: frozenset[str] = frozenset(),
                      to: str | None = None) -> None:
        """Send a notice to the coordinator and every other member sharing its folder (but
        those in `skip`; `to` one alone): queued for each, so that no member waits for
        another, nor the caller for any."""
        if self.tasks is None:  # not running, or on the way out: peers catch up later
            return
        for p in self._online_members(notice.folder):
            if p.address and p.id.key not in skip and to in (None, p.id.key):
                self.outbox.post(self.tasks, (p.address, p.key), notice)

    async def _send_notice(self, address: str, key: bytes, notice: Records) -> None:
        if self.client is not None:
            await self.client.send_notice(address, key, notice)

    def _member_at(self, address: str) -> tuple[PeerClient, bytes]:
        """The client, and the key of the member last proven at `address`."""
        peer = self._peers.roster.at(address)
        if self.client is None or peer is None or not peer.trusted:
            raise PeerUnreachable(f"{address}: no member there")
        return self.client, peer.key

    async def fetch_blocks(self, address: str, request: BlockRequest) -> Sequence[Data | None]:
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
        peer = self._peers.roster.get(NodeId.of_key(key))
        if sync is None or peer is None or folder not in peer.folders:
            raise Refused(f"folder {folder!r} is not shared between us")
        return sync

    async def handle_notice(self, key: bytes, notice: Records) -> None:
        """Changes made in the mesh; passed on as `_relay_to` says."""
        sync = self._folder(notice.folder, key)
        sender = NodeId.of_key(key)
        if notice.seq > notice.since and await sync.catch_up.read_past(
                sender.key, notice.epoch, notice.seq):
            return  # its own rows, read as pages already: nothing in it is news
        records, lacking = list(notice.records), 0
        if notice.listless:  # one we cannot rebuild comes whole with catch-up, soon
            rebuilt, lacking = await asyncio.to_thread(sync.rebuild, notice.listless)
            records += rebuilt
        news = await sync.take(sender.key, records) if records else []
        to = self._relay_to(sender) if news else frozenset()
        if to:
            # Only what was news to us (what was not, we passed on before): a member that
            # sends one notice again and again cannot make us fan it out. Queued per member,
            # each queue bounded: the sender does not wait on our fan-out.
            everyone = frozenset(p.id.key for p in self._peers.roster)
            await self.publish(Records(notice.folder, tuple(news), lists=Lists.PATCHES),
                               skip=everyone - to)
        if notice.seq > notice.since and not lacking:  # its own rows, all taken
            await sync.catch_up.covered(sender.key, notice.epoch, notice.since, notice.seq)

    def _relay_to(self, sender: NodeId) -> frozenset[str]:
        """Whom news from `sender` goes on to (vector keys): from the coordinator, every other
        member; from a member that hears the coordinator itself, the members that told us they
        do not, and the coordinator if the sender told us it does not (a link cut between
        them: we are the bridge)."""
        peers = self._peers
        election, now = peers.election, peers.clock.now()
        coordinator = election.coordinator
        members = {p.id for p in peers.roster
                   if p.is_member(peers.folder_ids) and election.is_up(p.id)}
        if coordinator == peers.me:
            to = members
        elif coordinator is not None and election.hears_coordinator(peers.me, now):
            to = {p for p in members if election.cut_from_coordinator(p, now)}
            if election.cut_from_coordinator(sender, now):
                to.add(coordinator)
        else:
            return frozenset()
        return frozenset(p.key for p in to - {sender})

    async def handle_index(self, key: bytes, request: IndexRequest) -> Records:
        """A page of our index for a peer catching up."""
        sync = self._folder(request.folder, key)
        return await asyncio.to_thread(sync.answer_index, request.since, request.lists)

    async def handle_blocks(self, key: bytes, request: BlockRequest) -> list[bytes | None]:
        """Blocks we hold, for a peer writing a file."""
        sync = self._folder(request.folder, key)
        return await asyncio.to_thread(sync.answer_blocks, request.hashes)

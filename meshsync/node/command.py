"""The CLI's commands to a running node, over the control socket, and the reports they read:
peers, status, election, conflicts, versions; trust, restore, elect and stop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from meshsync.control.protocol import ControlError
from meshsync.core import election as el
from meshsync.core.errors import WireError
from meshsync.core.ids import SHORT, NodeId
from meshsync.core.membership import Peer, clock_fix
from meshsync.core.paths import RelPath, check_path
from meshsync.core.throttle import shown
from meshsync.core.wire import FolderId
from meshsync.crypto.keys import public_key_line
from meshsync.crypto.trust import PublicKey, parse_key_line
from meshsync.fs import versions
from meshsync.net.discovery import own_addresses
from meshsync.node import keeper, report
from meshsync.node.config import Folder, Keep, Mode, parse_days, parse_size
from meshsync.node.credentials import Credentials
from meshsync.node.folder import FolderSync
from meshsync.node.peers import Peers
from meshsync.node.shelf import Shelf

log = logging.getLogger("meshsync")

SETTLE_TIMEOUT = 10.0
LOG_MOST = 10_000  # changes one `meshsync log` lists at most


class Commands:
    """Answers the CLI, one command at a time."""

    def __init__(self, peers: Peers, credentials: Credentials, public_blob: bytes,
                 folders: dict[str, FolderSync], feed: Callable[[el.Event], None],
                 settled: asyncio.Event, stop: asyncio.Event, wake: asyncio.Event,
                 trust_changed: Callable[[], None]) -> None:
        self._peers = peers
        self._credentials = credentials
        self._public_blob = public_blob
        self._folders = folders
        self._feed = feed
        self._settled = settled
        self._stop = stop
        self._wake = wake
        self._trust_changed = trust_changed
        self.page: str | None = None  # the web page's address with its token, once served
        self.shelf: Shelf | None = None  # the node's folders, once it runs
        self.keep = Keep()  # the node's bounds on kept versions, for folders without their own

    async def dispatch(self, command: str, args: dict[str, Any]) -> Any:
        """Answer one CLI command."""
        peers = self._peers
        match command:
            case "id":
                return {"id": str(peers.me), "name": peers.name,
                        "key": public_key_line(self._public_blob, peers.name)}
            case "peers":
                return self.peers_json()
            case "elect":
                if args.get("force") is True:
                    self._feed(el.ElectionForced(peers.clock.now()))
                    try:
                        await asyncio.wait_for(self._settled.wait(), SETTLE_TIMEOUT)
                    except TimeoutError:
                        raise ControlError(
                            f"the election for term {peers.election.term} has not settled "
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
            case "add":
                path, alias = args.get("path"), args.get("as")
                if not isinstance(path, str) or not path.startswith("/") or not (
                        alias is None or isinstance(alias, str)):
                    raise ControlError('add wants {"path": ABSOLUTE-PATH, "as": ID or null}')
                folder = await self._shelf().add(path, alias, **self._settings(args, None))
                return {"id": folder.id, "path": str(folder.path)}
            case "set":
                shelf = self._shelf()
                folder = shelf.find(_text(args.get("id"), "set"))
                if changes := self._settings(args, folder):
                    folder = shelf.set(folder.id, **changes)
                return {"id": folder.id, **report.settings_json(folder, folder.keep or self.keep)}
            case "override" | "revert":
                shelf = self._shelf()
                folder = shelf.find(_text(args.get("id"), command))
                running = shelf.folders.get(folder.id)
                if running is None:
                    raise ControlError(f"folder {folder.id} is paused: resume it first")
                if command == "revert":
                    return {"id": folder.id, "reverted": await running.revert()}
                return {"id": folder.id, "overridden": await running.override()}
            case "remove":
                folder, named = await self._shelf().remove(_text(args.get("id"), "remove"))
                return {"removed": folder.id, "path": str(folder.path), "named_by_start": named}
            case "pause":
                return {"paused": await self._shelf().pause(_ids(args.get("ids")))}
            case "resume":
                return {"resumed": await self._shelf().resume(_ids(args.get("ids")))}
            case "log":
                return await self._log(args.get("path"), args.get("limit", "50"))
            case "page":
                if self.page is None:
                    raise ControlError("this node serves no web page (started with"
                                       " --page-port off)")
                return {"url": self.page}
        raise ControlError(f"unknown command {command!r}")

    def _settings(self, args: dict[str, Any], folder: Folder | None) -> dict[str, Any]:
        """The settings `add` (`folder` None) or `set` gives a folder, checked: those named in
        `args` (keep_days, keep_size, mode, share_with: a list of node IDs, or "all")."""
        changes: dict[str, Any] = {}
        if args.get("keep_days") is not None or args.get("keep_size") is not None:
            changes["keep"] = _keep(args, (folder.keep if folder else None) or self.keep)
        if args.get("mode") is not None:
            changes["mode"] = _mode(args["mode"])
        share = args.get("share_with")
        if share == "all":
            changes["share"] = None
        elif share is not None:
            if not isinstance(share, list) or not share or not all(
                    isinstance(i, str) for i in share):
                raise ControlError('share_with wants a list of node IDs, or "all"')
            changes["share"] = frozenset(map(self._node_id, share))
        return changes

    def _node_id(self, text: str) -> NodeId:
        """A node named by its ID, or by the short ID or name of a peer we know."""
        with contextlib.suppress(ValueError):
            return NodeId.parse(text)
        known: list[NodeId] = [p.id for p in self._peers.roster
                               if p.trusted and (p.id.known_as(text) or text == p.name)]
        if len(known) == 1:
            return known[0]
        raise ControlError(
            f"{shown(text, 60)!r} is not a node ID, nor the short ID or name of one trusted peer"
            " (`meshsync peers` lists them; a full ID is taken as it is)")

    def _shelf(self) -> Shelf:
        if self.shelf is None:
            raise ControlError("the node is still starting: try again in a moment", status=503)
        return self.shelf

    def _trust_keys(self, texts: object, introducer: bool = False) -> dict[str, Any]:
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
            raise ControlError("trust wants one or more key lines or peer IDs")
        roster, trust = self._peers.roster, self._peers.trust
        keys: list[PublicKey] = []
        for text in texts:
            peer = roster.find(text.strip())
            origin = self._credentials.origin_by_id(text.strip())
            key = (PublicKey(peer.key, peer.name) if peer else PublicKey(origin, "")
                   if origin else parse_key_line(text))
            if key is None:
                raise ControlError(
                    f"not a public key line nor the ID of a discovered peer: {text[:80]!r}")
            keys.append(key)
        added: list[str] = []
        already: list[str] = []
        for key in keys:
            (added if trust.add(key, introducer=introducer) else already).append(
                str(NodeId.of_key(key.blob)))
            if key.blob in {p.key for p in roster}:
                roster.update(key.blob, trusted=True)
        for peer_id in added:
            log.info("trusted %s%s", peer_id, " as introducer" if introducer else "")
        if added:
            self._trust_changed()
        self._wake.set()
        result: dict[str, Any] = {"added": added, "already": already}
        if introducer:
            result["introducer"] = True  # absent otherwise, as before the option
        return result

    def _election_json(self) -> dict[str, Any]:
        coordinator = self._peers.election.coordinator
        return {"term": self._peers.election.term,
                "coordinator": str(coordinator) if coordinator else None,
                "coordinator_name": self._peers.name_of(coordinator) if coordinator else None}

    def _last_seen(self, peer: Peer) -> float | None:
        """When a peer was last heard of (wall clock): by us, or by our coordinator's word."""
        peers = self._peers
        heard = peers.election.heard_at(peer.id)
        if heard is None:
            return peer.last_seen
        relayed = peers.clock.wall() - (peers.clock.now() - heard)
        return max(relayed, peer.last_seen or 0.0)

    def peers_json(self) -> list[dict[str, Any]]:
        """`meshsync peers`: this node, then every peer it knows, by ID."""
        peers = self._peers
        election = peers.election
        coordinator = election.coordinator
        addresses = own_addresses()
        rows: list[dict[str, Any]] = [{
            "id": str(peers.me), "name": peers.name,
            "address": f"{addresses[0] if addresses else '?'}:{peers.port}",
            "role": "coordinator" if coordinator == peers.me else "member",
            "name_verified": True, "state": "online", "self": True,
            "last_seen": peers.clock.wall(),
            "folders": sorted(peers.folder_ids), "clock_offset": 0.0,
            "via_introducer": None,
        }]
        for peer in sorted(peers.roster, key=lambda p: p.id):
            member = peer.is_member(peers.folder_ids)
            row = {
                "id": str(peer.id), "name": peer.name, "name_verified": peer.trusted,
                "address": peer.address, "role": "coordinator" if peer.id == coordinator else
                        "member" if member else "peer",
                "state": peer.state(election.is_up(peer.id)),
                "self": False, "last_seen": self._last_seen(peer),
                "folders": sorted(peer.folders),
                "clock_offset": None if peer.clock_offset is None else round(peer.clock_offset, 1),
                "via_introducer": next(
                    (str(NodeId.of_key(k)) for k in peers.trust.introducers_of(peer.key)), None),
            }
            if row["state"] == "untrusted":
                row["trust_command"] = f"meshsync trust {peer.id}"
            if peer.clock_refused and peer.clock_offset is not None:
                row["fix"] = clock_fix(peer.clock_offset)
            rows.append(row)
        return rows

    async def _status_json(self) -> dict[str, Any]:
        peers = self._peers
        members = [p for p in peers.roster if p.is_member(peers.folder_ids)]
        folders = []
        for sync in list(self._folders.values()):  # folders may come and go meanwhile
            status = sync.status(await asyncio.to_thread(sync.counts))
            online = [p for p in members if sync.id in p.folders and peers.election.is_up(p.id)]
            status["members"] = [str(p.id) for p in online]
            status["completion"] = [_completion(p, sync.id) for p in online]
            folders.append(status)
        paused = [] if self.shelf is None else list(self.shelf.paused.values())
        folders += [report.paused(f, f.keep or self.keep) for f in paused]
        folders.sort(key=lambda f: f["id"])
        return {"id": str(peers.me), "name": peers.name, **self._election_json(),
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

    async def _log(self, path: object, limit: object) -> list[dict[str, Any]]:
        """The latest change to each path (of every folder, or below PATH), newest first by
        the time each version carries, with the node that made it: each a version its origin
        signed, checked when it came."""
        if (not isinstance(limit, str) or not (limit.isascii() and limit.isdigit())
                or len(limit) > 9 or not 0 < int(limit) <= LOG_MOST):
            raise ControlError(f"log wants a limit from 1 to {LOG_MOST}")
        places: list[tuple[FolderSync, RelPath | None]] = (
            [(sync, None) for sync in list(self._folders.values())] if path is None
            else [self._locate(path)])
        found = []
        for sync, rel in places:
            rows = await asyncio.to_thread(sync.place.index.latest, sync.id, int(limit), rel)
            found += [(sync.id, entry) for entry in rows]
        found.sort(key=lambda item: item[1].record.mtime_ns, reverse=True)
        changes = []
        for folder, entry in found[: int(limit)]:
            r = entry.record
            changes.append({
                "folder": folder, "path": r.path,
                "change": "deleted" if r.deleted else r.kind.value, "size": r.size,
                "time": keeper.iso(r.mtime_ns / 1e9),
                "node": self.node_of(r.made_by),
                "version": dict(r.version.counters),
            })
        return changes

    async def _conflicts_json(self) -> list[dict[str, Any]]:
        found = []
        for sync in list(self._folders.values()):
            found += await asyncio.to_thread(keeper.conflict_copies, sync.place)
        for conflict in found:
            for side in (conflict["copy"], conflict["current"] or {}):
                if side:
                    side["node"] = self.node_of(side["origin"])
        return found

    def node_of(self, origin: str) -> dict[str, str] | None:
        """The node a version's origin names: its vector key, the short ID a conflict copy's
        name holds, or the 7 hex digits of its key that older copy names hold."""
        peers = self._peers
        nodes = [(peers.me, peers.name), *((p.id, p.name) for p in peers.roster)]
        for node_id, name in nodes:
            if node_id.short == origin or (len(origin) != SHORT and node_id.key.startswith(origin)):
                return {"id": str(node_id), "name": name}
        return None


def _completion(peer: Peer, folder: FolderId) -> dict[str, Any]:
    """How far a member says it is with a folder, for status (None: it has not said)."""
    said = next((p for p in peer.progress if p.folder == folder), None)
    row: dict[str, Any] = {"id": str(peer.id), "name": peer.name}
    if said is None:
        return {**row, "state": None, "need_files": None, "need_bytes": None, "percent": None}
    return {**row, "state": said.state, "need_files": said.need_files,
            "need_bytes": said.need_bytes, "percent": said.percent}


def _text(value: object, command: str) -> str:
    if not isinstance(value, str) or not value:
        raise ControlError(f'{command} wants {{"id": FOLDER-ID}}')
    return value


def _ids(value: object) -> list[str]:
    """The folder IDs a pause or resume names; none: all."""
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ControlError('pause and resume want {"ids": [FOLDER-ID, ...]} (none: all)')
    return list(value)


def _keep(args: dict[str, Any], before: Keep) -> Keep:
    """A folder's own bounds on kept versions, as `add` or `set` gives them (at least one);
    those it kept `before` for the one not given."""
    days, size = args.get("keep_days"), args.get("keep_size")
    try:
        return Keep(before.max_age if days is None else parse_days(str(days)) * 86400,
                    before.max_bytes if size is None else parse_size(str(size)))
    except ValueError as e:
        raise ControlError(str(e)) from None


def _mode(value: object) -> Mode:
    try:
        return Mode(value if isinstance(value, str) else "")
    except ValueError:
        modes = ", ".join(m.value for m in Mode)
        raise ControlError(f"a folder's mode is one of {modes}, not {value!r}") from None

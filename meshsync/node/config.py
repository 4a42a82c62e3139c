"""Where things live: the state directory, its files, and the node's settings from the CLI."""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

from meshsync.core.errors import WireError
from meshsync.core.ids import NodeId
from meshsync.core.wire import MAX_NAME, FolderId, check_folder_id, is_node_name
from meshsync.crypto.trust import TrustStore

log = logging.getLogger("meshsync")


def state_dir(env: Mapping[str, str] = os.environ) -> Path:
    """`$MESHSYNC_HOME`, else `$XDG_STATE_HOME/meshsync`, else `~/.local/state/meshsync`."""
    if env.get("MESHSYNC_HOME"):
        return Path(env["MESHSYNC_HOME"])
    if env.get("XDG_STATE_HOME"):
        return Path(env["XDG_STATE_HOME"]) / "meshsync"
    home = Path(env["HOME"]) if env.get("HOME") else Path.home()
    return home / ".local" / "state" / "meshsync"


def ssh_dir() -> Path:
    """The user's SSH directory: their keys and their authorized_keys."""
    return Path.home() / ".ssh"


def trust_store(ssh: Path, state: Path, wall: Callable[[], float] = time.time) -> TrustStore:
    """Whom this node trusts: the user's authorized_keys, and the state directory's
    trusted_keys, the file meshsync writes."""
    return TrustStore([ssh / "authorized_keys"], state / "trusted_keys", wall)


def control_socket(state: Path) -> Path:
    """The Unix socket the CLI uses to talk to the running node."""
    return state / "control.sock"


FOLDERS_FILE = "folders.json"  # in the state directory: folders added, paused, and settings
PAGE_PORT = 22380  # the web page's port on 127.0.0.1, or a free one if it is taken


class Mode(StrEnum):
    """Which way a folder syncs."""

    SEND_RECEIVE = "send-receive"  # changes go out and come in
    SEND_ONLY = "send-only"  # changes go out; the mesh's are listed, not written, till overridden
    RECEIVE_ONLY = "receive-only"  # the mesh's come in; those made here are listed, not sent


@dataclass(frozen=True, slots=True)
class Folder:
    """A synced directory, the ID it is shared under, and its settings: how much of what sync
    replaces it keeps (None: as the node's --keep-days and --keep-size say), which way it
    syncs, and the nodes it is shared with (None: every trusted node that has it)."""

    id: FolderId
    path: Path
    keep: Keep | None = None
    mode: Mode = Mode.SEND_RECEIVE
    share: frozenset[NodeId] | None = None

    def settings(self) -> dict[str, Any]:
        """Those settings that differ from the defaults, as folders.json keeps them."""
        saved: dict[str, Any] = {}
        if self.keep is not None:
            saved |= {"keep_days": self.keep.max_age / 86400, "keep_size": self.keep.max_bytes}
        if self.mode is not Mode.SEND_RECEIVE:
            saved["mode"] = str(self.mode)
        if self.share is not None:
            saved["share_with"] = sorted(map(str, self.share))
        return saved

    def with_settings(self, saved: dict[str, Any]) -> Folder:
        """This folder with the settings folders.json keeps for it; ValueError if unsound."""
        share = saved.get("share_with")
        if share is not None and not (isinstance(share, list) and all(
                isinstance(i, str) for i in share)):
            raise ValueError("a folder's share_with is not a list of node IDs")
        return replace(self, keep=_keep_of(saved), mode=Mode(saved.get("mode", "send-receive")),
                       share=None if share is None else frozenset(map(NodeId.parse, share)))


@dataclass(frozen=True, slots=True)
class Keep:
    """How much of what sync replaced or deleted is kept under .meshsync/versions."""

    max_age: float = 30 * 86400  # seconds
    max_bytes: int = 1 << 30


@dataclass(frozen=True, slots=True)
class MinFree:
    """Space sync leaves free on each folder's disk: a share of it, or a size."""

    percent: float = 1.0  # Syncthing's default
    size: int | None = None  # bytes, in place of the share

    def of(self, total: int) -> int:
        """The bytes to keep free on a disk of `total` bytes."""
        return self.size if self.size is not None else int(total * self.percent / 100)

    def __str__(self) -> str:
        return f"{self.percent:g} %" if self.size is None else f"{self.size >> 20} MiB"


def parse_min_free(text: str) -> MinFree:
    """`--min-free`: `1%` of the disk, or a size like `5G`; ValueError if it is neither."""
    if text.strip().endswith("%"):
        try:
            percent = float(text.strip()[:-1])
        except ValueError:
            percent = -1.0
        if not 0 <= percent <= 100:
            raise ValueError(f"--min-free wants a share from 0% to 100% or a size, not {text!r}")
        return MinFree(percent)
    return MinFree(size=parse_size(text))


@dataclass(frozen=True, slots=True)
class Config:
    """Everything `meshsync start` was told."""

    folders: tuple[Folder, ...]
    state: Path
    ssh_dir: Path
    key: Path | None = None
    port: int | None = None
    peers: tuple[str, ...] = ()
    name: str = socket.gethostname()
    keep: Keep = Keep()
    min_free: MinFree = MinFree()
    catch_up_every: float = 5.0  # seconds between rounds of the safety net under notices
    page_port: int | None = PAGE_PORT  # the web page's, on 127.0.0.1 (0: any free one)

    @property
    def folder_ids(self) -> frozenset[FolderId]:
        """The IDs of the folders this node shares."""
        return frozenset(f.id for f in self.folders)


def kept_out(state: Path, ssh: Path) -> dict[str, Path]:
    """The directories no folder may hold, by what to call them (meshsync's state, the SSH
    keys): syncing them would send the node's own files and keys round the mesh."""
    return {"meshsync's state": state, "your SSH keys": ssh}


def folders_from(dirs: list[str], alias: str | None,
                 keep_out: Mapping[str, Path] = {}) -> tuple[Folder, ...]:
    """The folders named on the command line; ValueError with a message for the user if bad.

    `keep_out`: directories no folder may hold, by what to call them (see kept_out).
    """
    if alias is not None and len(dirs) != 1:
        raise ValueError("--as names one folder: give exactly one DIR with it")
    folders = []
    for d in dirs:
        path = Path(d).expanduser().resolve()
        if path.exists() and not path.is_dir():
            raise ValueError(f"{path} is not a directory: give the directory to sync")
        if path == Path.home().resolve():
            raise ValueError(f"{path} is your home directory: sync a folder in it, such as"
                             " ~/Sync")
        for what, inside in keep_out.items():
            if inside.resolve().is_relative_to(path):
                raise ValueError(f"{path} holds {what} ({inside}): sync a folder that does"
                                 " not, such as ~/Sync")
        try:
            folders.append(Folder(check_folder_id(alias or path.name), path))
        except WireError:
            raise ValueError(
                f"{alias or path.name!r} cannot be a folder ID (it names the folder to peers): "
                "give another with --as NAME"
            ) from None
    for i, folder in enumerate(folders):
        for other in folders[i + 1:]:
            if why := nested(folder, other):
                raise ValueError(why)
    ids = [f.id for f in folders]
    if len(set(ids)) != len(ids):
        raise ValueError("two folders share one folder ID: give one of them another with --as")
    return tuple(folders)


def nested(a: Folder, b: Folder) -> str | None:
    """Why two folders cannot both be synced, one holding the other; None if neither does."""
    for inner, outer in ((a, b), (b, a)):
        if inner.path.is_relative_to(outer.path):
            return (f"{inner.path} is inside {outer.path}: sync one or the other (a folder"
                    " holds everything below it)")
    return None


@dataclass(frozen=True, slots=True)
class Remembered:
    """What the state directory keeps of the folders: those added at runtime, the IDs of
    those paused, and the settings changed of those `start` names, by ID."""

    added: tuple[Folder, ...] = ()
    paused: frozenset[str] = frozenset()
    settings: Mapping[str, dict[str, Any]] = field(default_factory=dict)


def remembered_folders(state: Path) -> Remembered:
    """The folders as the state directory keeps them; nothing if the file is missing or
    damaged (said in the log)."""
    path = state / FOLDERS_FILE
    try:
        found = json.loads(path.read_text())
        added = tuple(Folder(check_folder_id(f["id"]), Path(f["path"])).with_settings(f)
                      for f in found["added"])
        paused = frozenset(str(i) for i in found["paused"])
        settings = found.get("settings", {})
        if not all(f.path.is_absolute() for f in added):
            raise ValueError("a folder's path is not absolute")
        if not (isinstance(settings, dict) and all(isinstance(v, dict)
                                                   for v in settings.values())):
            raise ValueError("settings is not a table of folder IDs")
        for folder_id, saved in settings.items():  # checked now, applied by the node
            Folder(check_folder_id(folder_id), Path("/")).with_settings(saved)
    except FileNotFoundError:
        return Remembered()
    except (OSError, ValueError, KeyError, TypeError, AttributeError, WireError) as e:
        log.warning("ignoring %s: %s", path, e)
        return Remembered()
    return Remembered(added, paused, settings)


def _keep_of(saved: dict[str, Any]) -> Keep | None:
    """A folder's own bounds on kept versions, as folders.json keeps them; ValueError if
    they are not sound."""
    if "keep_days" not in saved:
        return None
    days, size = saved["keep_days"], saved["keep_size"]
    if not (isinstance(size, int) and isinstance(days, int | float) and 0 <= size < 1 << 62):
        raise ValueError("a folder's kept versions are not a number of days and bytes")
    return Keep(parse_days(str(days)) * 86400, size)


def parse_days(text: str) -> float:
    """`--keep-days`: a number of days, 0 or more; ValueError if it is not one."""
    try:
        days = float(text)
    except ValueError:
        days = -1.0
    if not 0 <= days <= 100 * 365:  # NaN fails too
        raise ValueError(f"--keep-days wants a number of days from 0 to 36500, not {text!r}")
    return days


def check_name(text: str) -> str:
    """`--name`: what peers show for this node; ValueError unless 1 to 64 printable
    characters (a hello with any other is refused)."""
    if not is_node_name(text):
        raise ValueError(f"--name wants 1 to {MAX_NAME} printable characters, not {text!r}")
    return text


def parse_size(text: str) -> int:
    """Bytes from `500M`, `2G`, `1.5GiB`, `0`; ValueError if it is not a size."""
    units = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    number = text.strip().upper().removesuffix("IB").removesuffix("B")
    unit = number[-1:] if number[-1:] in units else ""
    try:
        value = float(number.removesuffix(unit)) * units[unit]
    except ValueError:
        raise ValueError(f"not a size: {text!r} (try 500M or 2G)") from None
    if not 0 <= value < 1 << 62:
        raise ValueError(f"not a size: {text!r} (try 500M or 2G)")
    return int(value)


def mib(size: int) -> str:
    """A size for a log line or a reason: `12.5 MiB`."""
    return f"{size / (1 << 20):.1f} MiB"


def parse_page_port(text: str) -> int | None:
    """`--page-port`: a port on 127.0.0.1 (0: any free one), or `off`; ValueError if neither."""
    if text == "off":
        return None
    if not (text.isascii() and text.isdigit()) or not 0 <= int(text) <= 65535:
        raise ValueError(f"--page-port wants a number from 0 to 65535 or off, not {text!r}")
    return int(text)


def check_port(port: int | None) -> int | None:
    """`--port`: None (the default port) or 0 to 65535 (0: any free one); ValueError if not."""
    if port is not None and not 0 <= port <= 65535:
        raise ValueError(f"--port wants a number from 0 to 65535, not {port}")
    return port


def check_peer_address(text: str) -> str:
    """`HOST:PORT` for `--peer`; ValueError if it is not one."""
    host, sep, port = text.rpartition(":")
    if (not sep or not host or not (port.isascii() and port.isdigit())
            or not 0 < int(port) < 65536):
        raise ValueError(f"--peer wants HOST:PORT, not {text!r}")
    return text

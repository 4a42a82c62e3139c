"""`meshsync`: start a node, or ask the running one about peers, election, status and trust."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from meshsync import __version__
from meshsync.cli import render
from meshsync.control.client import call
from meshsync.control.protocol import ControlError
from meshsync.node.config import state_dir


def main(argv: list[str] | None = None) -> int:
    """Run one command; the exit status is 0 on success, 1 with a one-line message otherwise."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "start":
            # Each folder's watches are placed while the node imports and opens its index.
            from meshsync.fs.watch import start_early

            start_early(_roots(args.dirs))
            from meshsync.cli.start import start  # imports aiohttp and zeroconf: only here

            return start(args)
        return _client_command(args)
    except ControlError as e:
        print(f"meshsync: {e}", file=sys.stderr)
        return 1


def _roots(dirs: list[str]) -> list[Path]:
    """The folders named, as `meshsync start` resolves them; those that cannot be are left
    for it to report."""
    roots = []
    for d in dirs:
        try:
            roots.append(Path(d).expanduser().resolve())
        except (OSError, RuntimeError):  # no home to expand, a loop of links
            continue
    return roots


def _client_command(args: argparse.Namespace) -> int:
    sock = state_dir() / "control.sock"
    result: Any
    match args.command:
        case "id":
            result = call(sock, "id")
            text = f"{result['id']}\n{result['key']}"
        case "peers":
            result = call(sock, "peers")
            text = render.peers(result)
        case "status":
            result = call(sock, "status")
            text = render.status(result)
        case "conflicts":
            result = call(sock, "conflicts")
            text = render.conflicts(result)
        case "versions":
            result = call(sock, "versions", path=_absolute(args.path))
            text = render.versions(result)
        case "restore":
            result = call(sock, "restore", path=_absolute(args.path), at=args.at)
            text = render.restored(result)
        case "elect":
            result = call(sock, "elect", force=args.force)
            text = render.election(result)
        case "trust":
            result = call(sock, "trust", keys=_key_texts(args.key), introducer=args.introducer)
            text = render.trusted(result)
        case "stop":
            result = call(sock, "stop")
            text = "the node is stopping"
        case _:
            raise AssertionError(args.command)
    print(json.dumps(result, indent=2) if getattr(args, "json", False) else text)
    return 0


def _absolute(arg: str) -> str:
    """The path as the node sees its folders: absolute, with the directories above resolved."""
    path = Path.cwd() / Path(arg).expanduser()
    if path.name in ("", ".", ".."):
        return str(path.resolve())
    return str(path.parent.resolve() / path.name)  # the file itself may be a link, or gone


def _key_texts(arg: str) -> list[str]:
    """A key line or ID as given, or the key lines of a file such as `id_ed25519.pub`."""
    path = Path(arg).expanduser()
    if "\n" not in arg and len(arg) < 4096 and path.is_file():
        try:
            lines = path.read_text().splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise ControlError(f"cannot read {path}: {e}") from None
        keys = [line for line in lines if line.strip() and not line.lstrip().startswith("#")]
        if not keys:
            raise ControlError(f"{path} holds no key lines")
        return keys
    return [arg]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="meshsync", description="Keep folders identical across the machines of a LAN."
    )
    parser.add_argument("--version", action="version", version=f"meshsync {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    start = sub.add_parser("start", help="run the node in the foreground for these folders")
    start.add_argument("dirs", nargs="+", metavar="DIR")
    start.add_argument("--as", dest="alias", metavar="NAME",
                       help="share the folder under this ID instead of its base name")
    start.add_argument("--port", type=int, help="peer port (default 22300, or a free one)")
    start.add_argument("--peer", action="append", default=[], metavar="HOST:PORT",
                       help="a peer to contact without mDNS (repeatable)")
    start.add_argument("--key", type=Path, metavar="PATH", help="SSH private key to use")
    start.add_argument("--name", help="name shown to peers (default: the host name)")
    start.add_argument("--keep-days", type=float, default=30, metavar="DAYS",
                       help="keep replaced and deleted files this long (default 30)")
    start.add_argument("--keep-size", default="1G", metavar="SIZE",
                       help="at most this much of them per folder, oldest go first (default 1G)")
    start.add_argument("--min-free", default="1%", metavar="SIZE|N%",
                       help="never fill a folder's disk past this: a size, or a share of the "
                            "disk (default 1%%)")
    start.add_argument("-v", "--verbose", action="store_true", help="log debug detail too")

    def client(name: str, help: str, json_flag: bool = True) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help)
        if json_flag:
            p.add_argument("--json", action="store_true", help="print stable JSON")
        return p

    client("id", "this node's ID and public key line")
    client("peers", "every node this node knows, itself included")
    client("status", "this node's folders and the members sharing them")
    client("conflicts", "conflict copies: both versions' origin and time")
    versions = client("versions", "kept versions of a file, or of all files below a directory")
    versions.add_argument("path", metavar="PATH", help="a file or directory in a synced folder")
    restore = client("restore", "bring a kept version back (it syncs like any edit)")
    restore.add_argument("path", metavar="PATH", help="a file in a synced folder")
    restore.add_argument("--at", metavar="TIME",
                         help="the newest version kept at or before TIME (default: the newest)"
                              "; 20261125-101500 (UTC) or 2026-11-25T10:15 (local)")
    elect = client("elect", "show the coordinator and term")
    elect.add_argument("--force", action="store_true", help="open a new election now")
    trust = client("trust", "trust a peer", json_flag=True)
    trust.add_argument("key", metavar="KEY|FILE|ID",
                       help="a public key line, a file of them, or a discovered peer's ID")
    trust.add_argument("--introducer", action="store_true",
                       help="also trust the members this peer trusts, while it says it does")
    client("stop", "stop the running node cleanly", json_flag=False)
    return parser


if __name__ == "__main__":
    sys.exit(main())

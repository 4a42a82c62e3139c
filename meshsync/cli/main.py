"""`meshsync`: start a node, or ask the running one about peers, election, status and trust."""

from __future__ import annotations

import argparse
import json
import os
import queue
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any, NoReturn

from meshsync import __version__
from meshsync.cli import keys, render
from meshsync.control.client import call, events
from meshsync.control.protocol import ControlError
from meshsync.crypto.trust import TrustStore
from meshsync.node.config import (
    PAGE_PORT,
    Config,
    Keep,
    check_name,
    check_peer_address,
    check_port,
    folders_from,
    kept_out,
    parse_days,
    parse_min_free,
    parse_page_port,
    parse_size,
    remembered_folders,
    ssh_dir,
    state_dir,
    trust_store,
)


def main(argv: list[str] | None = None) -> int:
    """Run one command; the exit status is 0 on success, else a line on stderr and 2 if the
    command line is wrong, 1 if the command cannot be done."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command in ("completion", "man"):
        from meshsync.cli import manual

        print(manual.completion(parser, args.shell) if args.command == "completion"
              else manual.man_page(parser), end="")
        return 0
    if args.command == "help":
        if args.topic:
            parser.parse_args([args.topic, "--help"])  # prints it and exits 0
        parser.print_help()
        return 0
    try:
        if args.command == "service":
            return _service(args)
        if args.command == "start":
            try:
                config = _start_config(args)
            except ValueError as e:  # the command line is wrong as written
                print(f"meshsync start: {e}", file=sys.stderr)
                return 2
            # Each folder's watches are placed while the node imports and opens its index.
            from meshsync.fs.watch import start_early

            start_early([f.path for f in config.folders])
            from meshsync.cli.start import start  # imports aiohttp and zeroconf: only here

            return start(args, config)
        return _client_command(args)
    except keys.UsageError as e:
        print(f"meshsync {args.command}: {e}", file=sys.stderr)
        return 2
    except ControlError as e:
        print(f"meshsync: {e}", file=sys.stderr)
        return 1
    except OSError as e:  # a file of the state directory or of systemd's, say
        where = f"{e.filename}: " if e.filename else ""
        print(f"meshsync: {where}{e.strerror or e}", file=sys.stderr)
        return 1


def _start_config(args: argparse.Namespace) -> Config:
    """What `start` was told, checked; ValueError with a line for the user if it is wrong."""
    state = state_dir()
    ssh = ssh_dir()
    if not args.dirs and not remembered_folders(state).added:
        raise ValueError("no folder to sync: name one, as in `meshsync start ~/Sync` (folders"
                         " added with `meshsync add` are remembered)")
    return Config(
        folders=folders_from(args.dirs, args.alias, kept_out(state, ssh)),
        state=state,
        ssh_dir=ssh,
        key=args.key,
        port=check_port(args.port),
        peers=tuple(check_peer_address(p) for p in args.peer),
        keep=Keep(parse_days(args.keep_days) * 86400, parse_size(args.keep_size)),
        min_free=parse_min_free(args.min_free),
        name=check_name(args.name) if args.name is not None else socket.gethostname(),
        page_port=parse_page_port(args.page_port),
    )


def _client_command(args: argparse.Namespace) -> int:
    sock = state_dir() / "control.sock"
    result: Any
    match args.command:
        case "id":
            result = keys.node_id(sock, state_dir(), ssh_dir())
            text = f"{result['id']}\n{result['key']}"
        case "peers":
            result = call(sock, "GET", "/v1/peers")
            text = render.peers(result)
        case "status":
            if args.watch:
                return _watch(sock)
            result = call(sock, "GET", "/v1/status")
            text = render.status(result)
        case "conflicts":
            result = call(sock, "GET", "/v1/conflicts")
            text = render.conflicts(result)
        case "versions":
            result = call(sock, "GET", "/v1/versions", query={"path": _absolute(args.path)})
            text = render.versions(result)
        case "restore":
            result = call(sock, "POST", "/v1/restore",
                          {"path": _absolute(args.path), "at": args.at})
            text = render.restored(result)
        case "elect":
            result = (call(sock, "POST", "/v1/elect") if args.force
                      else call(sock, "GET", "/v1/election"))
            text = render.election(result)
        case "trust":
            result = keys.trust(sock, _trust_store(), args.key, args.introducer)
            text = render.trusted(result)
        case "untrust":
            result = keys.untrust(_trust_store(), args.key)
            text = "\n".join(f"untrusted {i}: nothing it sends is taken from now on"
                             for i in result["removed"])
        case "add":
            body = {"path": str((Path.cwd() / Path(args.dir).expanduser()).resolve()),
                    "as": args.alias, **_settings(args)}
            result = call(sock, "POST", "/v1/add", body)
            text = f"syncing {result['path']} as {result['id']}, now and after a restart"
        case "set":
            result = call(sock, "POST", "/v1/set", {"id": args.id, **_settings(args)})
            text = render.folder_settings(result)
        case "override":
            result = call(sock, "POST", "/v1/override", {"id": args.id})
            count = result["overridden"]
            text = (f"folder {result['id']}: this node's versions of {count} path"
                    f"{'' if count == 1 else 's'} announced over the mesh's changes")
        case "revert":
            result = call(sock, "POST", "/v1/revert", {"id": args.id})
            count = result["reverted"]
            text = (f"folder {result['id']}: the mesh's versions of {count} path"
                    f"{'' if count == 1 else 's'} changed here are being put back (the changes"
                    " are kept among the versions)")
        case "remove":
            result = call(sock, "POST", "/v1/remove", {"id": args.id})
            text = (f"no longer syncing {result['removed']} ({result['path']}); its files stay"
                    + ("; `start` names it, so it is synced again when started so"
                       if result["named_by_start"] else ""))
        case "pause" | "resume":
            result = call(sock, "POST", f"/v1/{args.command}", {"ids": args.ids})
            done = result["paused" if args.command == "pause" else "resumed"]
            text = (f"{args.command}d {', '.join(done)}" if done
                    else f"nothing to {args.command}")
        case "log":
            query = {"limit": str(args.limit)}
            if args.path is not None:
                query["path"] = _absolute(args.path)
            result = call(sock, "GET", "/v1/log", query=query)
            text = render.log(result)
        case "open":
            result = call(sock, "GET", "/v1/page")
            text = _open(result["url"])
        case "stop":
            result = call(sock, "POST", "/v1/stop")
            text = "the node is stopping"
        case _:
            raise AssertionError(args.command)
    print(json.dumps(result, indent=2) if getattr(args, "json", False) else text)
    return 0


WATCH_EVERY = 1.0  # seconds between looks at the status while following the events


def _watch(sock: Path) -> int:
    """`status --watch`: the status, then each event and each change of a folder's line as
    they come, each line stamped with the time, until Ctrl-C or the node stops."""
    came: queue.Queue[dict[str, Any] | ControlError] = queue.Queue()

    def read() -> None:
        try:
            for found in events(sock):
                if found is not None:
                    came.put(found)
        except ControlError as e:
            came.put(e)

    result = call(sock, "GET", "/v1/status")
    threading.Thread(target=read, daemon=True).start()
    print(render.status(result), flush=True)
    lines = {f["id"]: render.folder_line(f) for f in result["folders"]}
    looked = time.monotonic()
    try:
        while True:
            try:
                found = came.get(timeout=max(0.0, looked + WATCH_EVERY - time.monotonic()))
            except queue.Empty:
                found = None
            if isinstance(found, ControlError):
                raise found
            stamp = time.strftime("%H:%M:%S")
            if found is not None and (line := render.event(found)) is not None:
                print(f"{stamp} {line}", flush=True)
            if time.monotonic() < looked + WATCH_EVERY:
                continue
            looked = time.monotonic()
            for folder in call(sock, "GET", "/v1/status")["folders"]:
                if lines.get(folder["id"]) != (line := render.folder_line(folder)):
                    lines[folder["id"]] = line
                    print(f"{stamp} {line}", flush=True)
    except KeyboardInterrupt:
        return 130


def _absolute(arg: str) -> str:
    """The path as the node sees its folders: absolute, with the directories above resolved."""
    path = Path.cwd() / Path(arg).expanduser()
    if path.name in ("", ".", ".."):
        return str(path.resolve())
    return str(path.parent.resolve() / path.name)  # the file itself may be a link, or gone


def _service(args: argparse.Namespace) -> int:
    from meshsync.cli import service

    if args.action == "uninstall":
        print("\n".join(service.uninstall()))
        return 0
    try:
        config = _start_config(args)
    except ValueError as e:  # the command line is wrong as written
        print(f"meshsync service install: {e}", file=sys.stderr)
        return 2
    service.install(_start_argv(args, config), config.ssh_dir, config.state,
                    lambda line: print(line, flush=True))
    return 0


def _open(url: str) -> str:
    """Open the page in the user's browser if there is one; what to tell them either way."""
    import webbrowser

    if (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")) and webbrowser.open(url):
        return f"opened {url}"
    return f"open this address in a browser on this machine: {url}"


def _trust_store() -> TrustStore:
    """The files that say whom this node trusts, as `meshsync start` reads them."""
    return trust_store(ssh_dir(), state_dir())


def _start_options(start: argparse.ArgumentParser) -> None:
    """What `start` (and `service install`) take."""
    start.add_argument("dirs", nargs="*", metavar="DIR",
                       help="the folders to sync, besides those added with `meshsync add`")
    start.add_argument("--as", dest="alias", metavar="NAME",
                       help="share the folder under this ID instead of its base name")
    start.add_argument("--port", type=int, help="peer port (default 22300, or a free one)")
    start.add_argument("--peer", action="append", default=[], metavar="HOST:PORT",
                       help="a peer to contact without mDNS (repeatable)")
    start.add_argument("--key", type=Path, metavar="PATH", help="SSH private key to use")
    start.add_argument("--name", help="name shown to peers (default: the host name)")
    start.add_argument("--keep-days", default="30", metavar="DAYS",
                       help="keep replaced and deleted files this long (default 30)")
    start.add_argument("--keep-size", default="1G", metavar="SIZE",
                       help="at most this much of them per folder, oldest go first (default 1G)")
    start.add_argument("--min-free", default="1%", metavar="SIZE|N%",
                       help="never fill a folder's disk past this: a size, or a share of the "
                            "disk (default 1%%)")
    start.add_argument("--page-port", default=str(PAGE_PORT), metavar="N|off",
                       help=f"the web page's port on 127.0.0.1 (default {PAGE_PORT}, or a free"
                            " one if that is taken; 0: a free one; off: no page)")
    start.add_argument("-v", "--verbose", action="store_true", help="log debug detail too")


def _start_argv(args: argparse.Namespace, config: Config) -> list[str]:
    """`start`'s arguments as checked: folders and key absolute, for a service to run."""
    argv = [str(f.path) for f in config.folders]
    for option, value in (("--as", args.alias), ("--port", args.port),
                          ("--key", config.key and config.key.expanduser().resolve()),
                          ("--name", args.name), ("--keep-days", args.keep_days),
                          ("--keep-size", args.keep_size), ("--min-free", args.min_free),
                          ("--page-port", args.page_port)):
        if value is not None:
            argv += [option, str(value)]
    for peer in config.peers:
        argv += ["--peer", peer]
    return argv + (["--verbose"] if args.verbose else [])


class _Parser(argparse.ArgumentParser):
    """argparse, with a wrong command line told in one line (exit 2), not under its usage."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="meshsync", description="Keep folders identical across the machines of a LAN."
    )
    parser.add_argument("--version", action="version", version=f"meshsync {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    _start_options(sub.add_parser("start", help="run the node in the foreground for these"
                                                 " folders"))
    service = sub.add_parser("service", help="run the node as a systemd user service")
    actions = service.add_subparsers(dest="action", required=True, metavar="ACTION")
    _start_options(actions.add_parser(
        "install", help="write, enable and start the service running `start` with these"
                        " arguments"))
    actions.add_parser("uninstall", help="stop the service and remove it")

    def client(name: str, help: str, json_flag: bool = True) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help)
        if json_flag:
            p.add_argument("--json", action="store_true", help="print stable JSON")
        return p

    client("id", "this node's ID and public key line")
    client("peers", "every node this node knows, itself included")
    status = client("status", "this node's folders and the members sharing them")
    status.add_argument("--watch", action="store_true",
                        help="then follow: print each event and each change of a folder's"
                             " state as it comes, until Ctrl-C")
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
    trust = client("trust", "trust a peer (with no node running: by its key line)")
    trust.add_argument("key", metavar="KEY|FILE|ID",
                       help="a public key line, a file of them, or a discovered peer's ID")
    trust.add_argument("--introducer", action="store_true",
                       help="also trust the members this peer trusts, while it says it does")
    untrust = client("untrust", "stop trusting a node")
    untrust.add_argument("key", metavar="KEY|FILE|ID",
                         help="its public key line, a file of them, or its ID (as `peers`"
                              " shows it)")
    changes = client("log", "the latest changes, newest first, and the node that made each")
    changes.add_argument("path", nargs="?", metavar="PATH",
                         help="a file or directory in a synced folder (default: all)")
    changes.add_argument("-n", dest="limit", type=int, default=50, metavar="N",
                         help="how many (default 50)")
    add = client("add", "sync one more folder, now and after a restart")
    add.add_argument("dir", metavar="DIR")
    add.add_argument("--as", dest="alias", metavar="NAME",
                     help="share it under this ID instead of its base name")
    _setting_options(add)
    setter = client("set", "change a folder's settings, now and after a restart")
    setter.add_argument("id", metavar="ID", help="the folder's ID, as `status` shows it")
    _setting_options(setter)
    override = client("override", "make a send-only folder's versions win over the mesh's"
                                  " changes")
    override.add_argument("id", metavar="ID", help="the folder's ID, as `status` shows it")
    revert = client("revert", "put the mesh's versions back over a receive-only folder's"
                              " changes")
    revert.add_argument("id", metavar="ID", help="the folder's ID, as `status` shows it")
    remove = client("remove", "stop syncing a folder (its files stay)")
    remove.add_argument("id", metavar="ID", help="the folder's ID, as `status` shows it")
    for verb, what in (("pause", "stop syncing folders until resumed"),
                       ("resume", "sync paused folders again")):
        command = client(verb, what)
        command.add_argument("ids", nargs="*", metavar="ID", help="folder IDs (none: all)")
    client("open", "open the node's web page in a browser")
    client("stop", "stop the running node cleanly", json_flag=False)
    shells = sub.add_parser("completion", help="print the shell completion script")
    shells.add_argument("shell", choices=["bash", "zsh"])
    sub.add_parser("man", help="print the manual page (meshsync man | man -l -)")
    helps = sub.add_parser("help", help="this help, or a command's")
    helps.add_argument("topic", nargs="?", metavar="COMMAND", choices=sorted(sub.choices),
                       help="the command to explain")
    return parser


def _setting_options(command: argparse.ArgumentParser) -> None:
    """The options of `add` and `set`: a folder's settings."""
    ways = command.add_mutually_exclusive_group()
    ways.add_argument("--send-only", dest="mode", action="store_const", const="send-only",
                      help="send changes made here; list the mesh's without writing them"
                           " (`meshsync override` makes ours win)")
    ways.add_argument("--receive-only", dest="mode", action="store_const",
                      const="receive-only", help="write the mesh's changes; list those made"
                      " here, never send them (`meshsync revert` puts the mesh's back)")
    ways.add_argument("--send-receive", dest="mode", action="store_const",
                      const="send-receive", help="send and receive changes (the default)")
    shares = command.add_mutually_exclusive_group()
    shares.add_argument("--share-with", action="append", metavar="NODE",
                        help="share it with this node only (its ID, or a trusted peer's short"
                             " ID or name; repeat for more)")
    shares.add_argument("--share-with-all", dest="share_with", action="store_const",
                        const="all", help="share it with every trusted node (the default)")
    command.add_argument("--keep-days", metavar="DAYS",
                         help="keep what sync replaces in it this long (default: as the node)")
    command.add_argument("--keep-size", metavar="SIZE",
                         help="at most this much of it (default: as the node)")


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    """The settings `add` or `set` was given, as the API takes them; UsageError for a bound
    written wrong (before any node is asked: the node checks them again)."""
    try:
        for text, parse in ((args.keep_days, parse_days), (args.keep_size, parse_size)):
            if text is not None:
                parse(text)
    except ValueError as e:
        raise keys.UsageError(str(e)) from None
    return {name: value for name in ("mode", "share_with", "keep_days", "keep_size")
            if (value := getattr(args, name)) is not None}


if __name__ == "__main__":
    sys.exit(main())

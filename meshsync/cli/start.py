"""`meshsync start`: build the node from the command line and run it in the foreground."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path

from meshsync.crypto.keys import KeyLoadError, find_key, load_signer
from meshsync.crypto.trust import TrustStore
from meshsync.node.clock import Clock
from meshsync.node.config import (
    Config,
    Keep,
    check_peer_address,
    folders_from,
    parse_size,
    state_dir,
)
from meshsync.node.node import AlreadyRunning, Node


def start(args: argparse.Namespace) -> int:
    """Run a node until it is stopped; 1 with a one-line reason if it cannot start."""
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(message)s",
        datefmt="%Y-%m-%d %H:%M:%S",
        stream=sys.stderr,
    )
    for noisy in ("zeroconf", "aiohttp", "asyncio", "watchfiles"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    state = state_dir()
    ssh_dir = Path.home() / ".ssh"
    try:
        config = Config(
            folders=folders_from(args.dirs, args.alias),
            state=state,
            ssh_dir=ssh_dir,
            key=args.key,
            port=args.port,
            peers=tuple(check_peer_address(p) for p in args.peer),
            keep=Keep(args.keep_days * 86400, parse_size(args.keep_size)),
            **({"name": args.name} if args.name else {}),
        )
        signer = load_signer(find_key(args.key, ssh_dir, state), os.environ.get("SSH_AUTH_SOCK"))
        trust = TrustStore([ssh_dir / "authorized_keys"], state / "trusted_keys")
        asyncio.run(Node(config, signer, trust, Clock()).run())
    except (ValueError, KeyLoadError, AlreadyRunning) as e:
        print(f"meshsync: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"meshsync: cannot start: {e}", file=sys.stderr)
        return 1
    return 0

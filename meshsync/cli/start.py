"""`meshsync start`: build the node from the command line and run it in the foreground."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from dataclasses import replace

from meshsync.core.errors import MeshsyncError
from meshsync.core.throttle import shown
from meshsync.crypto.agent import AgentError
from meshsync.crypto.keys import KeyLoadError, find_key, load_signer
from meshsync.node.catchup import interval_from
from meshsync.node.clock import Clock
from meshsync.node.config import Config, trust_store
from meshsync.node.node import Node
from meshsync.node.state import AlreadyRunning

# Errors the user can act on, each with a message made for them; anything else is a bug and
# shows its traceback. A ValueError is the user's only while the arguments are checked.
_FATAL: tuple[type[Exception], ...] = (
    MeshsyncError, OSError, KeyLoadError, AlreadyRunning, AgentError)
# A network error that escapes is a bug (peers' failures are handled where they happen).
_NOT_THE_USERS = (TimeoutError, ConnectionError)
_ARGUMENTS: tuple[type[Exception], ...] = (ValueError, *_FATAL)


def start(args: argparse.Namespace, config: Config) -> int:
    """Run a node as `config` says until it is stopped; a one-line reason and 2 if the command
    line is wrong, 1 if the node cannot start or go on."""
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(message)s",
        datefmt="%Y-%m-%d %H:%M:%S",
        stream=sys.stderr,
    )
    for noisy in ("zeroconf", "aiohttp", "asyncio", "watchfiles"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        config = replace(config, catch_up_every=interval_from(os.environ))
    except ValueError as e:  # the command line is wrong as written
        print(f"meshsync start: {e}", file=sys.stderr)
        return 2
    state, ssh_dir = config.state, config.ssh_dir
    expected = _ARGUMENTS
    try:
        signer = load_signer(find_key(config.key, ssh_dir, state),
                             os.environ.get("SSH_AUTH_SOCK"))
        clock = Clock()  # checks MESHSYNC_CLOCK_OFFSET, an argument of sorts
        trust = trust_store(ssh_dir, state, clock.wall)
        expected = _FATAL
        asyncio.run(Node(config, signer, trust, clock).run())
    except KeyboardInterrupt:  # Ctrl-C before the node's own handler was in place
        return 130
    except BaseException as e:
        reason = _reason(e, expected)
        if reason is None:
            raise
        print(f"meshsync: {reason}", file=sys.stderr)
        return 1
    return 0


def _reason(e: BaseException, expected: tuple[type[BaseException], ...]) -> str | None:
    """The one line to show for an expected error, also inside (nested) exception groups.

    None if `e`, or any error in its group, is unexpected: that is a bug, to show in full.
    """
    if isinstance(e, BaseExceptionGroup):
        reasons = [_reason(inner, expected) for inner in e.exceptions]
        return None if None in reasons else reasons[0]
    if not isinstance(e, expected) or isinstance(e, _NOT_THE_USERS):
        return None
    if isinstance(e, AgentError):  # e.g. `ssh-add -D` while the node ran
        return f"{e}: the node cannot sign without its key; run ssh-add, then start it again"
    if isinstance(e, OSError) and e.strerror:
        where = " → ".join(os.fsdecode(f) if isinstance(f, bytes) else str(f)
                           for f in (e.filename, e.filename2) if f is not None)
        text = f"{where}: {e.strerror}" if where else str(e)
    else:
        text = str(e) or type(e).__name__
    return shown(text, None)

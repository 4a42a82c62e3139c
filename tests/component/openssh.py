"""Stock OpenSSH: the referee (what `ssh-keygen -Y verify` says of a signature), and a real
ssh-agent holding passphrase-protected keys, for the tests and the bench."""

from __future__ import annotations

import contextlib
import os
import shlex
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path


def ssh_keygen_verify(tmp: Path, key: Path, armored: str, message: bytes) -> bool:
    """Whether `ssh-keygen -Y verify` accepts `armored` over `message` from `key`'s .pub."""
    (tmp / "allowed").write_text("someone " + Path(f"{key}.pub").read_text())
    (tmp / "sig").write_text(armored)
    cmd = ["ssh-keygen", "-Y", "verify", "-f", str(tmp / "allowed"), "-I", "someone",
           "-n", "meshsync", "-s", str(tmp / "sig")]
    return subprocess.run(cmd, input=message, capture_output=True, check=False).returncode == 0


@contextlib.contextmanager
def ssh_agent(directory: Path) -> Iterator[Path]:
    """A running ssh-agent and its socket, `directory`/agent.sock (ended after the block).
    AF_UNIX paths are limited to about 107 bytes: `directory` must be short."""
    sock = directory / "agent.sock"
    with subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL) as agent:
        try:
            deadline = time.monotonic() + 5
            while not sock.exists():
                assert time.monotonic() < deadline, "ssh-agent did not create its socket"
                time.sleep(0.02)
            yield sock
        finally:
            agent.kill()


def ssh_add(sock: Path, key: Path, passphrase: str, scratch: Path) -> None:
    """Add the passphrase-protected `key` to the agent at `sock`, as `ssh-add` asks: by an
    askpass program (written in `scratch`)."""
    askpass = scratch / "askpass"
    askpass.write_text(f"#!/bin/sh\necho {shlex.quote(passphrase)}\n")
    askpass.chmod(0o700)
    env = {**os.environ, "SSH_AUTH_SOCK": str(sock), "SSH_ASKPASS": str(askpass),
           "SSH_ASKPASS_REQUIRE": "force", "DISPLAY": ":0"}
    added = subprocess.run(["ssh-add", "-q", str(key)], env=env, stdin=subprocess.DEVNULL,
                           capture_output=True, text=True, check=False)
    assert added.returncode == 0, f"ssh-add {key} exited {added.returncode}: {added.stderr}"

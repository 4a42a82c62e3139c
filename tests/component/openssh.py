"""Stock OpenSSH as the referee: what `ssh-keygen -Y verify` says of a signature."""

from __future__ import annotations

import subprocess
from pathlib import Path


def ssh_keygen_verify(tmp: Path, key: Path, armored: str, message: bytes) -> bool:
    """Whether `ssh-keygen -Y verify` accepts `armored` over `message` from `key`'s .pub."""
    (tmp / "allowed").write_text("someone " + Path(f"{key}.pub").read_text())
    (tmp / "sig").write_text(armored)
    cmd = ["ssh-keygen", "-Y", "verify", "-f", str(tmp / "allowed"), "-I", "someone",
           "-n", "meshsync", "-s", str(tmp / "sig")]
    return subprocess.run(cmd, input=message, capture_output=True, check=False).returncode == 0

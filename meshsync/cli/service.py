"""`meshsync service install|uninstall`: run the node as a systemd user service.

A service has no ssh-agent: where the user's SSH key is passphrase-protected, the service
signs with a key of its own, kept unencrypted (0600) in the state directory, which the other
machines trust like any key (`meshsync trust` its line there).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from meshsync.control.protocol import ControlError
from meshsync.crypto.keys import KeyLoadError, find_key, load_signer, own_key

UNIT = "meshsync.service"
_TEMPLATE = """\
# Written by `meshsync service install`; `meshsync service uninstall` removes it.
[Unit]
Description=meshsync: keep folders identical across the machines of a LAN
Wants=network-online.target
After=network-online.target

[Service]
ExecStart={command}
Restart=on-failure
RestartSec=5

[Install]
WantedBy=default.target
"""


def unit_path(env: dict[str, str] | os._Environ[str] = os.environ) -> Path:
    """Where systemd looks for the user's units."""
    config = env.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config) / "systemd" / "user" / UNIT


def install(start_args: list[str], ssh_dir: Path, state: Path,
            tell: Callable[[str], None]) -> None:
    """Write and enable the unit that runs `meshsync start` with these (checked) arguments,
    telling the user each step; ControlError if systemd could not be told (the unit stays
    written, and the line says what to run)."""
    if "--key" not in start_args and not _usable_without_agent(ssh_dir, state):
        key = own_key(state)
        start_args = [*start_args, "--key", str(key)]
        line = key.with_name("key.pub").read_text().strip()
        tell("your SSH key needs its passphrase, which a service cannot ask for: the service"
             f" signs with a key of its own, {key}")
        tell(f"on the other machines, trust it: meshsync trust '{line}'")
    command = [sys.executable, "-m", "meshsync", "start", *start_args]
    path = unit_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(_TEMPLATE.format(command=" ".join(map(_quoted, command))))
    tell(f"wrote {path}")
    _systemctl("daemon-reload")
    _systemctl("enable", "--now", UNIT)
    tell("enabled and started: `systemctl --user status meshsync`; its log: `journalctl --user"
         " -u meshsync`")
    tell("to keep it running while you are logged out: loginctl enable-linger"
         f" {os.environ.get('USER') or 'YOUR-USER'}")


def uninstall() -> list[str]:
    """Stop and disable the service and remove its unit; the lines to tell the user."""
    path = unit_path()
    if not path.exists():
        raise ControlError(f"no meshsync service is installed ({path} does not exist)")
    said = []
    try:
        _systemctl("disable", "--now", UNIT, then="")
    except ControlError as e:
        said.append(f"{e}; removing the unit all the same")
    path.unlink()
    said.append(f"removed {path}")
    with contextlib.suppress(ControlError):  # said above
        _systemctl("daemon-reload")
    return said


def _usable_without_agent(ssh_dir: Path, state: Path) -> bool:
    """Whether the key `start` would take signs with no ssh-agent to help."""
    try:
        load_signer(find_key(None, ssh_dir, state), None)
    except KeyLoadError:
        return False
    return True


def _systemctl(*args: str, then: str = ": run it in your login session (the unit is written)"
               ) -> None:
    try:
        done = subprocess.run(["systemctl", "--user", *args], capture_output=True, text=True,
                              timeout=60, check=False)
    except FileNotFoundError:
        raise ControlError("systemctl is not installed: this system does not run systemd;"
                           f" start the node with the command in {unit_path()}") from None
    except subprocess.TimeoutExpired:
        raise ControlError(f"systemctl --user {' '.join(args)} did not answer") from None
    if done.returncode != 0:
        reason = (done.stderr.strip().splitlines() or ["failed"])[-1]
        raise ControlError(f"systemctl --user {' '.join(args)}: {reason}{then}")


def _quoted(arg: str) -> str:
    """An argument as systemd reads ExecStart: quoted where needed, % and $ escaped."""
    text = arg.replace("%", "%%").replace("$", "$$")
    if text and not any(c in text for c in " \t\"'\\;"):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'

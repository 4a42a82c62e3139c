"""A LAN on one machine: hosts in network namespaces on a bridge, each running `meshsync start`."""

from __future__ import annotations

import base64
import contextlib
import errno
import hashlib
import json
import os
import resource
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from meshsync.core.ids import NodeId
from tests.component.openssh import ssh_add

T = TypeVar("T")
SUBNET = "10.231.7"


def why_no_lan() -> str | None:
    """None if namespaces can be made here, else the reason they cannot."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip", "nft", "ssh-keygen", "tcpdump"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    return None


def run(*cmd: str, check: bool = True, **kw: Any) -> subprocess.CompletedProcess[str]:
    """Run a command, capturing its output as text; with `check`, fail showing its stderr."""
    result = subprocess.run(cmd, check=False, capture_output=True, text=True, **kw)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {result.returncode}: {result.stderr}")
    return result


def wait_for(what: str, probe: Callable[[], T | None], timeout: float, every: float = 0.05) -> T:
    """Poll `probe` until it returns something truthy; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = probe()
        except AssertionError as e:
            last = e
        if last and not isinstance(last, AssertionError):
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.1f} s waiting for {what}: {last}")
        time.sleep(every)


def holds_for(what: str, probe: Callable[[], object], seconds: float) -> None:
    """Check `probe` again and again for `seconds`; fail the first time it is false."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert probe(), f"expected {what}, but it stopped holding"
        time.sleep(0.05)


class Unsettled(Exception):
    """An entry went or changed kind while `tree` looked at it: the folder is still settling."""


# What the OS says when an entry is no longer what it was a moment ago: gone, or not the
# symlink (EINVAL from readlink), file (EISDIR) or directory (ENOTDIR) it was.
_CHANGED = frozenset({errno.ENOENT, errno.EINVAL, errno.EISDIR, errno.ENOTDIR})


def tree(root: Path) -> dict[str, tuple[str, str, int]]:
    """Every path under root but the marker: (kind, content digest or link target, mode).
    Unsettled if an entry changes while it is looked at."""
    found: dict[str, tuple[str, str, int]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        if Path(dirpath) == root:
            dirnames[:] = [d for d in dirnames if d != ".meshsync"]
        for name in [*dirnames, *filenames]:
            path = Path(dirpath) / name
            rel = path.relative_to(root).as_posix()
            try:
                mode = path.lstat().st_mode & 0o7777
                if path.is_symlink():
                    found[rel] = ("symlink", str(path.readlink()), 0)
                elif path.is_dir():
                    found[rel] = ("dir", "", mode)
                else:
                    found[rel] = ("file", hashlib.sha256(path.read_bytes()).hexdigest(), mode)
            except OSError as e:
                if e.errno not in _CHANGED:
                    raise
                raise Unsettled(f"{rel} changed while it was looked at ({e})") from e
    return found


def same_trees(hosts: list[Host]) -> dict[str, tuple[str, str, int]] | None:
    """The common tree if every host's folder holds the same one."""
    try:
        trees = [tree(h.sync) for h in hosts]
    except Unsettled:
        return None  # a file went while we looked: the folders are still settling
    return trees[0] if all(t == trees[0] for t in trees) else None


class Host:
    """One machine of the LAN: a namespace, a home with its own SSH key, a meshsync node."""

    def __init__(self, lan: Lan, index: int) -> None:
        self.lan = lan
        self.index = index
        self.name = f"h{index}"
        self.ns = f"{lan.prefix}{self.name}"
        self.port_name = f"{lan.prefix}{self.name}"  # the switch-side veth
        self.ip = f"{SUBNET}.{10 + index}"
        self.home = lan.root / self.name
        self.sync = self.home / "Sync"
        self.log = self.home / "node.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.env_extra: dict[str, str] = {}
        # Periodic catch-up (the safety net under notices) is off unless a test turns it on:
        # a test then sees a broken notice or relay fail, not wait for the next poll.
        self.catch_up = False
        self.state = self.home / ".local" / "state" / "meshsync"
        self.open_files: int | None = None  # RLIMIT_NOFILE (soft and hard) of the node, if set
        (self.home / ".ssh").mkdir(parents=True, mode=0o700)
        self.key = self.home / ".ssh" / "id_ed25519"
        self.make_key()

    def make_key(self, passphrase: str = "", kind: str = "ed25519") -> None:
        """A new key of `kind` made by ssh-keygen, replacing any before it."""
        for path in (self.key, self.key.with_name(self.key.name + ".pub")):
            path.unlink(missing_ok=True)
        self.key = self.key.with_name(f"id_{kind}")
        run("ssh-keygen", "-q", "-t", kind, "-N", passphrase, "-C", self.name,
            "-f", str(self.key))
        self.pub = self.key.with_name(self.key.name + ".pub").read_text().strip()
        self.id = NodeId.of_key(base64.b64decode(self.pub.split()[1]))

    @property
    def env(self) -> dict[str, str]:
        """The environment of this host's processes: its own HOME, so its own key and state."""
        base = {k: v for k, v in os.environ.items() if not k.startswith(("MESHSYNC_", "XDG_"))}
        base.pop("SSH_AUTH_SOCK", None)
        net = {} if self.catch_up else {"MESHSYNC_CATCH_UP_EVERY": "86400"}
        return {**base, "HOME": str(self.home), **net, **self.env_extra}

    def exec(self, *cmd: str, **kw: Any) -> subprocess.CompletedProcess[str]:
        """Run a command inside this host's namespace."""
        return run("ip", "netns", "exec", self.ns, *cmd, env=self.env, **kw)

    def start(self, *args: str) -> None:
        """Start `meshsync start ~/Sync` here and wait until it answers on its control socket."""
        self.launch(*args)
        wait_for(f"{self.name}'s control socket", self.is_running, 15)

    def launch(self, *args: str) -> None:
        """Start `meshsync start ~/Sync` here, in the background, logging to node.log."""
        assert self.proc is None or self.proc.poll() is not None, f"{self.name} already runs"
        limit = self.open_files

        def limit_open_files() -> None:
            if limit is not None:
                resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

        if os.environ.get("MESHSYNC_LAN_VERBOSE"):  # debug detail in every node's log
            args = (*args, "--verbose")
        with self.log.open("ab") as log:
            log.write(f"---- start {' '.join(args)}\n".encode())
            self.proc = subprocess.Popen(
                ["ip", "netns", "exec", self.ns, sys.executable, "-m", "meshsync", "start",
                 str(self.sync), "--name", self.name, *args],
                env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                preexec_fn=limit_open_files,
            )

    def is_running(self) -> bool:
        """Whether the node answers on its control socket."""
        assert self.proc is not None, f"{self.name}'s node was never started"
        assert self.proc.poll() is None, f"{self.name}'s node exited with {self.proc.returncode}"
        return self.cli("elect").returncode == 0  # (`id` answers with no node running)

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run a meshsync command here."""
        return self.exec(sys.executable, "-m", "meshsync", *args, check=False)

    def json(self, *args: str) -> Any:
        """A meshsync command's `--json` output."""
        result = self.cli(*args, "--json")
        assert result.returncode == 0, f"{self.name}: meshsync {' '.join(args)}: {result.stderr}"
        return json.loads(result.stdout)

    def election(self) -> tuple[int, str | None]:
        """(term, coordinator) as this node reports it."""
        result = self.json("elect")
        return result["term"], result["coordinator"]

    def peer_states(self) -> dict[str, str]:
        """Peer name -> state, as this node lists them (itself excluded)."""
        return {p["name"]: p["state"] for p in self.json("peers") if not p["self"]}

    def kill(self) -> None:
        """Crash the node: SIGKILL to its whole process group, no goodbye of any kind."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        """`meshsync stop`, then wait for the process to exit."""
        assert self.proc is not None
        result = self.cli("stop")
        assert result.returncode == 0, result.stderr
        assert self.proc.wait(15) == 0

    @contextlib.contextmanager
    def running(self, *argv: str) -> Iterator[subprocess.Popen[str]]:
        """Run `python -m …` in this host's namespace until the block ends; it says `ready`
        on its first line once it is in place."""
        with subprocess.Popen(
            ["ip", "netns", "exec", self.ns, sys.executable, *argv], env=self.env,
            cwd=str(Path(__file__).resolve().parents[2]), stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, text=True, start_new_session=True,
        ) as proc:
            try:
                assert proc.stdout is not None
                first = proc.stdout.readline().strip()
                assert first == "ready", f"{' '.join(argv)} did not start: {first!r}"
                yield proc
            finally:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)

    def use_agent(self, sock: Path, passphrase: str) -> None:
        """Add this host's passphrase-protected key to the ssh-agent at `sock` and start its
        node with that agent."""
        ssh_add(sock, self.key, passphrase, self.home)
        self.env_extra["SSH_AUTH_SOCK"] = str(sock)

    def add_addresses(self, count: int) -> list[str]:
        """`count` more addresses on this host's interface, as one attacker may hold."""
        added = [f"{SUBNET}.{100 + i}" for i in range(count)]
        for address in added:
            run("ip", "-n", self.ns, "addr", "add", f"{address}/24", "dev", "eth0")
        return added

    def trust(self, *others: Host) -> None:
        """Put the others' public keys in this host's authorized_keys."""
        with (self.home / ".ssh" / "authorized_keys").open("a") as f:
            for other in others:
                f.write(other.pub + "\n")

    def untrust(self, other: Host) -> None:
        """Take `other`'s key out of this host's authorized_keys, in one rename (the node
        never reads the file half written)."""
        keys = self.home / ".ssh" / "authorized_keys"
        lines = [line for line in keys.read_text().splitlines() if line.strip() != other.pub]
        edited = keys.with_name("authorized_keys.new")
        edited.write_text("".join(f"{line}\n" for line in lines))
        edited.replace(keys)


class Lan:
    """N hosts on one bridge, the bridge in a namespace of its own; nothing leaves the lab."""

    def __init__(self, root: Path, count: int) -> None:
        self.prefix = "ms" + secrets.token_hex(2)
        self.root = root
        self.switch = f"{self.prefix}sw"
        run("ip", "netns", "add", self.switch)
        self.hosts: list[Host] = []
        try:
            self._sw("ip", "link", "add", "br0", "type", "bridge", "mcast_snooping", "0")
            self._sw("ip", "link", "set", "br0", "up")
            for i in range(1, count + 1):
                self.add_host(i)
        except BaseException:
            self.close()
            raise

    def _sw(self, *cmd: str) -> subprocess.CompletedProcess[str]:
        return run("ip", "netns", "exec", self.switch, *cmd)

    def _nft(self, rules: str) -> None:
        run("ip", "netns", "exec", self.switch, "nft", "-f", "-", input=rules)

    def add_host(self, i: int) -> Host:
        """Plug host i into the switch."""
        host = Host(self, i)
        run("ip", "netns", "add", host.ns)
        self.hosts.append(host)
        run("ip", "link", "add", "eth0", "netns", host.ns, "type", "veth",
            "peer", "name", host.port_name, "netns", self.switch)
        self._sw("ip", "link", "set", host.port_name, "master", "br0", "up")
        for cmd in (
            ["addr", "add", f"{host.ip}/24", "dev", "eth0"],
            ["link", "set", "eth0", "up", "multicast", "on"],
            ["link", "set", "lo", "up"],
            ["route", "add", "224.0.0.0/4", "dev", "eth0"],
        ):
            run("ip", "-n", host.ns, *cmd)
        return host

    def trust_all(self) -> None:
        """Every host trusts every other."""
        for host in self.hosts:
            host.trust(*(h for h in self.hosts if h is not host))

    def by_id(self) -> list[Host]:
        """The hosts, lowest node ID first: the order an election prefers them in."""
        return sorted(self.hosts, key=lambda h: h.id)

    def cut(self, host: Host) -> None:
        """Partition `host` silently, like a dead switch port: it sees no error, peers silence."""
        self._nft(f"""
            table bridge cut_{host.name} {{
                chain block {{
                    type filter hook forward priority -300; policy accept;
                    iifname "{host.port_name}" drop
                    oifname "{host.port_name}" drop
                }}
            }}""")

    def heal(self, host: Host) -> None:
        """Undo `cut`."""
        self._sw("nft", "delete", "table", "bridge", f"cut_{host.name}")

    def block_multicast(self) -> None:
        """Drop mDNS on the switch, as many Wi-Fi access points do."""
        self._nft("""
            table bridge no_mdns {
                chain block {
                    type filter hook forward priority -300; policy accept;
                    udp dport 5353 drop
                }
            }""")

    def close(self) -> None:
        """Kill every node, delete every namespace."""
        for host in self.hosts:
            if host.proc is not None and host.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(host.proc.pid, signal.SIGKILL)
                host.proc.wait(10)
            run("ip", "netns", "del", host.ns, check=False)
        run("ip", "netns", "del", self.switch, check=False)

    @contextlib.contextmanager
    def capture(self, pcap: Path) -> Iterator[None]:
        """Record every frame crossing the switch (tcpdump on the bridge) until the block ends."""
        with subprocess.Popen(
            ["ip", "netns", "exec", self.switch, "tcpdump", "-i", "br0", "-U", "-s", "0", "-w",
             str(pcap)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        ) as proc:
            assert proc.stderr is not None
            try:
                # tcpdump says "listening on br0" once it captures.
                assert "listening on" in proc.stderr.readline()
                yield
            finally:
                proc.terminate()  # tcpdump writes out what it holds on SIGTERM
                proc.wait(10)

    def logs(self) -> str:
        """Every host's node log, for a failing test's report."""
        return "\n".join(
            f"===== {h.name} ({h.id.short}) =====\n"
            + (h.log.read_text(errors="replace") if h.log.exists() else "(no log)")
            for h in self.hosts
        )

"""A node survives peers that vanish, restart or answer garbage: no crash, no hang, a clear line."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from tests.integration.lan import Host, wait_for
from tests.integration.test_election import agreed, start_all

GARBAGE_SERVER = """
import os, socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1]))); s.listen()
print("ready", flush=True)
while True:
    c, _ = s.accept()
    c.recv(65536)
    c.sendall(b"HTTP/1.1 200 OK\\r\\nContent-Length: 99999999\\r\\n\\r\\n" + os.urandom(4096))
    c.close()
"""


@contextmanager
def serving(host: Host, *argv: str) -> Iterator[None]:
    """Run a server process in `host`'s namespace until the block ends."""
    with subprocess.Popen(["ip", "netns", "exec", host.ns, sys.executable, *argv],
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True) as proc:
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "ready"
            yield
        finally:
            proc.kill()


def test_node_survives_peers_that_answer_garbage(make_lan):
    lan = make_lan(3)
    h1, h2, h3 = lan.hosts
    lan.trust_all()
    http_server = ["-c", "import http.server as h, sys; print('ready', flush=True); "
                   "h.HTTPServer(('0.0.0.0', 8081), h.SimpleHTTPRequestHandler).serve_forever()"]
    with serving(h2, "-c", GARBAGE_SERVER, "8080"), serving(h2, *http_server):
        h1.start("--peer", f"{h2.ip}:8080", "--peer", f"{h2.ip}:8081")
        h3.start()
        lowest = min(h1, h3, key=lambda h: h.id)
        wait_for("h1 and h3 to form a mesh beside the garbage", lambda: agreed([h1, h3], lowest),
                 15)
        wait_for("a clear line for each bad address", lambda: all(
            f"peer at {h2.ip}:{port} does not answer as a meshsync node" in h1.log.read_text()
            for port in (8080, 8081)), 10)
        # And garbage sent to h1's own port changes nothing.
        for payload in (b"\x00" * 70000, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
                        b"POST /v1/hello HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello"):
            h2.exec(sys.executable, "-c", _SEND, h1.ip, input=payload.hex())
        assert h1.is_running()
        assert agreed([h1, h3], lowest)
        log = h1.log.read_text()
        assert log.count("does not answer as a meshsync node") == 2  # once per address, not a flood


_SEND = """
import socket, sys
with socket.create_connection((sys.argv[1], 22300), timeout=5) as s:
    try:
        s.sendall(bytes.fromhex(sys.stdin.read()))
        s.shutdown(socket.SHUT_WR)
        while s.recv(65536):
            pass
    except OSError:  # reset, or closed before we were done: the node's answer to garbage
        pass
"""


def test_member_that_crashes_and_restarts_rejoins_without_unseating_the_coordinator(make_lan):
    lan = make_lan(3)
    start_all(lan)  # at once: one started seconds after the others may find a coordinator
    lowest, second, third = lan.by_id()
    term = wait_for("agreement", lambda: agreed(lan.hosts, lowest), 15)
    third.kill()
    wait_for("the others to see it down", lambda: lowest.peer_states()[third.name] == "down"
             and second.peer_states()[third.name] == "down", 5)
    third.start()
    wait_for("the restarted member to be online everywhere and follow the same coordinator",
             lambda: agreed(lan.hosts, lowest) == term
             and all(set(h.peer_states().values()) == {"online"} for h in lan.hosts), 10)


def test_unreachable_static_peer_does_not_hold_up_the_mesh(make_lan):
    lan = make_lan(2)
    h1, h2 = lan.hosts
    lan.trust_all()
    # 10.231.7.99 is on the LAN's subnet but nobody is there: requests to it just time out.
    h1.start("--peer", "10.231.7.99:22300")
    h2.start()
    lowest = min(h1, h2, key=lambda h: h.id)
    wait_for("the mesh to form regardless", lambda: agreed([h1, h2], lowest), 15)

"""The control socket's HTTP API, for real: curl on a running node's socket, the event stream
while peers come and go, files change and conflict, and `meshsync status --watch`."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
from typing import Any

from bench.mesh import ask
from meshsync.control.client import events
from meshsync.control.protocol import ControlError
from tests.integration.lan import Host, run, wait_for
from tests.integration.test_conflicts import BASE, edit
from tests.integration.test_sync import mesh


def curl(host: Host, *args: str) -> tuple[int, Any]:
    """(status, JSON body) of a request to the host's node through its control socket."""
    out = run("curl", "-sS", "--max-time", "20", "-w", "\n%{http_code}", "--unix-socket",
              str(host.state / "control.sock"), *args[:-1], f"http://meshsync{args[-1]}").stdout
    body, _, status = out.rpartition("\n")
    return int(status), json.loads(body)


def test_curl_gets_what_the_cli_shows_and_every_refusal_is_one_json_line(make_lan):
    lan = make_lan(1)
    [h1] = lan.hosts
    h1.start()
    sock = h1.state / "control.sock"
    assert sock.stat().st_mode & 0o777 == 0o600

    assert curl(h1, "/v1/id") == (200, h1.json("id"))
    # The bench asks the same socket, as the CLI does.
    assert ask(h1, "/v1/status")["id"] == str(h1.id)
    assert ask(h1, "/v1/election")["coordinator"] in (None, str(h1.id))
    status, found = curl(h1, "/v1/status")
    assert status == 200
    assert [(f["id"], f["path"]) for f in found["folders"]] == [("Sync", str(h1.sync))]
    assert found["id"] == str(h1.id)
    status, listed = curl(h1, "/v1")
    assert status == 200
    assert {("GET", "/v1/status"), ("GET", "/v1/events"), ("POST", "/v1/restore")} <= {
        (e["method"], e["path"]) for e in listed}

    (h1.sync / "a.txt").write_text("one")
    wait_for("a.txt indexed", lambda: curl(h1, "/v1/status")[1]["folders"][0]["state"]
             == "in sync", 10)
    status, body = curl(h1, "-d", json.dumps({"path": str(h1.sync / "a.txt")}), "/v1/restore")
    assert (status, body) == (400, {"error": "no version of a.txt is kept"}), body

    refusals = {
        "/v1/nope": (404, "no such endpoint: GET /v1/nope (GET /v1 lists them)"),
        "/v1/versions": (400, "give a path in a synced folder"),
        "/v1/versions?path=/etc/passwd": (400, f"/etc/passwd is not in a synced folder"
                                                f" ({h1.sync})"),
    }
    for target, expected in refusals.items():
        status, body = curl(h1, target)
        assert (status, body) == (expected[0], {"error": expected[1]}), target
    assert curl(h1, "-X", "POST", "/v1/status") == (
        405, {"error": "/v1/status does not take POST"})
    status, body = curl(h1, "-d", "not json", "/v1/restore")
    assert status == 400
    assert body["error"].startswith("the request body is not JSON: ")
    assert curl(h1, "-d", "[1]", "/v1/trust") == (
        400, {"error": "the request body must be a JSON object"})
    status, body = curl(h1, "-d", "x" * 70_000, "/v1/trust")
    assert (status, body) == (413, {"error": "the request body is over 65536 bytes"})
    # 32 event streams at once; one more is refused until one closes.
    streams = []
    for _ in range(32):
        streams.append(stream := socket.socket(socket.AF_UNIX))
        stream.connect(str(sock))
        stream.sendall(b"GET /v1/events HTTP/1.1\r\nHost: meshsync\r\n\r\n")
        assert stream.recv(100).startswith(b"HTTP/1.1 200 ")
    assert curl(h1, "/v1/events") == (503, {"error": "32 event streams are open already"})
    streams.pop().close()
    wait_for("a stream's room to be free", lambda: run(
        "curl", "-sSN", "--max-time", "0.5", "-o", "/dev/null", "-w", "%{http_code}",
        "--unix-socket", str(sock), "http://meshsync/v1/events", check=False).stdout == "200", 10)
    for stream in streams:
        stream.close()
    # A GET changes nothing: no election is forced by a query.
    term = h1.election()[0]
    assert curl(h1, "/v1/election?force=1")[1]["term"] == term
    assert h1.is_running()


class Follower:
    """The events of a node's stream, gathered on a thread."""

    def __init__(self, host: Host) -> None:
        self.seen: list[dict[str, Any]] = []
        self.error: ControlError | None = None
        self._stream = events(host.state / "control.sock")
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        try:
            for event in self._stream:
                if event is not None:
                    self.seen.append(event)
        except ControlError as e:
            self.error = e

    def find(self, what: str, match: dict[str, Any], timeout: float = 15) -> dict[str, Any]:
        def found() -> dict[str, Any] | None:
            return next((e for e in self.seen if all(
                e.get(k) == v for k, v in match.items())), None)
        return wait_for(what, found, timeout)


def test_the_event_stream_tells_of_peers_changes_conflicts_and_warnings(make_lan):
    lan = mesh(make_lan, 2)
    h1, h2 = lan.hosts
    follower = Follower(h1)
    watch = subprocess.Popen(
        ["ip", "netns", "exec", h1.ns, sys.executable, "-m", "meshsync", "status", "--watch"],
        env=h1.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert watch.stdout is not None
        assert watch.stdout.readline().startswith(f"node h1 ({h1.id.short}); coordinator ")

        (h2.sync / "from-h2.txt").write_text("hello")
        changed = follower.find("h2's file told at h1", {"type": "changed", "folder": "Sync",
                                                         "origin": str(h2.id)})
        assert (changed["origin_name"], changed["count"], changed["paths"]) == (
            "h2", 1, ["from-h2.txt"])
        (h1.sync / "here.txt").write_text("mine")
        mine = follower.find("h1's own change", {"type": "changed", "paths": ["here.txt"]})
        assert (mine["origin"], mine["count"]) == (None, 1)

        # Apart, both edit one file; h2's is newer, so h1 keeps its own as a conflict copy.
        lan.cut(h2)
        follower.find("h2 down at h1", {"type": "peer", "peer": str(h2.id), "state": "down"})
        edit(h1, "both.txt", b"h1's\n", BASE)
        edit(h2, "both.txt", b"h2's, later\n", BASE + 10)
        lan.heal(h2)
        follower.find("h2 back at h1", {"type": "peer", "peer": str(h2.id), "state": "online",
                                        "name": "h2"})
        # The log names a peer as `peers` does: its name and short ID.
        assert f"peer online: h2 ({h2.id.short})" in h1.log.read_text()
        conflict = follower.find("the conflict at h1", {"type": "conflict", "path": "both.txt"})
        assert conflict["copy"].startswith("both.sync-conflict-")
        assert (conflict["origin"], conflict["origin_name"]) == (str(h1.id), "h1")

        shutil.rmtree(h1.sync / ".meshsync")
        warning = follower.find("the warning", {"type": "warning"})
        assert "has no .meshsync marker" in warning["message"]
        ids = [e["id"] for e in follower.seen]
        assert ids == sorted(set(ids)), "numbered in order, each once"

        # A follower that comes back with Last-Event-ID gets what came after, nothing before.
        back = run("curl", "-sSN", "--max-time", "1", "-H", f"Last-Event-ID: {ids[1]}",
                   "--unix-socket", str(h1.state / "control.sock"), "http://meshsync/v1/events",
                   check=False).stdout
        resumed = [int(line[4:]) for line in back.splitlines() if line.startswith("id: ")]
        assert resumed[: len(ids) - 2] == ids[2:]

        h1.stop()
        wait_for("the stream to end", lambda: follower.error is not None, 10)
        assert str(follower.error) == "the node stopped"
        out, err = watch.communicate(timeout=10)
    finally:
        if watch.poll() is None:
            os.kill(watch.pid, 9)
    lines = out.splitlines()
    assert any(line.endswith(f"Sync: 1 changed from h2 ({h2.id.short}): from-h2.txt")
               for line in lines), lines
    assert any(f"peer h2 ({h2.id.short}) down" in line for line in lines), lines
    assert any("Sync: conflict on both.txt: the other version kept as both.sync-conflict-"
               in line for line in lines), lines
    assert any("warning: folder Sync: " in line for line in lines), lines
    gone = f"no meshsync node is running (no answer at {h1.state}/control.sock)"
    assert err in ("meshsync: the node stopped\n", f"meshsync: {gone}\n")
    assert watch.returncode == 1

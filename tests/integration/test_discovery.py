"""Nodes find each other by mDNS, or by --peer where multicast is blocked, on any port."""

from __future__ import annotations

import subprocess
import sys

from tests.integration.lan import wait_for
from tests.integration.test_election import agreed


def test_an_independent_mdns_client_sees_the_service_and_its_id(make_lan):
    lan = make_lan(2)
    h1, h2 = lan.hosts
    lan.trust_all()
    h1.start()
    answer = wait_for("dig to get the PTR answer", lambda: (r := h2.exec(
        "dig", "+time=2", "+tries=1", "-p", "5353", f"@{h1.ip}", "_meshsync._tcp.local", "PTR",
        check=False)).returncode == 0 and "ANSWER SECTION" in r.stdout and r.stdout, 10)
    instance = f"{h1.id.label}._meshsync._tcp.local."
    assert f"_meshsync._tcp.local. 4500 IN PTR {instance}" in " ".join(answer.split())
    assert f'"id={h1.id}"' in answer
    assert '"v=2"' in answer
    srv = h2.exec("dig", "+short", "-p", "5353", f"@{h1.ip}", instance, "SRV").stdout
    assert srv.split()[2] == "22300"
    txt = h2.exec("dig", "+short", "-p", "5353", f"@{h1.ip}", instance, "TXT").stdout
    strings = [s.strip('"') for s in txt.split()]
    # No host name: the TXT record says the protocol and the ID, no more.
    assert sorted(strings) == sorted([f"id={h1.id}", "v=2"])
    assert sum(len(s) + 1 for s in strings) < 200  # one length byte per string


def test_static_peers_find_each_other_where_multicast_is_blocked(make_lan):
    lan = make_lan(2)
    h1, h2 = lan.hosts
    lan.trust_all()
    lan.block_multicast()
    h1.start("--peer", f"{h2.ip}:22300")
    h2.start()
    lowest = min(h1, h2, key=lambda h: h.id)
    wait_for("the two to agree without mDNS", lambda: agreed([h1, h2], lowest), 10)
    assert h2.peer_states() == {"h1": "online"}


def test_a_taken_port_falls_back_to_a_free_one_that_mdns_advertises(make_lan):
    lan = make_lan(2)
    h1, h2 = lan.hosts
    lan.trust_all()
    with subprocess.Popen(
        ["ip", "netns", "exec", h1.ns, sys.executable, "-c",
         "import signal,socket; s=socket.socket(); s.bind(('0.0.0.0',22300)); s.listen(); "
         "print('ready', flush=True); signal.pause()"], stdout=subprocess.PIPE, text=True,
    ) as squatter:
        try:
            assert squatter.stdout is not None
            assert squatter.stdout.readline().strip() == "ready"
            h1.start()
            h2.start()
            me = next(r for r in h1.json("peers") if r["self"])
            port = int(me["address"].rsplit(":", 1)[1])
            assert port != 22300
            wait_for("h2 to reach h1 on the port it advertised", lambda: any(
                r["name"] == "h1" and r["address"] == f"{h1.ip}:{port}" and r["state"] == "online"
                for r in h2.json("peers")), 10)
            assert "port 22300 is taken; using a free one" in h1.log.read_text()
        finally:
            squatter.kill()


def test_a_mesh_formed_through_one_peer_keeps_syncing_when_that_peer_leaves(make_lan):
    lan = make_lan(3)
    hub, h2, h3 = lan.hosts
    lan.trust_all()
    lan.block_multicast()
    hub.start()
    h2.start("--peer", f"{hub.ip}:22300")
    h3.start("--peer", f"{hub.ip}:22300")
    # Neither was told of the other: the hub's hellos tell each where the other listens.
    wait_for("h2 and h3 to reach each other", lambda: h2.peer_states().get("h3") == "online"
             and h3.peer_states().get("h2") == "online", 20)
    hub.stop()
    (h2.sync / "after-the-hub.txt").write_text("still synced")
    wait_for("the file on h3", lambda: (h3.sync / "after-the-hub.txt").exists(), 10)
    (h3.sync / "and-back.txt").write_text("both ways")
    wait_for("the other on h2", lambda: (h2.sync / "and-back.txt").exists(), 10)

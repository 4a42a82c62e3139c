"""A LAN that listens learns nothing: TLS 1.3 on every connection, bound to the SSH identity."""

from __future__ import annotations

import os

import pytest

from tests.integration.lan import Host, Lan, run, wait_for
from tests.integration.test_election import agreed

FOLDER = "PrivateFolder-5b1d"
FILE_NAME = "secret-plan-7c9e.txt"
MARKER = b"MARKER-CONTENT-d41f "
MITM_PORT = "7000"


def name_of(host: Host) -> str:
    return f"secret-host-{host.name}"


def start_pair(lan: Lan) -> tuple[Host, Host]:
    h1, h2 = lan.hosts[:2]
    h1.trust(h2)
    h2.trust(h1)
    for host in (h1, h2):
        host.start("--as", FOLDER, "--name", name_of(host))
    lowest = min(h1, h2, key=lambda h: h.id)
    wait_for("the pair to form a mesh", lambda: agreed([h1, h2], lowest), 15)
    return h1, h2


def test_a_capture_of_the_lan_shows_no_file_name_content_folder_or_host_name(make_lan):
    lan = make_lan(2)
    h1, h2 = lan.hosts
    pcap = lan.root / "lan.pcap"
    content = MARKER * 20_000  # 400 KB: several blocks, fetched as blocks
    with lan.capture(pcap):
        start_pair(lan)
        (h1.sync / FILE_NAME).write_bytes(content)  # announced by a notice, then fetched
        wait_for("the file on h2", lambda: (h2.sync / FILE_NAME).is_file()
                 and (h2.sync / FILE_NAME).read_bytes() == content, 15)
        h2.stop()
        (h1.sync / f"later-{FILE_NAME}").write_bytes(MARKER * 10)  # learned by catch-up
        h2.start("--as", FOLDER, "--name", name_of(h2))
        wait_for("h2 to catch up", lambda: (h2.sync / f"later-{FILE_NAME}").is_file(), 15)
    captured = pcap.read_bytes()
    # The capture saw the mesh: mDNS names the node IDs in clear (that is all it says), and
    # the file crossed the wire, sealed.
    assert str(h1.id).encode() in captured
    assert len(captured) > len(content)
    for secret in (FILE_NAME, MARKER.decode(), FOLDER, name_of(h1), name_of(h2), "Sync"):
        assert secret.encode() not in captured, f"{secret!r} crossed the LAN in clear"


def test_a_peer_whose_certificate_no_trusted_key_vouches_for_learns_nothing(make_lan):
    lan = make_lan(3)
    h1, h2, mallory = lan.hosts
    lan.block_multicast()  # h1 knows only the address it is told: mallory's
    h2.trust(h1)
    h1.trust(h2)
    h2.start()  # so that mallory can copy h2's vouch into a certificate of its own
    learned = {mode: lan.root / f"learned-{mode}" for mode in ("plain", "own", "copied")}
    with mallory.running("-m", "tests.integration.hostile", "mitm", MITM_PORT, "plain",
                         str(learned["plain"])), \
            mallory.running("-m", "tests.integration.hostile", "mitm", "7001", "own",
                            str(learned["own"])), \
            mallory.running("-m", "tests.integration.hostile", "mitm", "7002", "copied",
                            str(learned["copied"]), str(h2.state / "tls.pem")):
        h1.start(*(arg for port in (MITM_PORT, "7001", "7002")
                   for arg in ("--peer", f"{mallory.ip}:{port}")))
        wait_for("h1 to refuse the two certificates no key vouches for", lambda: all(
            f"peer at {mallory.ip}:{port} refused" in h1.log.read_text()
            for port in (MITM_PORT, "7002")), 15)
        # One that its own key vouches for is a stranger: listed, told nothing.
        wait_for("h1 to list the third as untrusted", lambda: any(
            p["state"] == "untrusted" and p["address"] == f"{mallory.ip}:7001"
            for p in h1.json("peers")), 15)
    for mode, path in learned.items():
        assert path.read_bytes() == b"", f"the {mode} man in the middle was sent something"
    assert h1.is_running()


def test_a_man_in_the_middle_on_a_known_peers_address_is_refused_and_learns_nothing(make_lan):
    lan = make_lan(3)
    h1, h2, mallory = lan.hosts
    start_pair(lan)
    victim_pem = lan.root / "h2-tls.pem"
    victim_pem.write_bytes((h2.state / "tls.pem").read_bytes())
    h2.kill()
    # Mallory takes h2's address, as ARP spoofing would, with h2's vouch in its certificate.
    run("ip", "-n", h2.ns, "addr", "del", f"{h2.ip}/24", "dev", "eth0")
    run("ip", "-n", mallory.ns, "addr", "add", f"{h2.ip}/24", "dev", "eth0")
    run("ip", "-n", h1.ns, "neigh", "flush", "all")
    learned = lan.root / "learned"
    with mallory.running("-m", "tests.integration.hostile", "mitm", "22300", "copied",
                         str(learned), str(victim_pem)):
        wait_for("h1 to refuse what answers at h2's address", lambda:
                 f"peer at {h2.ip}:22300 refused" in h1.log.read_text(), 15)
        assert "man in the middle" in h1.log.read_text()
    assert learned.read_bytes() == b""
    assert h1.is_running()


@pytest.mark.parametrize("kind", ["ecdsa", "rsa"])
def test_every_key_type_binds_its_tls_certificate(make_lan, kind):
    lan = make_lan(2)
    for host in lan.hosts:
        host.make_key(kind=kind)
    h1, h2 = lan.hosts
    h1.trust(h2)
    h2.trust(h1)
    h1.start()
    h2.start()
    wait_for("the pair to form a mesh over TLS", lambda: all(
        [p["state"] for p in h.json("peers") if not p["self"]] == ["online"] for h in (h1, h2)),
        15)
    (h1.sync / "typed.txt").write_bytes(os.urandom(1000))
    wait_for("a file across", lambda: (h2.sync / "typed.txt").is_file(), 10)

"""Only trusted keys take part: strangers are listed with the command that trusts them, no more."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tests.integration.lan import wait_for
from tests.integration.test_election import agreed

REPO = Path(__file__).resolve().parents[2]


def test_untrusted_host_is_listed_with_the_command_that_trusts_it_and_kept_out(make_lan):
    lan = make_lan(3)
    h1, h2, h3 = lan.hosts
    h1.trust(h2)
    h2.trust(h1)
    h3.trust(h1, h2)  # h3 trusts the others; they have never heard of h3's key
    for host in lan.hosts:
        host.start()
    pair_lowest = min(h1, h2, key=lambda h: h.id)
    wait_for("h1 and h2 to agree", lambda: agreed([h1, h2], pair_lowest), 15)

    # By the name h3's certificate claims (sealed in TLS 1.3, never in the clear), unverified.
    row = wait_for("h1 to list h3 as untrusted, with its name", lambda: next(
        (r for r in h1.json("peers") if r["id"] == str(h3.id) and r["state"] == "untrusted"
         and r["name"] == "h3"), None), 10)
    assert row["name_verified"] is False
    assert row["trust_command"] == f"meshsync trust {h3.id}"
    assert row["role"] == "peer"
    table = h1.cli("peers").stdout
    assert f"meshsync trust {h3.id}" in table
    assert next(line.split()[:3] for line in table.splitlines() if h3.id.short in line) == [
        h3.id.short, "h3", "(unverified)"]
    assert f"untrusted peer {h3.id}" in h1.log.read_text()
    # h3 learns from their signed refusals that they do not trust it, and says what to run.
    # (By ID: a node that refuses us never tells us its name, and mDNS carries none.)
    wait_for("h3 to see itself refused by both", lambda: {
        p["id"]: p["state"] for p in h3.json("peers") if not p["self"]
    } == {str(h1.id): "refused", str(h2.id): "refused"}, 10)
    assert f"on that machine run: meshsync trust {h3.id}" in h3.log.read_text()
    # Nothing h3 says counts: it is not a member, so it has no say in their election.
    wait_for("h3 to coordinate only itself", lambda: h3.election() == (1, str(h3.id)), 5)
    assert agreed([h1, h2], pair_lowest)

    by_id = h1.json("trust", str(h3.id))
    assert by_id == {"added": [str(h3.id)], "already": []}
    # Written with the name it claimed as the comment, as `ssh-keygen` names a key.
    [line] = (h1.state / "trusted_keys").read_text().splitlines()
    assert line.split() == [*h3.pub.split()[:2], "h3"]
    by_file = h2.json("trust", str(h3.key.with_name("id_ed25519.pub")))
    assert by_file == {"added": [str(h3.id)], "already": []}
    assert h1.json("trust", h3.pub)["already"] == [str(h3.id)]

    wait_for("all three to be online members of one mesh", lambda: all(
        set(h.peer_states().values()) == {"online"} for h in lan.hosts)
        and len({h.election() for h in lan.hosts}) == 1, 10)


def test_unsigned_forged_stale_and_replayed_requests_get_401(make_lan):
    lan = make_lan(2)
    h1, h2 = lan.hosts
    lan.trust_all()
    h1.start()
    result = h2.exec(sys.executable, "-m", "tests.integration.probe", f"{h1.ip}:22300",
                     str(h2.key), cwd=str(REPO))
    assert json.loads(result.stdout) == {
        "unsigned": 401,
        "valid": 200,
        "replayed": 401,
        "body_swapped": 401,
        "bad_signature": 401,
        "stale": 401,
        "from_the_future": 401,
        "meant_for_another": 401,
        "garbage_body": 400,
    }
    log = h1.log.read_text()
    for reason in ("unsigned request", "replayed request", "body does not match",
                   "bad signature", "clock differs by", "request meant for another node"):
        assert reason in log
    assert h1.is_running()


def test_trust_refuses_what_is_neither_a_key_nor_a_known_peer(make_lan):
    lan = make_lan(1)
    (h1,) = lan.hosts
    h1.start()
    result = h1.cli("trust", "SHA256:nobody")
    assert (result.returncode, result.stderr) == (2, (
        "meshsync trust: not a public key line nor a peer's ID: 'SHA256:nobody' (a key line"
        " looks like `ssh-ed25519 AAAA… name`)\n"))
    unknown = "SHA256:" + "A" * 43  # an ID's shape, but no peer's
    result = h1.cli("trust", unknown)
    assert result.returncode == 1
    assert "not a public key line nor the ID of a discovered peer" in result.stderr
    assert not (h1.home / ".local/state/meshsync/trusted_keys").exists()


def test_a_key_added_to_authorized_keys_is_trusted_without_a_restart(make_lan):
    lan = make_lan(2)
    h1, h2 = lan.hosts
    h2.trust(h1)
    h1.start()
    h2.start()
    wait_for("h1 to list h2 as untrusted", lambda: [
        (p["id"], p["state"]) for p in h1.json("peers") if not p["self"]
    ] == [(str(h2.id), "untrusted")], 10)
    h1.trust(h2)  # the user edits ~/.ssh/authorized_keys by hand
    # One coordinator for both: the lowest ID, or h1 if h2 met it before h2's start-up grace
    # ended (a coordinator is sticky: a lower ID that joins does not take over).
    wait_for("the two to form a mesh", lambda: h1.election() == h2.election()
             and h1.election()[1] in (str(h1.id), str(min(h1.id, h2.id)))
             and h1.peer_states() == {"h2": "online"}, 10)

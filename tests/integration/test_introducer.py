"""An introducer (opt-in): a node that marks a peer so trusts the members that peer trusts,
for as long as the introducer names them."""

from __future__ import annotations

from tests.integration.lan import Host, wait_for
from tests.integration.test_held_back import held


def row(host: Host, other: Host) -> dict | None:
    return next((r for r in host.json("peers") if r["id"] == str(other.id)), None)


def test_a_node_that_marks_an_introducer_trusts_its_members_until_it_withdraws_them(make_lan):
    lan = make_lan(4)
    h1, h2, h3, h4 = lan.hosts
    h1.trust(h2, h3, h4)
    for other in (h2, h3, h4):
        other.trust(h1)  # each knows only h1
    # h3's notice goes to its only member, h1, which passes notices on only as coordinator:
    # h2 and h4 learn of h3's file from h1's index, by the periodic catch-up nodes run as
    # shipped. (Had their first catch-up come after the file reached h1, it would pass without.)
    h2.catch_up = h4.catch_up = True
    for host in lan.hosts:
        host.start()
    wait_for("h1 to have all three online", lambda: all(
        h1.peer_states().get(o.name) == "online" for o in (h2, h3, h4)), 15)
    (h3.sync / "from-h3.txt").write_text("made on h3")
    wait_for("h2 to hold back h3's file", lambda: "from-h3.txt" in held(h2), 15)

    answer = h2.json("trust", "--introducer", str(h1.id))
    assert answer["introducer"] is True
    wait_for("h2 to take h3's file", lambda: (h2.sync / "from-h3.txt").exists(), 10)
    # h3 does not trust h2 yet: h2 lists it as refusing, vouched for by h1 (once h2 has tried
    # it: until then, a member h1 named that h2 has not reached yet is down).
    wait_for("h2 to list h3 via h1, refusing", lambda: (r := row(h2, h3)) and r["via_introducer"]
             == str(h1.id) and r["state"] == "refused", 10)
    h3.json("trust", "--introducer", str(h1.id))
    vouched = wait_for("h2 and h3 to be members of each other, via h1", lambda: (
        r := row(h2, h3)) and r["state"] == "online" and r["via_introducer"] == str(h1.id)
        and (r3 := row(h3, h2)) and r3["state"] == "online" and r, 10)
    assert vouched["role"] in ("member", "coordinator")
    assert "via introducer" in h2.cli("peers").stdout
    # h4 did not mark h1: h3 stays a stranger to it, and its file stays held back there.
    assert (r4 := row(h4, h3)) is None or r4["state"] == "untrusted"
    assert "from-h3.txt" in held(h4)

    # h1 stops trusting h3: its word for h3 goes, and with it h2's trust.
    keys = h1.home / ".ssh" / "authorized_keys"
    keys.write_text("".join(line + "\n" for line in keys.read_text().splitlines()
                            if line != h3.pub))
    wait_for("h2 to stop trusting h3", lambda: (r := row(h2, h3)) and r["state"] == "untrusted"
             and r["via_introducer"] is None, 15)

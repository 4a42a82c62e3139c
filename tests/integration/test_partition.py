"""A LAN split in two keeps syncing on both sides; when it heals, one coordinator, one tree."""

from __future__ import annotations

from meshsync.core import conflicts
from meshsync.core.paths import RelPath
from tests.integration.lan import Host, Lan, holds_for, same_trees, wait_for
from tests.integration.test_conflicts import BASE, edit, settled, synced
from tests.integration.test_election import agreed
from tests.integration.test_sync import mesh, write


def split(lan: Lan, left: list[Host], right: list[Host]) -> None:
    """Drop everything between the two groups at the switch; each side still sees itself."""
    a = ", ".join(f'"{h.port_name}"' for h in left)
    b = ", ".join(f'"{h.port_name}"' for h in right)
    lan._nft(f"""
        table bridge split {{
            chain block {{
                type filter hook forward priority -300; policy accept;
                iifname {{ {a} }} oifname {{ {b} }} drop
                iifname {{ {b} }} oifname {{ {a} }} drop
            }}
        }}""")


def join(lan: Lan) -> None:
    """Undo `split`."""
    lan._sw("nft", "delete", "table", "bridge", "split")


def test_both_sides_of_a_split_sync_and_merge_under_the_higher_term_when_it_heals(make_lan):
    lan = mesh(make_lan, 4)
    lowest, second, third, fourth = lan.by_id()
    term = wait_for("agreement", lambda: agreed(lan.hosts, lowest), 15)
    edit(lowest, "shared.txt", b"before the split\n", BASE)
    synced(lan, "shared.txt", b"before the split\n")

    left, right = [lowest, fourth], [second, third]
    split(lan, left, right)
    right_term = wait_for("the side without the coordinator to elect its lowest",
                          lambda: agreed(right, second, term), 8)
    holds_for("the coordinator's side to keep it", lambda: agreed(left, lowest) == term, 1)

    # Each side syncs within itself, and both edit the shared file.
    write(fourth.sync / "left/notes.txt", b"written on the left\n")
    write(third.sync / "right/notes.txt", b"written on the right\n")
    edit(fourth, "shared.txt", b"left's edit\n", BASE + 10)
    edit(third, "shared.txt", b"right's edit, newer\n", BASE + 20)
    wait_for("each side to sync within itself", lambda: all(
        (h.sync / "left/notes.txt").is_file() and (h.sync / "shared.txt").read_bytes()
        == b"left's edit\n" for h in left) and all(
        (h.sync / "right/notes.txt").is_file() and (h.sync / "shared.txt").read_bytes()
        == b"right's edit, newer\n" for h in right), 10)
    assert not (second.sync / "left").exists()
    assert not (lowest.sync / "right").exists()

    join(lan)
    # The higher term wins: the left side takes it with no new election. Its coordinator is
    # the right side's, unless a hello the right side sent while its election was open
    # (held in a TCP retransmit during the split) reaches the left first: the left then
    # opens that term too and its lower ID claims it, and two claims at one term resolve
    # to the lower ID. Either way one coordinator at that term, and it stays.
    def one_at_right_term() -> str | None:
        views = {h.election() for h in lan.hosts}
        return views.pop()[1] if len(views) == 1 and min(views)[0] == right_term else None

    coordinator = wait_for("one coordinator, at the higher term", one_at_right_term, 10)
    assert coordinator in (str(second.id), str(lowest.id))
    holds_for("that coordinator to stay", lambda: {h.election() for h in lan.hosts} == {
        (right_term, coordinator)}, 3)
    found = settled(lan, 4)
    copy = conflicts.copy_path(RelPath("shared.txt"), (BASE + 10) * 10**9, fourth.id.key)
    assert sorted(p for p in found if conflicts.is_copy(p)) == [copy]
    for host in lan.hosts:
        assert (host.sync / "shared.txt").read_bytes() == b"right's edit, newer\n"
        assert (host.sync / copy).read_bytes() == b"left's edit\n"
        assert (host.sync / "left/notes.txt").read_bytes() == b"written on the left\n"
        assert (host.sync / "right/notes.txt").read_bytes() == b"written on the right\n"
    assert same_trees(lan.hosts) == found


def test_with_one_link_of_a_triangle_cut_the_term_settles_and_sync_goes_through_the_middle(
        make_lan):
    lan = mesh(make_lan, 3)
    first, _, last = lan.by_id()  # the one in the middle keeps both its links
    term = wait_for("agreement", lambda: agreed(lan.hosts, first), 15)
    split(lan, [first], [last])
    # Longer than several silence timeouts (3 s): a climbing term would show.
    holds_for("one term and one coordinator on all three", lambda: agreed(
        lan.hosts, first) == term, 12)
    write(last.sync / "from-last.txt", b"across the cut")
    write(first.sync / "from-first.txt", b"and back")
    wait_for("both files on all three", lambda: (t := same_trees(lan.hosts))
             and {"from-last.txt", "from-first.txt"} <= t.keys(), 10)
    join(lan)
    holds_for("still one term once the link is back", lambda: agreed(lan.hosts, first) == term,
              3)

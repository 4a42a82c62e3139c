"""`meshsync status` for people: what waits, and why, in a few lines a peer cannot forge."""

from typing import Any

from meshsync.cli import render


def status_of(**folder: Any) -> dict[str, Any]:
    line = {"id": "Sync", "path": "/home/me/Sync", "state": "syncing", "need_files": 0,
            "need_bytes": 0, "conflicts": 0, "transfers": [], "members": ["SHA256:x"],
            "waiting": [], "waiting_count": 0}
    return {"id": "SHA256:me", "name": "laptop", "term": 1, "coordinator": "SHA256:me",
            "folders": [line | folder]}


def test_status_shows_how_many_paths_wait_and_the_first_few_with_their_reason() -> None:
    waiting = [{"path": f"film{n}.mkv", "reason": f"no member has all of its blocks ({n} of 9"
                " missing)", "retry_in": 75.0 + n} for n in range(1, 6)]
    text = render.status(status_of(need_files=5, need_bytes=1 << 30, waiting=waiting,
                                   waiting_count=250))
    lines = text.splitlines()
    assert "needs 5 files (1.0 GiB), 250 held back" in lines[1]
    assert lines[2:] == [
        f"  held back: film{n}.mkv: no member has all of its blocks ({n} of 9 missing)"
        f" (next try in 1m {15 + n}s)" for n in (1, 2, 3)
    ] + ["  held back: 247 more (see --json)"]


def test_a_folder_with_nothing_waiting_shows_no_waiting_lines() -> None:
    text = render.status(status_of(state="in sync"))
    assert "held back" not in text
    assert len(text.splitlines()) == 2


def test_a_waiting_path_with_a_newline_or_escape_sequence_stays_on_its_line_and_inert() -> None:
    path = "a\n2026-01-01 forged line \x1b[2J.txt"
    waiting = [{"path": path, "reason": "cannot write: [Errno 28] No space left on device",
                "retry_in": 0.4}]
    text = render.status(status_of(need_files=1, waiting=waiting, waiting_count=1))
    assert len(text.splitlines()) == 3
    assert "\x1b" not in text
    assert text.splitlines()[2] == ("  held back: a\\n2026-01-01 forged line \\x1b[2J.txt: cannot "
                                    "write: [Errno 28] No space left on device (next try now)")


def test_a_version_held_back_for_its_origin_shows_the_command_that_trusts_it() -> None:
    held = [{"path": "plans.odt", "cause": "untrusted origin",
             "reason": "made by SHA256:abc (desk), not trusted here; to trust it, run: "
                       "meshsync trust SHA256:abc"}]
    text = render.status(status_of(state="held back", held_back=held, held_back_count=1))
    assert text.splitlines()[1].startswith("Sync  /home/me/Sync  held back: 1 file;")
    assert text.splitlines()[2] == ("  held back: plans.odt: made by SHA256:abc (desk), not "
                                    "trusted here; to trust it, run: meshsync trust SHA256:abc")


def test_a_scan_under_way_shows_how_far_it_has_come_and_transfers_their_rate() -> None:
    scan = {"entries_found": 20000, "entries_done": 12345, "bytes_found": 3 << 30,
            "bytes_done": 1 << 30, "walking": False}
    text = render.status(status_of(state="scanning", scan=scan, rate={"in": 5 << 20, "out": 0}))
    assert ("scanning (12,345 of 20,000 entries, 1.0 GiB of 3.0 GiB), receiving 5.0 MiB/s, "
            "sending 0 B/s;") in text.splitlines()[1]


def test_peers_shows_the_fix_under_the_table_for_a_peer_refused_for_its_clock() -> None:
    rows = [{"id": "SHA256:abcdefghij", "name": "nas", "address": "10.0.0.7:22300",
             "role": "peer", "state": "refused", "self": False, "last_seen": None,
             "clock_offset": 1234.0, "fix": "the clocks differ by 21 min: set both to network "
             "time (timedatectl set-ntp true)"}]
    assert render.peers(rows).splitlines()[-2:] == [
        "refused for their clocks:",
        "  abcdefgh: the clocks differ by 21 min: set both to network time (timedatectl "
        "set-ntp true)",
    ]


def test_peers_marks_a_peer_trusted_on_an_introducers_word_and_names_the_introducer() -> None:
    row = {"address": "10.0.0.7:22300", "role": "member", "state": "online", "self": False,
           "last_seen": None, "clock_offset": None, "via_introducer": None}
    rows = [row | {"id": "SHA256:serverabcd", "name": "server"},
            row | {"id": "SHA256:laptopabcd", "name": "laptop",
                   "via_introducer": "SHA256:serverabcd"}]
    lines = render.peers(rows).splitlines()
    assert lines[2].startswith("laptopab+  laptop")
    assert lines[-2:] == ["+ trusted on an introducer's word:",
                          "  laptopab: via introducer SHA256:serverabcd (server)"]
    assert render.trusted({"added": ["SHA256:x"], "already": [], "introducer": True}) == (
        "trusted SHA256:x as introducer: the members it trusts are trusted here too")


def test_status_shows_how_far_each_member_says_it_is() -> None:
    completion = [{"id": "SHA256:a", "name": "desk", "state": "in sync", "need_files": 0,
                   "need_bytes": 0, "percent": 100},
                  {"id": "SHA256:b", "name": "nas\x1b[2J", "state": "syncing", "need_files": 9,
                   "need_bytes": 10, "percent": 42},
                  {"id": "SHA256:c", "name": "?", "state": None, "need_files": None,
                   "need_bytes": None, "percent": None}]
    text = render.status(status_of(state="in sync", completion=completion))
    assert text.splitlines()[1].endswith(
        "shared with 1 online member (desk 100%, nas\\x1b[2J 42%)")

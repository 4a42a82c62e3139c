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
    assert "needs 5 files (1.0 GiB), 250 waiting" in lines[1]
    assert lines[2:] == [
        f"  waiting: film{n}.mkv: no member has all of its blocks ({n} of 9 missing)"
        f" (next try in 1m {15 + n}s)" for n in (1, 2, 3)
    ] + ["  waiting: 247 more (see --json)"]


def test_a_folder_with_nothing_waiting_shows_no_waiting_lines() -> None:
    text = render.status(status_of(state="in sync"))
    assert "waiting" not in text
    assert len(text.splitlines()) == 2


def test_a_waiting_path_with_a_newline_or_escape_sequence_stays_on_its_line_and_inert() -> None:
    path = "a\n2026-01-01 forged line \x1b[2J.txt"
    waiting = [{"path": path, "reason": "cannot write: [Errno 28] No space left on device",
                "retry_in": 0.4}]
    text = render.status(status_of(need_files=1, waiting=waiting, waiting_count=1))
    assert len(text.splitlines()) == 3
    assert "\x1b" not in text
    assert text.splitlines()[2] == ("  waiting: a\\n2026-01-01 forged line \\x1b[2J.txt: cannot "
                                    "write: [Errno 28] No space left on device (next try now)")

"""Every change on any machine reaches all others, whole: files, folders, links, modes, mtimes."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

from meshsync.core.paths import TEMP_PREFIX
from meshsync.core.records import BLOCK_SIZE
from tests.integration.lan import Lan, holds_for, same_trees, tree, wait_for
from tests.integration.test_election import agreed, start_all

REPO = Path(__file__).resolve().parents[2]


def mesh(make_lan, count: int, push_only: bool = True) -> Lan:
    """`count` hosts in one mesh; unless `push_only`, with periodic catch-up on (see
    Host.catch_up: off by default, so that what reaches a host came by notice)."""
    lan = make_lan(count)
    for host in lan.hosts:
        host.catch_up = not push_only
    start_all(lan)
    lowest = lan.by_id()[0]
    wait_for("the mesh to form", lambda: agreed(lan.hosts, lowest), 15)
    return lan


def write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def test_nested_creates_modifies_deletes_and_renames_converge_on_three_hosts(make_lan):
    lan = mesh(make_lan, 3)
    h1, h2, h3 = lan.hosts
    write(h1.sync / "a/b/c/deep.txt", b"deep")
    write(h2.sync / "top.txt", b"top")
    write(h3.sync / "x/y.bin", os.urandom(300_000))
    wait_for("creates to converge", lambda: (t := same_trees(lan.hosts)) and len(
        [p for p in t if t[p][0] == "file"]) == 3, 10)

    (h2.sync / "a/b/c/deep.txt").write_bytes(b"deeper")
    (h3.sync / "top.txt").rename(h3.sync / "a/top-moved.txt")
    (h1.sync / "x/y.bin").unlink()
    (h1.sync / "x").rmdir()

    def settled():
        t = same_trees(lan.hosts)
        return t and "x" not in t and "top.txt" not in t and "a/top-moved.txt" in t and t
    final = wait_for("edits, a rename and a delete to converge", settled, 10)
    assert (h1.sync / "a/b/c/deep.txt").read_bytes() == b"deeper"
    assert (h1.sync / "a/top-moved.txt").read_bytes() == b"top"
    assert set(final) == {"a", "a/b", "a/b/c", "a/b/c/deep.txt", "a/top-moved.txt"}


def test_mode_bits_mtime_empty_dirs_and_symlinks_follow(make_lan):
    lan = mesh(make_lan, 2)
    h1, h2 = lan.hosts
    script = h1.sync / "run.sh"
    write(script, b"#!/bin/sh\necho hi\n")
    script.chmod(0o750)
    os.utime(script, ns=(1_600_000_000_123_456_789, 1_600_000_000_123_456_789))
    (h1.sync / "empty/inner").mkdir(parents=True)
    (h1.sync / "link").symlink_to("run.sh")
    (h1.sync / "outside").symlink_to("/etc/passwd")
    wait_for("all of it on h2", lambda: same_trees(lan.hosts) and len(tree(h2.sync)) == 5, 10)
    copy = h2.sync / "run.sh"
    assert copy.stat().st_mode & 0o777 == 0o750
    assert copy.stat().st_mtime_ns == 1_600_000_000_123_456_789
    # Synced as a link, never followed.
    assert str((h2.sync / "outside").readlink()) == "/etc/passwd"
    assert (h2.sync / "empty/inner").is_dir()

    script.chmod(0o700)
    wait_for("a chmod alone to follow", lambda: copy.stat().st_mode & 0o777 == 0o700, 10)


def test_a_vanished_folder_deletes_nothing_anywhere_and_resumes(make_lan):
    lan = mesh(make_lan, 2)
    h1, h2 = lan.hosts
    write(h1.sync / "keep/me.txt", b"precious")
    wait_for("the file on h2", lambda: (h2.sync / "keep/me.txt").exists(), 10)
    # The disk is unmounted: the folder is empty, its marker gone.
    hidden = h1.home / "unmounted"
    h1.sync.rename(hidden)
    h1.sync.mkdir()
    wait_for("h1 to report the folder unmounted",
             lambda: h1.json("status")["folders"][0]["state"] == "unmounted", 10)
    write(h2.sync / "keep/new.txt", b"written while h1's disk was away")
    # Long enough for a delete or a write to have crossed the LAN many times over.
    holds_for("h2 to keep its files and h1's empty mount point to stay empty",
              lambda: (h2.sync / "keep/me.txt").exists() and not any(h1.sync.iterdir()), 3)
    h1.sync.rmdir()
    hidden.rename(h1.sync)
    wait_for("h1 to resume and catch up", lambda: same_trees(lan.hosts)
             and (h1.sync / "keep/new.txt").exists(), 10)
    assert (h2.sync / "keep/me.txt").read_bytes() == b"precious"


def test_a_node_started_on_an_unmounted_folder_watches_the_disk_once_it_comes(make_lan):
    lan = mesh(make_lan, 2)
    h1, h2 = lan.hosts
    write(h1.sync / "keep/me.txt", b"precious")
    wait_for("the file on h2", lambda: (h2.sync / "keep/me.txt").exists(), 10)
    h1.stop()
    hidden = h1.home / "unmounted"
    h1.sync.rename(hidden)
    h1.sync.mkdir()  # the empty mount point, which its early watch would watch
    h1.start()
    wait_for("h1 to report the folder unmounted",
             lambda: h1.json("status")["folders"][0]["state"] == "unmounted", 10)
    h1.sync.rmdir()
    hidden.rename(h1.sync)
    wait_for("h1 to resume", lambda: h1.json("status")["folders"][0]["state"] == "in sync", 10)
    # Seen by its watch of the disk, not by a rescan (a minute away).
    write(h1.sync / "keep/after.txt", b"written once the disk was back")
    wait_for("the new file on h2", lambda: (h2.sync / "keep/after.txt").exists(), 10)


def rx_bytes(host) -> int:
    """Bytes received on the host's interface so far."""
    for line in host.exec("cat", "/proc/net/dev").stdout.splitlines():
        if line.strip().startswith("eth0:"):
            return int(line.split(":", 1)[1].split()[0])
    raise AssertionError("no eth0 in /proc/net/dev")


def test_a_stopped_machine_catches_up_without_fetching_what_it_has(make_lan):
    lan = mesh(make_lan, 3)
    h1, h2, h3 = lan.hosts
    big = os.urandom(4 * 1024 * 1024)
    write(h1.sync / "big.bin", big)
    write(h1.sync / "gone.txt", b"to be deleted")
    write(h1.sync / "edit.txt", b"v1")
    wait_for("everything on h3", lambda: same_trees(lan.hosts) and len(tree(h3.sync)) == 3, 15)
    h3.stop()
    (h1.sync / "gone.txt").unlink()
    (h2.sync / "edit.txt").write_bytes(b"v2")
    write(h1.sync / "new/file.txt", b"created while h3 was away")
    wait_for("h1 and h2 to agree", lambda: (t := same_trees([h1, h2])) and "gone.txt" not in t
             and "new/file.txt" in t, 10)
    before = rx_bytes(h3)
    h3.start()
    wait_for("h3 to catch up: creates, changes and deletes", lambda: same_trees(lan.hosts)
             and not (h3.sync / "gone.txt").exists(), 15)
    received = rx_bytes(h3) - before
    assert (h3.sync / "edit.txt").read_bytes() == b"v2"
    assert received < len(big) // 4, f"h3 received {received} bytes: it fetched big.bin again"


def test_a_byte_changed_in_a_big_file_costs_each_member_its_block_not_its_list(make_lan):
    # A database or a disk image, rewritten in place: its list of 1024 block hashes would be
    # 69 KB of JSON in every notice, relay and index page that carries it, to every member.
    lan = mesh(make_lan, 3, push_only=False)  # index pages too, as nodes run
    h1, *others = lan.hosts
    size, middle = 128 * 1024 * 1024, 77 * 1024 * 1024 + 5
    staged = h1.home / "disk.img"
    staged.write_bytes(os.urandom(size))
    staged.rename(h1.sync / "disk.img")
    wait_for("the image on every host", lambda: same_trees(lan.hosts) and all(
        (h.sync / "disk.img").exists() for h in others), 60, every=0.2)
    before = {h.name: rx_bytes(h) for h in others}
    fd = os.open(h1.sync / "disk.img", os.O_WRONLY)
    try:
        os.pwrite(fd, b"\x00\xff", middle)
    finally:
        os.close(fd)
    wait_for("the change on every host", lambda: all(
        read_at(h.sync / "disk.img", middle, 2) == b"\x00\xff" for h in others), 30)
    wait_for("the same image everywhere", lambda: same_trees(lan.hosts), 10)
    list_json = 67 * size // BLOCK_SIZE
    for h in others:
        received = rx_bytes(h) - before[h.name]
        assert received < BLOCK_SIZE + list_json // 2, f"{h.name} received {received} bytes"


def read_at(path: Path, offset: int, size: int) -> bytes:
    with path.open("rb") as f:
        f.seek(offset)
        return f.read(size)


def test_path_traversal_in_a_notice_is_refused_and_touches_nothing(make_lan):
    lan = mesh(make_lan, 2)
    h1, h2 = lan.hosts
    outside = h1.home / "outside"
    outside.mkdir()
    (h1.sync / "out").symlink_to(outside)  # a link inside the folder to a place outside it
    wait_for("the link on h2", lambda: (h2.sync / "out").is_symlink(), 10)
    result = h2.exec(sys.executable, "-m", "tests.integration.probe", f"{h1.ip}:22300",
                     str(h2.key), "notice", cwd=str(REPO))
    assert json.loads(result.stdout) == {
        "../escape.txt": 400, "/etc/evil": 400, "a/../../b": 400, "nul\u0000byte": 400,
        ".meshsync/versions/x": 400, "ok.txt": 200, "out/evil.txt": 200,
    }
    # A well-formed path whose parent is a symlink is accepted as a record, never written.
    # (A directory beats a link: until a version makes it one, it waits, checked every 2 s.)
    wait_for("the refusal to write through the link", lambda: "'out/evil.txt' waits: out is "
             "not a directory yet" in h1.log.read_text(), 10)
    wait_for("ok.txt to be written", lambda: (h1.sync / "ok.txt").exists(), 10)
    assert list(outside.iterdir()) == []
    assert not (h1.home / "escape.txt").exists()
    assert h1.is_running()


def test_a_record_its_origin_did_not_sign_is_refused_even_from_a_member(make_lan):
    lan = mesh(make_lan, 2)
    h1, h2 = lan.hosts
    (h1.sync / "x.txt").write_bytes(b"x")  # so h1 can write any record of content "x" alone
    wait_for("x.txt on h2", lambda: (h2.sync / "x.txt").exists(), 10)
    result = h2.exec(sys.executable, "-m", "tests.integration.probe", f"{h1.ip}:22300",
                     str(h2.key), "forged", cwd=str(REPO))
    assert json.loads(result.stdout) == {"stranger.txt": 200, "swapped.txt": 200,
                                         "honest.txt": 200}
    wait_for("the honest record, sent last, to be written", lambda: (h1.sync / "honest.txt")
             .exists(), 10)
    assert "refused stranger.txt from" in h1.log.read_text()  # once per peer and minute
    assert not (h1.sync / "stranger.txt").exists()
    assert not (h1.sync / "swapped.txt").exists()
    assert h1.is_running()


def test_a_receiver_killed_mid_transfer_leaves_no_partial_file_and_resumes(make_lan, tmp_path):
    lan = mesh(make_lan, 2)
    h1, h2 = lan.hosts
    big = os.urandom(192 * 1024 * 1024)
    digest = hashlib.sha256(big).hexdigest()
    staged = h1.home / "big.bin"
    staged.write_bytes(big)
    del big
    staged.rename(h1.sync / "big.bin")  # appears whole, as a finished download would
    wait_for("h2 to be part-way through", lambda: any(
        t["done"] > 0 for f in h2.json("status")["folders"] for t in f["transfers"]), 30,
        every=0.02)
    h2.kill()
    assert not (h2.sync / "big.bin").exists()
    h2.start()
    wait_for("the transfer to finish after restart",
             lambda: (h2.sync / "big.bin").exists(), 60, every=0.2)
    assert hashlib.sha256((h2.sync / "big.bin").read_bytes()).hexdigest() == digest
    wait_for("no temporary file left", lambda: same_trees(lan.hosts), 10)


def test_a_directory_renamed_during_a_transfer_into_it_keeps_no_temporary_file(make_lan):
    lan = mesh(make_lan, 2)
    h1, h2 = lan.hosts
    (h1.sync / "d").mkdir()
    wait_for("d on h2", lambda: (h2.sync / "d").is_dir(), 15)
    staged = h1.home / "big.bin"
    big = os.urandom(96 * 1024 * 1024)
    staged.write_bytes(big)
    digest = hashlib.sha256(big).hexdigest()
    del big
    staged.rename(h1.sync / "d" / "big.bin")
    wait_for("h2 to be part-way through", lambda: any(
        t["done"] > 0 for f in h2.json("status")["folders"] for t in f["transfers"]), 30,
        every=0.02)
    # The half-written file's temporary goes along, and cannot go into place: a file is there.
    (h2.sync / "d").rename(h2.sync / "e")
    (h2.sync / "e" / "big.bin").write_text("written on h2")
    wait_for("one tree, in sync, with no temporary file in it", lambda: same_trees(lan.hosts)
             and all(h.json("status")["folders"][0]["state"] == "in sync" for h in lan.hosts)
             and not list(h2.sync.rglob(".meshsync-tmp*")), 30)
    assert hashlib.sha256((h2.sync / "d" / "big.bin").read_bytes()).hexdigest() == digest
    assert (h1.sync / "e" / "big.bin").read_text() == "written on h2"


def announced(host) -> int:
    """How many changes the host has announced, by its log."""
    return sum(int(line.split("announced ")[1].split()[0])
               for line in host.log.read_text().splitlines() if "announced " in line)


def test_received_files_are_not_echoed_and_a_rename_costs_no_transfer(make_lan):
    lan = mesh(make_lan, 2)
    h1, h2 = lan.hosts
    write(h1.sync / "data/big.bin", os.urandom(8 * 1024 * 1024))
    wait_for("the file on h2", lambda: same_trees(lan.hosts) and len(tree(h2.sync)) == 2, 15)
    # Long enough for h2's watcher to have seen its own writes and its rescan to have run.
    holds_for("h2 to announce nothing it only received", lambda: announced(h2) == 0, 2)
    before = rx_bytes(h2)
    (h1.sync / "data/big.bin").rename(h1.sync / "moved.bin")
    wait_for("the rename on h2", lambda: (t := same_trees(lan.hosts)) and "moved.bin" in t, 10)
    assert rx_bytes(h2) - before < 1024 * 1024, "the renamed file's bytes crossed the LAN again"


def hashed(host) -> list[int]:
    """Files hashed by each full scan that hashed any (or was the first since a start)."""
    return [int(line.split("; hashed ")[1].split()[0])
            for line in host.log.read_text().splitlines() if "; hashed " in line]


def test_a_restart_rehashes_only_what_changed_while_stopped(make_lan):
    # As shipped: the restarted node's scan may announce before it has heard h2 again, and
    # h2's catch-up on hearing it may read its index before that scan is in; the periodic
    # catch-up is what covers that race (see Host.catch_up).
    lan = mesh(make_lan, 2, push_only=False)
    h1, h2 = lan.hosts
    for i in range(20):
        write(h1.sync / f"f{i}.txt", f"{i}".encode())
    wait_for("all on h2", lambda: same_trees(lan.hosts) and len(tree(h2.sync)) == 20, 15)
    h1.stop()
    first = announced(h1)
    scans = len(hashed(h1))
    (h1.sync / "f3.txt").write_bytes(b"changed while stopped")
    (h1.sync / "f5.txt").unlink()
    h1.start()
    wait_for("the change made while stopped to reach h2",
             lambda: (h2.sync / "f3.txt").read_bytes() == b"changed while stopped", 15)
    wait_for("the deletion made while stopped to reach h2",
             lambda: not (h2.sync / "f5.txt").exists(), 15)
    assert announced(h1) - first == 2
    assert hashed(h1)[scans] == 1, "the first scan after the restart read one file"


def test_temporary_files_a_previous_run_left_anywhere_are_removed(make_lan):
    lan = mesh(make_lan, 2)
    h1, h2 = lan.hosts
    write(h1.sync / "deep/er/f.txt", b"f")
    wait_for("f on h2", lambda: (h2.sync / "deep/er/f.txt").exists(), 15)
    h2.stop()
    left = [h2.sync / f"{TEMP_PREFIX}crashed", h2.sync / f"deep/er/{TEMP_PREFIX}half-written"]
    for temp in left:
        temp.write_bytes(b"a transfer cut short")
    h2.start()
    wait_for("the leftovers gone", lambda: not any(temp.exists() for temp in left), 15)
    assert (h2.sync / "deep/er/f.txt").read_bytes() == b"f"


def test_a_change_made_while_the_coordinator_is_replaced_is_not_lost(make_lan):
    lan = mesh(make_lan, 3)
    lowest, second, third = lan.by_id()
    lowest.kill()
    write(third.sync / "during-election.txt", b"written with no coordinator")
    wait_for("the change to reach the other survivor", lambda: (
        second.sync / "during-election.txt").exists(), 15)
    assert (second.sync / "during-election.txt").read_bytes() == b"written with no coordinator"


def test_a_trusted_node_that_does_not_share_the_folder_cannot_read_it(make_lan):
    lan = make_lan(2)
    h1, h2 = lan.hosts
    lan.trust_all()
    h1.start()
    h2.start("--as", "Other")
    wait_for("h1 to know h2", lambda: "h2" in h1.peer_states(), 10)
    result = h2.exec(sys.executable, "-m", "tests.integration.probe", f"{h1.ip}:22300",
                     str(h2.key), "index", cwd=str(REPO))
    assert json.loads(result.stdout) == {"index": 403}

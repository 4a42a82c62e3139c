"""The command line: the node's ID as ssh-keygen prints it, clear words when no node runs,
and keys that live in ssh-agent."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.component.openssh import ssh_agent
from tests.integration.lan import run, same_trees, tree, wait_for
from tests.integration.test_election import agreed


def test_id_is_what_ssh_keygen_prints_for_the_same_key(make_lan):
    lan = make_lan(1)
    (h1,) = lan.hosts
    h1.start()
    out = h1.cli("id").stdout.splitlines()
    fingerprint = run("ssh-keygen", "-lf", str(h1.key.with_name("id_ed25519.pub"))).stdout
    assert out[0] == fingerprint.split()[1]
    assert out[1].split()[:2] == h1.pub.split()[:2]
    assert h1.json("id")["id"] == out[0]


def test_tables_show_what_the_json_shows(make_lan):
    lan = make_lan(2)
    h1, h2 = lan.hosts
    lan.trust_all()
    h1.start()
    h2.start()
    lowest = min(h1, h2, key=lambda h: h.id)
    wait_for("agreement", lambda: agreed([h1, h2], lowest), 15)
    table = h1.cli("peers").stdout.splitlines()
    assert table[0].split() == ["ID", "NAME", "ADDRESS", "ROLE", "STATE", "LAST", "SEEN"]
    row = next(line.split() for line in table if " h2 " in line)
    assert row[:5] == [h2.id.short, "h2", f"{h2.ip}:22300",
                       "coordinator" if lowest is h2 else "member", "online"]
    assert h1.cli("elect").stdout.strip().startswith(f"coordinator {lowest.id} (term ")
    expected = [{
        "id": "Sync", "path": str(h1.sync), "state": "in sync", "need_files": 0, "need_bytes": 0,
        "conflicts": 0, "transfers": [], "waiting": [], "waiting_count": 0,
        "held_back": [], "held_back_count": 0, "scan": None, "rate": {"in": 0, "out": 0},
        "members": [str(h2.id)],
        "completion": [{"id": str(h2.id), "name": "h2", "state": "in sync", "need_files": 0,
                        "need_bytes": 0, "percent": 100}],
    }]
    # (h2 tells how far it is in its hellos, every 2 s.)
    wait_for("h1's status to show h2 in sync", lambda: h1.json("status")["folders"] == expected,
             5)
    assert "shared with 1 online member (h2 100%)" in h1.cli("status").stdout
    assert (h1.sync / ".meshsync").is_dir()


@pytest.mark.parametrize("command", [["peers"], ["status"], ["elect"], ["elect", "--force"],
                                     ["id"], ["stop"], ["trust", "SHA256:x"], ["peers", "--json"]])
def test_commands_without_a_running_node_say_so_in_one_line_and_exit_1(tmp_path, command):
    env = {**os.environ, "HOME": str(tmp_path), "MESHSYNC_HOME": str(tmp_path / "state")}
    result = subprocess.run([sys.executable, "-m", "meshsync", *command], env=env,
                            capture_output=True, text=True, check=False)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("meshsync: no meshsync node is running")


@pytest.mark.parametrize("args", [["--as", "a/b", "DIR"], ["--as", "..", "DIR"], ["/"]])
def test_a_folder_that_cannot_be_named_is_refused_in_one_line(tmp_path, args):
    args = [str(tmp_path / "Sync") if a == "DIR" else a for a in args]
    env = {**os.environ, "HOME": str(tmp_path), "MESHSYNC_HOME": str(tmp_path / "state")}
    result = subprocess.run([sys.executable, "-m", "meshsync", "start", *args], env=env,
                            capture_output=True, text=True, check=False)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1
    assert "cannot be a folder ID" in result.stderr
    assert not (tmp_path / "Sync").exists()


@pytest.mark.parametrize("port", ["70000", "-1"])
def test_a_port_out_of_range_is_refused_in_one_line(tmp_path, port):
    env = {**os.environ, "HOME": str(tmp_path), "MESHSYNC_HOME": str(tmp_path / "state")}
    result = subprocess.run([sys.executable, "-m", "meshsync", "start", str(tmp_path / "Sync"),
                             "--port", port], env=env, capture_output=True, text=True,
                            check=False)
    assert result.returncode == 1
    assert result.stderr == f"meshsync: --port wants a number from 0 to 65535, not {port}\n"


def test_a_second_node_on_the_same_state_directory_is_refused(make_lan):
    lan = make_lan(1)
    (h1,) = lan.hosts
    h1.start()
    second = h1.exec(sys.executable, "-m", "meshsync", "start", str(h1.sync), "--port", "22301",
                     check=False)
    assert second.returncode == 1
    assert "already running" in second.stderr
    assert h1.is_running()


def test_passphrase_protected_key_signs_through_ssh_agent(make_lan, tmp_path):
    lan = make_lan(2)
    h1, h2 = lan.hosts
    h1.make_key(passphrase="correct horse")
    lan.trust_all()

    without_agent = h1.exec(sys.executable, "-m", "meshsync", "start", str(h1.sync), check=False)
    assert without_agent.returncode == 1
    assert f"ssh-add {h1.key}" in without_agent.stderr

    with ssh_agent(tmp_path) as sock:
        h1.use_agent(sock, "correct horse")
        (h1.sync / "before").mkdir(parents=True)
        for i in range(50):
            (h1.sync / "before" / f"{i}.txt").write_text(f"file {i}\n")
        h1.start()
        h2.start()
        lowest = min(h1, h2, key=lambda h: h.id)
        wait_for("the agent-signed node to be a member", lambda: agreed([h1, h2], lowest)
                 and h2.peer_states() == {"h1": "online"}, 15)
        # Its versions are signed by a key the agent vouched for once, and h2 takes them
        # as h1's, from its first index and from a change made while it runs.
        (h1.sync / "after.txt").write_text("made while running\n")
        wait_for("h1's files on h2", lambda: same_trees([h1, h2]) and tree(h2.sync), 30)
        assert len(tree(h2.sync / "before")) == 50
        h1.stop()  # before the agent goes away

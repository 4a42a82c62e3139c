"""The command line: the node's ID as ssh-keygen prints it, clear words when no node runs,
and keys that live in ssh-agent."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.component.openssh import ssh_agent
from tests.integration.lan import holds_for, run, same_trees, tree, wait_for
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
    assert h1.cli("elect").stdout.strip().startswith(
        f"coordinator {lowest.name} ({lowest.id.short}) (term ")
    assert h1.json("elect")["coordinator_name"] == lowest.name
    expected = [{
        "id": "Sync", "path": str(h1.sync), "state": "in sync", "need_files": 0, "need_bytes": 0,
        "conflicts": 0, "transfers": [], "waiting": [], "waiting_count": 0,
        "held_back": [], "held_back_count": 0, "scan": None, "rate": {"in": 0, "out": 0},
        "keep": {"days": 30.0, "bytes": 1 << 30}, "mode": "send-receive", "share_with": None,
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
                                     ["stop"], ["peers", "--json"], ["status", "--watch"]])
def test_commands_without_a_running_node_say_so_in_one_line_and_exit_1(tmp_path, command):
    env = {**os.environ, "HOME": str(tmp_path), "MESHSYNC_HOME": str(tmp_path / "state")}
    result = subprocess.run([sys.executable, "-m", "meshsync", *command], env=env,
                            capture_output=True, text=True, check=False)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("meshsync: no meshsync node is running")


@pytest.mark.parametrize(("command", "said"), [
    (["set", "Sync", "--keep-days", "x"],
     "meshsync set: --keep-days wants a number of days from 0 to 36500, not 'x'"),
    (["add", "Docs", "--keep-size", "12Q"], "meshsync add: not a size: '12Q' (try 500M or 2G)"),
    (["add", "Docs", "--keep-days=-1"],
     "meshsync add: --keep-days wants a number of days from 0 to 36500, not '-1'"),
])
def test_a_setting_written_wrong_is_a_usage_error_whether_or_not_a_node_runs(
        tmp_path, command, said):
    env = {**os.environ, "HOME": str(tmp_path), "MESHSYNC_HOME": str(tmp_path / "state")}
    result = subprocess.run([sys.executable, "-m", "meshsync", *command], env=env,
                            capture_output=True, text=True, check=False)
    assert (result.returncode, result.stdout, result.stderr) == (2, "", said + "\n")


def fresh_home(tmp_path: Path) -> Path:
    """A home directory with an ed25519 key in its .ssh, and nothing of meshsync's yet."""
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(home / ".ssh" / "id_ed25519"))
    return home


def meshsync_at(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """A meshsync command run with `home` as HOME and its state directory the default one."""
    env = {k: v for k, v in os.environ.items() if k not in ("MESHSYNC_HOME", "XDG_STATE_HOME")}
    return subprocess.run([sys.executable, "-m", "meshsync", *args],
                          env={**env, "HOME": str(home)}, capture_output=True, text=True,
                          check=False, timeout=30)


def named(text: str, names: dict[str, str]) -> str:
    """`text` with each <NAME> of `names` replaced by its path."""
    for name, path in names.items():
        text = text.replace(name, path)
    return text


# Each wrong command line: (arguments, exit status, the one line said). <DIR> is a folder not yet
# made, <FILE> a file, <HOME> the home directory; 2 for a command line wrong as written, 1 for one
# that cannot be carried out.
BAD_STARTS = [
    (["<FILE>"], 2, "meshsync start: <FILE> is not a directory: give the directory to sync"),
    (["<FILE>/sub"], 1, "meshsync: cannot create the folder <FILE>/sub: Not a directory:"
                        " create it yourself, or sync another"),
    (["<DIR>", "<DIR>/inner"], 2, "meshsync start: <DIR>/inner is inside <DIR>: sync one or"
                                  " the other (a folder holds everything below it)"),
    (["<HOME>"], 2, "meshsync start: <HOME> is your home directory: sync a folder in it, such"
                    " as ~/Sync"),
    (["<HOME>/.local"], 2, "meshsync start: <HOME>/.local holds meshsync's state"
                           " (<HOME>/.local/state/meshsync): sync a folder that does not, such as"
                           " ~/Sync"),
    (["/"], 2, "meshsync start: / holds meshsync's state (<HOME>/.local/state/meshsync): sync a"
               " folder that does not, such as ~/Sync"),
    (["--as", "a/b", "<DIR>"], 2, "meshsync start: 'a/b' cannot be a folder ID (it names the"
                                  " folder to peers): give another with --as NAME"),
    (["<DIR>", "--port", "70000"], 2, "meshsync start: --port wants a number from 0 to 65535,"
                                      " not 70000"),
    (["<DIR>", "--port", "-1"], 2, "meshsync start: --port wants a number from 0 to 65535,"
                                   " not -1"),
    (["<DIR>", "--port", "x"], 2, "meshsync start: argument --port: invalid int value: 'x'"
                                  " (see meshsync start --help)"),
    (["<DIR>", "--keep-days", "-1"], 2, "meshsync start: --keep-days wants a number of days from"
                                        " 0 to 36500, not '-1'"),
    (["<DIR>", "--keep-days", "nan"], 2, "meshsync start: --keep-days wants a number of days from"
                                         " 0 to 36500, not 'nan'"),
    (["<DIR>", "--keep-size=-5G"], 2, "meshsync start: not a size: '-5G' (try 500M or 2G)"),
    (["<DIR>", "--keep-size", "12Q"], 2, "meshsync start: not a size: '12Q' (try 500M or 2G)"),
    (["<DIR>", "--min-free", "200%"], 2, "meshsync start: --min-free wants a share from 0% to"
                                         " 100% or a size, not '200%'"),
    (["<DIR>", "--peer", "nohost"], 2, "meshsync start: --peer wants HOST:PORT, not 'nohost'"),
    (["<DIR>", "--name", ""], 2, "meshsync start: --name wants 1 to 64 printable characters,"
                                 " not ''"),
    (["<DIR>", "--key", "<HOME>/missing"], 1, "meshsync: key file <HOME>/missing does not exist"),
    ([], 2, "meshsync start: no folder to sync: name one, as in `meshsync start ~/Sync`"
            " (folders added with `meshsync add` are remembered)"),
    (["<DIR>", "--bogus"], 2, "meshsync: unrecognized arguments: --bogus (see meshsync --help)"),
]


@pytest.mark.parametrize(("args", "status", "said"), BAD_STARTS)
def test_a_wrong_start_is_refused_in_one_line_before_the_node_shows_itself(
        tmp_path, args, status, said):
    home = fresh_home(tmp_path)
    (tmp_path / "file").write_text("not a folder")
    names = {"<DIR>": str(tmp_path / "Sync"), "<FILE>": str(tmp_path / "file"),
             "<HOME>": str(home)}
    result = meshsync_at(home, "start", *(named(a, names) for a in args))
    assert (result.returncode, result.stderr) == (status, named(said, names) + "\n")
    assert result.stdout == ""
    assert not (tmp_path / "Sync").exists()
    assert not (home / ".local/state/meshsync/control.sock").exists()


def test_help_explains_a_command_and_version_says_which(tmp_path):
    def meshsync(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "meshsync", *args], capture_output=True,
                              text=True, check=False)

    assert meshsync("help").stdout == meshsync("--help").stdout
    assert meshsync("help", "start").stdout == meshsync("start", "--help").stdout
    assert "--keep-days DAYS" in meshsync("help", "start").stdout
    assert meshsync("--version").stdout == "meshsync 0.1.0\n"


def test_id_and_trust_need_no_running_node_and_untrust_takes_effect_while_it_runs(make_lan):
    lan = make_lan(2)
    h1, h2 = lan.hosts
    before = h1.cli("id")
    assert before.returncode == 0, before.stderr
    # h1 trusts h2 by its key file, no node running; h2 trusts h1 in authorized_keys.
    (h1.home / "h2.pub").write_text(h2.pub + "\n")
    said = h1.cli("trust", str(h1.home / "h2.pub"))
    assert (said.returncode, said.stdout) == (0, f"trusted {h2.id}\n")
    assert h1.cli("trust", str(h1.home / "h2.pub")).stdout == f"already trusted {h2.id}\n"
    h2.trust(h1)
    h1.start()
    h2.start()
    assert h1.cli("id").stdout.split("\n")[:1] == before.stdout.split("\n")[:1]
    assert h1.json("id")["key"].split()[:2] == before.stdout.split("\n")[1].split()[:2]
    (h2.sync / "hello.txt").write_text("from h2")
    wait_for("h2's file at h1", lambda: (h1.sync / "hello.txt").is_file(), 15)

    # Only the state directory's file is meshsync's to edit: the user's own stays theirs.
    refused = h2.cli("untrust", h1.id.short)
    assert (refused.returncode, refused.stderr) == (1, (
        f"meshsync: {h1.id} is trusted by {h2.home}/.ssh/authorized_keys: remove its line there"
        " (meshsync does not edit that file)\n"))
    done = h1.cli("untrust", h2.id.short)
    assert (done.returncode, done.stdout) == (
        0, f"untrusted {h2.id}: nothing it sends is taken from now on\n")
    wait_for("h1 to hold h2 untrusted", lambda: h1.peer_states().get("h2") == "untrusted", 10)
    (h2.sync / "after.txt").write_text("not for h1")
    holds_for("h1 not to take h2's file", lambda: not (h1.sync / "after.txt").exists(), 3)


@pytest.mark.parametrize(("arg", "status", "said"), [
    ("<KEY>", 2, "meshsync trust: <KEY> is a private key: give its public half (id_ed25519.pub),"
                 " never the key itself"),
    ("<HOME>/missing.pub", 1, "meshsync: no such file: <HOME>/missing.pub"),
    ("<EMPTY>", 2, "meshsync trust: <EMPTY> holds no key lines"),
    ("ssh-ed25519 AAAAbad", 2, "meshsync trust: not a public key line nor a peer's ID:"
                               " 'ssh-ed25519 AAAAbad' (a key line looks like `ssh-ed25519"
                               " AAAA… name`)"),
    ("SHA256:x", 2, "meshsync trust: not a public key line nor a peer's ID: 'SHA256:x' (a key"
                    " line looks like `ssh-ed25519 AAAA… name`)"),
    ("abcdefgh", 1, "meshsync: no node is running to tell which key abcdefgh is: give its key"
                    " line (`meshsync id` on that machine prints it)"),
])
def test_trust_refuses_a_private_key_a_missing_file_and_a_malformed_line_in_one_line(
        tmp_path, arg, status, said):
    home = fresh_home(tmp_path)
    key = home / ".ssh" / "id_ed25519"
    (home / "empty.pub").write_text("# nothing here\n")
    names = {"<KEY>": str(key), "<HOME>": str(home), "<EMPTY>": str(home / "empty.pub")}
    result = meshsync_at(home, "trust", named(arg, names))
    assert (result.returncode, result.stderr, result.stdout) == (
        status, named(said, names) + "\n", "")
    assert not (home / ".local/state/meshsync/trusted_keys").exists()


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


def test_the_node_logs_each_file_it_receives_at_verbose_by_its_path_and_maker(make_lan):
    lan = make_lan(2)
    h1, h2 = lan.hosts
    lan.trust_all()
    h1.start()
    h2.start("--verbose")
    wait_for("the pair to agree", lambda: agreed([h1, h2], min(h1, h2, key=lambda h: h.id)), 15)
    (h1.sync / "d").mkdir()
    (h1.sync / "d/notes.txt").write_bytes(b"twelve bytes")
    wait_for("notes.txt at h2", lambda: (h2.sync / "d/notes.txt").is_file(), 15)
    said = wait_for("h2 to log it", lambda: [
        line.split(" ", 2)[2] for line in h2.log.read_text().splitlines()
        if "received d/notes.txt" in line], 5)
    short = re.escape(h1.id.short)
    assert re.fullmatch(rf"folder Sync: received d/notes.txt: file of 12 bytes \[{short}:\d+\]"
                        rf" from {short}", said[0]), said
    assert "received" not in h1.log.read_text()  # not at the default level

"""`meshsync service`: the systemd user unit it writes is one systemd accepts, and its command
runs a node that syncs, with a key of its own where the user's needs a passphrase.

This machine runs no systemd, and a test must not start services on one that does: systemctl
is pointed at a bus that is not there, so the enabling fails as it would outside a login
session, and the test runs the unit's command itself."""

from __future__ import annotations

import shlex
import subprocess
import sys

from tests.integration.lan import wait_for

NO_BUS = {"DBUS_SESSION_BUS_ADDRESS": "unix:path=/nonexistent", "XDG_RUNTIME_DIR": ""}


def test_the_unit_runs_a_node_that_syncs_with_its_own_key_when_the_users_needs_a_passphrase(
        make_lan, tmp_path):
    lan = make_lan(2)
    h1, h2 = lan.hosts
    h1.make_key(passphrase="a passphrase")
    h1.trust(h2)
    h1.env_extra.update(NO_BUS)
    done = h1.cli("service", "install", str(h1.sync), "--name", "h1 service")
    lines = done.stdout.splitlines()
    unit = h1.home / ".config/systemd/user/meshsync.service"
    key = h1.state / "key"
    assert lines[0] == ("your SSH key needs its passphrase, which a service cannot ask for: the"
                        f" service signs with a key of its own, {key}")
    assert lines[1].startswith("on the other machines, trust it: meshsync trust 'ssh-ed25519 ")
    assert lines[2:] == [f"wrote {unit}"]
    assert done.returncode == 1
    assert done.stderr.startswith("meshsync: systemctl --user daemon-reload: ")
    assert done.stderr.endswith(": run it in your login session (the unit is written)\n")
    assert done.stderr.count("\n") == 1
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    verified = subprocess.run(["systemd-analyze", "verify", "--user", str(unit)],
                              env={"XDG_RUNTIME_DIR": str(runtime), "PATH": "/usr/bin:/bin"},
                              capture_output=True, text=True, check=False)
    assert (verified.returncode, verified.stderr) == (0, "")
    text = unit.read_text()
    assert "Restart=on-failure" in text
    assert "WantedBy=default.target" in text

    # The other machine trusts the service's key by the line it was shown; no node runs yet.
    trust_line = lines[1].split("meshsync trust ", 1)[1]
    assert h2.cli("trust", *shlex.split(trust_line)).returncode == 0
    h2.start()
    [command] = [line.removeprefix("ExecStart=") for line in text.splitlines()
                 if line.startswith("ExecStart=")]
    argv = shlex.split(command.replace("%%", "%"))
    assert argv[:4] == [sys.executable, "-m", "meshsync", "start"]
    with subprocess.Popen(["ip", "netns", "exec", h1.ns, *argv], env=h1.env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                          start_new_session=True) as node:
        try:
            wait_for("the service's node to answer", lambda: h1.cli("elect").returncode == 0,
                     15)
            (h1.sync / "from-the-service.txt").write_text("hello")
            wait_for("its file at h2", lambda: (h2.sync / "from-the-service.txt").is_file(), 15)
            assert {p["name"] for p in h2.json("peers")} >= {"h1 service"}
        finally:
            h1.cli("stop")
            node.wait(15)

    gone = h1.cli("service", "uninstall")
    assert gone.returncode == 0
    assert gone.stdout.splitlines()[-1] == f"removed {unit}"
    assert not unit.exists()
    again = h1.cli("service", "uninstall")
    assert (again.returncode, again.stderr) == (
        1, f"meshsync: no meshsync service is installed ({unit} does not exist)\n")

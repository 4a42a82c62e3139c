"""The state directory for real: modes tightened in tmp_path, and `start` failing in one line."""

from __future__ import annotations

import errno
import os
import socket
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from meshsync.cli.main import main
from meshsync.node.node import Node
from meshsync.node.state import secure_state_dir
from meshsync.store.index import IndexUnusable

ROOT = Path(__file__).resolve().parents[2]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_a_missing_state_directory_is_made_private(tmp_path: Path, umask_022: None) -> None:
    state = tmp_path / "home" / ".local" / "state" / "meshsync"
    assert secure_state_dir(state) == []
    assert mode(state) == 0o700


def test_loose_modes_are_tightened_and_reported_once(tmp_path: Path, umask_022: None) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o755)
    state.chmod(0o755)
    for name, wanted in [("index.db", 0o644), ("index.db-wal", 0o666), ("key", 0o600),
                         ("trusted_keys", 0o640), ("read-only", 0o444), ("script", 0o755)]:
        (state / name).write_text(name)
        (state / name).chmod(wanted)
    (state / "sub").mkdir(mode=0o755)
    listener = socket.socket(socket.AF_UNIX)
    try:
        listener.bind(str(state / "control.sock"))
        (state / "control.sock").chmod(0o777)
        changed = secure_state_dir(state)
    finally:
        listener.close()
    assert changed == [
        ". 0755→0700", "control.sock 0777→0600", "index.db 0644→0600",
        "index.db-wal 0666→0600", "read-only 0444→0400", "script 0755→0600",
        "trusted_keys 0640→0600",
    ]
    assert mode(state) == 0o700
    assert {p.name: mode(p) for p in state.iterdir()} == {
        "index.db": 0o600, "index.db-wal": 0o600, "key": 0o600, "trusted_keys": 0o600,
        "read-only": 0o400, "script": 0o600, "control.sock": 0o600,
        "sub": 0o755,  # only what lies directly in the directory
    }
    assert secure_state_dir(state) == []


def test_links_are_left_alone_and_not_followed(tmp_path: Path) -> None:
    state, outside = tmp_path / "state", tmp_path / "outside"
    state.mkdir(mode=0o700)
    outside.write_text("not ours to change")
    outside.chmod(0o644)
    (state / "index.db").symlink_to(outside)
    (state / "dangling").symlink_to(tmp_path / "nowhere")
    assert secure_state_dir(state) == []
    assert mode(outside) == 0o644
    assert (state / "index.db").is_symlink()


def test_a_name_with_a_control_character_is_reported_escaped(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    (state / "bad\x1b[2Jname").write_text("")
    (state / "bad\x1b[2Jname").chmod(0o644)
    assert secure_state_dir(state) == ["bad\\x1b[2Jname 0644→0600"]


# -- `meshsync start` stops with one line -------------------------------------------------------
@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("MESHSYNC_HOME", str(tmp_path / "state"))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    (tmp_path / "Sync").mkdir()
    return tmp_path


def fail_with(monkeypatch: pytest.MonkeyPatch, error: BaseException) -> None:
    async def run(self: Node) -> None:
        raise error

    monkeypatch.setattr(Node, "run", run)


@pytest.mark.parametrize(("error", "line"), [
    (ExceptionGroup("node", [ExceptionGroup("folder", [
        NotADirectoryError(errno.ENOTDIR, "Not a directory", "/srv/file/Sync/.meshsync")])]),
     "meshsync: /srv/file/Sync/.meshsync: Not a directory"),
    (ExceptionGroup("node", [IndexUnusable("the disk holding the index /s/index.db is full:"
                                           " free some space and start again")]),
     "meshsync: the disk holding the index /s/index.db is full: free some space and start again"),
    (IndexUnusable("the index /s/index.db is read-only\nsecond line"),
     "meshsync: the index /s/index.db is read-only\\nsecond line"),
])
def test_an_error_the_user_can_fix_is_one_line_even_inside_groups(
    home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    error: BaseException, line: str,
) -> None:
    fail_with(monkeypatch, error)
    assert main(["start", str(home / "Sync")]) == 1
    assert capsys.readouterr().err == line + "\n"


def test_a_bug_inside_a_group_still_shows_its_traceback(
    home: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A ValueError is the user's only while the arguments are checked; later it is a bug.
    fail_with(monkeypatch, ExceptionGroup("node", [OSError("fine"), ValueError("a bug")]))
    with pytest.raises(ExceptionGroup):
        main(["start", str(home / "Sync")])


def test_bad_arguments_and_ctrl_c_before_the_node_runs_print_no_traceback(
    home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["start", str(home / "Sync"), "--keep-size", "lots"]) == 2
    assert capsys.readouterr().err == "meshsync start: not a size: 'lots' (try 500M or 2G)\n"
    fail_with(monkeypatch, KeyboardInterrupt())
    assert main(["start", str(home / "Sync")]) == 130
    assert capsys.readouterr().err == ""
